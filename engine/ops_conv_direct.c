/* Direct convolution for stride-1, undilated, ungrouped convs with a kernel larger than 1x1 (the
 * FedAvg CNN's 5x5 layers, the 3x3 layers of NAS candidates), in AVX-512 (checked at run time).
 *
 * Through im2col + sgemm a sample's forward product first writes its column matrix (KH*KW times
 * the input: 25x for a 5x5 kernel), then OpenBLAS copies it again into its packed panels; and
 * the backward's input gradient is a [K, OHW] product with only OC terms per element followed
 * by col2im's scatter-add over the same large matrix. Here the output is computed in registers
 * straight from a zero-bordered copy of the input, vectorized along the output row:
 * a tile is DIR_R output rows x DIR_OCB output channels x 16 columns, 24 accumulators; per
 * kernel tap it loads DIR_R input rows (masked at the row end, so nothing outside the padded
 * plane is touched) and broadcasts DIR_OCB weights: 24 FMAs per 11 loads. Rows are done 16
 * columns at a time, so a row of 14 uses 14 of 16 lanes but one of 7 only 7: the kernel takes
 * only ops whose rows fill at least 3/4 of their vectors (dir_fills; im2col + sgemm, measured
 * 1.3x faster than this kernel on 7x7 maps, keeps the others). The input gradient of
 * such a conv is the same correlation of the zero-bordered output gradient with the kernel
 * turned around and its channel axes swapped (padding KH-1-ph), so it runs the same tiles.
 * The weight gradient stays im2col + sgemm (ops_conv.c).
 *
 * Every output element is summed in a fixed order (channel, kernel row, kernel column), so the
 * results do not depend on the thread count; they differ from the sgemm path in rounding only.
 * Tests: test_engine_conv_paths (kind "direct"), against a double-precision convolution and the
 * im2col path. FEDNAS_CONV_DIRECT=0 turns it off (A/B runs), as does FEDNAS_CONV_PORTABLE=1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_conv.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

/* Tile: DIR_R rows x DIR_OCB channels (24 accumulators, 3 row vectors and a weight in registers:
 * 28 of 32). Measured against 7x3, 6x4, 5x5, 4x5 and 4x6 on the CNN's and plain3's layers (one
 * core, alternating in one process): 3x8 was the fastest or within 3% of it on each. */
#define DIR_R 3
#define DIR_OCB 8

/* R output rows (from row oh0 of y) x OCB output channels (W's rows from w, ldw apart) x the
 * columns [ow0, ow0 + 16) under mask m, from the padded input xp ([C][Hp][Wp], plane pp floats
 * apart). R and OCB are constants after inlining. Adds bias (NULL: none); stores, or with add
 * adds to y. */
__attribute__((target("avx512f"), always_inline)) static inline void
dir_tile(const int R, const int OCB, const float *xp, int Wp, int rs, size_t pp, int C, const float *w, int ldw, int KH,
         int KW, const float *bias, float *y, int OW, size_t OHW, __mmask16 m, int add, int relu)
{
    __m512 acc[DIR_R][DIR_OCB];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int o = 0; o < OCB; o++)
            acc[r][o] = _mm512_setzero_ps();
    const int KK = KH * KW;
    for (int c = 0; c < C; c++) {
        const float *xc = xp + (size_t)c * pp;
        const float *wc = w + (size_t)c * KK;
        for (int ki = 0; ki < KH; ki++)
            for (int kj = 0; kj < KW; kj++) {
                const float *xr = xc + (size_t)ki * Wp + kj;
                const float *wk = wc + ki * KW + kj;
                __m512 v[DIR_R];
#pragma GCC unroll 16
                for (int r = 0; r < R; r++)
                    v[r] = _mm512_maskz_loadu_ps(m, xr + (size_t)r * rs);
#pragma GCC unroll 16
                for (int o = 0; o < OCB; o++) {
                    const __m512 wv = _mm512_set1_ps(wk[(size_t)o * ldw]);
#pragma GCC unroll 16
                    for (int r = 0; r < R; r++)
                        acc[r][o] = _mm512_fmadd_ps(v[r], wv, acc[r][o]);
                }
            }
    }
#pragma GCC unroll 16
    for (int o = 0; o < OCB; o++) {
        const __m512 bv = _mm512_set1_ps(bias ? bias[o] : 0.0f);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            float *out = y + (size_t)o * OHW + (size_t)r * OW;
            __m512 s = _mm512_add_ps(acc[r][o], bv);
            if (add)
                s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, out));
            if (relu)
                s = _mm512_max_ps(s, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(out, m, s);
        }
    }
}

#define DIR_CASE(r, o)                                                                                                \
    case (r) * 16 + (o):                                                                                              \
        dir_tile(r, o, xp, Wp, rs, pp, C, w, ldw, KH, KW, bias, y, OW, OHW, m, add, relu);                        \
        break;
#define DIR_ROW(r)                                                                                                    \
    DIR_CASE(r, 1) DIR_CASE(r, 2) DIR_CASE(r, 3) DIR_CASE(r, 4) DIR_CASE(r, 5) DIR_CASE(r, 6) DIR_CASE(r, 7)          \
        DIR_CASE(r, 8)

/* A tile of any size up to DIR_R x DIR_OCB (row and channel remainders). */
__attribute__((target("avx512f"))) static void dir_tile_any(int R, int OCB, const float *xp, int Wp, int rs, size_t pp, int C,
                                                           const float *w, int ldw, int KH, int KW, const float *bias,
                                                           float *y, int OW, size_t OHW, __mmask16 m, int add,
                                                           int relu)
{
    switch (R * 16 + OCB) {
        DIR_ROW(1) DIR_ROW(2) DIR_ROW(3)
    default:
        abort(); /* unreachable: R in 1..DIR_R, OCB in 1..DIR_OCB */
    }
}

/* The tiles over an output of OH rows of OW (rows OW apart; planes opw apart) from the input xp
 * (kernel rows Wp apart, the tiles' rows rs apart, planes pp apart). */
__attribute__((target("avx512f"))) static void dir_rows(const float *xp, int Wp, int rs, size_t pp, int C, const float *w,
                                                       int ldw, int KH, int KW, const float *bias, int OC, int OH,
                                                       int OW, float *y, size_t opw, int add, int relu)
{
    for (int oc0 = 0; oc0 < OC; oc0 += DIR_OCB) {
        const int ocb = OC - oc0 < DIR_OCB ? OC - oc0 : DIR_OCB;
        const float *wo = w + (size_t)oc0 * ldw, *bo = bias ? bias + oc0 : NULL;
        for (int oh0 = 0; oh0 < OH; oh0 += DIR_R) {
            const int r = OH - oh0 < DIR_R ? OH - oh0 : DIR_R;
            for (int ow0 = 0; ow0 < OW; ow0 += 16) {
                const __mmask16 m = OW - ow0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow0)) - 1);
                const float *xt = xp + (size_t)oh0 * rs + ow0;
                float *yt = y + (size_t)oc0 * opw + (size_t)oh0 * OW + ow0;
                if (r == DIR_R && ocb == DIR_OCB)
                    dir_tile(DIR_R, DIR_OCB, xt, Wp, rs, pp, C, wo, ldw, KH, KW, bo, yt, OW, opw, m, add, relu);
                else
                    dir_tile_any(r, ocb, xt, Wp, rs, pp, C, wo, ldw, KH, KW, bo, yt, OW, opw, m, add, relu);
            }
        }
    }
}

/* Whether rows of n floats fill at least 3/4 of the 16-lane vectors they take. */
static int dir_fills(int n) { return 4 * n >= 3 * 16 * ((n + 15) / 16); }

/* Outputs computed on the padded plane's width (flat mode): L = (OH-1)*Wp + OW positions, of
 * which OH*OW are outputs. */
static size_t dir_flat_len(int OH, int OW, int Wp) { return (size_t)(OH - 1) * Wp + OW; }

/* Whether an output of short rows (a 7x7 map) goes flat: its OH*OW outputs fill at least 3/5 of
 * the vectors of the flat positions. */
static int dir_flat_ok(int OH, int OW, int Wp)
{
    const size_t L = dir_flat_len(OH, OW, Wp);
    return 5 * (size_t)OH * OW >= 3 * 16 * ((L + 15) / 16);
}

size_t conv_direct_tmp_floats(int OC, int Hp, int Wp, int KH, int KW)
{
    const int OH = Hp - KH + 1, OW = Wp - KW + 1;
    return dir_fills(OW) ? 0 : (size_t)OC * dir_flat_len(OH, OW, Wp);
}

void conv_direct_sample(const float *xp, int Hp, int Wp, int C, const float *w, int ldw, int KH, int KW,
                        const float *bias, int OC, float *y, float *tmp, int add, int relu)
{
    const int OH = Hp - KH + 1, OW = Wp - KW + 1;
    const size_t pp = (size_t)Hp * Wp;
    if (dir_fills(OW)) {
        dir_rows(xp, Wp, Wp, pp, C, w, ldw, KH, KW, bias, OC, OH, OW, y, (size_t)OH * OW, add, relu);
        return;
    }
    /* flat: output position i = oh*Wp + ow reads the input at i + ki*Wp + kj, so the plane is
     * one long row cut into rows of 16; the positions past OW in each row are dropped below */
    const size_t L = dir_flat_len(OH, OW, Wp);
    const int full = (int)(L / 16), rest = (int)(L % 16);
    if (full)
        dir_rows(xp, Wp, 16, pp, C, w, ldw, KH, KW, bias, OC, full, 16, tmp, L, 0, relu);
    if (rest)
        dir_rows(xp + (size_t)full * 16, Wp, 16, pp, C, w, ldw, KH, KW, bias, OC, 1, rest, tmp + (size_t)full * 16, L,
                 0, relu);
    for (int oc = 0; oc < OC; oc++)
        for (int oh = 0; oh < OH; oh++) {
            const float *src = tmp + (size_t)oc * L + (size_t)oh * Wp;
            float *dst = y + ((size_t)oc * OH + oh) * OW;
            if (add)
                for (int ow = 0; ow < OW; ow++)
                    dst[ow] += src[ow];
            else
                memcpy(dst, src, (size_t)OW * sizeof *dst);
        }
}

/* A 1x1 conv, stride 1, no padding. Its forward and input gradient stay with sgemm (through
 * this kernel on planes cut into rows of 16 the depthwise-separable net trained 3-10% slower,
 * measured whole-net, one core, alternating runs); its weight gradient may come here. */
static int dir_pointwise(const conv_dims_t *d)
{
    return d->KH == 1 && d->KW == 1 && d->ph == 0 && d->pw == 0;
}

int conv_direct_usable(const conv_dims_t *d)
{
    const char *e = getenv("FEDNAS_CONV_DIRECT");
    if ((e && *e && atoi(e) <= 0) || !conv_use_avx512() || conv_force_im2col())
        return 0;
    if (d->sh != 1 || d->sw != 1 || d->dh != 1 || d->dw != 1 || d->G != 1)
        return 0;
    return !dir_pointwise(d) && (dir_fills(d->OW) || dir_flat_ok(d->OH, d->OW, d->W + 2 * d->pw));
}

/* The input gradient's tiles have C output channels: below DIR_OCB most of a tile is empty. */
int conv_direct_dx_usable(const conv_dims_t *d)
{
    return conv_direct_usable(d) && d->ph <= d->KH - 1 && d->pw <= d->KW - 1 &&
           (dir_fills(d->W) || dir_flat_ok(d->H, d->W, d->OW + 2 * (d->KW - 1 - d->pw))) && d->C >= DIR_OCB;
}
/* The weight gradient, as dW^T [C*KH*KW][OCP] (OCP: OC rounded up to 16) += col x dy^T: vectors
 * run along the output channels, so no column matrix is built: a tile of T taps x V vectors of
 * 16 channels keeps T*V accumulators over all output pixels of a sample, and per pixel loads V
 * vectors of the transposed dy ([OHW][OCP]) and broadcasts T input values straight from the
 * zero-bordered input (a tap's value at a pixel is the input at pixel + the tap's offset). */
__attribute__((target("avx512f"), always_inline)) static inline void
dwt_tile(const int T, const int V, const float *xp, const long *off, int Wp, int OH, int OW, const float *dyt, int OCP,
         float *dwt)
{
    __m512 acc[8][4];
    long o[8];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        o[t] = off[t];
#pragma GCC unroll 16
        for (int v = 0; v < V; v++)
            acc[t][v] = _mm512_loadu_ps(dwt + (size_t)t * OCP + 16 * v);
    }
    for (int oh = 0; oh < OH; oh++) {
        const float *xr = xp + (size_t)oh * Wp;
        const float *dr = dyt + (size_t)oh * OW * OCP;
        for (int ow = 0; ow < OW; ow++) {
            __m512 dv[4];
#pragma GCC unroll 16
            for (int v = 0; v < V; v++)
                dv[v] = _mm512_loadu_ps(dr + (size_t)ow * OCP + 16 * v);
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                const __m512 b = _mm512_set1_ps(xr[ow + o[t]]);
#pragma GCC unroll 16
                for (int v = 0; v < V; v++)
                    acc[t][v] = _mm512_fmadd_ps(b, dv[v], acc[t][v]);
            }
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
#pragma GCC unroll 16
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(dwt + (size_t)t * OCP + 16 * v, acc[t][v]);
}

#define DWT_CASE(t, v)                                                                                                \
    case (v) * 16 + (t):                                                                                              \
        dwt_tile(t, v, xp, off, Wp, OH, OW, dyt, OCP, dwt);                                                           \
        break;
#define DWT_T6(v) DWT_CASE(1, v) DWT_CASE(2, v) DWT_CASE(3, v) DWT_CASE(4, v) DWT_CASE(5, v) DWT_CASE(6, v)
#define DWT_T8(v) DWT_T6(v) DWT_CASE(7, v) DWT_CASE(8, v)

/* Below this many taps (C*KH*KW) transposing dy (OC*OH*OW scattered stores a sample, against
 * C*KH*KW/16 times as many vector FMAs) costs more than the kernel saves: measured 0.6x of
 * im2col's speed on a first layer (one input channel, 5x5), 0.73x on a 1x1 conv of 64 input
 * channels, 1.1x at 128. */
#define DWT_MIN_TAPS 128

/* Taps per tile for V vectors: at most 24 accumulators, at most 8 taps. */
static int dwt_taps(int V) { return V == 4 ? 6 : 8; }

__attribute__((target("avx512f"))) static void dwt_tile_any(int T, int V, const float *xp, const long *off, int Wp,
                                                           int OH, int OW, const float *dyt, int OCP, float *dwt)
{
    switch (V * 16 + T) {
        DWT_T6(4) DWT_T8(3) DWT_T8(2) DWT_T8(1)
    default:
        abort(); /* unreachable: V in 1..4, T in 1..dwt_taps(V) */
    }
}

__attribute__((target("avx512f"))) void conv_direct_dw_sample(const float *xp, int Hp, int Wp, int C, int KH, int KW,
                                                             const float *dyt, int OCP, float *dwt)
{
    const int OH = Hp - KH + 1, OW = Wp - KW + 1, KK = KH * KW, Q = C * KK, OCV = OCP / 16;
    const size_t pp = (size_t)Hp * Wp;
    for (int v0 = 0; v0 < OCV; v0 += 4) {
        const int V = OCV - v0 < 4 ? OCV - v0 : 4, TB = dwt_taps(V);
        for (int q0 = 0; q0 < Q; q0 += TB) {
            const int T = Q - q0 < TB ? Q - q0 : TB;
            long off[8];
            for (int t = 0; t < T; t++) {
                const int q = q0 + t, c = q / KK, k = q % KK;
                off[t] = (long)((size_t)c * pp) + (long)(k / KW) * Wp + k % KW;
            }
            dwt_tile_any(T, V, xp, off, Wp, OH, OW, dyt + 16 * v0, OCP, dwt + (size_t)q0 * OCP + 16 * v0);
        }
    }
}

__attribute__((target("avx512f"))) void conv_relu_mask_512(float *v, int n, uint8_t *m)
{
    int i = 0;
    const __m512 z = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_max_ps(_mm512_loadu_ps(v + i), z);
        _mm512_storeu_ps(v + i, x);
        const unsigned k = _mm512_cmp_ps_mask(x, z, _CMP_GT_OQ);
        m[i / 8] = (uint8_t)k;
        m[i / 8 + 1] = (uint8_t)(k >> 8);
    }
    if (i < n) {
        const int r = n - i;
        const __mmask16 lim = (__mmask16)((1u << r) - 1);
        const __m512 x = _mm512_max_ps(_mm512_maskz_loadu_ps(lim, v + i), z);
        _mm512_mask_storeu_ps(v + i, lim, x);
        const unsigned k = _mm512_mask_cmp_ps_mask(lim, x, z, _CMP_GT_OQ);
        m[i / 8] = (uint8_t)k;
        if (r > 8)
            m[i / 8 + 1] = (uint8_t)(k >> 8);
    }
}

__attribute__((target("avx512f"))) void conv_relu_mask_apply_512(const float *dy, const uint8_t *m, int n, float *o)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __mmask16 k = (__mmask16)(m[i / 8] | (unsigned)m[i / 8 + 1] << 8);
        _mm512_storeu_ps(o + i, _mm512_maskz_loadu_ps(k, dy + i));
    }
    if (i < n) { /* under 16 left: their mask bytes only (planes start on a byte) */
        const int r = n - i;
        const __mmask16 lim = (__mmask16)((1u << r) - 1);
        const __mmask16 k = (__mmask16)((m[i / 8] | (r > 8 ? (unsigned)m[i / 8 + 1] << 8 : 0u)) & lim);
        _mm512_mask_storeu_ps(o + i, lim, _mm512_maskz_loadu_ps(k, dy + i));
    }
}

__attribute__((target("avx512f"))) void conv_transpose_dy_512(const float *src, int ld, int OC, int OHW, int OCP,
                                                              float *dyt)
{
    for (int oc0 = 0; oc0 < OCP; oc0 += 16) {
        const int nv = OC - oc0 < 16 ? (OC - oc0 > 0 ? OC - oc0 : 0) : 16;
        const __mmask16 k = (__mmask16)((1u << nv) - 1);
        /* lane l reads row oc0 + l: offsets l*ld from the block's first row */
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(ld));
        const float *base = src + (size_t)(nv ? oc0 : 0) * ld;
        for (int i = 0; i < OHW; i++)
            _mm512_storeu_ps(dyt + (size_t)i * OCP + oc0,
                             _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, base + i, 4));
    }
}

int conv_glue_avx512(void)
{
    const char *e = getenv("FEDNAS_CONV_GLUE_PORTABLE");
    return conv_use_avx512() && !(e && atoi(e) > 0);
}

int conv_direct_dw_usable(const conv_dims_t *d)
{
    const char *e = getenv("FEDNAS_CONV_DIRECT");
    if ((e && *e && atoi(e) <= 0) || !conv_use_avx512() || conv_force_im2col())
        return 0;
    return d->sh == 1 && d->sw == 1 && d->dh == 1 && d->dw == 1 && d->G == 1 && dir_fills(d->OC) &&
           d->K >= DWT_MIN_TAPS && (d->KH * d->KW > 1 || dir_pointwise(d));
}
#else
size_t conv_direct_tmp_floats(int OC, int Hp, int Wp, int KH, int KW)
{
    (void)OC, (void)Hp, (void)Wp, (void)KH, (void)KW;
    return 0;
}

void conv_direct_sample(const float *xp, int Hp, int Wp, int C, const float *w, int ldw, int KH, int KW,
                        const float *bias, int OC, float *y, float *tmp, int add, int relu)
{
    (void)xp, (void)Hp, (void)Wp, (void)C, (void)w, (void)ldw, (void)KH, (void)KW, (void)bias, (void)OC, (void)y;
    (void)tmp, (void)add, (void)relu;
    abort(); /* never called: conv_direct_usable() is 0 here */
}

int conv_direct_usable(const conv_dims_t *d)
{
    (void)d;
    return 0;
}

int conv_direct_dx_usable(const conv_dims_t *d)
{
    (void)d;
    return 0;
}

void conv_direct_dw_sample(const float *xp, int Hp, int Wp, int C, int KH, int KW, const float *dyt, int OCP,
                           float *dwt)
{
    (void)xp, (void)Hp, (void)Wp, (void)C, (void)KH, (void)KW, (void)dyt, (void)OCP, (void)dwt;
    abort(); /* never called: conv_direct_dw_usable() is 0 here */
}

int conv_direct_dw_usable(const conv_dims_t *d)
{
    (void)d;
    return 0;
}

int conv_glue_avx512(void) { return 0; }

void conv_relu_mask_512(float *v, int n, uint8_t *m)
{
    for (int i = 0; i < n; i++) /* never called: conv_glue_avx512() is 0 here */
        v[i] = v[i] > 0.0f ? v[i] : 0.0f;
    relu_mask(v, n, m);
}

void conv_relu_mask_apply_512(const float *dy, const uint8_t *m, int n, float *o)
{
    relu_mask_apply(dy, m, n, o); /* never called: conv_glue_avx512() is 0 here */
}

void conv_transpose_dy_512(const float *src, int ld, int OC, int OHW, int OCP, float *dyt)
{
    (void)src, (void)ld, (void)OC, (void)OHW, (void)OCP, (void)dyt;
    abort(); /* never called: conv_glue_avx512() is 0 here */
}
#endif

void conv_direct_flip(const conv_dims_t *d, const float *W, float *Wf)
{
    const int KK = d->KH * d->KW;
    for (int oc = 0; oc < d->OC; oc++)
        for (int c = 0; c < d->C; c++) {
            const float *src = W + ((size_t)oc * d->C + c) * KK;
            float *dst = Wf + ((size_t)c * d->OC + oc) * KK;
            for (int k = 0; k < KK; k++)
                dst[k] = src[KK - 1 - k];
        }
}

void conv_direct_pad(const float *src, int C, int H, int W, int ph, int pw, float *dst)
{
    const int Wp = W + 2 * pw;
    const size_t pp = (size_t)(H + 2 * ph) * Wp;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            copy_row(dst + c * pp + (size_t)(h + ph) * Wp + pw, src + ((size_t)c * H + h) * W, W);
}
