/* CPU kernels: linear, and cpu_sgemm, the pool-parallel matrix product the CPU kernels share. */
#include <cblas.h>
#include <string.h>

#include "engine/ops_cpu.h"

/* Below this many multiply-adds a product runs in one piece: waking a worker costs more. */
#define GEMM_PAR_MACS ((double)(1 << 20))
/* Blocks are multiples of this many rows/columns (the sgemm kernels' register tile). */
#define GEMM_ALIGN 16

typedef struct {
    int ta, tb, M, N, K, by_rows, parts;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
} gemm_job_t;

/* Block p of n split into `parts` multiples of GEMM_ALIGN (the last takes the rest). */
static void block(int n, int parts, int p, int *lo, int *hi)
{
    int units = (n + GEMM_ALIGN - 1) / GEMM_ALIGN;
    *lo = (int)((long)units * p / parts) * GEMM_ALIGN;
    *hi = (int)((long)units * (p + 1) / parts) * GEMM_ALIGN;
    if (*lo > n)
        *lo = n;
    if (*hi > n)
        *hi = n;
}

static void gemm_part(void *ctx, int64_t begin, int64_t end)
{
    const gemm_job_t *j = ctx;
    for (int64_t p = begin; p < end; p++) {
        int lo, hi;
        block(j->by_rows ? j->M : j->N, j->parts, (int)p, &lo, &hi);
        if (lo >= hi)
            continue;
        const float *A = j->A, *B = j->B;
        float *C = j->C;
        int M = j->M, N = j->N;
        if (j->by_rows) {
            A += j->ta ? (size_t)lo : (size_t)lo * j->lda;
            C += (size_t)lo * j->ldc;
            M = hi - lo;
        } else {
            B += j->tb ? (size_t)lo * j->ldb : (size_t)lo;
            C += lo;
            N = hi - lo;
        }
        cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, M, N, j->K,
                    j->alpha, A, j->lda, B, j->ldb, j->beta, C, j->ldc);
    }
}

void cpu_sgemm(engine_graph_t *g, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    gemm_job_t j = {trans_a, trans_b, M, N, K, M > N, 1, alpha, beta, A, B, C, lda, ldb, ldc};
    int threads = engine_threadpool_size(engine_graph_pool(g));
    int units = ((j.by_rows ? M : N) + GEMM_ALIGN - 1) / GEMM_ALIGN;
    if ((double)M * N * K >= GEMM_PAR_MACS)
        j.parts = threads < units ? threads : units;
    engine_parallel_blas(engine_graph_pool(g), j.parts, 1, gemm_part, &j);
}

void cpu_linear_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *W = t->src[1], *b = t->src[2];
    const int OUT = (int)W->ne[0], IN = (int)W->ne[1];
    const int M = (int)(engine_tensor_numel(x) / IN);
    float *y = t->data;
    if (b)
        for (int r = 0; r < M; r++)
            memcpy(y + (size_t)r * OUT, b->data, (size_t)OUT * sizeof *y);
    if (!cpu_dense_small_fwd(g, M, OUT, IN, x->data, W->data, y, b != NULL))
        cpu_sgemm(g, 0, 1, M, OUT, IN, 1.0f, x->data, IN, W->data, IN, b ? 1.0f : 0.0f, y, OUT);
}

void cpu_linear_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *W = t->src[1];
    const int OUT = (int)W->ne[0], IN = (int)W->ne[1];
    const int M = (int)(engine_tensor_numel(x) / IN);
    const float *dy = t->grad;
    int fresh;
    float *dx = cpu_src_grad_out(g, t, 0, &fresh), *dW = cpu_src_grad(g, t, 1), *db = cpu_src_grad(g, t, 2);
    if (dW)
        cpu_sgemm(g, 1, 0, OUT, IN, M, 1.0f, dy, OUT, x->data, IN, 1.0f, dW, IN);
    if (db)
        for (int r = 0; r < M; r++)
            for (int o = 0; o < OUT; o++)
                db[o] += dy[(size_t)r * OUT + o];
    if (dx && !cpu_dense_small_dx(g, M, OUT, IN, dy, W->data, dx, !fresh))
        cpu_sgemm(g, 0, 0, M, IN, OUT, 1.0f, dy, OUT, W->data, IN, fresh ? 0.0f : 1.0f, dx, IN);
}
