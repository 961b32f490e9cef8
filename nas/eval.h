/* eval: the data protocol and the evaluation of one candidate (specs/nas.md): the training set
 * split once by a stored seed into a search-train and a validation split, a layers-JSON model
 * trained for its budget and scored on validation (or, finally, retrained on all and tested). */
#ifndef FEDNAS_NAS_EVAL_H
#define FEDNAS_NAS_EVAL_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/data.h"
#include "engine/idx.h"
#include "engine/model.h"

/* Where the data comes from and how much of it a (test) search uses. */
typedef struct nas_data_opts {
    const char *dir;     /* Fashion-MNIST IDX files (NULL: ENGINE_FMNIST_DEFAULT_DIR) */
    uint64_t split_seed; /* the one permutation of the training set into train / validation */
    int val_size;        /* validation images carved from the training set (10,000 by the spec) */
    /* Subsets for tests and smoke runs (0: everything): the first N of each split after the
     * permutation, and the first N test images. The final retraining uses train + validation
     * subsets together, so with no subsets it is the whole 60,000. */
    int train_subset, val_subset, test_subset;
} nas_data_opts_t;

typedef struct nas_data {
    engine_dataset_t train_set, test_set;
    engine_source_t train_src, test_src;
    int *train_idx, n_train; /* indices into train_set: the search's training split */
    int *val_idx, n_val;     /* the validation split */
    int *all_idx, n_all;     /* train then validation: the final retraining's data */
    int *test_idx, n_test; /* the first n_test test images */
    uint64_t split_seed;
} nas_data_t;

int nas_data_load(const nas_data_opts_t *o, nas_data_t *d, err_t *err);
void nas_data_free(nas_data_t *d);

/* One evaluation's recipe. train carries the optimizer, schedule, batch size and augmentation of
 * the experiment's "train" block; epochs and seed are set per evaluation. */
typedef struct nas_eval_opts {
    engine_train_config_t train;
    double epochs;    /* the budget in (0, 10000]: a whole number of epochs, or any fraction (0.25,
                       * 2.5; nas_eval_fraction) for short proxies and ASHA's rungs */
    uint64_t seed;    /* initialisation and shuffling */
    int final;        /* 1: train on all (train + validation) and score on the test set */
    int latency_reps; /* timed batch-64 forward passes (>= 20 by the spec; 0: skip latency) */
} nas_eval_opts_t;

typedef struct nas_eval_result {
    int ok;           /* 0: failed; reason says why (a diverged candidate is a failure) */
    char reason[256];
    double accuracy, loss; /* validation (search) or test (final) */
    double train_loss, train_accuracy;
    int64_t params;        /* trainable floats */
    double flops;          /* forward, one 1x28x28 sample, multiply-add = 2 */
    double latency_ms;     /* median batch-64 forward pass */
    int threads;           /* the engine pool that measured it */
    char device[16];       /* "cpu" */
    double train_seconds;
    int64_t samples;
} nas_eval_result_t;

/* Builds arch ({"type":"layers",...} or any engine architecture), initialises it from o->seed,
 * trains it and scores it. A model that does not build or a training run that fails on bad input
 * returns FN_EINVAL; a candidate that trains but diverges (non-finite loss or weights) returns 0
 * with r->ok = 0 and the reason. With keep != NULL the trained model is handed back (the caller
 * frees it) for its weights. */
int nas_eval_run(const json_t *arch, const nas_data_t *d, const nas_eval_opts_t *o, nas_eval_result_t *r,
                 engine_model_t **keep, err_t *err);

/* The training list of a budget of `epochs` that is not a whole number, e = q + f: q seed-
 * shuffled copies of idx[0..n) and a seed-shuffled head of round(f * n) of it, in one list of
 * round(e * n) indices (*list, malloc'ed; *len) that tc then trains on for one epoch (tc->epochs
 * is set to 1). A schedule of tc counted in epochs becomes one counted in steps of the real
 * epoch (n samples), so its shape over the budget is kept. FN_EINVAL for epochs outside
 * (0, 10000] or n < 1. */
int nas_eval_fraction(const int *idx, int n, double epochs, uint64_t seed, engine_train_config_t *tc, int **list,
                      int *len, err_t *err);

/* The median wall time in milliseconds of reps forward passes of batch 64 (after warm-up passes)
 * in eval mode without gradients, on the engine's default pool. */
int nas_eval_latency(engine_model_t *m, int reps, double *ms, err_t *err);

#endif
