/* idx: loads image classification data sets stored as IDX files (MNIST, Fashion-MNIST).
 * Images stay uint8 in memory, as in the file; models scale pixels to [0,1] batch by batch,
 * so a 60k-image set costs 47 MB instead of 188 MB of floats. */
#ifndef FEDNAS_ENGINE_IDX_H
#define FEDNAS_ENGINE_IDX_H

#include <stdint.h>

#include "common/err.h"

typedef struct engine_dataset {
    uint8_t *images; /* count * rows * cols, row-major, as in the file */
    uint8_t *labels; /* count */
    int count, rows, cols;
    int num_classes; /* 1 + max label */
} engine_dataset_t;

/* Reads an IDX3 image file and an IDX1 label file, each plain or gzip (zlib reads both).
 * Checks the magic numbers (0x00000803, 0x00000801), dimensions, that the counts agree and
 * that neither file is truncated or carries trailing bytes. On error *out is left empty.
 * A missing file is FN_ENOTFOUND; bad contents are FN_EINVAL; the message names the file. */
int engine_idx_load(const char *images_path, const char *labels_path, engine_dataset_t *out,
                    err_t *err);

/* Loads Fashion-MNIST (or MNIST: same names) from a directory holding
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; split is "train" or "test".
 * Debian's dataset-fashion-mnist package installs them in ENGINE_FMNIST_DEFAULT_DIR. */
#define ENGINE_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
int engine_fmnist_load(const char *dir, const char *split, engine_dataset_t *out, err_t *err);

/* Frees the arrays and zeroes *d; safe on a zeroed or already freed dataset. */
void engine_dataset_free(engine_dataset_t *d);

#endif
