/* infer_fp32: the inference runtime's float kernels (see infer_impl.h).
 *
 * Convolution: im2col, one sgemm for a group of samples (N = group x pixels of about 1k keeps
 * the product efficient and packs the weights once per group, not per sample), then one pass
 * over the product that adds the bias, applies the ReLU and, when a 2x2 max pool is fused
 * (folding, engine_infer_fold), pools, scattering into NCHW. A folded model so reads its conv
 * outputs once; the unfolded one reads them again for batch norm, ReLU and the pool.
 *
 * Linear: at small batches a product through sgemm is dominated by OpenBLAS packing the whole
 * weight matrix on every call (the FedAvg CNN's fc1 is 6.4 MB). Up to SMALL_B samples the
 * weights are packed once, in panels of 16 outputs, and an AVX-512 kernel (32 outputs x 8
 * samples of accumulators) takes two panels at a time through every group of 8 samples, so
 * the weights come from memory once per pass (a pair of panels, 32 x K floats, stays in L2);
 * without AVX-512, cblas_sgemv per sample (up to 2) or sgemm.
 * FEDNAS_INFER_PORTABLE=1 turns the AVX-512 code off (tests, A/B measurements). */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/infer_impl.h"

#define SMALL_B 64
/* Samples per conv product: one, unless the map is small (measured on the FedAvg CNN with batch
 * norm: grouping 14x14 maps into N of 1-2k made the columns outgrow the cache, 1.1-1.2x slower). */
#define CONV_MIN_COLS 128
#define CONV_GROUP_COLS 256

/* col [C*k*k][ld], this sample's columns at col[.., 0..OH*OW). Valid spans of a row are copied
 * whole (stride 1) instead of testing every element. */
__attribute__((noinline)) static void im2col(const float *x, int C, int H, int W, int k, int s, int pad, int OH,
                                             int OW, float *col, size_t ld)
{
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * ld;
                int lo = 0, hi = OW; /* ox with 0 <= ox*s - pad + kx < W */
                while (lo < OW && lo * s - pad + kx < 0)
                    lo++;
                while (hi > lo && (hi - 1) * s - pad + kx >= W)
                    hi--;
                for (int oy = 0; oy < OH; oy++) {
                    int iy = oy * s - pad + ky;
                    float *r = row + (size_t)oy * OW;
                    if (iy < 0 || iy >= H) {
                        memset(r, 0, (size_t)OW * sizeof *r);
                        continue;
                    }
                    const float *src = x + ((size_t)c * H + iy) * W - pad + kx;
                    for (int ox = 0; ox < lo; ox++)
                        r[ox] = 0;
                    if (s == 1)
                        memcpy(r + lo, src + lo, (size_t)(hi - lo) * sizeof *r);
                    else
                        for (int ox = lo; ox < hi; ox++)
                            r[ox] = src[ox * s];
                    for (int ox = hi; ox < OW; ox++)
                        r[ox] = 0;
                }
            }
}

#define AVX512 __attribute__((target("avx512f")))

/* FEDNAS_INFER_PORTABLE=1: the plain paths (for tests and A/B measurements). */
int infer_avx512(void)
{
    static int v = -1;
    if (v < 0)
        v = __builtin_cpu_supports("avx512f") ? 1 : 0;
    const char *e = v ? getenv("FEDNAS_INFER_PORTABLE") : NULL;
    return v && !(e && strcmp(e, "1") == 0);
}
#define use_avx512 infer_avx512

/* im2col for stride 1: each channel is copied once into a zero-padded plane (pp, (H+2pad) x
 * (W+2pad) floats), after which every row of the columns is OH spans of OW floats read straight
 * from it, with masked AVX-512 loads and stores: a short span (the CNN's 14-pixel rows) costs
 * one instruction pair, not a memcpy call plus zero filling. */
AVX512 static void im2col_s1(const float *x, int C, int H, int W, int k, int pad, int OH, int OW, float *col, size_t ld,
                             float *pp)
{
    int Hp = H + 2 * pad, Wp = W + 2 * pad;
    memset(pp, 0, (size_t)Hp * Wp * sizeof *pp);
    __mmask16 tail = (__mmask16)((1u << (OW % 16)) - 1);
    for (int c = 0; c < C; c++) {
        for (int iy = 0; iy < H; iy++)
            memcpy(pp + (size_t)(iy + pad) * Wp + pad, x + ((size_t)c * H + iy) * W, (size_t)W * sizeof *x);
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * ld;
                for (int oy = 0; oy < OH; oy++) {
                    const float *src = pp + (size_t)(oy + ky) * Wp + kx;
                    float *r = row + (size_t)oy * OW;
                    int ox = 0;
                    for (; ox + 16 <= OW; ox += 16)
                        _mm512_storeu_ps(r + ox, _mm512_loadu_ps(src + ox));
                    if (tail)
                        _mm512_mask_storeu_ps(r + ox, tail, _mm512_maskz_loadu_ps(tail, src + ox));
                }
            }
    }
}

void infer_maxpool2(const float *x, int C, int H, int W, float *y)
{
    int OH = H / 2, OW = W / 2;
    for (int c = 0; c < C; c++) {
        const float *xi = x + (size_t)c * H * W;
        float *yo = y + (size_t)c * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            const float *r0 = xi + (size_t)(2 * oy) * W, *r1 = r0 + W;
            for (int ox = 0; ox < OW; ox++) {
                float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
                float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
                yo[oy * OW + ox] = a > b ? a : b;
            }
        }
    }
}

/* One output plane t [OH][OW] (the product's row for one channel and sample) plus bias, ReLU and
 * the fused pool into y. ReLU and max commute, so they go in either order. */
static void epilogue(const float *t, int OH, int OW, float bias, int relu, int pool, float *y)
{
    if (!pool) {
        int P = OH * OW;
        if (relu)
            for (int q = 0; q < P; q++) {
                float v = t[q] + bias;
                y[q] = v > 0 ? v : 0;
            }
        else
            for (int q = 0; q < P; q++)
                y[q] = t[q] + bias;
        return;
    }
    int PH = OH / 2, PW = OW / 2;
    float lo = relu ? 0.0f : -INFINITY;
    for (int py = 0; py < PH; py++) {
        const float *r0 = t + (size_t)(2 * py) * OW, *r1 = r0 + OW;
        float *yo = y + (size_t)py * PW;
        for (int px = 0; px < PW; px++) {
            float a = r0[2 * px] > r0[2 * px + 1] ? r0[2 * px] : r0[2 * px + 1];
            float b = r1[2 * px] > r1[2 * px + 1] ? r1[2 * px] : r1[2 * px + 1];
            float m = (a > b ? a : b) + bias;
            yo[px] = m > lo ? m : lo;
        }
    }
}

int infer_conv_fp32(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B)
{
    int C = l->in[0], H = l->in[1], W = l->in[2], OH = (l->in[1] + 2 * l->pad - l->k) / l->stride + 1,
        OW = (l->in[2] + 2 * l->pad - l->k) / l->stride + 1, P = OH * OW;
    size_t in_n = (size_t)C * H * W, out_n = (size_t)l->cout * l->out[1] * l->out[2];
    size_t pp_n = (size_t)(H + 2 * l->pad) * (W + 2 * l->pad);
    if (infer_conv_direct_ok(l))
        return infer_conv_direct(p, l, x, y, B);
    int s1 = l->stride == 1 && use_avx512();
    int g = P >= CONV_MIN_COLS ? 1 : (CONV_GROUP_COLS + P - 1) / P;
    if (g > B)
        g = B;
    if (g == 1 && !l->pool) { /* the product lands in NCHW directly; bias and ReLU in place */
        if (infer_grow((void **)&p->col, &p->col_cap, ((size_t)l->K * P + pp_n) * sizeof(float)))
            return -1;
        for (int b = 0; b < B; b++) {
            float *yb = y + b * out_n;
            if (s1)
                im2col_s1(x + b * in_n, C, H, W, l->k, l->pad, OH, OW, p->col, (size_t)P, p->col + (size_t)l->K * P);
            else
                im2col(x + b * in_n, C, H, W, l->k, l->stride, l->pad, OH, OW, p->col, (size_t)P);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l->cout, P, l->K, 1.0f, l->w, l->K, p->col, P, 0.0f,
                        yb, P);
            for (int o = 0; o < l->cout; o++)
                epilogue(yb + (size_t)o * P, OH, OW, l->b ? l->b[o] : 0, l->relu, 0, yb + (size_t)o * P);
        }
        return 0;
    }
    size_t ld = (size_t)g * P;
    if (infer_grow((void **)&p->col, &p->col_cap, (((size_t)l->K + l->cout) * ld + pp_n) * sizeof(float)))
        return -1;
    float *tmp = p->col + (size_t)l->K * ld, *pp = tmp + (size_t)l->cout * ld;
    size_t plane = (size_t)l->out[1] * l->out[2];
    for (int b0 = 0; b0 < B; b0 += g) {
        int nb = B - b0 < g ? B - b0 : g;
        for (int j = 0; j < nb; j++)
            if (s1)
                im2col_s1(x + (b0 + j) * in_n, C, H, W, l->k, l->pad, OH, OW, p->col + (size_t)j * P, ld, pp);
            else
                im2col(x + (b0 + j) * in_n, C, H, W, l->k, l->stride, l->pad, OH, OW, p->col + (size_t)j * P, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l->cout, nb * P, l->K, 1.0f, l->w, l->K, p->col,
                    (int)ld, 0.0f, tmp, (int)ld);
        for (int o = 0; o < l->cout; o++)
            for (int j = 0; j < nb; j++)
                epilogue(tmp + (size_t)o * ld + (size_t)j * P, OH, OW, l->b ? l->b[o] : 0, l->relu, l->pool,
                         y + (b0 + j) * out_n + (size_t)o * plane);
    }
    return 0;
}

/* wp: ceil(cout/16) panels, each K rows of 16 outputs (zero beyond cout). */
static int pack(ilayer_t *l)
{
    int np = (l->cout + 15) / 16;
    float *wp = aligned_alloc(64, (size_t)np * l->K * 16 * sizeof *wp);
    if (!wp)
        return -1;
    for (int pn = 0; pn < np; pn++)
        for (int k = 0; k < l->K; k++)
            for (int j = 0; j < 16; j++) {
                int o = pn * 16 + j;
                wp[((size_t)pn * l->K + k) * 16 + j] = o < l->cout ? l->w[(size_t)o * l->K + k] : 0;
            }
    l->wp = wp;
    return 0;
}

/* NP panels (16 outputs each, K rows apart from wp) x up to NB samples (x, K apart; nb of them)
 * into t [NB][NP * 16]. */
AVX512 __attribute__((always_inline)) static inline void lin_block(const int NP, const int NB, const float *wp, int K,
                                                                   const float *x, int nb, float *t)
{
    __m512 acc[4][8];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            acc[q][b] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 v[4];
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            v[q] = _mm512_load_ps(wp + ((size_t)q * K + k) * 16);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            if (b < nb) {
                __m512 xb = _mm512_set1_ps(x[(size_t)b * K + k]);
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++)
                    acc[q][b] = _mm512_fmadd_ps(xb, v[q], acc[q][b]);
            }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            _mm512_storeu_ps(t + (size_t)b * NP * 16 + q * 16, acc[q][b]);
}

/* y[b][o] = x[b] . w[o] for B samples and every panel. From 6 samples on, four panels at a time
 * through every group of 6 samples (24 FMAs per 10 loads; the four panels, 64 x K floats, stay
 * in L2); below that, two panels through groups of 8 (one pass over the weights, which is what
 * a small batch is bound by). */
AVX512 static void small_avx512(const float *wp, int K, int cout, int npanels, const float *xall, int B, float *yall)
{
    float t[8 * 64];
    for (int pn = 0; pn < npanels;) {
        int np = B >= 6 && npanels - pn >= 4 ? 4 : npanels - pn >= 2 ? 2 : 1, nbmax = np == 4 ? 6 : 8;
        int width = cout - pn * 16 < np * 16 ? cout - pn * 16 : np * 16;
        const float *w = wp + (size_t)pn * K * 16;
        for (int b0 = 0; b0 < B; b0 += nbmax) {
            int nb = B - b0 < nbmax ? B - b0 : nbmax;
            const float *x = xall + (size_t)b0 * K;
            if (np == 4)
                lin_block(4, 6, w, K, x, nb, t);
            else if (np == 2)
                lin_block(2, 8, w, K, x, nb, t);
            else
                lin_block(1, 8, w, K, x, nb, t);
            for (int b = 0; b < nb; b++)
                memcpy(yall + (size_t)(b0 + b) * cout + (size_t)pn * 16, t + (size_t)b * np * 16,
                       (size_t)width * sizeof *t);
        }
        pn += np;
    }
}

int infer_linear_fp32(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B)
{
    (void)p;
    if (B <= SMALL_B && use_avx512()) {
        if (!l->wp && pack(l) < 0)
            return -1;
        small_avx512(l->wp, l->K, l->cout, (l->cout + 15) / 16, x, B, y);
    } else if (B <= 2) {
        for (int b = 0; b < B; b++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, l->cout, l->K, 1.0f, l->w, l->K, x + (size_t)b * l->K, 1, 0.0f,
                        y + (size_t)b * l->cout, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, l->cout, l->K, 1.0f, x, l->K, l->w, l->K, 0.0f, y,
                    l->cout);
    }
    for (int b = 0; b < B; b++)
        for (int o = 0; o < l->cout; o++) {
            float v = y[(size_t)b * l->cout + o] + (l->b ? l->b[o] : 0);
            y[(size_t)b * l->cout + o] = l->relu && v < 0 ? 0 : v;
        }
    return 0;
}
