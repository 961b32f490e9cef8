#include "engine/data.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

engine_source_t engine_source_from_dataset(const engine_dataset_t *d)
{
    engine_source_t s = {.count = d->count, .channels = 1, .height = d->rows, .width = d->cols,
                         .num_classes = d->num_classes, .u8 = d->images, .labels = d->labels};
    return s;
}

engine_source_t engine_source_from_table(const engine_table_t *t)
{
    engine_source_t s = {.count = t->count, .channels = t->dim, .height = 1, .width = 1,
                         .num_classes = t->num_classes, .f32 = t->x, .labels = t->labels};
    return s;
}

int engine_source_check(const engine_source_t *s, err_t *err)
{
    if (!s || s->count <= 0 || !s->labels || (!s->u8 && !s->f32))
        return err_set(err, FN_EINVAL, "data set: empty (no samples, labels or features); load it first");
    if (s->channels < 1 || s->height < 1 || s->width < 1)
        return err_set(err, FN_EINVAL, "data set: sample shape %dx%dx%d is invalid", s->channels, s->height, s->width);
    return 0;
}

void engine_source_gather(const engine_source_t *src, const int *idx, int n, float *x, uint8_t *y)
{
    const size_t F = (size_t)src->channels * src->height * src->width;
    for (int r = 0; r < n; r++) {
        size_t s = (size_t)idx[r];
        float *row = x + (size_t)r * F;
        if (src->u8) {
            const uint8_t *px = src->u8 + s * F;
            for (size_t k = 0; k < F; k++)
                row[k] = (float)px[k] * (1.0f / 255.0f);
        } else {
            memcpy(row, src->f32 + s * F, F * sizeof *row);
        }
        y[r] = src->labels[s];
    }
}

/* ---- CSV ---- */

static int parse_line(char *line, float *vals, int cap, int *ncol)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno)
            return -(n + 1); /* column n+1 is not a number */
        while (*end == ' ' || *end == '\t' || *end == '\r')
            end++;
        if (n < cap)
            vals[n] = (float)v;
        n++;
        if (*end == ',') {
            p = end + 1;
            continue;
        }
        if (*end == '\n' || *end == 0)
            break;
        return -n;
    }
    *ncol = n;
    return 0;
}

int engine_csv_load(const char *path, engine_table_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, errno == ENOENT ? FN_ENOTFOUND : FN_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int lineno = 0, cols = -1, cap = 0, rc = 0;
    float *vals = NULL;
    size_t rows_cap = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        int blank = 1;
        for (ssize_t i = 0; i < len; i++)
            if (!isspace((unsigned char)line[i]))
                blank = 0;
        if (blank)
            continue;
        int nc = 0;
        if (cols < 0) {
            /* Count columns from the commas of the first line. */
            int commas = 0;
            for (ssize_t i = 0; i < len; i++)
                commas += line[i] == ',';
            cap = commas + 1;
            if (cap < 2) {
                rc = err_set(err, FN_EINVAL, "%s:%d: need at least one feature and a label per line", path, lineno);
                break;
            }
            vals = malloc((size_t)cap * sizeof *vals);
            FN_CHECK(vals);
        }
        int pr = parse_line(line, vals, cap, &nc);
        if (pr < 0) {
            if (cols < 0 && out->count == 0) {
                cols = cap; /* a header */
                continue;
            }
            rc = err_set(err, FN_EINVAL, "%s:%d: column %d is not a number", path, lineno, -pr);
            break;
        }
        if (cols < 0)
            cols = cap;
        if (nc != cols) {
            rc = err_set(err, FN_EINVAL, "%s:%d: %d columns where the file has %d", path, lineno, nc, cols);
            break;
        }
        float lab = vals[cols - 1];
        if (!(lab >= 0.0f && lab <= 255.0f) || lab != (float)(int)lab) {
            rc = err_set(err, FN_EINVAL, "%s:%d: the label (last column) is %g; expected an integer 0..255", path, lineno,
                         (double)lab);
            break;
        }
        if ((size_t)out->count == rows_cap) {
            rows_cap = rows_cap ? 2 * rows_cap : 1024;
            float *nx = realloc(out->x, rows_cap * (size_t)(cols - 1) * sizeof(float));
            uint8_t *ny = realloc(out->labels, rows_cap);
            if (nx)
                out->x = nx;
            if (ny)
                out->labels = ny;
            if (!nx || !ny) {
                rc = err_set(err, FN_ENOMEM, "%s: out of memory at line %d", path, lineno);
                break;
            }
        }
        memcpy(out->x + (size_t)out->count * (size_t)(cols - 1), vals, (size_t)(cols - 1) * sizeof(float));
        out->labels[out->count] = (uint8_t)lab;
        if ((int)lab + 1 > out->num_classes)
            out->num_classes = (int)lab + 1;
        out->count++;
    }
    free(line);
    free(vals);
    fclose(f);
    if (!rc && out->count == 0)
        rc = err_set(err, FN_EINVAL, "%s: no data rows", path);
    if (rc) {
        engine_table_free(out);
        return rc;
    }
    out->dim = cols - 1;
    return 0;
}

void engine_table_free(engine_table_t *t)
{
    free(t->x);
    free(t->labels);
    memset(t, 0, sizeof *t);
}

/* ---- batcher ---- */

typedef struct slot {
    engine_batch_t b;
} slot_t;

struct engine_batcher {
    engine_source_t src;
    engine_batcher_config_t cfg;
    int *order;
    int n, nbatches;
    size_t F;
    int nslots;
    slot_t *slots;
    rng_t rng;
    /* ring: the producer fills batch k into slot k % nslots */
    pthread_t th;
    int threaded;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int produced, consumed, stop;
    int next; /* unthreaded: next batch index */
    int K;    /* soft label width when cfg.mix is set */
    int failed; /* the mix callback's error code; no batch is handed out after it */
    err_t ferr;
};

static int build(engine_batcher_t *b, int k, slot_t *s, err_t *err)
{
    int first = k * b->cfg.batch_size;
    int cnt = b->n - first < b->cfg.batch_size ? b->n - first : b->cfg.batch_size;
    engine_source_gather(&b->src, b->order + first, cnt, s->b.x, s->b.y);
    s->b.n = cnt;
    if (b->cfg.augment)
        b->cfg.augment(b->cfg.augment_ctx, s->b.x, s->b.y, cnt, b->src.channels, b->src.height, b->src.width, &b->rng);
    if (b->cfg.mix) {
        int rc = b->cfg.mix(b->cfg.mix_ctx, s->b.x, s->b.y, cnt, b->src.channels, b->src.height, b->src.width, b->K,
                            &b->rng, s->b.soft, err);
        if (rc)
            return rc < 0 ? rc : FN_EINVAL;
    }
    return 0;
}

/* Remembers the first build error; the consumer sees it after the batches before it. */
static void fail(engine_batcher_t *b, int rc, const err_t *e)
{
    pthread_mutex_lock(&b->mu);
    if (!b->failed) {
        b->failed = rc;
        b->ferr = *e;
        if (!b->ferr.msg[0])
            snprintf(b->ferr.msg, sizeof b->ferr.msg, "batcher: the label-mixing callback failed (code %d)", rc);
        b->ferr.code = rc;
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void *producer(void *arg)
{
    engine_batcher_t *b = arg;
    for (int k = 0; k < b->nbatches; k++) {
        pthread_mutex_lock(&b->mu);
        /* Slot k % nslots is free once the consumer has moved past batch k - nslots + 1 (the one
         * it holds now stays valid until its next call). */
        while (!b->stop && k - b->consumed >= b->nslots - 1 && b->consumed < k)
            pthread_cond_wait(&b->cv, &b->mu);
        int stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            break;
        err_t e = {0};
        int rc = build(b, k, &b->slots[k % b->nslots], &e);
        if (rc) {
            fail(b, rc, &e);
            break;
        }
        pthread_mutex_lock(&b->mu);
        b->produced = k + 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
    }
    return NULL;
}

int engine_batcher_create(const engine_source_t *src, const int *idx, int n, const engine_batcher_config_t *cfg,
                          engine_batcher_t **out, err_t *err)
{
    *out = NULL;
    int rc = engine_source_check(src, err);
    if (rc)
        return rc;
    if (!idx)
        n = src->count;
    if (n <= 0)
        return err_set(err, FN_EINVAL, "batcher: no samples (n = %d)", n);
    if (cfg->batch_size < 1)
        return err_set(err, FN_EINVAL, "batch_size: %d; expected >= 1", cfg->batch_size);
    if (cfg->prefetch < 0 || cfg->prefetch > 64)
        return err_set(err, FN_EINVAL, "prefetch: %d; expected 0..64", cfg->prefetch);
    for (int i = 0; idx && i < n; i++)
        if (idx[i] < 0 || idx[i] >= src->count)
            return err_set(err, FN_EINVAL, "batcher: idx[%d] is %d, outside the data set's %d samples", i, idx[i], src->count);
    const int K = cfg->num_classes > 0 ? cfg->num_classes : src->num_classes;
    if (cfg->mix && (cfg->num_classes < 0 || K < 1))
        return err_set(err, FN_EINVAL, "batcher: label mixing needs num_classes >= 1 (got %d, data set %d)",
                       cfg->num_classes, src->num_classes);
    engine_batcher_t *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(err, FN_ENOMEM, "batcher: out of memory");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->src = *src;
    b->cfg = *cfg;
    b->n = n;
    b->K = K;
    b->F = (size_t)src->channels * src->height * src->width;
    b->nbatches = cfg->drop_last ? n / cfg->batch_size : (n + cfg->batch_size - 1) / cfg->batch_size;
    if (cfg->drop_last)
        b->n = b->nbatches * cfg->batch_size;
    b->order = malloc((size_t)n * sizeof *b->order);
    /* Two slots beyond the one the consumer holds let the producer run ahead by `prefetch`. */
    b->nslots = cfg->prefetch > 0 ? cfg->prefetch + 1 : 1;
    b->slots = calloc((size_t)b->nslots, sizeof *b->slots);
    if (!b->order || !b->slots) {
        engine_batcher_free(b);
        return err_set(err, FN_ENOMEM, "batcher: out of memory");
    }
    for (int s = 0; s < b->nslots; s++) {
        b->slots[s].b.x = malloc((size_t)cfg->batch_size * b->F * sizeof(float));
        b->slots[s].b.y = malloc((size_t)cfg->batch_size);
        /* Only mixing batches carry soft labels; hard-label batches stay x and y alone. */
        if (cfg->mix)
            b->slots[s].b.soft = malloc((size_t)cfg->batch_size * (size_t)K * sizeof(float));
        if (!b->slots[s].b.x || !b->slots[s].b.y || (cfg->mix && !b->slots[s].b.soft)) {
            engine_batcher_free(b);
            return err_set(err, FN_ENOMEM, "batcher: %d batches of %d samples do not fit in memory", b->nslots,
                           cfg->batch_size);
        }
    }
    for (int i = 0; i < n; i++)
        b->order[i] = idx ? idx[i] : i;
    rng_seed(&b->rng, cfg->seed);
    if (cfg->shuffle)
        rng_shuffle_int(&b->rng, b->order, n);
    if (cfg->prefetch > 0 && b->nbatches > 0) {
        if (pthread_create(&b->th, NULL, producer, b) == 0)
            b->threaded = 1;
        else
            b->nslots = 1; /* fall back to building in the caller's thread */
    }
    *out = b;
    return 0;
}

const engine_batch_t *engine_batcher_next(engine_batcher_t *b)
{
    if (!b->threaded) {
        if (b->failed || b->next >= b->nbatches)
            return NULL;
        err_t e = {0};
        int rc = build(b, b->next, &b->slots[0], &e);
        if (rc) {
            fail(b, rc, &e);
            return NULL;
        }
        b->next++;
        return &b->slots[0].b;
    }
    pthread_mutex_lock(&b->mu);
    int k = b->consumed; /* batch about to be handed out; handing it out frees the previous slot */
    if (k >= b->nbatches) {
        pthread_mutex_unlock(&b->mu);
        return NULL;
    }
    while (b->produced <= k && !b->failed)
        pthread_cond_wait(&b->cv, &b->mu);
    if (b->produced <= k) { /* the producer failed on batch k */
        pthread_mutex_unlock(&b->mu);
        return NULL;
    }
    b->consumed = k + 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return &b->slots[k % b->nslots].b;
}

int engine_batcher_num_batches(const engine_batcher_t *b) { return b->nbatches; }

int engine_batcher_error(engine_batcher_t *b, err_t *err)
{
    pthread_mutex_lock(&b->mu);
    int rc = b->failed;
    if (rc && err)
        *err = b->ferr;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void engine_batcher_free(engine_batcher_t *b)
{
    if (!b)
        return;
    if (b->threaded) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->th, NULL);
    }
    if (b->slots)
        for (int s = 0; s < b->nslots; s++) {
            free(b->slots[s].b.x);
            free(b->slots[s].b.y);
            free(b->slots[s].b.soft);
        }
    free(b->slots);
    free(b->order);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}
