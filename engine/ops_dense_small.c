/* CPU kernels: the products of a linear layer at small batches (M <= DENSE_SMALL_M_FWD rows),
 * in AVX-512 when the CPU has it (checked at run time; the build targets baseline x86-64).
 *
 * At batch 10 the FedAvg CNN's 3136x512 layer is a [10, 3136] x [3136, 512] product: OpenBLAS
 * first packs the whole 6.4 MB weight matrix into its panel layout, which costs more than the
 * product itself (0.75 ms a call against 0.38 ms here, one core, measured in one run), and the
 * backward's input gradient packs it again. Here the weights are read once, in place:
 *  - y = x W^T: tiles of up to 5 rows of x against 4 rows of W, 20 accumulators of 16 lanes
 *    over the whole K, one horizontal sum per output at the end;
 *  - dx = dy W: W streamed 8 rows at a time, dx held in L1 a chunk of 512 columns at a time.
 * Each output element is summed in a fixed order whatever the split over threads, so results
 * are reproducible (they differ from sgemm's in rounding only). Tests: test_engine_dense_small,
 * against a double-precision product and the sgemm path (FEDNAS_DENSE_PORTABLE=1). */
#include <stdlib.h>
#include <string.h>

#include "engine/ops_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define SK_JB 4
/* MB rows of x (a constant after inlining) against SK_JB rows of W from j (jb valid). */
__attribute__((target("avx512f"), always_inline)) static inline void sk_tile(const int MB, int K, const float *x,
                                                                             int ldx, const float *W, int ldw, float *y,
                                                                             int ldy, int jb, int add)
{
    __m512 acc[MB][SK_JB];
#pragma GCC unroll 8
    for (int a = 0; a < MB; a++)
#pragma GCC unroll 4
        for (int b = 0; b < SK_JB; b++)
            acc[a][b] = _mm512_setzero_ps();
    /* rows past jb read row 0 again (their sums are dropped) */
    const float *w0 = W, *w1 = W + (size_t)(jb > 1) * ldw, *w2 = W + (size_t)(jb > 2) * 2 * ldw,
                *w3 = W + (size_t)(jb > 3) * 3 * ldw;
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m512 v0 = _mm512_loadu_ps(w0 + k), v1 = _mm512_loadu_ps(w1 + k), v2 = _mm512_loadu_ps(w2 + k),
                     v3 = _mm512_loadu_ps(w3 + k);
#pragma GCC unroll 8
        for (int a = 0; a < MB; a++) {
            const __m512 xv = _mm512_loadu_ps(x + (size_t)a * ldx + k);
            acc[a][0] = _mm512_fmadd_ps(xv, v0, acc[a][0]);
            acc[a][1] = _mm512_fmadd_ps(xv, v1, acc[a][1]);
            acc[a][2] = _mm512_fmadd_ps(xv, v2, acc[a][2]);
            acc[a][3] = _mm512_fmadd_ps(xv, v3, acc[a][3]);
        }
    }
    if (k < K) {
        const __mmask16 msk = (__mmask16)((1u << (K - k)) - 1);
        const __m512 v0 = _mm512_maskz_loadu_ps(msk, w0 + k), v1 = _mm512_maskz_loadu_ps(msk, w1 + k),
                     v2 = _mm512_maskz_loadu_ps(msk, w2 + k), v3 = _mm512_maskz_loadu_ps(msk, w3 + k);
#pragma GCC unroll 8
        for (int a = 0; a < MB; a++) {
            const __m512 xv = _mm512_maskz_loadu_ps(msk, x + (size_t)a * ldx + k);
            acc[a][0] = _mm512_fmadd_ps(xv, v0, acc[a][0]);
            acc[a][1] = _mm512_fmadd_ps(xv, v1, acc[a][1]);
            acc[a][2] = _mm512_fmadd_ps(xv, v2, acc[a][2]);
            acc[a][3] = _mm512_fmadd_ps(xv, v3, acc[a][3]);
        }
    }
#pragma GCC unroll 8
    for (int a = 0; a < MB; a++)
        for (int b = 0; b < jb; b++) {
            float *o = y + (size_t)a * ldy + b;
            const float v = _mm512_reduce_add_ps(acc[a][b]);
            *o = add ? *o + v : v;
        }
}

__attribute__((target("avx512f"))) static void dense_xwt_512(int M, int K, const float *x, int ldx, const float *W,
                                                              int ldw, float *y, int ldy, int j0, int j1, int add)
{
    for (int j = j0; j < j1; j += SK_JB) {
        const int jb = j1 - j < SK_JB ? j1 - j : SK_JB;
        const float *Wj = W + (size_t)j * ldw;
        int m = 0;
        for (; m + 5 <= M; m += 5)
            sk_tile(5, K, x + (size_t)m * ldx, ldx, Wj, ldw, y + (size_t)m * ldy + j, ldy, jb, add);
        switch (M - m) {
        case 4: sk_tile(4, K, x + (size_t)m * ldx, ldx, Wj, ldw, y + (size_t)m * ldy + j, ldy, jb, add); break;
        case 3: sk_tile(3, K, x + (size_t)m * ldx, ldx, Wj, ldw, y + (size_t)m * ldy + j, ldy, jb, add); break;
        case 2: sk_tile(2, K, x + (size_t)m * ldx, ldx, Wj, ldw, y + (size_t)m * ldy + j, ldy, jb, add); break;
        case 1: sk_tile(1, K, x + (size_t)m * ldx, ldx, Wj, ldw, y + (size_t)m * ldy + j, ldy, jb, add); break;
        default: break;
        }
    }
}

/* dx[m, k] (+)= sum_j dy[m, j] W[j, k] for m < M and k in [k0, k1): W streamed a row block
 * at a time (8 rows, contiguous), dx held in L1 a chunk of 512 columns at a time. */
#define SK_DX_KC 512
__attribute__((target("avx512f"))) static void dense_dx_512(int M, int N, const float *dy, int lddy, const float *W,
                                                             int ldw, float *dx, int lddx, int k0, int k1, int add)
{
    for (int kc = k0; kc < k1; kc += SK_DX_KC) {
        const int ke = k1 - kc < SK_DX_KC ? k1 : kc + SK_DX_KC;
        if (!add)
            for (int m = 0; m < M; m++)
                memset(dx + (size_t)m * lddx + kc, 0, (size_t)(ke - kc) * sizeof *dx);
        int j = 0;
        for (; j + 8 <= N; j += 8) {
            const float *w = W + (size_t)j * ldw;
            for (int m = 0; m < M; m++) {
                const float *g = dy + (size_t)m * lddy + j;
                const __m512 g0 = _mm512_set1_ps(g[0]), g1 = _mm512_set1_ps(g[1]), g2 = _mm512_set1_ps(g[2]),
                             g3 = _mm512_set1_ps(g[3]), g4 = _mm512_set1_ps(g[4]), g5 = _mm512_set1_ps(g[5]),
                             g6 = _mm512_set1_ps(g[6]), g7 = _mm512_set1_ps(g[7]);
                float *o = dx + (size_t)m * lddx;
                for (int k = kc; k < ke; k += 16) {
                    const __mmask16 mk = ke - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ke - k)) - 1);
                    __m512 a = _mm512_maskz_loadu_ps(mk, o + k);
                    a = _mm512_fmadd_ps(g0, _mm512_maskz_loadu_ps(mk, w + k), a);
                    a = _mm512_fmadd_ps(g1, _mm512_maskz_loadu_ps(mk, w + ldw + k), a);
                    a = _mm512_fmadd_ps(g2, _mm512_maskz_loadu_ps(mk, w + 2 * (size_t)ldw + k), a);
                    a = _mm512_fmadd_ps(g3, _mm512_maskz_loadu_ps(mk, w + 3 * (size_t)ldw + k), a);
                    a = _mm512_fmadd_ps(g4, _mm512_maskz_loadu_ps(mk, w + 4 * (size_t)ldw + k), a);
                    a = _mm512_fmadd_ps(g5, _mm512_maskz_loadu_ps(mk, w + 5 * (size_t)ldw + k), a);
                    a = _mm512_fmadd_ps(g6, _mm512_maskz_loadu_ps(mk, w + 6 * (size_t)ldw + k), a);
                    a = _mm512_fmadd_ps(g7, _mm512_maskz_loadu_ps(mk, w + 7 * (size_t)ldw + k), a);
                    _mm512_mask_storeu_ps(o + k, mk, a);
                }
            }
        }
        for (; j < N; j++) {
            const float *w = W + (size_t)j * ldw;
            for (int m = 0; m < M; m++) {
                const __m512 g0 = _mm512_set1_ps(dy[(size_t)m * lddy + j]);
                float *o = dx + (size_t)m * lddx;
                for (int k = kc; k < ke; k += 16) {
                    const __mmask16 mk = ke - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ke - k)) - 1);
                    _mm512_mask_storeu_ps(o + k, mk, _mm512_fmadd_ps(g0, _mm512_maskz_loadu_ps(mk, w + k),
                                                                     _mm512_maskz_loadu_ps(mk, o + k)));
                }
            }
        }
    }
}

typedef struct {
    int M, K, N, add, parts;
    const float *a, *W;
    float *out;
    int lda, ldw, ldo;
    int dx; /* 0: out = a W^T ([M, N], split over N); 1: out = a W ([M, K], split over K) */
} dense_job_t;

static void dense_part(void *ctx, int64_t begin, int64_t end)
{
    const dense_job_t *j = ctx;
    const int n = j->dx ? j->K : j->N, unit = j->dx ? 16 : SK_JB, units = (n + unit - 1) / unit;
    for (int64_t p = begin; p < end; p++) {
        int lo = (int)((long)units * p / j->parts) * unit, hi = (int)((long)units * (p + 1) / j->parts) * unit;
        hi = hi < n ? hi : n;
        if (lo >= hi)
            continue;
        if (j->dx)
            dense_dx_512(j->M, j->N, j->a, j->lda, j->W, j->ldw, j->out, j->ldo, lo, hi, j->add);
        else
            dense_xwt_512(j->M, j->K, j->a, j->lda, j->W, j->ldw, j->out, j->ldo, lo, hi, j->add);
    }
}

static int dense_avx512(void)
{
    const char *e = getenv("FEDNAS_DENSE_PORTABLE");
    return !(e && atoi(e) > 0) && __builtin_cpu_supports("avx512f");
}

static void dense_run(engine_graph_t *g, dense_job_t *j)
{
    const int threads = engine_threadpool_size(engine_graph_pool(g));
    j->parts = (double)j->M * j->N * j->K >= (double)(1 << 20) ? threads : 1;
    engine_parallel_for(engine_graph_pool(g), j->parts, 1, dense_part, j);
}

int cpu_dense_small_fwd(engine_graph_t *g, int M, int N, int K, const float *x, const float *W, float *y, int add)
{
    if (M > DENSE_SMALL_M_FWD || (double)N * K < DENSE_SMALL_MIN_W || !dense_avx512())
        return 0;
    dense_job_t j = {.M = M, .K = K, .N = N, .add = add, .a = x, .W = W, .out = y, .lda = K, .ldw = K, .ldo = N};
    dense_run(g, &j);
    return 1;
}

int cpu_dense_small_dx(engine_graph_t *g, int M, int N, int K, const float *dy, const float *W, float *dx, int add)
{
    if (M > DENSE_SMALL_M_DX || (double)N * K < DENSE_SMALL_MIN_W || !dense_avx512())
        return 0;
    dense_job_t j = {.M = M, .K = K, .N = N, .add = add, .a = dy, .W = W, .out = dx, .lda = N, .ldw = K, .ldo = K,
                     .dx = 1};
    dense_run(g, &j);
    return 1;
}
#else
int cpu_dense_small_fwd(engine_graph_t *g, int M, int N, int K, const float *x, const float *W, float *y, int add)
{
    (void)g, (void)M, (void)N, (void)K, (void)x, (void)W, (void)y, (void)add;
    return 0;
}

int cpu_dense_small_dx(engine_graph_t *g, int M, int N, int K, const float *dy, const float *W, float *dx, int add)
{
    (void)g, (void)M, (void)N, (void)K, (void)dy, (void)W, (void)dx, (void)add;
    return 0;
}
#endif
