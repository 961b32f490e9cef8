/* ops_cpu: internal to the engine. The CPU kernels, one pair (forward, backward) per op,
 * defined in ops_<family>.c and gathered into the CPU backend's table in ops.c. */
#ifndef FEDNAS_ENGINE_OPS_CPU_H
#define FEDNAS_ENGINE_OPS_CPU_H

#include "engine/ops.h"

#define CPU_KERNELS(name) \
    void cpu_##name##_fwd(engine_graph_t *g, engine_tensor_t *t); \
    void cpu_##name##_bwd(engine_graph_t *g, engine_tensor_t *t);

CPU_KERNELS(linear)
CPU_KERNELS(conv2d)
CPU_KERNELS(maxpool2d)
CPU_KERNELS(avgpool2d)
CPU_KERNELS(global_avgpool)
CPU_KERNELS(batchnorm)
CPU_KERNELS(layernorm)
CPU_KERNELS(relu)
CPU_KERNELS(gelu)
CPU_KERNELS(sigmoid)
CPU_KERNELS(tanh)
CPU_KERNELS(dropout)
CPU_KERNELS(reshape)
CPU_KERNELS(add)
CPU_KERNELS(mul)
CPU_KERNELS(concat)
CPU_KERNELS(slice)
CPU_KERNELS(softmax_xent)
CPU_KERNELS(sigmoid_bce)
CPU_KERNELS(mse)
CPU_KERNELS(kl_div)
CPU_KERNELS(softmax_xent_soft)
CPU_KERNELS(distill)
CPU_KERNELS(fakequant)

/* Gradient of src i of t when it needs one (allocated on first use), else NULL. */
static inline float *cpu_src_grad(engine_graph_t *g, engine_tensor_t *t, int i)
{
    engine_tensor_t *s = t->src[i];
    return s && s->requires_grad ? engine_graph_grad(g, s) : NULL;
}

/* The gradient of src i for a kernel that will write every element of it, or NULL when src i
 * needs none. When no other op has written that gradient yet, it is allocated uninitialised and
 * *fresh is set: the kernel then stores instead of adding, which saves a zeroing pass and a read
 * over the whole tensor. Otherwise *fresh is 0 and the kernel adds (gradients accumulate). */
static inline float *cpu_src_grad_out(engine_graph_t *g, engine_tensor_t *t, int i, int *fresh)
{
    engine_tensor_t *s = t->src[i];
    *fresh = 0;
    if (!s || !s->requires_grad)
        return NULL;
    if (!s->grad) {
        s->grad = engine_arena_alloc(engine_graph_arena(g), (size_t)engine_tensor_numel(s) * sizeof(float));
        if (!s->grad) {
            engine_graph_fail(g, FN_ENOMEM, "out of memory for a gradient");
            return NULL;
        }
        *fresh = 1;
    }
    return s->grad;
}

/* C = alpha op(A) op(B) + beta C (row-major; trans_a/trans_b select op = transpose), split into
 * blocks of rows or of columns over the graph's pool, one single-threaded sgemm per block
 * (engine_parallel_blas). The split depends only on the shape and the pool size, so a result
 * is reproducible for a fixed thread count. beta 0 never reads C (it may be uninitialised). */
void cpu_sgemm(engine_graph_t *g, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* A linear layer's products at small batches without packing the weights (ops_dense_small.c):
 * y = x W^T ([M, K] x [N, K]^T, y [M, N]) and dx = dy W ([M, N] x [N, K]), stored or, with add,
 * added to the output. They return 1 when they did the product, 0 when it is not theirs (more
 * rows than the kernel is faster for, a small matrix, a CPU without AVX-512, or
 * FEDNAS_DENSE_PORTABLE=1): the caller then runs cpu_sgemm. */
#define DENSE_SMALL_M_FWD 16
#define DENSE_SMALL_M_DX 10
#define DENSE_SMALL_MIN_W 65536.0 /* N * K below this: the packing is cheap, sgemm */
int cpu_dense_small_fwd(engine_graph_t *g, int M, int N, int K, const float *x, const float *W, float *y, int add);
int cpu_dense_small_dx(engine_graph_t *g, int M, int N, int K, const float *dy, const float *W, float *dx, int add);

/* Elementwise loops go parallel above this many elements. */
#define CPU_PAR_GRAIN 16384

#endif
