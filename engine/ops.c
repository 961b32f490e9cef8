/* ops: the backend-neutral front of every op (shape checks, recording) and the CPU table. */
#include "engine/ops.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "engine/ops_cpu.h"

#define K(name) [ENGINE_OP_##name]
static void nop(engine_graph_t *g, engine_tensor_t *t) { (void)g, (void)t; }

static const engine_backend_t cpu_backend = {
    .name = "cpu",
    .forward = {K(NONE) = nop, K(LINEAR) = cpu_linear_fwd, K(CONV2D) = cpu_conv2d_fwd,
                K(MAXPOOL2D) = cpu_maxpool2d_fwd, K(AVGPOOL2D) = cpu_avgpool2d_fwd,
                K(GLOBAL_AVGPOOL) = cpu_global_avgpool_fwd, K(BATCHNORM) = cpu_batchnorm_fwd,
                K(LAYERNORM) = cpu_layernorm_fwd, K(RELU) = cpu_relu_fwd, K(GELU) = cpu_gelu_fwd,
                K(SIGMOID) = cpu_sigmoid_fwd, K(TANH) = cpu_tanh_fwd, K(DROPOUT) = cpu_dropout_fwd,
                K(RESHAPE) = cpu_reshape_fwd, K(ADD) = cpu_add_fwd, K(MUL) = cpu_mul_fwd,
                K(CONCAT) = cpu_concat_fwd, K(SLICE) = cpu_slice_fwd, K(SOFTMAX_XENT) = cpu_softmax_xent_fwd,
                K(SIGMOID_BCE) = cpu_sigmoid_bce_fwd, K(MSE) = cpu_mse_fwd, K(KL_DIV) = cpu_kl_div_fwd,
                K(SOFTMAX_XENT_SOFT) = cpu_softmax_xent_soft_fwd, K(DISTILL) = cpu_distill_fwd, K(FAKEQUANT) = cpu_fakequant_fwd},
    .backward = {K(NONE) = nop, K(LINEAR) = cpu_linear_bwd, K(CONV2D) = cpu_conv2d_bwd,
                 K(MAXPOOL2D) = cpu_maxpool2d_bwd, K(AVGPOOL2D) = cpu_avgpool2d_bwd,
                 K(GLOBAL_AVGPOOL) = cpu_global_avgpool_bwd, K(BATCHNORM) = cpu_batchnorm_bwd,
                 K(LAYERNORM) = cpu_layernorm_bwd, K(RELU) = cpu_relu_bwd, K(GELU) = cpu_gelu_bwd,
                 K(SIGMOID) = cpu_sigmoid_bwd, K(TANH) = cpu_tanh_bwd, K(DROPOUT) = cpu_dropout_bwd,
                 K(RESHAPE) = cpu_reshape_bwd, K(ADD) = cpu_add_bwd, K(MUL) = cpu_mul_bwd,
                 K(CONCAT) = cpu_concat_bwd, K(SLICE) = cpu_slice_bwd, K(SOFTMAX_XENT) = cpu_softmax_xent_bwd,
                 K(SIGMOID_BCE) = cpu_sigmoid_bce_bwd, K(MSE) = cpu_mse_bwd, K(KL_DIV) = cpu_kl_div_bwd,
                 K(SOFTMAX_XENT_SOFT) = cpu_softmax_xent_soft_bwd, K(DISTILL) = cpu_distill_bwd, K(FAKEQUANT) = cpu_fakequant_bwd},
};

const engine_backend_t *engine_backend_cpu(void) { return &cpu_backend; }

static const char *const names[ENGINE_OP_COUNT] = {
    "none", "linear", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "batchnorm", "layernorm",
    "relu", "gelu", "sigmoid", "tanh", "dropout", "reshape", "add", "mul", "concat", "slice",
    "softmax_xent", "sigmoid_bce", "mse", "kl_div", "softmax_xent_soft", "distill", "fakequant"};

const char *engine_op_name(engine_op_t op) { return op >= 0 && op < ENGINE_OP_COUNT ? names[op] : "?"; }

/* ---- helpers ---- */

#define SHAPE(t) engine_tensor_shape_str((t), sbuf[__COUNTER__ % 4], sizeof sbuf[0])

static engine_tensor_t *node(engine_graph_t *g, engine_op_t op, int ndim, const int64_t *shape, engine_tensor_t *a,
                             engine_tensor_t *b, engine_tensor_t *c)
{
    engine_tensor_t *t = engine_graph_tensor(g, ENGINE_F32, ndim, shape);
    if (!t)
        return NULL;
    t->op = op;
    t->src[0] = a;
    t->src[1] = b;
    t->src[2] = c;
    if (engine_graph_grad_enabled(g))
        t->requires_grad = (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
    return t;
}

static engine_op_profile_t prof;
static int prof_on;

void engine_profile_enable(int on) { prof_on = on != 0; }
int engine_profile_enabled(void) { return prof_on; }

void engine_profile_get(engine_op_profile_t *out, int reset)
{
    *out = prof;
    if (reset)
        memset(&prof, 0, sizeof prof);
}

void engine_profile_add(engine_op_t op, int backward, double seconds)
{
    if (backward) {
        prof.bwd_seconds[op] += seconds;
        prof.bwd_calls[op]++;
    } else {
        prof.fwd_seconds[op] += seconds;
        prof.fwd_calls[op]++;
    }
}

static double prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the forward kernel and records the node when a gradient will flow through it. */
static engine_tensor_t *run(engine_graph_t *g, engine_tensor_t *t)
{
    if (!t)
        return NULL;
    double t0 = prof_on ? prof_now() : 0.0;
    cpu_backend.forward[t->op](g, t);
    if (prof_on)
        engine_profile_add((engine_op_t)t->op, 0, prof_now() - t0);
    if (engine_graph_error(g, NULL))
        return NULL;
    if (t->requires_grad && engine_graph_record(g, t))
        return NULL;
    return t;
}

static int need_f32(engine_graph_t *g, const char *op, const engine_tensor_t *t, const char *what)
{
    if (t && t->dtype != ENGINE_F32) {
        engine_graph_fail(g, FN_EINVAL, "%s: %s must be float32", op, what);
        return 0;
    }
    return 1;
}

/* ---- dense and convolution ---- */

engine_tensor_t *engine_linear(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *W, engine_tensor_t *b)
{
    char sbuf[4][64];
    if (!x || !W)
        return NULL;
    if (!need_f32(g, "linear", x, "x") || !need_f32(g, "linear", W, "W"))
        return NULL;
    if (W->ndim != 2 || x->ne[x->ndim - 1] != W->ne[1] || (b && (engine_tensor_numel(b) != W->ne[0]))) {
        engine_graph_fail(g, FN_EINVAL, "linear: input %s does not fit weight %s%s%s (expected [..., %lld] and bias [%lld])",
                          SHAPE(x), SHAPE(W), b ? " and bias " : "", b ? SHAPE(b) : "", (long long)W->ne[1],
                          (long long)W->ne[0]);
        return NULL;
    }
    int64_t shape[ENGINE_MAX_DIMS];
    memcpy(shape, x->ne, sizeof shape);
    shape[x->ndim - 1] = W->ne[0];
    return run(g, node(g, ENGINE_OP_LINEAR, x->ndim, shape, x, W, b));
}

engine_tensor_t *engine_conv2d(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *W, engine_tensor_t *b,
                               const engine_conv2d_params_t *p)
{
    char sbuf[4][64];
    if (!x || !W)
        return NULL;
    engine_conv2d_params_t q = p ? *p : (engine_conv2d_params_t){0};
    if (!q.stride_h) q.stride_h = 1;
    if (!q.stride_w) q.stride_w = 1;
    if (!q.dil_h) q.dil_h = 1;
    if (!q.dil_w) q.dil_w = 1;
    if (!q.groups) q.groups = 1;
    if (x->ndim != 4 || W->ndim != 4) {
        engine_graph_fail(g, FN_EINVAL, "conv2d: input %s and weight %s must both be 4-D (NCHW, [OC, C/groups, KH, KW])",
                          SHAPE(x), SHAPE(W));
        return NULL;
    }
    if (q.stride_h < 1 || q.stride_w < 1 || q.dil_h < 1 || q.dil_w < 1 || q.groups < 1 || q.pad_h < 0 || q.pad_w < 0) {
        engine_graph_fail(g, FN_EINVAL, "conv2d: stride, dilation and groups must be >= 1 and padding >= 0");
        return NULL;
    }
    const int64_t C = x->ne[1], OC = W->ne[0];
    if (C % q.groups || OC % q.groups || W->ne[1] != C / q.groups || (b && engine_tensor_numel(b) != OC)) {
        engine_graph_fail(g, FN_EINVAL, "conv2d: input %s, weight %s, groups %d do not fit: need C and OC divisible by "
                          "groups, weight [OC, C/groups, KH, KW], bias [OC]", SHAPE(x), SHAPE(W), q.groups);
        return NULL;
    }
    int64_t OH = (x->ne[2] + 2 * q.pad_h - q.dil_h * (W->ne[2] - 1) - 1) / q.stride_h + 1;
    int64_t OW = (x->ne[3] + 2 * q.pad_w - q.dil_w * (W->ne[3] - 1) - 1) / q.stride_w + 1;
    if (x->ne[2] + 2 * q.pad_h < q.dil_h * (W->ne[2] - 1) + 1 || x->ne[3] + 2 * q.pad_w < q.dil_w * (W->ne[3] - 1) + 1 ||
        OH < 1 || OW < 1) {
        engine_graph_fail(g, FN_EINVAL, "conv2d: the kernel %s (dilation %d,%d) is larger than the padded input %s",
                          SHAPE(W), q.dil_h, q.dil_w, SHAPE(x));
        return NULL;
    }
    int64_t shape[4] = {x->ne[0], OC, OH, OW};
    engine_tensor_t *t = node(g, ENGINE_OP_CONV2D, 4, shape, x, W, b);
    if (!t)
        return NULL;
    int32_t ip[8] = {q.stride_h, q.stride_w, q.pad_h, q.pad_w, q.dil_h, q.dil_w, q.groups, q.relu != 0};
    memcpy(t->ip, ip, sizeof ip);
    return run(g, t);
}

/* ---- pooling ---- */

static engine_tensor_t *pool(engine_graph_t *g, engine_op_t op, engine_tensor_t *x, int k, int s, int p)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    if (s == 0)
        s = k;
    if (x->ndim != 4 || k < 1 || s < 1 || p < 0 || 2 * p > k || x->ne[2] + 2 * p < k || x->ne[3] + 2 * p < k) {
        engine_graph_fail(g, FN_EINVAL, "%s: input %s with kernel %d, stride %d, padding %d: need a 4-D NCHW input at "
                          "least as large as the kernel, padding <= kernel/2", engine_op_name(op), SHAPE(x), k, s, p);
        return NULL;
    }
    int64_t shape[4] = {x->ne[0], x->ne[1], (x->ne[2] + 2 * p - k) / s + 1, (x->ne[3] + 2 * p - k) / s + 1};
    engine_tensor_t *t = node(g, op, 4, shape, x, NULL, NULL);
    if (!t)
        return NULL;
    t->ip[0] = k;
    t->ip[1] = s;
    t->ip[2] = p;
    return run(g, t);
}

engine_tensor_t *engine_maxpool2d(engine_graph_t *g, engine_tensor_t *x, int k, int s, int p)
{
    return pool(g, ENGINE_OP_MAXPOOL2D, x, k, s, p);
}

engine_tensor_t *engine_avgpool2d(engine_graph_t *g, engine_tensor_t *x, int k, int s, int p)
{
    return pool(g, ENGINE_OP_AVGPOOL2D, x, k, s, p);
}

engine_tensor_t *engine_global_avgpool(engine_graph_t *g, engine_tensor_t *x)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    if (x->ndim != 4) {
        engine_graph_fail(g, FN_EINVAL, "global_avgpool: input %s must be 4-D (NCHW)", SHAPE(x));
        return NULL;
    }
    int64_t shape[2] = {x->ne[0], x->ne[1]};
    return run(g, node(g, ENGINE_OP_GLOBAL_AVGPOOL, 2, shape, x, NULL, NULL));
}

/* ---- normalization ---- */

engine_tensor_t *engine_batchnorm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *gamma, engine_tensor_t *beta,
                                  float *running_mean, float *running_var, float momentum, float eps, int training)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    if (x->ndim < 2 || (gamma && engine_tensor_numel(gamma) != x->ne[1]) || (beta && engine_tensor_numel(beta) != x->ne[1])) {
        engine_graph_fail(g, FN_EINVAL, "batchnorm: input %s needs [B, C, ...] with gamma/beta of C = %lld elements",
                          SHAPE(x), (long long)(x->ndim >= 2 ? x->ne[1] : 0));
        return NULL;
    }
    if (!training && (!running_mean || !running_var)) {
        engine_graph_fail(g, FN_EINVAL, "batchnorm: evaluation mode needs the running statistics");
        return NULL;
    }
    engine_tensor_t *t = node(g, ENGINE_OP_BATCHNORM, x->ndim, x->ne, x, gamma, beta);
    if (!t)
        return NULL;
    t->ip[0] = training != 0;
    t->fp[0] = momentum;
    t->fp[1] = eps;
    t->ext[0] = running_mean;
    t->ext[1] = running_var;
    return run(g, t);
}

engine_tensor_t *engine_layernorm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *gamma, engine_tensor_t *beta,
                                  float eps)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    int64_t D = x->ne[x->ndim - 1];
    if ((gamma && engine_tensor_numel(gamma) != D) || (beta && engine_tensor_numel(beta) != D)) {
        engine_graph_fail(g, FN_EINVAL, "layernorm: gamma/beta must have %lld elements, the last extent of %s",
                          (long long)D, SHAPE(x));
        return NULL;
    }
    engine_tensor_t *t = node(g, ENGINE_OP_LAYERNORM, x->ndim, x->ne, x, gamma, beta);
    if (t)
        t->fp[0] = eps;
    return run(g, t);
}

/* ---- activations ---- */

static engine_tensor_t *unary(engine_graph_t *g, engine_op_t op, engine_tensor_t *x)
{
    if (!x || !need_f32(g, engine_op_name(op), x, "the input"))
        return NULL;
    return run(g, node(g, op, x->ndim, x->ne, x, NULL, NULL));
}

engine_tensor_t *engine_relu(engine_graph_t *g, engine_tensor_t *x) { return unary(g, ENGINE_OP_RELU, x); }
engine_tensor_t *engine_gelu(engine_graph_t *g, engine_tensor_t *x) { return unary(g, ENGINE_OP_GELU, x); }
engine_tensor_t *engine_sigmoid(engine_graph_t *g, engine_tensor_t *x) { return unary(g, ENGINE_OP_SIGMOID, x); }
engine_tensor_t *engine_tanh(engine_graph_t *g, engine_tensor_t *x) { return unary(g, ENGINE_OP_TANH, x); }

engine_tensor_t *engine_dropout(engine_graph_t *g, engine_tensor_t *x, float p, int training)
{
    if (!x)
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        engine_graph_fail(g, FN_EINVAL, "dropout: p is %g; expected 0 <= p < 1", (double)p);
        return NULL;
    }
    engine_tensor_t *t = node(g, ENGINE_OP_DROPOUT, x->ndim, x->ne, x, NULL, NULL);
    if (!t)
        return NULL;
    t->fp[0] = p;
    t->ip[0] = training != 0;
    return run(g, t);
}

/* ---- shape and structure ---- */

engine_tensor_t *engine_reshape(engine_graph_t *g, engine_tensor_t *x, int ndim, const int64_t *shape)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    int64_t n = 1;
    for (int i = 0; i < ndim && i < ENGINE_MAX_DIMS; i++)
        n *= shape[i];
    if (ndim < 1 || ndim > ENGINE_MAX_DIMS || n != engine_tensor_numel(x)) {
        engine_graph_fail(g, FN_EINVAL, "reshape: %s has %lld elements; the new shape must have the same count",
                          SHAPE(x), (long long)engine_tensor_numel(x));
        return NULL;
    }
    engine_tensor_t *t = engine_graph_view(g, x->data, NULL, x->dtype, ndim, shape);
    if (!t)
        return NULL;
    t->op = ENGINE_OP_RESHAPE;
    t->src[0] = x;
    t->requires_grad = engine_graph_grad_enabled(g) && x->requires_grad;
    if (t->requires_grad && engine_graph_record(g, t))
        return NULL;
    return t;
}

engine_tensor_t *engine_flatten(engine_graph_t *g, engine_tensor_t *x)
{
    if (!x)
        return NULL;
    int64_t shape[2] = {x->ne[0], engine_tensor_numel(x) / x->ne[0]};
    return engine_reshape(g, x, 2, shape);
}

static engine_tensor_t *binary(engine_graph_t *g, engine_op_t op, engine_tensor_t *a, engine_tensor_t *b)
{
    char sbuf[4][64];
    if (!a || !b)
        return NULL;
    if (!engine_tensor_same_shape(a, b)) {
        engine_graph_fail(g, FN_EINVAL, "%s: shapes %s and %s differ", engine_op_name(op), SHAPE(a), SHAPE(b));
        return NULL;
    }
    return run(g, node(g, op, a->ndim, a->ne, a, b, NULL));
}

engine_tensor_t *engine_add(engine_graph_t *g, engine_tensor_t *a, engine_tensor_t *b) { return binary(g, ENGINE_OP_ADD, a, b); }
engine_tensor_t *engine_mul(engine_graph_t *g, engine_tensor_t *a, engine_tensor_t *b) { return binary(g, ENGINE_OP_MUL, a, b); }

engine_tensor_t *engine_concat(engine_graph_t *g, int n, engine_tensor_t *const *xs, int axis)
{
    char sbuf[4][64];
    if (n < 1 || !xs)
        return NULL;
    for (int k = 0; k < n; k++)
        if (!xs[k])
            return NULL;
    if (axis < 0 || axis >= xs[0]->ndim) {
        engine_graph_fail(g, FN_EINVAL, "concat: axis %d outside the %d dimensions of %s", axis, xs[0]->ndim, SHAPE(xs[0]));
        return NULL;
    }
    int64_t shape[ENGINE_MAX_DIMS];
    memcpy(shape, xs[0]->ne, sizeof shape);
    int rg = 0;
    for (int k = 1; k < n; k++) {
        int ok = xs[k]->ndim == xs[0]->ndim;
        for (int i = 0; ok && i < xs[0]->ndim; i++)
            if (i != axis && xs[k]->ne[i] != xs[0]->ne[i])
                ok = 0;
        if (!ok) {
            engine_graph_fail(g, FN_EINVAL, "concat: %s and %s differ outside axis %d", SHAPE(xs[0]), SHAPE(xs[k]), axis);
            return NULL;
        }
        shape[axis] += xs[k]->ne[axis];
    }
    for (int k = 0; k < n; k++)
        rg |= xs[k]->requires_grad;
    engine_tensor_t *t = node(g, ENGINE_OP_CONCAT, xs[0]->ndim, shape, NULL, NULL, NULL);
    if (!t)
        return NULL;
    engine_tensor_t **saved = engine_arena_alloc(engine_graph_arena(g), (size_t)n * sizeof *saved);
    if (!saved) {
        engine_graph_fail(g, FN_ENOMEM, "concat: out of memory");
        return NULL;
    }
    memcpy(saved, xs, (size_t)n * sizeof *saved);
    t->saved = saved;
    t->ip[0] = n;
    t->ip[1] = axis;
    t->requires_grad = engine_graph_grad_enabled(g) && rg;
    return run(g, t);
}

engine_tensor_t *engine_slice(engine_graph_t *g, engine_tensor_t *x, int axis, int64_t start, int64_t len)
{
    char sbuf[4][64];
    if (!x)
        return NULL;
    if (axis < 0 || axis >= x->ndim || start < 0 || len < 1 || start + len > x->ne[axis]) {
        engine_graph_fail(g, FN_EINVAL, "slice: [%lld, %lld) of axis %d is outside %s", (long long)start,
                          (long long)(start + len), axis, SHAPE(x));
        return NULL;
    }
    int64_t shape[ENGINE_MAX_DIMS];
    memcpy(shape, x->ne, sizeof shape);
    shape[axis] = len;
    engine_tensor_t *t = node(g, ENGINE_OP_SLICE, x->ndim, shape, x, NULL, NULL);
    if (!t)
        return NULL;
    t->ip[0] = axis;
    t->ip[1] = (int32_t)start;
    return run(g, t);
}

/* ---- losses ---- */

static const int64_t scalar_shape[1] = {1};

engine_tensor_t *engine_softmax_xent(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *labels, float smoothing)
{
    char sbuf[4][64];
    if (!logits || !labels)
        return NULL;
    if (logits->ndim != 2 || labels->dtype != ENGINE_U8 || engine_tensor_numel(labels) != logits->ne[0]) {
        engine_graph_fail(g, FN_EINVAL, "softmax_xent: logits %s must be [B, C] and labels %s uint8 [B]", SHAPE(logits),
                          SHAPE(labels));
        return NULL;
    }
    if (!(smoothing >= 0.0f && smoothing < 1.0f)) {
        engine_graph_fail(g, FN_EINVAL, "softmax_xent: label smoothing %g must be in [0, 1)", (double)smoothing);
        return NULL;
    }
    const uint8_t *y = labels->data;
    for (int64_t i = 0; i < logits->ne[0]; i++)
        if (y[i] >= logits->ne[1]) {
            engine_graph_fail(g, FN_EINVAL, "softmax_xent: label %d of sample %lld is not below the %lld classes", y[i],
                              (long long)i, (long long)logits->ne[1]);
            return NULL;
        }
    engine_tensor_t *t = node(g, ENGINE_OP_SOFTMAX_XENT, 1, scalar_shape, logits, NULL, NULL);
    if (!t)
        return NULL;
    t->src[1] = labels; /* not differentiable: kept out of requires_grad */
    t->fp[0] = smoothing;
    return run(g, t);
}

static engine_tensor_t *pair_loss(engine_graph_t *g, engine_op_t op, engine_tensor_t *a, engine_tensor_t *b)
{
    char sbuf[4][64];
    if (!a || !b)
        return NULL;
    if (!engine_tensor_same_shape(a, b) || a->dtype != ENGINE_F32 || b->dtype != ENGINE_F32) {
        engine_graph_fail(g, FN_EINVAL, "%s: shapes %s and %s must be equal (float32)", engine_op_name(op), SHAPE(a), SHAPE(b));
        return NULL;
    }
    return node(g, op, 1, scalar_shape, a, b, NULL);
}

engine_tensor_t *engine_sigmoid_bce(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets)
{
    return run(g, pair_loss(g, ENGINE_OP_SIGMOID_BCE, logits, targets));
}

engine_tensor_t *engine_mse(engine_graph_t *g, engine_tensor_t *pred, engine_tensor_t *target)
{
    return run(g, pair_loss(g, ENGINE_OP_MSE, pred, target));
}

engine_tensor_t *engine_softmax_xent_soft(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets)
{
    return engine_softmax_xent_soft_smoothed(g, logits, targets, 0.0f);
}

engine_tensor_t *engine_softmax_xent_soft_smoothed(engine_graph_t *g, engine_tensor_t *logits, engine_tensor_t *targets,
                                                   float smoothing)
{
    if (!logits || !targets)
        return NULL;
    if (logits->ndim != 2) {
        engine_graph_fail(g, FN_EINVAL, "softmax_xent_soft: logits must be [B, C]");
        return NULL;
    }
    if (!(smoothing >= 0.0f && smoothing < 1.0f)) {
        engine_graph_fail(g, FN_EINVAL, "softmax_xent_soft: label smoothing %g must be in [0, 1)", (double)smoothing);
        return NULL;
    }
    engine_tensor_t *t = pair_loss(g, ENGINE_OP_SOFTMAX_XENT_SOFT, logits, targets);
    if (!t)
        return NULL;
    t->requires_grad = engine_graph_grad_enabled(g) && logits->requires_grad;
    t->fp[0] = smoothing;
    return run(g, t);
}

engine_tensor_t *engine_kl_div(engine_graph_t *g, engine_tensor_t *student, engine_tensor_t *teacher, float T)
{
    if (!student || !teacher)
        return NULL;
    if (student->ndim != 2 || !(T > 0.0f)) {
        engine_graph_fail(g, FN_EINVAL, "kl_div: logits must be [B, C] and the temperature > 0 (got %g)", (double)T);
        return NULL;
    }
    engine_tensor_t *t = pair_loss(g, ENGINE_OP_KL_DIV, student, teacher);
    if (!t)
        return NULL;
    t->requires_grad = engine_graph_grad_enabled(g) && student->requires_grad;
    t->fp[0] = T;
    return run(g, t);
}

engine_tensor_t *engine_distill_loss(engine_graph_t *g, engine_tensor_t *student, engine_tensor_t *teacher,
                                     engine_tensor_t *labels, float T, float alpha, float smoothing)
{
    char sbuf[4][64];
    if (!student || !teacher || !labels)
        return NULL;
    if (student->ndim != 2 || student->dtype != ENGINE_F32 || teacher->dtype != ENGINE_F32 ||
        !engine_tensor_same_shape(student, teacher)) {
        engine_graph_fail(g, FN_EINVAL, "distill: student %s and teacher %s logits must both be float32 [B, C]",
                          SHAPE(student), SHAPE(teacher));
        return NULL;
    }
    const int hard = labels->dtype == ENGINE_U8 && labels->ndim == 1 && labels->ne[0] == student->ne[0];
    if (!hard && !(labels->dtype == ENGINE_F32 && engine_tensor_same_shape(labels, student))) {
        engine_graph_fail(g, FN_EINVAL, "distill: labels %s must be uint8 [B] or float32 soft targets [B, C] (B, C of %s)",
                          SHAPE(labels), SHAPE(student));
        return NULL;
    }
    if (!(T > 0.0f && T <= 1e4f) || !(alpha >= 0.0f && alpha <= 1.0f) || !(smoothing >= 0.0f && smoothing < 1.0f)) {
        engine_graph_fail(g, FN_EINVAL,
                          "distill: temperature %g must be in (0, 1e4], alpha %g in [0, 1], label smoothing %g in [0, 1)",
                          (double)T, (double)alpha, (double)smoothing);
        return NULL;
    }
    if (hard) {
        const uint8_t *y = labels->data;
        for (int64_t i = 0; i < student->ne[0]; i++)
            if (y[i] >= student->ne[1]) {
                engine_graph_fail(g, FN_EINVAL, "distill: label %d of sample %lld is not below the %lld classes", y[i],
                                  (long long)i, (long long)student->ne[1]);
                return NULL;
            }
    }
    engine_tensor_t *t = node(g, ENGINE_OP_DISTILL, 1, scalar_shape, student, NULL, NULL);
    if (!t)
        return NULL;
    t->src[1] = teacher; /* neither gets a gradient: kept out of requires_grad */
    t->src[2] = labels;
    t->fp[0] = T;
    t->fp[1] = alpha;
    t->fp[2] = smoothing;
    return run(g, t);
}

engine_tensor_t *engine_fake_quant(engine_graph_t *g, engine_tensor_t *x, float scale, int zero_point)
{
    if (!x)
        return NULL;
    if (x->dtype != ENGINE_F32 || !(scale > 0.0f && isfinite(scale)) || zero_point < 0 || zero_point > 255) {
        engine_graph_fail(g, FN_EINVAL, "fake_quant: needs float32 input, a finite scale > 0 (got %g) and a zero point "
                          "in [0, 255] (got %d)", (double)scale, zero_point);
        return NULL;
    }
    engine_tensor_t *t = node(g, ENGINE_OP_FAKEQUANT, x->ndim, x->ne, x, NULL, NULL);
    if (!t)
        return NULL;
    t->fp[0] = scale;
    t->fp[1] = (float)zero_point;
    return run(g, t);
}

double engine_op_flops(const engine_tensor_t *t)
{
    switch (t->op) {
    case ENGINE_OP_LINEAR:
        return 2.0 * (double)engine_tensor_numel(t) * (double)t->src[1]->ne[1];
    case ENGINE_OP_CONV2D: {
        const engine_tensor_t *W = t->src[1];
        return 2.0 * (double)engine_tensor_numel(t) * (double)(W->ne[1] * W->ne[2] * W->ne[3]);
    }
    default:
        return (double)engine_tensor_numel(t);
    }
}
