/* ops: every differentiable operation of the engine. One stable op enum indexes each backend's
 * kernel table (engine_backend_t: forward and backward per op). Only the CPU backend exists
 * today (ops_*.c, one file per op family, gathered in ops.c), and ops run on it directly; the
 * table is the seam where a CUDA backend (kernels/, DESIGN.md) would plug in. The functions
 * below are the backend-neutral front: they check shapes, allocate the output in the graph's
 * arena, record the op on the tape and run the kernel at once (define-by-run).
 *
 * Layouts: dense inputs [B, IN] (or [..., IN]); images NCHW; LSTM input [B, T, I].
 * Any op returns NULL (and records the error in the graph) on a shape mismatch, or when an
 * input is NULL because an earlier op failed: check engine_graph_error once per step. */
#ifndef FEDNAS_ENGINE_OPS_H
#define FEDNAS_ENGINE_OPS_H

#include "engine/graph.h"
#include "engine/tensor.h"

/* Stable numbering: new ops go at the end (kernel tables of every backend are indexed by it). */
typedef enum engine_op {
    ENGINE_OP_NONE = 0,
    ENGINE_OP_LINEAR,
    ENGINE_OP_CONV2D,
    ENGINE_OP_MAXPOOL2D,
    ENGINE_OP_AVGPOOL2D,
    ENGINE_OP_GLOBAL_AVGPOOL,
    ENGINE_OP_BATCHNORM,
    ENGINE_OP_LAYERNORM,
    ENGINE_OP_RELU,
    ENGINE_OP_GELU,
    ENGINE_OP_SIGMOID,
    ENGINE_OP_TANH,
    ENGINE_OP_DROPOUT,
    ENGINE_OP_RESHAPE,
    ENGINE_OP_ADD,
    ENGINE_OP_MUL,
    ENGINE_OP_CONCAT,
    ENGINE_OP_SLICE,
    ENGINE_OP_SOFTMAX_XENT,
    ENGINE_OP_SIGMOID_BCE,
    ENGINE_OP_MSE,
    ENGINE_OP_KL_DIV,
    ENGINE_OP_SOFTMAX_XENT_SOFT,
    ENGINE_OP_DISTILL,
    ENGINE_OP_FAKEQUANT,
    ENGINE_OP_COUNT
} engine_op_t;

const char *engine_op_name(engine_op_t op);

/* The backend interface (as ggml_backend_i, reduced to what training needs). */
typedef void (*engine_kernel_fn)(engine_graph_t *g, engine_tensor_t *out);
typedef struct engine_backend {
    const char *name;
    engine_kernel_fn forward[ENGINE_OP_COUNT];  /* computes out->data from out->src */
    engine_kernel_fn backward[ENGINE_OP_COUNT]; /* adds into the srcs' gradients from out->grad */
} engine_backend_t;
const engine_backend_t *engine_backend_cpu(void);

/* ---- dense and convolution ---- */
/* y = x W^T + b; x [..., IN], W [OUT, IN], b [OUT] or NULL. */
engine_tensor_t *engine_linear(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *W, engine_tensor_t *b);

typedef struct engine_conv2d_params {
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups; /* 0 stride/dil/groups mean 1 */
    int relu; /* nonzero: ReLU fused into the output, as engine_relu of it but without a second
               * tensor and two more passes over memory (the kernel applies it in cache) */
} engine_conv2d_params_t;
/* x [B, C, H, W], W [OC, C/groups, KH, KW], b [OC] or NULL -> [B, OC, OH, OW].
 * groups == C == OC is depthwise; a depthwise then a 1x1 conv is separable. */
engine_tensor_t *engine_conv2d(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *W, engine_tensor_t *b,
                               const engine_conv2d_params_t *p);

/* ---- pooling (NCHW); stride 0 means stride = kernel ---- */
engine_tensor_t *engine_maxpool2d(engine_graph_t *g, engine_tensor_t *x, int kernel, int stride, int pad);
/* Padding counts in the divisor (PyTorch's count_include_pad=True). */
engine_tensor_t *engine_avgpool2d(engine_graph_t *g, engine_tensor_t *x, int kernel, int stride, int pad);
/* [B, C, H, W] -> [B, C]. */
engine_tensor_t *engine_global_avgpool(engine_graph_t *g, engine_tensor_t *x);

/* ---- normalization ---- */
/* x [B, C] or [B, C, H, W]; gamma, beta [C]. Training: batch statistics, and running_mean/var
 * (C floats each, may be NULL) move by `momentum` toward them (unbiased variance, as PyTorch).
 * Eval: the running statistics normalise. */
engine_tensor_t *engine_batchnorm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *gamma, engine_tensor_t *beta,
                                  float *running_mean, float *running_var, float momentum, float eps, int training);
/* Normalises over the last dimension; gamma, beta of that size (or NULL). */
engine_tensor_t *engine_layernorm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *gamma, engine_tensor_t *beta,
                                  float eps);

/* ---- activations ---- */
engine_tensor_t *engine_relu(engine_graph_t *g, engine_tensor_t *x);
engine_tensor_t *engine_gelu(engine_graph_t *g, engine_tensor_t *x); /* exact, with erf */
engine_tensor_t *engine_sigmoid(engine_graph_t *g, engine_tensor_t *x);
engine_tensor_t *engine_tanh(engine_graph_t *g, engine_tensor_t *x);
/* Inverted dropout: training zeroes each element with probability p and scales the rest by
 * 1/(1-p), drawing from the graph's RNG; not training (or p == 0) it is the identity. */
engine_tensor_t *engine_dropout(engine_graph_t *g, engine_tensor_t *x, float p, int training);

/* ---- shape and structure ---- */
/* A view with another shape and the same element count (no copy). */
engine_tensor_t *engine_reshape(engine_graph_t *g, engine_tensor_t *x, int ndim, const int64_t *shape);
/* [B, ...] -> [B, prod(...)]. */
engine_tensor_t *engine_flatten(engine_graph_t *g, engine_tensor_t *x);
engine_tensor_t *engine_add(engine_graph_t *g, engine_tensor_t *a, engine_tensor_t *b);
engine_tensor_t *engine_mul(engine_graph_t *g, engine_tensor_t *a, engine_tensor_t *b);
/* Joins n tensors along axis; the other extents must agree. */
engine_tensor_t *engine_concat(engine_graph_t *g, int n, engine_tensor_t *const *xs, int axis);
/* Elements [start, start+len) of axis. */
engine_tensor_t *engine_slice(engine_graph_t *g, engine_tensor_t *x, int axis, int64_t start, int64_t len);

/* ---- recurrent ---- */
/* One LSTM layer over x [B, T, I] (gate order i, f, g, o as PyTorch): Wih [4H, I], Whh [4H, H],
 * b [4H] or NULL; h0, c0 [B, H] or NULL (zeros). Returns the hidden states [B, T, H].
 * Composed of recorded ops, so H may change from one step to the next. */
engine_tensor_t *engine_lstm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *Wih, engine_tensor_t *Whh,
                             engine_tensor_t *b, engine_tensor_t *h0, engine_tensor_t *c0);

/* ---- losses (each returns a one-element tensor, the mean over the batch) ---- */
/* logits [B, C], labels U8 [B] (< C); smoothing in [0, 1): target (1-s)*onehot + s/C. */
engine_tensor_t *engine_softmax_xent(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *labels,
                                     float smoothing);
/* logits [B, C] against soft targets [B, C] (rows of probabilities, e.g. from MixUp/CutMix in
 * engine/augment.h): mean over rows of -sum_c target * log_softmax(logits). Targets get no gradient. */
engine_tensor_t *engine_softmax_xent_soft(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets);
/* The same with label smoothing s in [0, 1) applied to the soft targets as timm does for MixUp
 * and CutMix: the target row becomes (1 - s) * target + s/C (so a mix of one-hots equals the mix
 * of smoothed one-hots, and one-hot targets give engine_softmax_xent with smoothing s). */
engine_tensor_t *engine_softmax_xent_soft_smoothed(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets,
                                                   float smoothing);
/* Mean over all elements of the binary cross-entropy of sigmoid(logits) against targets in [0,1]. */
engine_tensor_t *engine_sigmoid_bce(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets);
/* Mean over all elements of (pred - target)^2. */
engine_tensor_t *engine_mse(engine_graph_t *g, engine_tensor_t *pred, engine_tensor_t *target);
/* Distillation (Hinton et al. 2015): T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)).
 * The teacher gets no gradient. */
engine_tensor_t *engine_kl_div(engine_graph_t *g, engine_tensor_t *student, engine_tensor_t *teacher, float T);
/* The whole distillation loss in one op: mean over rows of
 *   alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)
 * with CE as engine_softmax_xent (labels U8 [B]) or engine_softmax_xent_soft_smoothed (labels
 * F32 [B, C]) with label smoothing in [0, 1). T in (0, 1e4], alpha in [0, 1]; alpha 0 is the
 * plain cross-entropy, alpha 1 pure distillation. Only the student gets a gradient. */
engine_tensor_t *engine_distill_loss(engine_graph_t *g, engine_tensor_t *student, engine_tensor_t *teacher,
                                     engine_tensor_t *labels, float T, float alpha, float smoothing);

/* Fake quantization onto the int8 runtime's activation grid: (clamp(rint(x/scale) + zp, 0, 255) -
 * zp) * scale, with the straight-through gradient (passed where x was not clamped, else 0). */
engine_tensor_t *engine_fake_quant(engine_graph_t *g, engine_tensor_t *x, float scale, int zero_point);

/* Per-op timing (off by default): when enabled, every kernel call adds its wall time to its
 * op's forward or backward total. Process-wide, not thread-safe across concurrent graphs. */
typedef struct engine_op_profile {
    double fwd_seconds[ENGINE_OP_COUNT], bwd_seconds[ENGINE_OP_COUNT];
    long fwd_calls[ENGINE_OP_COUNT], bwd_calls[ENGINE_OP_COUNT];
} engine_op_profile_t;
void engine_profile_enable(int on);
/* Copies the totals and, with reset, zeroes them. */
void engine_profile_get(engine_op_profile_t *out, int reset);
int engine_profile_enabled(void);
void engine_profile_add(engine_op_t op, int backward, double seconds);

/* FLOPs (multiply-adds count 2) of an op's forward pass on its recorded shapes, for profiling
 * and the benchmark; backward of linear/conv is counted as twice the forward by callers. */
double engine_op_flops(const engine_tensor_t *t);

#endif
