/* model: what federated code trains. A model is a network built from an architecture JSON
 * (engine/nn.h: softmax, mlp, cnn, lenet, resnet, layers) whose parameters are one contiguous
 * float32 vector, the unit that federated code moves around; training runs the define-by-run
 * engine (engine/graph.h, engine/ops.h) with an optimizer and schedule (engine/optim.h,
 * engine/schedule.h) over batches built by a prefetch thread (engine/data.h). */
#ifndef FEDNAS_ENGINE_MODEL_H
#define FEDNAS_ENGINE_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/augment.h"
#include "engine/data.h"
#include "engine/idx.h"
#include "engine/optim.h"
#include "engine/schedule.h"

typedef struct engine_model engine_model_t;

typedef struct engine_train_stats {
    double loss;     /* mean training loss over the samples seen, measured before each step (with
                      * label mixing: the soft-target cross-entropy against the mixed labels) */
    double accuracy; /* fraction of those samples classified right, before each step; a mixed
                      * sample counts as right when the prediction is its dominant (argmax) soft
                      * label, the source with the largest share (timm reports none there) */
    int samples;     /* samples seen (all epochs) */
    double seconds;
    /* Filled by engine_model_train (zero from engine_model_train_epoch unless stated): */
    long steps;        /* optimizer steps taken */
    double lr;         /* the learning rate of the last step */
    double grad_norm;  /* gradient L2 norm of the last step, before clipping (0 unless clip_norm > 0) */
    double prox;       /* FedProx term mu/2 ||w - w0||^2 at the end */
} engine_train_stats_t;

/* Limits that keep every size inside an int for BLAS and make bad configs fail early. */
#define ENGINE_MODEL_MAX_WIDTH (1 << 20)
#define ENGINE_MODEL_MAX_HIDDEN 64
#define ENGINE_MODEL_MAX_PARAMS 0x7fffffff /* BLAS vector lengths are ints */

/* arch: see engine/nn.h, e.g. {"type":"softmax"}, {"type":"mlp","hidden":[128]}, {"type":"cnn"}.
 * input_dim e.g. 784: samples are taken as 1 x s x s images when input_dim is a square s*s
 * (so 784 means 1x28x28), as 1 x 1 x input_dim otherwise. Unknown types, unknown keys,
 * non-positive sizes and shapes that do not fit are FN_EINVAL with a message naming the key
 * or layer. The model keeps a copy of arch (engine_model_arch). Parameters start at zero:
 * call engine_model_init. */
int engine_model_create(const json_t *arch, int input_dim, int num_classes, engine_model_t **out, err_t *err);
/* The same with an explicit input shape [channels, height, width]. */
int engine_model_create_shape(const json_t *arch, int channels, int height, int width, int num_classes,
                              engine_model_t **out, err_t *err);
void engine_model_free(engine_model_t *m);

/* Layer by layer weight (linear W is out x in, row-major; conv [OC, C/groups, KH, KW]) then
 * bias, in one block; gradients likewise. */
size_t engine_model_num_params(const engine_model_t *m);
float *engine_model_params(engine_model_t *m);
/* The federated vector: the parameters followed by the buffers (batch-norm running statistics),
 * contiguous from engine_model_params(). Federated learning broadcasts, averages, clips, masks
 * and checkpoints all of it, so a global model with batch norm evaluates with running statistics
 * averaged over the sites; training only ever changes the first num_params values and the
 * buffers the forward pass updates. Equals num_params for models without batch norm. */
size_t engine_model_num_federated(const engine_model_t *m);
float *engine_model_grads(engine_model_t *m);
const json_t *engine_model_arch(const engine_model_t *m);
int engine_model_input_dim(const engine_model_t *m);
int engine_model_num_classes(const engine_model_t *m);
/* Layers with weights (linear and conv2d, in order), their fan-in ("in": inputs of a linear,
 * C/groups*KH*KW of a conv), outputs, and where the weight and bias start in the parameter
 * vector (b_offset is the weight's end when the layer has no bias). */
int engine_model_num_layers(const engine_model_t *m);
void engine_model_layer(const engine_model_t *m, int l, int *in, int *out, size_t *w_offset, size_t *b_offset);
/* The network (named parameter views, buffers such as batch-norm running statistics). */
struct engine_net *engine_model_net(engine_model_t *m);

/* Deterministic init from seed: He-uniform (Kaiming, ReLU gain) weights U(-sqrt(6/in), sqrt(6/in)),
 * zero biases, unit norm scales. */
void engine_model_init(engine_model_t *m, uint64_t seed);

/* ---- training ---- */

typedef struct engine_train_config {
    int epochs;                  /* >= 1 */
    int batch_size;              /* the micro-batch */
    int accumulate;              /* micro-batches per optimizer step (>= 1): effective batch = batch_size * accumulate */
    engine_optim_config_t optim; /* optim.lr is the base learning rate */
    engine_schedule_t schedule;  /* schedule.lr is set from optim.lr; schedule.per_step picks its unit */
    long schedule_offset;        /* added to t (e.g. epochs already done in earlier rounds) */
    double clip_norm;            /* > 0: clip the gradient's L2 norm to this before each step */
    float label_smoothing;       /* softmax cross-entropy smoothing in [0, 1) */
    float prox_mu;               /* FedProx (Li et al. 2020): adds mu/2 ||w - w0||^2 to the loss ... */
    const float *prox_anchor;    /* ... with w0 these num_params floats (the round's global model) */
    uint64_t seed;               /* shuffling (epoch e uses rng_derive(seed, e)), dropout */
    int prefetch;                /* batches built ahead by the background thread (0: none) */
    engine_augment_fn augment;   /* applied to each float batch in the prefetch thread, or NULL */
    void *augment_ctx;
    /* The "augment" block (engine/augment.h; everything off by default), run in the prefetch
     * thread after `augment`. Random crop, flip and erasing rewrite images. Mosaic, MixUp and
     * CutMix also give each batch soft labels (B x num_classes), and the loss becomes the
     * soft-target cross-entropy (engine_softmax_xent_soft_smoothed, label_smoothing applied to
     * the mixed targets as timm does). Evaluation always uses the hard labels, unaugmented. */
    engine_augment_config_t aug;
    /* Knowledge distillation (Hinton et al. 2015), off while teacher is NULL: teacher(teacher_ctx,
     * x, n, logits, err) writes the teacher's logits (n x num_classes floats) for the batch the
     * student trains on (after augmentation; 0 or an error code), and the loss becomes
     * distill_alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - distill_alpha) * CE
     * (engine_distill_loss, T = distill_T in (0, 1e4], alpha in [0, 1]). The stats report that loss. */
    int (*teacher)(void *ctx, const float *x, int n, float *logits, err_t *err);
    void *teacher_ctx;
    float distill_T, distill_alpha;
    /* Called after every optimizer step and at the end of every epoch (may be NULL): */
    void (*on_step)(void *ctx, int epoch, int samples_done, int samples_total, double loss);
    void (*on_epoch)(void *ctx, int epoch, const engine_train_stats_t *epoch_stats);
    void *cb_ctx;
} engine_train_config_t;

/* Plain SGD at lr 0.01, 1 epoch, batch 32, no schedule, prefetch 2. */
void engine_train_config_default(engine_train_config_t *c);

/* Maps an experiment's "train" object onto c (starting from the defaults):
 *   {"epochs":1, "batch_size":32, "lr":0.05, "accumulate":1, "clip_norm":0, "label_smoothing":0,
 *    "prox_mu":0, "seed":1, "prefetch":2,
 *    "augment": {"random_crop":{"padding":4}, "hflip":true, "random_erasing":{"p":0.5},
 *                "mosaic":{"p":0.5}, "mixup":{"alpha":0.2,"p":1}, "cutmix":{"alpha":1.0,"p":1}}
 *                (keys and defaults as engine_augment_config_from_json; fills c->aug),
 *    "optimizer": "sgd" | {"type":"sgd|rmsprop|adam|adamw", "momentum":0.9, "nesterov":false,
 *                          "weight_decay":0, "betas":[0.9,0.999], "eps":1e-8, "alpha":0.99},
 *    "schedule": "constant" | {"type":"step|multistep|exponential|cosine|linear|polynomial|onecycle",
 *                          "unit":"epoch|step", "step_size":N, "gamma":0.1, "milestones":[..],
 *                          "total":N (default: epochs, or all steps with unit "step"), "min_lr":0,
 *                          "power":1, "pct_start":0.3, "div_factor":25, "final_div_factor":1e4,
 *                          "warmup":0}}
 * Unknown keys and bad values are FN_EINVAL naming the key ("train.optimizer.momentum: ...",
 * "train.augment.mixup.alpha: ...").
 * "total" defaults are resolved by engine_model_train when 0. */
int engine_train_config_from_json(const json_t *train, engine_train_config_t *c, err_t *err);

/* Trains on samples idx[0..n) of d (idx NULL: all of d) for cfg->epochs epochs with softmax
 * cross-entropy (against soft labels when cfg->aug mixes labels; then num_classes <= 256).
 * Optimizer state starts fresh at each call (a federated round). Results depend
 * on OpenBLAS's and the engine's thread counts through summation order; a fixed thread count
 * and seed reproduce a run bit for bit. stats (may be NULL) covers all epochs. */
int engine_model_train(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n,
                       const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err);
/* The same over any source (CSV features, colour images). */
int engine_model_train_source(engine_model_t *m, const engine_source_t *src, const int *idx, int n,
                              const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err);

/* One epoch of plain minibatch SGD over samples idx[0..n) of d (idx NULL: all of d), visited in
 * an order shuffled with seed; n >= 1, and the last batch may be short. Pixels are scaled to [0,1] as each
 * batch is built. The data set's rows*cols must equal the model's input size and its labels
 * must be below the model's class count. */
int engine_model_train_epoch(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, int batch_size,
                             float lr, uint64_t seed, engine_train_stats_t *stats, err_t *err);

/* Mean cross-entropy and accuracy over idx[0..n) of d, or over all of d when idx is NULL.
 * Either output pointer may be NULL. Runs without gradients, in eval mode. */
int engine_model_evaluate(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                          double *accuracy, err_t *err);
int engine_model_evaluate_source(engine_model_t *m, const engine_source_t *src, const int *idx, int n, double *loss,
                                 double *accuracy, err_t *err);

/* Mean cross-entropy over idx[0..n) of d (idx NULL: all of d) and its full gradient with respect
 * to the parameters, written to grad_out (num_params floats; NULL: the model's gradient block).
 * The parameters are not changed (batch norm runs in eval mode). For gradient checks and for
 * callers running their own optimizer. */
int engine_model_loss_grad(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                           float *grad_out, err_t *err);

/* Memory by category, in bytes: the blobs, and peaks over the model's life. */
typedef struct engine_model_memory {
    size_t params, grads, buffers, optimizer; /* optimizer: the last engine_model_train's state */
    size_t activations_peak;                  /* the per-step arena */
    size_t scratch_peak;                      /* im2col/col2im */
    size_t batches;                           /* the batcher's ring */
} engine_model_memory_t;
void engine_model_memory(const engine_model_t *m, engine_model_memory_t *out);

#endif
