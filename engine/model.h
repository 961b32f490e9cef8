/* model: the minimal training engine: softmax regression and ReLU MLPs on the CPU (OpenBLAS),
 * trained with plain minibatch SGD on softmax cross-entropy.
 * All parameters are one contiguous float32 vector, the unit that federated code moves around. */
#ifndef FEDNAS_ENGINE_MODEL_H
#define FEDNAS_ENGINE_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/idx.h"

typedef struct engine_model engine_model_t;

typedef struct engine_train_stats {
    double loss;     /* mean cross-entropy over the epoch's samples, measured before each step */
    double accuracy; /* fraction of the epoch's samples classified right, before each step */
    int samples;
    double seconds;
} engine_train_stats_t;

/* Limits that keep every size inside an int for BLAS and make bad configs fail early. */
#define ENGINE_MODEL_MAX_WIDTH (1 << 20)
#define ENGINE_MODEL_MAX_HIDDEN 64
#define ENGINE_MODEL_MAX_PARAMS 0x7fffffff /* BLAS vector lengths are ints */

/* arch: {"type":"softmax"} (softmax regression) or {"type":"mlp","hidden":[128]} (one or more
 * hidden ReLU layers). input_dim e.g. 784, num_classes e.g. 10. Unknown types, unknown keys
 * and non-positive sizes are FN_EINVAL with a message naming the key. The model keeps a copy
 * of arch (engine_model_arch). Parameters start at zero: call engine_model_init. */
int engine_model_create(const json_t *arch, int input_dim, int num_classes, engine_model_t **out, err_t *err);
void engine_model_free(engine_model_t *m);

/* Layer by layer W (out x in, row-major) then b, in one block; gradients likewise. */
size_t engine_model_num_params(const engine_model_t *m);
float *engine_model_params(engine_model_t *m);
float *engine_model_grads(engine_model_t *m);
const json_t *engine_model_arch(const engine_model_t *m);
int engine_model_input_dim(const engine_model_t *m);
int engine_model_num_classes(const engine_model_t *m);
/* Linear layers (hidden layers + 1) and where layer l's W and b start in the parameter vector. */
int engine_model_num_layers(const engine_model_t *m);
void engine_model_layer(const engine_model_t *m, int l, int *in, int *out, size_t *w_offset, size_t *b_offset);

/* Deterministic init from seed: He-uniform (Kaiming, ReLU gain) weights U(-sqrt(6/in), sqrt(6/in)),
 * zero biases. */
void engine_model_init(engine_model_t *m, uint64_t seed);

/* One epoch of plain minibatch SGD over samples idx[0..n) of d (idx NULL: all of d), visited in
 * an order shuffled with seed; n >= 1, and the last batch may be short. Pixels are scaled to [0,1] as each
 * batch is built. The data set's rows*cols must equal the model's input size and its labels
 * must be below the model's class count. Results depend on OpenBLAS's thread count through
 * summation order; a fixed thread count and seed reproduce a run bit for bit. */
int engine_model_train_epoch(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, int batch_size,
                             float lr, uint64_t seed, engine_train_stats_t *stats, err_t *err);

/* Mean cross-entropy and accuracy over idx[0..n) of d, or over all of d when idx is NULL.
 * Either output pointer may be NULL. */
int engine_model_evaluate(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                          double *accuracy, err_t *err);

/* Mean cross-entropy over idx[0..n) of d (idx NULL: all of d) and its full gradient with respect
 * to the parameters, written to grad_out (num_params floats; NULL: the model's gradient block).
 * The parameters are not changed. For gradient checks and for callers running their own optimizer. */
int engine_model_loss_grad(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                           float *grad_out, err_t *err);

#endif
