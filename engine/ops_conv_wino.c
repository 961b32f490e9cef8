/* Winograd convolution F(m x m, r x r) on 6x6 tiles (Lavin and Gray 2016), m = 2 for 5x5 kernels
 * and 4 for 3x3, in AVX-512 (checked at run time), for stride-1, undilated, ungrouped convs of
 * at least 16 input and 16 output channels (the FedAvg CNN's 32->64 5x5 layer, plain3's and NAS
 * candidates' 3x3 layers): forward, input gradient and weight gradient, where the direct
 * kernels spent most of a training step.
 *
 * A 6x6 tile d of one input channel and the 5x5 kernel g give a 2x2 block of outputs as
 * A^T [(G g G^T) .* (B^T d B)] A: per output, 9 products summed over the input channels instead
 * of the direct convolution's 25. The interpolation points are 0, 1, -1, 2, -2 and infinity, the
 * same for every kernel size (so B^T is one matrix); G's row j is f_j (1, a_j, .., a_j^(r-1)) with
 * f = (1/4, -1/6, -1/6, 1/24, 1/24) and its last row picks the last tap; A^T's row i is a_j^i,
 * with 1 under infinity in the last row. 3x3 kernels use the same points with m = 4,
 * F(4x4, 3x3): 36 products per 16 outputs instead of 144.
 *
 * Per sample: the input, zero-bordered, is turned to [row][column][channel] (xt), so a tile's 36
 * values of 16 channels are 36 vector loads; blocks of WINO_TB tiles are transformed into V
 * [36][tile][channel], multiplied per transform point by the packed weights U [36][Ci][CoP] (36
 * products [tiles x Ci] x [Ci x CoP], tiles of P tiles x up to 4 vectors of 16 output channels
 * in registers) into M [36][tile][CoP], and transformed back into the [pixel][channel] sums that
 * conv_oc_unpack turns into planes with bias, the old output and ReLU. The input gradient is
 * the same correlation of the output gradient with the kernel turned around and its channel axes
 * swapped (padding r-1-p), so it runs the same code with weights packed by conv_wino_pack's
 * flipped mode.
 *
 * The weight gradient swaps the factors' roles (below, before conv_wino_dw_sample).
 *
 * Each output and input-gradient element is summed in a fixed order within its sample, so they
 * do not depend on the thread count; the weight gradient is summed per part (ranges of samples,
 * their number set by the thread count) and the parts added in order by ops_conv.c, as the direct
 * kernel's are, so it is reproducible for a given thread count. They differ from the direct convolution by the transforms' rounding: on the tests'
 * random shapes a relative error up to 7e-6 in the output and input gradient and 1e-5 in the
 * weight gradient (the direct kernels: under 1e-6). Tests: test_engine_conv_paths (test_winograd, kind 5 shapes), against a
 * double-precision convolution and the im2col path. FEDNAS_CONV_WINO=0 turns it off (A/B runs),
 * as does FEDNAS_CONV_PORTABLE=1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_conv.h"

#define WINO_A 6        /* tile side: m + r - 1 */
#define WINO_X 36       /* transform points per tile */
#define WINO_TB 24      /* tiles per block: V and M of a block stay in L2 */

static int round16(int n) { return (n + 15) / 16 * 16; }

/* The output block side for kernel side r: 0 when no tile is used for it. */
static int wino_m(int r) { return r == 5 ? 2 : r == 3 ? 4 : 0; }

/* The tiles are compiled only for GCC on x86-64 (the guard below): elsewhere, clang included,
 * nothing takes them, whatever the CPU. */
static int wino_enabled(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    const char *e = getenv("FEDNAS_CONV_WINO");
    return !(e && *e && atoi(e) <= 0) && conv_use_avx512() && !conv_force_im2col();
#else
    return 0;
#endif
}

/* Shapes the tiles take: stride 1, no dilation, one group, a square kernel they have points
 * for, and at least 16 channels on each side (with fewer, the transforms cost more than the
 * products save). ci, co: the input and output channels of the convolution as computed. */
static int wino_shape(const conv_dims_t *d, int ci, int co)
{
    return d->sh == 1 && d->sw == 1 && d->dh == 1 && d->dw == 1 && d->G == 1 && d->KH == d->KW &&
           wino_m(d->KH) && ci >= 16 && co >= 16;
}

int conv_wino_usable(const conv_dims_t *d) { return wino_enabled() && wino_shape(d, d->C, d->OC); }

int conv_wino_dx_usable(const conv_dims_t *d)
{
    return wino_enabled() && wino_shape(d, d->OC, d->C) && d->ph <= d->KH - 1 && d->pw <= d->KW - 1;
}

size_t conv_wino_u_floats(int Ci, int Co) { return (size_t)WINO_X * Ci * round16(Co); }

int conv_wino_dw_usable(const conv_dims_t *d) { return wino_enabled() && wino_shape(d, d->C, d->OC); }

/* The tiles over an output side of n: ceil(n / m). */
static int wino_tiles(int n, int m) { return (n + m - 1) / m; }

size_t conv_wino_tmp_floats(int Ci, int Co, int OH, int OW, int r)
{
    const int m = wino_m(r), CiP = round16(Ci), CoP = round16(Co);
    const size_t Hq = (size_t)wino_tiles(OH, m) * m + r - 1, Wq = (size_t)wino_tiles(OW, m) * m + r - 1;
    return Hq * Wq * CiP + (size_t)WINO_X * WINO_TB * (CiP + CoP) + (size_t)OH * OW * CoP;
}

size_t conv_wino_dw_tmp_floats(int C, int OC, int OH, int OW, int r)
{
    const int m = wino_m(r), CP = round16(C), OCP = round16(OC), th = wino_tiles(OH, m), tw = wino_tiles(OW, m);
    return (size_t)(th * m + r - 1) * (tw * m + r - 1) * CP + (size_t)th * m * tw * m * OCP +
           (size_t)WINO_X * WINO_TB * (CP + OCP);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

/* o = B^T z for the points above (6 values of 16 lanes each). */
__attribute__((target("avx512f"), always_inline)) static inline void wino_bt(const __m512 *z, __m512 *o)
{
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
    const __m512 z4_z2 = _mm512_sub_ps(z[4], z[2]);
    o[0] = _mm512_fmadd_ps(four, z[0], _mm512_fnmadd_ps(five, z[2], z[4]));
    o[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(z[1], z[2]), _mm512_add_ps(z[3], z[4]));
    o[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(z[1], z[2]), _mm512_sub_ps(z[4], z[3]));
    o[3] = _mm512_fmadd_ps(two, _mm512_sub_ps(z[3], z[1]), z4_z2);
    o[4] = _mm512_fmadd_ps(two, _mm512_sub_ps(z[1], z[3]), z4_z2);
    o[5] = _mm512_fmadd_ps(four, z[1], _mm512_fnmadd_ps(five, z[3], z[5]));
}

/* o = A^T z, m rows (m = 2 or 4; a constant after inlining). */
__attribute__((target("avx512f"), always_inline)) static inline void wino_at(const int m, const __m512 *z, __m512 *o)
{
    const __m512 s12 = _mm512_add_ps(z[1], z[2]), d12 = _mm512_sub_ps(z[1], z[2]);
    const __m512 s34 = _mm512_add_ps(z[3], z[4]), d34 = _mm512_sub_ps(z[3], z[4]);
    o[0] = _mm512_add_ps(_mm512_add_ps(z[0], s12), s34);
    if (m == 2) {
        o[1] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12), z[5]);
        return;
    }
    o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
    o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
    o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), z[5]);
}

/* One tile of 16 channels: d from src (rows rs apart, columns cs apart) to B^T d B, its 36
 * points xs apart from dst. */
__attribute__((target("avx512f"))) static void wino_in(const float *src, size_t rs, size_t cs, float *dst, size_t xs)
{
    __m512 t[WINO_A][WINO_A];
    for (int j = 0; j < WINO_A; j++) {
        __m512 z[WINO_A];
        for (int i = 0; i < WINO_A; i++)
            z[i] = _mm512_loadu_ps(src + i * rs + j * cs);
        __m512 o[WINO_A];
        wino_bt(z, o);
        for (int i = 0; i < WINO_A; i++)
            t[i][j] = o[i];
    }
    for (int i = 0; i < WINO_A; i++) {
        __m512 o[WINO_A];
        wino_bt(t[i], o);
        for (int l = 0; l < WINO_A; l++)
            _mm512_storeu_ps(dst + (size_t)(i * WINO_A + l) * xs, o[l]);
    }
}

/* One tile of 16 channels back: A^T M A from the 36 points xs apart from src, its rows x cols
 * outputs (the block cut at the map's edge) into dst (rows rs apart, columns cs apart). */
__attribute__((target("avx512f"), always_inline)) static inline void wino_out(const int m, const float *src, size_t xs,
                                                                               float *dst, size_t rs, size_t cs,
                                                                               int rows, int cols)
{
    __m512 t[4][WINO_A];
    for (int b = 0; b < WINO_A; b++) {
        __m512 z[WINO_A], o[4];
        for (int a = 0; a < WINO_A; a++)
            z[a] = _mm512_loadu_ps(src + (size_t)(a * WINO_A + b) * xs);
        wino_at(m, z, o);
        for (int i = 0; i < m; i++)
            t[i][b] = o[i];
    }
    for (int i = 0; i < m && i < rows; i++) {
        __m512 o[4];
        wino_at(m, t[i], o);
        for (int j = 0; j < m && j < cols; j++)
            _mm512_storeu_ps(dst + i * rs + j * cs, o[j]);
    }
}

/* The products of both directions, P rows x NV vectors of 16 columns in registers: o [p][16 NV]
 * (rows ldo apart) = (o itself when load, else 0) + the sum over i < n, in order, of a[p*ap +
 * i*ai] x b [i][16 NV] (rows ldb apart). Forward and input gradient: rows are tiles, i the input
 * channels (ap = CiP, ai = 1); weight gradient: rows are input channels, i the tiles (ap = 1,
 * ai = CP), added to the transform-domain sums. */
__attribute__((target("avx512f"), always_inline)) static inline void wino_gemm(const int P, const int NV,
                                                                                const float *a, size_t ap, size_t ai,
                                                                                int n, const float *b, int ldb,
                                                                                float *o, int ldo, int load)
{
    __m512 acc[8][4];
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int k = 0; k < NV; k++)
            acc[p][k] = load ? _mm512_loadu_ps(o + (size_t)p * ldo + 16 * k) : _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m512 w[4];
#pragma GCC unroll 16
        for (int k = 0; k < NV; k++)
            w[k] = _mm512_loadu_ps(b + (size_t)i * ldb + 16 * k);
#pragma GCC unroll 16
        for (int p = 0; p < P; p++) {
            const __m512 x = _mm512_set1_ps(a[(size_t)p * ap + (size_t)i * ai]);
#pragma GCC unroll 16
            for (int k = 0; k < NV; k++)
                acc[p][k] = _mm512_fmadd_ps(x, w[k], acc[p][k]);
        }
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int k = 0; k < NV; k++)
            _mm512_storeu_ps(o + (size_t)p * ldo + 16 * k, acc[p][k]);
}

#define WINO_CASE(p, nv)                                                                                              \
    case (nv) * 16 + (p):                                                                                             \
        wino_gemm(p, nv, a, ap, ai, n, b, ldb, o, ldo, load);                                                         \
        break;
#define WINO_P6(nv) WINO_CASE(1, nv) WINO_CASE(2, nv) WINO_CASE(3, nv) WINO_CASE(4, nv) WINO_CASE(5, nv) WINO_CASE(6, nv)
#define WINO_P8(nv) WINO_P6(nv) WINO_CASE(7, nv) WINO_CASE(8, nv)

__attribute__((target("avx512f"))) static void wino_gemm_any(int P, int NV, const float *a, size_t ap, size_t ai, int n,
                                                            const float *b, int ldb, float *o, int ldo, int load)
{
    switch (NV * 16 + P) {
        WINO_P6(4) WINO_P8(3) WINO_P8(2) WINO_P8(1)
    default:
        abort(); /* unreachable: NV in 1..4, P in 1..wino_rows(NV) */
    }
}

/* Rows per register block for NV vectors: 24 accumulators for NV = 4 and 3, 16 and 8 below. */
static int wino_rows(int NV) { return NV == 4 ? 6 : 8; }

__attribute__((target("avx512f"))) static void wino_outs(int m, const float *src, size_t xs, float *dst, size_t rs,
                                                        size_t cs, int rows, int cols)
{
    if (m == 2)
        wino_out(2, src, xs, dst, rs, cs, rows, cols);
    else
        wino_out(4, src, xs, dst, rs, cs, rows, cols);
}

/* C planes [H][W] (ld floats apart) into xt [Hq][Wq][CP] at row ph, column pw, zero around
 * them and past C: 16 channels of a pixel per two 8-lane gathers (64-bit offsets, so planes
 * may lie any distance apart; a scalar transpose stores one float at a time, CP floats apart). */
__attribute__((target("avx512f"))) static void wino_gather(const float *x, size_t ld, int C, int H, int W, int ph,
                                                          int pw, int Hq, int Wq, int CP, float *xt)
{
    memset(xt, 0, (size_t)Hq * Wq * CP * sizeof *xt);
    const long long l = (long long)ld;
    const __m512i lo = _mm512_setr_epi64(0, l, 2 * l, 3 * l, 4 * l, 5 * l, 6 * l, 7 * l);
    const __m512i hi = _mm512_add_epi64(lo, _mm512_set1_epi64(8 * l));
    for (int c0 = 0; c0 < C; c0 += 16) {
        const unsigned live = C - c0 >= 16 ? 0xFFFFu : (1u << (C - c0)) - 1;
        const __mmask8 ml = (__mmask8)(live & 0xFF), mh = (__mmask8)(live >> 8);
        for (int h = 0; h < H; h++) {
            const float *src = x + (size_t)c0 * ld + (size_t)h * W;
            float *dst = xt + ((size_t)(h + ph) * Wq + pw) * CP + c0;
            for (int w = 0; w < W; w++) {
                const __m256 a = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), ml, lo, src + w, 4);
                const __m256 b = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), mh, hi, src + w, 4);
                _mm256_storeu_ps(dst + (size_t)w * CP, a);
                _mm256_storeu_ps(dst + (size_t)w * CP + 8, b);
            }
        }
    }
}

__attribute__((target("avx512f"))) void conv_wino_sample(const float *x, size_t ld, int Ci, int H, int W, int ph,
                                                        int pw, int r, const float *u, int Co, const float *bias,
                                                        float *y, float *tmp, int add, int relu)
{
    const int m = wino_m(r), OH = H + 2 * ph - r + 1, OW = W + 2 * pw - r + 1;
    const int th = wino_tiles(OH, m), tw = wino_tiles(OW, m), T = th * tw;
    const int CiP = round16(Ci), CoP = round16(Co), Hq = th * m + r - 1, Wq = tw * m + r - 1;
    float *xt = tmp, *V = xt + (size_t)Hq * Wq * CiP, *M = V + (size_t)WINO_X * WINO_TB * CiP;
    float *yt = M + (size_t)WINO_X * WINO_TB * CoP;
    wino_gather(x, ld, Ci, H, W, ph, pw, Hq, Wq, CiP, xt);
    const size_t vx = (size_t)WINO_TB * CiP, mx = (size_t)WINO_TB * CoP;
    for (int t0 = 0; t0 < T; t0 += WINO_TB) {
        const int nt = T - t0 < WINO_TB ? T - t0 : WINO_TB;
        for (int i = 0; i < nt; i++) {
            const int ty = (t0 + i) / tw, tx = (t0 + i) % tw;
            const float *src = xt + ((size_t)ty * m * Wq + (size_t)tx * m) * CiP;
            for (int c0 = 0; c0 < CiP; c0 += 16)
                wino_in(src + c0, (size_t)Wq * CiP, CiP, V + (size_t)i * CiP + c0, vx);
        }
        for (int xi = 0; xi < WINO_X; xi++) {
            const float *vb = V + xi * vx, *ub = u + (size_t)xi * Ci * CoP;
            float *mb = M + xi * mx;
            for (int co0 = 0; co0 < CoP; co0 += 64) {
                const int NV = (CoP - co0) / 16 < 4 ? (CoP - co0) / 16 : 4, P = wino_rows(NV);
                for (int p0 = 0; p0 < nt; p0 += P)
                    wino_gemm_any(nt - p0 < P ? nt - p0 : P, NV, vb + (size_t)p0 * CiP, CiP, 1, Ci, ub + co0, CoP,
                                  mb + (size_t)p0 * CoP + co0, CoP, 0);
            }
        }
        for (int i = 0; i < nt; i++) {
            const int ty = (t0 + i) / tw, tx = (t0 + i) % tw;
            const int rows = OH - ty * m < m ? OH - ty * m : m, cols = OW - tx * m < m ? OW - tx * m : m;
            float *dst = yt + ((size_t)ty * m * OW + (size_t)tx * m) * CoP;
            for (int c0 = 0; c0 < CoP; c0 += 16)
                wino_outs(m, M + (size_t)i * CoP + c0, mx, dst + c0, (size_t)OW * CoP, CoP, rows, cols);
        }
    }
    conv_oc_unpack(yt, CoP, OH * OW, bias, Co, y, add, relu);
}

/* G's rows for kernel side r as floats: f_j a_j^k for the five finite points, then (0, .., 1). */
static void wino_g(int r, float G[WINO_A][WINO_A])
{
    static const double pt[5] = {0, 1, -1, 2, -2}, f[5] = {1.0 / 4, -1.0 / 6, -1.0 / 6, 1.0 / 24, 1.0 / 24};
    for (int j = 0; j < WINO_A; j++)
        for (int k = 0; k < WINO_A; k++) {
            double v = 0.0;
            if (j < 5 && k < r) {
                v = f[j];
                for (int e = 0; e < k; e++)
                    v *= pt[j];
            } else if (j == 5)
                v = k == r - 1;
            G[j][k] = (float)v;
        }
}

/* y = L x L^T for L [rows][k] and x [k][k] (16 lanes each): the weights' G g G^T, the weight
 * gradient's G dy G^T and A^T acc A. */
__attribute__((target("avx512f"))) static void wino_sandwich(int rows, int k, const float L[WINO_A][WINO_A],
                                                            const __m512 x[WINO_A][WINO_A], __m512 y[WINO_A][WINO_A])
{
    __m512 t[WINO_A][WINO_A];
    for (int i = 0; i < rows; i++)
        for (int b = 0; b < k; b++) {
            __m512 v = _mm512_setzero_ps();
            for (int a = 0; a < k; a++)
                v = _mm512_fmadd_ps(_mm512_set1_ps(L[i][a]), x[a][b], v);
            t[i][b] = v;
        }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < rows; j++) {
            __m512 v = _mm512_setzero_ps();
            for (int b = 0; b < k; b++)
                v = _mm512_fmadd_ps(t[i][b], _mm512_set1_ps(L[j][b]), v);
            y[i][j] = v;
        }
}

__attribute__((target("avx512f"))) void conv_wino_pack(const conv_dims_t *d, const float *W, int flipped, float *u)
{
    const int r = d->KH, KK = r * r;
    /* the convolution as computed: forward Ci = C, Co = OC, g[k][l] = W[co][ci][k][l]; input
     * gradient Ci = OC, Co = C, g[k][l] = W[ci][co][r-1-k][r-1-l] */
    const int Ci = flipped ? d->OC : d->C, Co = flipped ? d->C : d->OC, CoP = round16(Co);
    const size_t s_co = flipped ? (size_t)KK : (size_t)d->C * KK, s_ci = flipped ? (size_t)d->C * KK : (size_t)KK;
    float G[WINO_A][WINO_A];
    wino_g(r, G);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)s_co));
    for (int ci = 0; ci < Ci; ci++)
        for (int co0 = 0; co0 < CoP; co0 += 16) {
            const __mmask16 mk = Co - co0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (Co - co0)) - 1);
            const float *base = W + (size_t)ci * s_ci + (size_t)co0 * s_co;
            __m512 g[WINO_A][WINO_A], y[WINO_A][WINO_A];
            for (int k = 0; k < r; k++)
                for (int l = 0; l < r; l++) {
                    const int tap = flipped ? (r - 1 - k) * r + (r - 1 - l) : k * r + l;
                    g[k][l] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, base + tap, 4);
                }
            wino_sandwich(WINO_A, r, G, g, y);
            for (int a = 0; a < WINO_A; a++)
                for (int b = 0; b < WINO_A; b++)
                    _mm512_storeu_ps(u + ((size_t)(a * WINO_A + b) * Ci + ci) * CoP + co0, y[a][b]);
        }
}
/* The weight gradient: with the roles of the factors swapped, a block of m x m outputs' dy and
 * the 6x6 input window under it give that block's share of all r x r taps as
 * A_r^T [(G_m dy G_m^T) .* (B^T x B)] A_r (F(5x5, 2x2) for a 5x5 kernel), with A_r^T's rows
 * the first r powers of the points and G_m built as G is for a kernel of side m. The sums over
 * blocks and samples are taken in the transform domain (acc [36][C][OCP]: per point a product
 * [C x tiles] x [tiles x OCP] added to it) and conv_wino_dw_finish takes them back to taps once
 * per part. */

/* 16 lanes of an m x m dy block (rows rs apart, columns cs apart) to G dy G^T, its 36 points xs
 * apart from dst. */
__attribute__((target("avx512f"))) static void wino_dy(int m, const float *src, size_t rs, size_t cs, float *dst,
                                                      size_t xs, const float G[WINO_A][WINO_A])
{
    __m512 b[WINO_A][WINO_A], y[WINO_A][WINO_A];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++)
            b[i][j] = _mm512_loadu_ps(src + i * rs + j * cs);
    wino_sandwich(WINO_A, m, G, b, y);
    for (int a = 0; a < WINO_A; a++)
        for (int l = 0; l < WINO_A; l++)
            _mm512_storeu_ps(dst + (size_t)(a * WINO_A + l) * xs, y[a][l]);
}

__attribute__((target("avx512f"))) void conv_wino_dw_sample(const float *x, int C, int H, int W, int ph, int pw, int r,
                                                           const float *dy, size_t ldy, int OC, float *acc, float *tmp)
{
    const int m = wino_m(r), OH = H + 2 * ph - r + 1, OW = W + 2 * pw - r + 1;
    const int th = wino_tiles(OH, m), tw = wino_tiles(OW, m), T = th * tw;
    const int CP = round16(C), OCP = round16(OC), Hq = th * m + r - 1, Wq = tw * m + r - 1;
    float *xt = tmp, *dt = xt + (size_t)Hq * Wq * CP, *V = dt + (size_t)th * m * tw * m * OCP;
    float *D = V + (size_t)WINO_X * WINO_TB * CP;
    wino_gather(x, (size_t)H * W, C, H, W, ph, pw, Hq, Wq, CP, xt);
    wino_gather(dy, ldy, OC, OH, OW, 0, 0, th * m, tw * m, OCP, dt); /* zero past the map's edge */
    float G[WINO_A][WINO_A];
    wino_g(m, G);
    const size_t vx = (size_t)WINO_TB * CP, dx = (size_t)WINO_TB * OCP;
    for (int t0 = 0; t0 < T; t0 += WINO_TB) {
        const int nt = T - t0 < WINO_TB ? T - t0 : WINO_TB;
        for (int i = 0; i < nt; i++) {
            const int ty = (t0 + i) / tw, tx = (t0 + i) % tw;
            const float *src = xt + ((size_t)ty * m * Wq + (size_t)tx * m) * CP;
            for (int c0 = 0; c0 < CP; c0 += 16)
                wino_in(src + c0, (size_t)Wq * CP, CP, V + (size_t)i * CP + c0, vx);
            const float *dsrc = dt + ((size_t)ty * m * tw * m + (size_t)tx * m) * OCP;
            for (int o0 = 0; o0 < OCP; o0 += 16)
                wino_dy(m, dsrc + o0, (size_t)tw * m * OCP, OCP, D + (size_t)i * OCP + o0, dx, G);
        }
        for (int xi = 0; xi < WINO_X; xi++)
            for (int oc0 = 0; oc0 < OCP; oc0 += 64) {
                const int NV = (OCP - oc0) / 16 < 4 ? (OCP - oc0) / 16 : 4, P = wino_rows(NV);
                for (int c0 = 0; c0 < C; c0 += P)
                    wino_gemm_any(C - c0 < P ? C - c0 : P, NV, V + xi * vx + c0, 1, CP, nt, D + xi * dx + oc0, OCP,
                                  acc + ((size_t)xi * C + c0) * OCP + oc0, OCP, 1);
            }
    }
}

__attribute__((target("avx512f"))) void conv_wino_dw_finish(const float *acc, int C, int OC, int r, float *dwt)
{
    static const float pt[5] = {0, 1, -1, 2, -2};
    const int OCP = round16(OC);
    float AT[WINO_A][WINO_A] = {{0}}; /* A_r^T: row i the points' i-th powers, 1 under infinity in the last */
    for (int i = 0; i < r; i++)
        for (int j = 0; j < WINO_A; j++) {
            float v = j == 5 ? (float)(i == r - 1) : 1.0f;
            for (int e = 0; e < i && j < 5; e++)
                v *= pt[j];
            AT[i][j] = v;
        }
    for (int c = 0; c < C; c++)
        for (int o0 = 0; o0 < OCP; o0 += 16) {
            __m512 z[WINO_A][WINO_A], y[WINO_A][WINO_A];
            for (int a = 0; a < WINO_A; a++)
                for (int b = 0; b < WINO_A; b++)
                    z[a][b] = _mm512_loadu_ps(acc + ((size_t)(a * WINO_A + b) * C + c) * OCP + o0);
            wino_sandwich(r, WINO_A, AT, z, y);
            for (int i = 0; i < r; i++)
                for (int k = 0; k < r; k++) {
                    float *o = dwt + ((size_t)c * r * r + (size_t)i * r + k) * OCP + o0;
                    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), y[i][k]));
                }
        }
}
#else
void conv_wino_sample(const float *x, size_t ld, int Ci, int H, int W, int ph, int pw, int r, const float *u, int Co,
                      const float *bias, float *y, float *tmp, int add, int relu)
{
    (void)x, (void)ld, (void)Ci, (void)H, (void)W, (void)ph, (void)pw, (void)r, (void)u, (void)Co, (void)bias;
    (void)y, (void)tmp, (void)add, (void)relu;
    abort(); /* never called: conv_use_avx512() is 0 here */
}

void conv_wino_pack(const conv_dims_t *d, const float *W, int flipped, float *u)
{
    (void)d, (void)W, (void)flipped, (void)u;
    abort(); /* never called: conv_use_avx512() is 0 here */
}

void conv_wino_dw_sample(const float *x, int C, int H, int W, int ph, int pw, int r, const float *dy, size_t ldy, int OC,
                         float *acc, float *tmp)
{
    (void)x, (void)C, (void)H, (void)W, (void)ph, (void)pw, (void)r, (void)dy, (void)ldy, (void)OC, (void)acc;
    (void)tmp;
    abort(); /* never called: conv_use_avx512() is 0 here */
}

void conv_wino_dw_finish(const float *acc, int C, int OC, int r, float *dwt)
{
    (void)acc, (void)C, (void)OC, (void)r, (void)dwt;
    abort(); /* never called: conv_use_avx512() is 0 here */
}
#endif
