/* data: data sets as the trainer sees them, and the batcher that feeds it. A source is either
 * uint8 images (IDX files; scaled to [0,1] as each batch is built, so the set is never copied
 * to float) or float feature rows (a partner site's CSV). The batcher deals an epoch's shuffled
 * batches from a background thread into a bounded ring of preallocated slots, so building the
 * next batch overlaps training on this one; an augmentation callback may rewrite each float
 * batch in the producer thread, and a label-mixing callback (MixUp, CutMix, mosaic) may also
 * give it soft labels there (engine/augment.* provides both). */
#ifndef FEDNAS_ENGINE_DATA_H
#define FEDNAS_ENGINE_DATA_H

#include <stdint.h>

#include "common/err.h"
#include "common/rng.h"
#include "engine/idx.h"

typedef struct engine_source {
    int count;
    int channels, height, width; /* features = channels * height * width */
    int num_classes;
    const uint8_t *u8;   /* count x features pixels, or NULL */
    const float *f32;    /* count x features values, or NULL */
    const uint8_t *labels;
} engine_source_t;

/* A view of an IDX data set as [1, rows, cols] images. */
engine_source_t engine_source_from_dataset(const engine_dataset_t *d);
/* FN_EINVAL when fields are inconsistent (no data, labels >= num_classes, ...). */
int engine_source_check(const engine_source_t *s, err_t *err);

/* Numeric features plus an integer label per row, from CSV. */
typedef struct engine_table {
    float *x;        /* count x dim */
    uint8_t *labels; /* count */
    int count, dim, num_classes;
} engine_table_t;

/* Reads a CSV of numbers, one sample per line, label (an integer 0..255) in the last column.
 * A first line that is not numeric is taken as a header. Every row must have the same number
 * of columns; a bad cell is FN_EINVAL naming line and column; a missing file FN_ENOTFOUND. */
int engine_csv_load(const char *path, engine_table_t *out, err_t *err);
void engine_table_free(engine_table_t *t);
/* A view of a table as [dim] feature rows (channels = dim, height = width = 1). */
engine_source_t engine_source_from_table(const engine_table_t *t);

/* Applied to each float batch x [n, c, h, w] in the producer thread; rng is the batcher's
 * (seeded from the epoch seed, so augmentation is reproducible). */
typedef void (*engine_augment_fn)(void *ctx, float *x, const uint8_t *labels, int n, int c, int h, int w, rng_t *rng);

/* Label mixing, applied to each float batch after `augment` in the producer thread: may rewrite
 * x and fills soft (n x num_classes floats, row-major, each row a distribution) from the hard
 * labels. Returns 0, or an error code with err filled: the batcher then stops, hands out no
 * more batches and reports it through engine_batcher_error. */
typedef int (*engine_mix_fn)(void *ctx, float *x, const uint8_t *labels, int n, int c, int h, int w, int num_classes,
                             rng_t *rng, float *soft, err_t *err);

typedef struct engine_batch {
    float *x;   /* n x features */
    uint8_t *y; /* n hard labels (as loaded, before any mixing) */
    int n;
    /* n x num_classes soft labels when the batcher has a mix callback; NULL otherwise, so
     * hard-label batches carry nothing extra. */
    float *soft;
} engine_batch_t;

typedef struct engine_batcher_config {
    int batch_size;
    int shuffle;   /* 1: shuffle idx with seed */
    uint64_t seed;
    int prefetch;  /* ring slots (>= 1); 0: build batches in the caller's thread */
    int drop_last; /* 1: skip a final short batch */
    engine_augment_fn augment;
    void *augment_ctx;
    engine_mix_fn mix;  /* NULL: hard labels only */
    void *mix_ctx;
    int num_classes;    /* width of the soft labels (0: the source's num_classes) */
} engine_batcher_config_t;

typedef struct engine_batcher engine_batcher_t;

/* One pass (epoch) over samples idx[0..n) of src (idx NULL: all). The batcher copies idx. */
int engine_batcher_create(const engine_source_t *src, const int *idx, int n, const engine_batcher_config_t *cfg,
                          engine_batcher_t **out, err_t *err);
/* The next batch (valid until the next call or free), or NULL at the end of the pass or after
 * the mix callback failed (tell them apart with engine_batcher_error). */
const engine_batch_t *engine_batcher_next(engine_batcher_t *b);
/* 0, or the mix callback's error code with its message copied into err (may be NULL). */
int engine_batcher_error(engine_batcher_t *b, err_t *err);
int engine_batcher_num_batches(const engine_batcher_t *b);
/* Stops the producer (if still running) and frees everything. */
void engine_batcher_free(engine_batcher_t *b);

/* Fills x (n x features) and y from samples idx[0..n) of src; pixels scaled by 1/255. */
void engine_source_gather(const engine_source_t *src, const int *idx, int n, float *x, uint8_t *y);

#endif
