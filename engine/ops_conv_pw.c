/* Pointwise (1x1, stride 1, no padding, one group) convolutions in AVX-512: the forward and the
 * input gradient of such a conv are plain products over channels x pixels, Y [M][P] = A [M][K]
 * X [K][P] per sample, with M and K the small channel counts of NAS-style nets (8-128) and P a
 * sample's pixels (49-784 at batch 10 on Fashion-MNIST). OpenBLAS packs both operands and
 * zeroes its output for each such call, which at these sizes costs as much as the product; here
 * a tile of 6 output rows x 4 vectors of 16 pixels keeps 24 accumulators over the whole K, each
 * step loads 4 pixel vectors of one input row and broadcasts 6 weights (6 rows against 4:
 * 1.00-1.08x on the depthwise-separable net's 1x1 layers, one core, best of 6 alternating runs,
 * load 6), and the epilogue (bias, ReLU and its bit mask, or the add into an existing gradient)
 * runs on the registers before the one store. The last vector of a row is a masked load and store: no tail loop, no padding.
 * The weight gradient, dW [OC][C] += dy [OC][P] x^T summed over a chunk's samples (conv_pw_dw),
 * keeps 4 x 4 vector sums along the pixels and reduces all 16 across lanes together at the end;
 * ops_conv.c gives it the ops the direct weight gradient (ops_conv_direct.c, from 128 input
 * channels) does not take.
 * FEDNAS_CONV_PW=0 sends these ops back to sgemm (A/B runs, tests). */
#include "engine/ops_conv.h"

int conv_pw_usable(const conv_dims_t *d)
{
    const char *e = getenv("FEDNAS_CONV_PW");
    if ((e && *e && atoi(e) <= 0) || !conv_use_avx512() || conv_force_im2col())
        return 0;
    return d->KH == 1 && d->KW == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0 && d->G == 1;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define PW_NV 4 /* 16-pixel vectors per tile */
#define PW_MR 6 /* output rows per tile: 24 accumulators */

/* The epilogue of one accumulator: bias, ReLU with its 16 mask bits (pixel q = p0 + 16v on),
 * the masked store. */
__attribute__((target("avx512f"), always_inline)) static inline void pw_out(__m512 r, __mmask16 km, const float *bias,
                                                                           int relu, uint8_t *mrow, int q, int P,
                                                                           float *y)
{
    if (bias)
        r = _mm512_add_ps(r, _mm512_set1_ps(*bias));
    if (relu) {
        r = _mm512_max_ps(r, _mm512_setzero_ps());
        const __mmask16 pos = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_GT_OQ) & km;
        mrow[q / 8] = (uint8_t)pos;
        if (P - q > 8)
            mrow[q / 8 + 1] = (uint8_t)(pos >> 8);
    }
    _mm512_mask_storeu_ps(y, km, r);
}

/* One tile: rows r[0..5] of A and Y (a short last tile repeats its last row: each copy computes
 * the same value from the same inputs, so the repeated stores agree), NV vectors from p0 with
 * lane masks k0..k3, over all K. The accumulators are named variables, not an array: GCC keeps
 * an array of vectors in memory and stores it back on every step. */
#define PW_INIT(m, v) (NV > v ? (add ? _mm512_maskz_loadu_ps(k##v, y##m + 16 * v) : _mm512_setzero_ps()) : z)
#define PW_ROW(m)                                                                                                      \
    do {                                                                                                               \
        const __m512 a = _mm512_set1_ps(a##m[k]);                                                                      \
        c##m##0 = _mm512_fmadd_ps(a, x0, c##m##0);                                                                     \
        if (NV > 1)                                                                                                    \
            c##m##1 = _mm512_fmadd_ps(a, x1, c##m##1);                                                                 \
        if (NV > 2)                                                                                                    \
            c##m##2 = _mm512_fmadd_ps(a, x2, c##m##2);                                                                 \
        if (NV > 3)                                                                                                    \
            c##m##3 = _mm512_fmadd_ps(a, x3, c##m##3);                                                                 \
    } while (0)
#define PW_STORE(m)                                                                                                    \
    do {                                                                                                               \
        const float *bm = bias ? bias + rows[m] : NULL;                                                                \
        uint8_t *mr = relu ? mask + (size_t)rows[m] * mstride : NULL;                                                  \
        pw_out(c##m##0, k0, bm, relu, mr, p0, P, y##m);                                                                \
        if (NV > 1)                                                                                                    \
            pw_out(c##m##1, k1, bm, relu, mr, p0 + 16, P, y##m + 16);                                                  \
        if (NV > 2)                                                                                                    \
            pw_out(c##m##2, k2, bm, relu, mr, p0 + 32, P, y##m + 32);                                                  \
        if (NV > 3)                                                                                                    \
            pw_out(c##m##3, k3, bm, relu, mr, p0 + 48, P, y##m + 48);                                                  \
    } while (0)

__attribute__((target("avx512f"), always_inline)) static inline void
pw_tile(const int NV, const int *rows, __mmask16 k0, __mmask16 k1, __mmask16 k2, __mmask16 k3, int K, const float *A,
        int lda, const float *X, int ldx, const float *bias, int relu, uint8_t *mask, size_t mstride, float *Y,
        int ldy, int add, int p0, int P)
{
    const __m512 z = _mm512_setzero_ps();
    const float *a0 = A + (size_t)rows[0] * lda, *a1 = A + (size_t)rows[1] * lda, *a2 = A + (size_t)rows[2] * lda,
                *a3 = A + (size_t)rows[3] * lda, *a4 = A + (size_t)rows[4] * lda, *a5 = A + (size_t)rows[5] * lda;
    float *y0 = Y + (size_t)rows[0] * ldy + p0, *y1 = Y + (size_t)rows[1] * ldy + p0,
          *y2 = Y + (size_t)rows[2] * ldy + p0, *y3 = Y + (size_t)rows[3] * ldy + p0,
          *y4 = Y + (size_t)rows[4] * ldy + p0, *y5 = Y + (size_t)rows[5] * ldy + p0;
    __m512 c00 = PW_INIT(0, 0), c01 = PW_INIT(0, 1), c02 = PW_INIT(0, 2), c03 = PW_INIT(0, 3);
    __m512 c10 = PW_INIT(1, 0), c11 = PW_INIT(1, 1), c12 = PW_INIT(1, 2), c13 = PW_INIT(1, 3);
    __m512 c20 = PW_INIT(2, 0), c21 = PW_INIT(2, 1), c22 = PW_INIT(2, 2), c23 = PW_INIT(2, 3);
    __m512 c30 = PW_INIT(3, 0), c31 = PW_INIT(3, 1), c32 = PW_INIT(3, 2), c33 = PW_INIT(3, 3);
    __m512 c40 = PW_INIT(4, 0), c41 = PW_INIT(4, 1), c42 = PW_INIT(4, 2), c43 = PW_INIT(4, 3);
    __m512 c50 = PW_INIT(5, 0), c51 = PW_INIT(5, 1), c52 = PW_INIT(5, 2), c53 = PW_INIT(5, 3);
    const float *xk = X + p0;
    for (int k = 0; k < K; k++, xk += ldx) {
        /* every vector but the tile's last is full: plain loads, one mask register in the loop */
        const __m512 x0 = NV > 1 ? _mm512_loadu_ps(xk) : _mm512_maskz_loadu_ps(k0, xk);
        const __m512 x1 = NV > 2 ? _mm512_loadu_ps(xk + 16) : NV > 1 ? _mm512_maskz_loadu_ps(k1, xk + 16) : z;
        const __m512 x2 = NV > 3 ? _mm512_loadu_ps(xk + 32) : NV > 2 ? _mm512_maskz_loadu_ps(k2, xk + 32) : z;
        const __m512 x3 = NV > 3 ? _mm512_maskz_loadu_ps(k3, xk + 48) : z;
        PW_ROW(0);
        PW_ROW(1);
        PW_ROW(2);
        PW_ROW(3);
        PW_ROW(4);
        PW_ROW(5);
    }
    PW_STORE(0);
    PW_STORE(1);
    PW_STORE(2);
    PW_STORE(3);
    PW_STORE(4);
    PW_STORE(5);
}

__attribute__((target("avx512f"))) void conv_pw_gemm(int M, int K, int P, const float *A, int lda, const float *X,
                                                      int ldx, const float *bias, int relu, uint8_t *mask,
                                                      size_t mstride, float *Y, int ldy, int add)
{
    for (int p0 = 0; p0 < P; p0 += 16 * PW_NV) {
        const int left = P - p0, nv = left >= 16 * PW_NV ? PW_NV : (left + 15) / 16;
        __mmask16 km[PW_NV];
        for (int v = 0; v < PW_NV; v++) {
            const int c = left - 16 * v;
            km[v] = c >= 16 ? (__mmask16)0xffff : c > 0 ? (__mmask16)((1u << c) - 1u) : (__mmask16)0;
        }
        for (int m = 0; m < M; m += PW_MR) {
            int rows[PW_MR];
            for (int i = 0; i < PW_MR; i++)
                rows[i] = m + i < M ? m + i : M - 1;
            switch (nv) {
            case 4:
                pw_tile(4, rows, km[0], km[1], km[2], km[3], K, A, lda, X, ldx, bias, relu, mask, mstride, Y, ldy,
                        add, p0, P);
                break;
            case 3:
                pw_tile(3, rows, km[0], km[1], km[2], km[3], K, A, lda, X, ldx, bias, relu, mask, mstride, Y, ldy,
                        add, p0, P);
                break;
            case 2:
                pw_tile(2, rows, km[0], km[1], km[2], km[3], K, A, lda, X, ldx, bias, relu, mask, mstride, Y, ldy,
                        add, p0, P);
                break;
            default:
                pw_tile(1, rows, km[0], km[1], km[2], km[3], K, A, lda, X, ldx, bias, relu, mask, mstride, Y, ldy,
                        add, p0, P);
                break;
            }
        }
    }
}

/* The weight gradient's tile: 4 rows of dy (output channels, rows dm[]) x 4 rows of x (input
 * channels, rows xk[]) as 16 vector sums over the pixels of the n samples, then reduced across
 * lanes and added to dW where the row pair exists (a short tile repeats its last row, and a
 * repeated sum must not be added twice). */
#define PW_DW_ROW(i)                                                                                                   \
    do {                                                                                                               \
        const __m512 d = last ? _mm512_maskz_loadu_ps(kt, dp##i + p) : _mm512_loadu_ps(dp##i + p);                     \
        s##i##0 = _mm512_fmadd_ps(d, x0, s##i##0);                                                                     \
        s##i##1 = _mm512_fmadd_ps(d, x1, s##i##1);                                                                     \
        s##i##2 = _mm512_fmadd_ps(d, x2, s##i##2);                                                                     \
        s##i##3 = _mm512_fmadd_ps(d, x3, s##i##3);                                                                     \
    } while (0)
/* Lane i of the result: the sum of the lanes of a_i (16 vectors in, one out): pairs, then
 * quads within 128-bit blocks, then across blocks; about 30 shuffles and adds where 16 separate
 * reductions take ~10 each. Block i of the result is a_{4i}..a_{4i+3}'s sums. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 pw_pair(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

__attribute__((target("avx512f"), always_inline)) static inline __m512 pw_quad(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}

__attribute__((target("avx512f"), always_inline)) static inline __m512 pw_blocks(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

__attribute__((target("avx512f"))) void conv_pw_dw(int M, int K, int P, int n, const float *dy, int ldd, size_t ds,
                                                    const float *x, int ldx, size_t xs, float *dW, int ldw)
{
    const __mmask16 kt = (__mmask16)(P % 16 ? (1u << (P % 16)) - 1u : 0xffffu);
    /* input channels in blocks whose rows stay in L1 (about 24 KiB) while every output row passes */
    int KB = (int)((size_t)(24 << 10) / ((size_t)P * n * sizeof(float))) / 4 * 4;
    KB = KB < 4 ? 4 : KB;
    for (int kb = 0; kb < K; kb += KB)
    for (int m = 0; m < M; m += 4)
        for (int k = kb; k < K && k < kb + KB; k += 4) {
            const int m1 = m + 1 < M ? m + 1 : M - 1, m2 = m + 2 < M ? m + 2 : M - 1, m3 = m + 3 < M ? m + 3 : M - 1;
            const int k1 = k + 1 < K ? k + 1 : K - 1, k2 = k + 2 < K ? k + 2 : K - 1, k3 = k + 3 < K ? k + 3 : K - 1;
            __m512 s00 = _mm512_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00,
                   s13 = s00, s20 = s00, s21 = s00, s22 = s00, s23 = s00, s30 = s00, s31 = s00, s32 = s00, s33 = s00;
            for (int smp = 0; smp < n; smp++) {
                const float *dp0 = dy + smp * ds + (size_t)m * ldd, *dp1 = dy + smp * ds + (size_t)m1 * ldd,
                            *dp2 = dy + smp * ds + (size_t)m2 * ldd, *dp3 = dy + smp * ds + (size_t)m3 * ldd;
                const float *xp0 = x + smp * xs + (size_t)k * ldx, *xp1 = x + smp * xs + (size_t)k1 * ldx,
                            *xp2 = x + smp * xs + (size_t)k2 * ldx, *xp3 = x + smp * xs + (size_t)k3 * ldx;
                for (int p = 0; p < P; p += 16) {
                    const int last = P - p < 16;
                    const __m512 x0 = last ? _mm512_maskz_loadu_ps(kt, xp0 + p) : _mm512_loadu_ps(xp0 + p);
                    const __m512 x1 = last ? _mm512_maskz_loadu_ps(kt, xp1 + p) : _mm512_loadu_ps(xp1 + p);
                    const __m512 x2 = last ? _mm512_maskz_loadu_ps(kt, xp2 + p) : _mm512_loadu_ps(xp2 + p);
                    const __m512 x3 = last ? _mm512_maskz_loadu_ps(kt, xp3 + p) : _mm512_loadu_ps(xp3 + p);
                    PW_DW_ROW(0);
                    PW_DW_ROW(1);
                    PW_DW_ROW(2);
                    PW_DW_ROW(3);
                }
            }
            const __m512 c0 = pw_quad(pw_pair(s00, s01), pw_pair(s02, s03));
            const __m512 c1 = pw_quad(pw_pair(s10, s11), pw_pair(s12, s13));
            const __m512 c2 = pw_quad(pw_pair(s20, s21), pw_pair(s22, s23));
            const __m512 c3 = pw_quad(pw_pair(s30, s31), pw_pair(s32, s33));
            const __m512 e = pw_blocks(pw_blocks(c0, c1), pw_blocks(c2, c3));
            float sum[16];
            _mm512_storeu_ps(sum, e);
            for (int i = 0; i < 4 && m + i < M; i++)
                for (int jj = 0; jj < 4 && k + jj < K; jj++)
                    dW[(size_t)(m + i) * ldw + k + jj] += sum[4 * i + jj];
        }
}

#else
void conv_pw_gemm(int M, int K, int P, const float *A, int lda, const float *X, int ldx, const float *bias, int relu,
                  uint8_t *mask, size_t mstride, float *Y, int ldy, int add)
{
    (void)M, (void)K, (void)P, (void)A, (void)lda, (void)X, (void)ldx, (void)bias, (void)relu, (void)mask;
    (void)mstride, (void)Y, (void)ldy, (void)add;
    abort(); /* never called: conv_pw_usable() is 0 here */
}

void conv_pw_dw(int M, int K, int P, int n, const float *dy, int ldd, size_t ds, const float *x, int ldx, size_t xs,
                float *dW, int ldw)
{
    (void)M, (void)K, (void)P, (void)n, (void)dy, (void)ldd, (void)ds, (void)x, (void)ldx, (void)xs, (void)dW;
    (void)ldw;
    abort(); /* never called: conv_pw_usable() is 0 here */
}
#endif
