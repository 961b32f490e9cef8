/* supernet: weight-sharing evaluation (specs/nas.md, single-path one-shot, Guo et al. 2020): one
 * store holds every choice's weights, each training step trains one uniformly drawn path, and a
 * candidate is scored with its path's weights after batch-norm recalibration on validation.
 *
 * Which weights a path reads. A genome is first put in canonical form (nas/genome.h), so
 * isomorphic genomes share one path and one score, like they share one hash. Every tensor of
 * the decoded model gets a key naming its choice, and tensors with one key are one tensor:
 *   macro: "m<d>.<op>[.bn].<rest>" for the layer at depth d of the canonical (identity-free)
 *          network: the op at a depth, with or without batch norm, is one choice; the same op
 *          at the same depth in two genomes reads the same weights whatever the layers around;
 *   cell:  "s<s>.c<n>.e<e>.<op>.<rest>" for edge e (canonical order) of cell n of stage s;
 *          "s<s>.res.<rest>" for the strided block into stage s; "stem", "tail" likewise;
 *   macro and cell: "tail.<k>.<rest>" for the classifier (and the cell space's final norm).
 * Widths are not separate choices: a tensor is stored at the largest shape any path gave it and
 * a narrower path uses its leading slice (the first k output and first k input channels, as in
 * Guo et al.'s channel search), so every width trains the channels they share. A stored
 * element is initialised the first time a training path reaches it, by engine_net_init on that
 * path's net (He-uniform for its fan-in); scoring never changes the store.
 *
 * Training is plain SGD with momentum (one velocity per stored element, stepped only on the
 * path's slice; each path's gradient clipped in norm) under a cosine schedule over all the steps
 * asked for. specs/nas.md's "one uniformly drawn path per step" is paths_per_step 1 (the
 * default); with k > 1 (ours, after FairNAS, Chu et al. 2021) k uniformly drawn paths share
 * each batch and one update applies the mean of their gradients, so a weight that many paths
 * share (the classifier, an early layer) follows their average instead of each path in turn.
 * Results are reproducible
 * for a fixed seed and FEDNAS_THREADS (the engine's summation order). */
#ifndef FEDNAS_NAS_SUPERNET_H
#define FEDNAS_NAS_SUPERNET_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/data.h"
#include "engine/model.h"
#include "nas/config.h"
#include "nas/eval.h"
#include "nas/genome.h"
#include "nas/slice.h"
#include "nas/worker.h"

#define NAS_SUPERNET_KEY_LEN 64
#define NAS_RECAL_MIN_BATCHES 20 /* specs/nas.md: at least 20 training batches */

typedef struct nas_supernet nas_supernet_t;

typedef struct nas_supernet_opts {
    int batch_size;       /* training and recalibration batches (64) */
    double lr;            /* SGD learning rate at step 0, cosine-decayed to 0 over the training */
    double momentum;      /* 0.9 */
    double weight_decay;  /* L2 on the path's weights, added to the gradient (0: none) */
    double clip_norm;     /* > 0: each step's gradient clipped to this L2 norm (0: none) */
    uint64_t seed;        /* path draws, initialisation, shuffling, recalibration batches */
    int recal_batches;    /* >= NAS_RECAL_MIN_BATCHES */
    int paths_per_step;   /* uniform paths drawn per batch, their gradients averaged into one update (1) */
} nas_supernet_opts_t;

/* batch 64, lr 0.05, momentum 0.9, no weight decay, gradient clipped at norm 5, seed 1, 20
 * recalibration batches. */
void nas_supernet_opts_default(nas_supernet_opts_t *o);

/* An empty supernet of the space sp (copied): tensors appear as paths reach them. FN_EINVAL on
 * options out of range (recal_batches below the spec's 20, batch < 1, lr <= 0, ...). */
int nas_supernet_create(const nas_space_t *sp, const nas_supernet_opts_t *o, nas_supernet_t **out, err_t *err);
void nas_supernet_free(nas_supernet_t *s);

typedef struct nas_supernet_stats {
    long steps;       /* paths trained (one batch each) */
    double loss;      /* mean training loss over the last epoch's steps */
    double accuracy;  /* and the fraction classified right, measured before each step */
    double seconds;
    int paths;        /* distinct canonical paths drawn */
} nas_supernet_stats_t;

/* Trains for `epochs` passes over samples idx[0..n) of src (shuffled per epoch; a fraction
 * < 1 is one pass over that share), one uniformly drawn valid genome (nas_genome_random) per
 * batch. Calling it again continues the draw sequence and restarts the cosine schedule. A path
 * whose loss is not finite stops the training: FN_EINVAL naming the step and path. */
int nas_supernet_train(nas_supernet_t *s, const engine_source_t *src, const int *idx, int n, double epochs,
                       nas_supernet_stats_t *st, err_t *err);

/* One SGD step of genome g's path on a batch x [nb, c, h, w] with labels y, at learning rate lr:
 * copy the path's slices in, forward in train mode, backward, step the slices. loss (may be
 * NULL) gets the batch loss before the step. */
int nas_supernet_step(nas_supernet_t *s, const nas_genome_t *g, const float *x, const uint8_t *y, int nb, double lr,
                      double *loss, err_t *err);

/* One update from k paths on the same batch (FairNAS-style, Chu et al. 2021): each path's
 * gradient (clipped like a single path's) is averaged, and momentum SGD steps every element any
 * of them reached. g[0..k) may repeat a path; {A, A} steps exactly like nas_supernet_step(A).
 * loss (may be NULL) gets the paths' mean batch loss before the step. */
int nas_supernet_step_paths(nas_supernet_t *s, const nas_genome_t *g, int k, const float *x, const uint8_t *y, int nb,
                            double lr, double *loss, err_t *err);

/* g's model (decoded from its genome, batch norms with momentum 1 for nas_bn_recalibrate) with
 * its path's weights copied in and fresh running statistics (mean 0, variance 1). Elements no
 * training path has reached yet keep the model's own initialisation (seed: the supernet's and
 * g's hash, so it is deterministic and independent of what was scored before). */
int nas_supernet_model(nas_supernet_t *s, const nas_genome_t *g, engine_model_t **out, err_t *err);

/* Recomputes m's batch-norm running statistics: `batches` batches of batch_size drawn from
 * idx[0..n) of src by seed, forward in train mode without gradients; every running mean and
 * variance ends as its average over the batches (PyTorch's momentum=None). Needs batch norms
 * of momentum 1 (each pass then leaves exactly its batch's statistics; nas_supernet_model
 * builds them so): FN_EINVAL otherwise. Parameters are not changed. */
int nas_bn_recalibrate(engine_model_t *m, const engine_source_t *src, const int *idx, int n, int batches,
                       int batch_size, uint64_t seed, err_t *err);

typedef struct nas_supernet_score {
    double accuracy, loss;  /* on the validation split */
    int64_t params;         /* trainable floats of g's model */
    double flops;
    double seconds;         /* building, recalibration and validation */
} nas_supernet_score_t;

/* specs/nas.md: g's path copied into its decoded model, batch norm recalibrated on
 * opts.recal_batches batches of the training split (the same batches for every candidate),
 * then evaluated on the validation split. Deterministic for a supernet state, seed and thread
 * count; leaves the supernet unchanged. */
int nas_supernet_score(nas_supernet_t *s, const nas_genome_t *g, const nas_data_t *d, nas_supernet_score_t *r,
                       err_t *err);

/* ---- the controller's evaluator for "evaluation": "weight_sharing" ---- */

/* Trains a supernet of cfg->space now (cfg->epochs epochs over d's training split, batch
 * cfg->batch_size, lr cfg->lr, the momentum of base's SGD recipe, a seed derived from cfg->seed)
 * and returns a one-slot worker pool that scores each search job's genome with it
 * (nas_supernet_score; latency as base->latency_reps asks) and retrains final jobs from scratch
 * like a local worker. It runs in this process on `threads` engine threads (it sets
 * FEDNAS_THREADS, so call it before anything starts the engine's pool); a fixed thread count
 * and seed give the same scores, so a resumed search retrains the same supernet. */
int nas_supernet_workers_start(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, int threads,
                               nas_workers_t **out, err_t *err);

/* ---- introspection (tests, benchmarks) ---- */

/* Stored tensors (created by training steps so far) and their keys, shapes and data. */
int nas_supernet_num_tensors(const nas_supernet_t *s);
const char *nas_supernet_tensor_key(const nas_supernet_t *s, int id);
const float *nas_supernet_tensor(const nas_supernet_t *s, int id, int *ndim, int64_t shape[4]);
/* For each tensor of g's decoded model (engine_net_tensor order), its key: keys must hold
 * engine_net_num_tensors of that model (*count gets it; cap bounds it). */
int nas_supernet_keys(const nas_supernet_t *s, const nas_genome_t *g, char (*keys)[NAS_SUPERNET_KEY_LEN],
                      nas_slice_view_t *views, int cap, int *count, err_t *err);
/* The id of the tensor stored under key, or -1. */
int nas_supernet_find(const nas_supernet_t *s, const char *key);

#endif
