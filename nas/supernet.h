/* supernet: weight-sharing evaluation (specs/nas.md, single-path one-shot, Guo et al. 2020): one
 * store holds every choice's weights, each training step trains one uniformly drawn path, and a
 * candidate is scored with its path's weights after batch-norm recalibration on training batches.
 *
 * Which weights a path reads. A genome is first put in canonical form (nas/genome.h), so
 * isomorphic genomes share one path and one score, like they share one hash. Every tensor of
 * the decoded model gets a key naming its choice, and tensors with one key are one tensor:
 *   macro: "m<k>.<family>.<role>.<rest>" for the convolution with k convolutions before it in
 *          the canonical network, family "conv" (conv3x3, conv5x5, dilconv3x3) or "sep"
 *          (sepconv3x3/5x5), role conv, dw, pw (the separable pair) or bn; pools and identities
 *          are not counted, so a convolution always reads the features of convolution k-1 (or
 *          the image for k = 0), whatever parameter-free layers lie between. A pool's batch norm
 *          is "m<k>.p<r>.<op>.bn" (r: its place among the pools after convolution k-1);
 *          "tail.c<k>.<rest>" is the classifier of networks with k convolutions: the features
 *          it reads come from the last one, which differs with k.
 *   cell:  "s<s>.c<n>.e<e>.<op>.<rest>" for edge e (canonical order) of cell n of stage s;
 *          "s<s>.res.<rest>" for the strided block into stage s; "stem", "tail" likewise.
 * Within a macro family the kernels are one tensor (as the elastic kernels of Cai et al. 2020's
 * once-for-all network): stored 5x5 when the space has a 5x5 or dilated op, a conv3x3 reads
 * its centre, a dilconv3x3 its even lattice (rows and columns 0, 2, 4: the taps a 3x3 kernel
 * at dilation 2 covers), sepconv3x3's depthwise kernel the centre of sepconv5x5's (nas/slice.h
 * views). Widths are not separate choices: a tensor is stored at the largest shape any path
 * gave it and a narrower path uses its leading slice (the first k output and first k input
 * channels, as in Guo et al.'s channel search), so every width trains the channels they share.
 *
 * Batch norm (ours, after SPOS, where every choice block ends in batch norm): the local
 * supernet always puts a batch norm after a convolution, whatever the genome's flag. A genome
 * without it is trained and scored as its batch-norm twin: after recalibration the twin's
 * batch norm is a fixed per-channel affine map that folds into the convolution's weights and
 * bias, so the twin in eval mode computes exactly a function the candidate's own model can
 * compute; two candidates that differ only in batch norm therefore get one score. Measured
 * (tests/bench/nas.c): with batch norm as a separate choice and keys by depth, the shipped
 * 8-op space stayed at chance for 3000 steps; every design of this header learns. nas/fedsuper
 * uses the same keys for the genome as decoded (no twin: sites train the candidate's own model;
 * a convolution with and without batch norm then shares its kernel, not its bias or norm).
 *
 * A stored element is initialised the first time a training path reaches it, by
 * engine_net_init on that path's net (He-uniform for its fan-in); scoring never changes the
 * store.
 *
 * Training is plain SGD with momentum (one velocity per stored element, stepped only on the
 * path's slice; each path's gradient clipped in norm) under a cosine schedule over all the steps
 * asked for. specs/nas.md's "one uniformly drawn path per step" is paths_per_step 1 (the
 * default); with k > 1 (ours, after FairNAS, Chu et al. 2021) k uniformly drawn paths share
 * each batch and one update applies the mean of their gradients, so a weight that many paths
 * share (the classifier, an early layer) follows their average instead of each path in turn.
 * One fixed path trains exactly like standalone training of its (twin's) model with the same
 * optimizer (tests/unit/test_nas_supernet_path.c). Results are reproducible for a fixed seed
 * and FEDNAS_THREADS (the engine's summation order). Under mpirun the same training runs
 * data-parallel, one replica and one shard of each batch per rank (nas/supernet_dp.h). */
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
    int sampling;         /* nas_supernet_sampling_t: how training draws its paths (uniform) */
} nas_supernet_opts_t;

/* How training draws paths (nas_supernet_draw). Both draw every gene's choices with equal
 * probability (specs/nas.md's uniform sampling); fair also balances them exactly within each
 * cycle of a gene's choices (strict fairness, FairNAS, Chu et al. 2021; nas/supernet_sample.c). */
typedef enum { NAS_SUPERNET_SAMPLE_UNIFORM = 0, NAS_SUPERNET_SAMPLE_FAIR = 1 } nas_supernet_sampling_t;

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

/* The next training path: nas_genome_random on the supernet's draw sequence (uniform), or the
 * next fair draw (see nas_supernet_sampling_t). Always a valid genome of the space. */
int nas_supernet_draw(nas_supernet_t *s, nas_genome_t *out, err_t *err);

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

/* g's model as the supernet scores it (decoded from its genome, for the macro space with a batch
 * norm after every convolution: see above; batch norms with momentum 1 for nas_bn_recalibrate)
 * with its path's weights copied in and fresh running statistics (mean 0, variance 1). Elements no
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

/* The supernet options of a search (cfg's batch size, lr and seed, base's momentum): those of
 * nas_supernet_workers_start and of the data-parallel training under mpirun (nas/mpi.h). */
void nas_supernet_opts_for_search(const nas_config_t *cfg, const nas_eval_opts_t *base, nas_supernet_opts_t *o);

/* One search job's result as the weight-sharing worker computes it: genome (JSON text) scored by
 * nas_supernet_score, latency of its own model as base->latency_reps asks; r->ok 0 with a reason
 * on failure. */
void nas_supernet_score_job(nas_supernet_t *sn, const nas_space_t *sp, const nas_data_t *d,
                            const nas_eval_opts_t *base, const char *genome, nas_eval_result_t *r);

/* ---- introspection (tests, benchmarks) ---- */

/* Stored tensors (created by training steps so far) and their keys, shapes and data. */
int nas_supernet_num_tensors(const nas_supernet_t *s);
const char *nas_supernet_tensor_key(const nas_supernet_t *s, int id);
const float *nas_supernet_tensor(const nas_supernet_t *s, int id, int *ndim, int64_t shape[4]);
/* For each tensor of g's decoded model as it is (engine_net_tensor order; no batch-norm twin),
 * its key and (views, may be NULL) where it sits in the stored tensor: keys and views must hold
 * engine_net_num_tensors of that model (*count gets it; cap bounds it). */
int nas_supernet_keys(const nas_supernet_t *s, const nas_genome_t *g, char (*keys)[NAS_SUPERNET_KEY_LEN],
                      nas_slice_view_t *views, int cap, int *count, err_t *err);
/* The id of the tensor stored under key, or -1. */
int nas_supernet_find(const nas_supernet_t *s, const char *key);

#endif
