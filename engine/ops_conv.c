/* CPU kernels: conv2d as im2col + sgemm (DESIGN point 6), for any kernel, stride, padding,
 * dilation and groups.
 *
 * The batch is split into contiguous ranges of samples ("parts", two per pool thread); each
 * part runs the whole op for its samples on one core, with OpenBLAS single-threaded inside it
 * (engine_parallel_blas): im2col into the part's column buffer, sgemm, and the epilogue, one
 * sample (or a few small ones) at a time, so the column matrix, the sgemm's output and the bias
 * pass stay in that core's cache. A sample's output [OC, OH*OW] is the sgemm's C layout in NCHW,
 * so with one sample per sgemm the product lands straight in the output tensor; small feature
 * maps (fewer than CONV_MIN_COLS output pixels) batch S samples per sgemm for efficiency, at the
 * price of a copy of the output chunk (still in cache).
 *
 * The column matrix is built a block of input channels at a time (CONV_BLOCK_BYTES), each block
 * one sgemm accumulating into the output, so the columns never leave L2 between im2col and the
 * sgemm that packs them. Backward likewise recomputes the columns block by block (cheaper than
 * keeping them: K*OH*OW floats per sample, 25x the input for a 5x5 kernel). Weight and bias
 * gradients are summed per part in a fixed order and added part by part, so a result is
 * reproducible for a fixed thread count. The input gradient, when no other op has written it
 * yet, is stored rather than added (no zeroing pass).
 *
 * A fused ReLU (engine_conv2d_params_t.relu) is applied in the epilogue, which also records
 * which outputs are positive as a bit mask (t->saved: 1/32 of the output's size); backward
 * applies it (dy where the output was positive) while copying the sample's dy block for the
 * sgemms, so it never reads the output itself back from memory. */
#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "engine/ops_cpu.h"

/* Column block: a block of input channels' columns for S samples, small enough to stay in a
 * core's L2 cache together with the sgemm's packed copy of it. */
#define CONV_BLOCK_BYTES ((size_t)256 << 10)
/* Output pixels per sgemm below which samples are batched. */
#define CONV_MIN_COLS 128

typedef struct {
    int C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G;
    int Cg, OCg, K, OHW;
} conv_dims_t;

static conv_dims_t dims_of(const engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *W = t->src[1];
    conv_dims_t d = {(int)x->ne[1], (int)x->ne[2], (int)x->ne[3], (int)W->ne[0], (int)t->ne[2], (int)t->ne[3],
                     (int)W->ne[2], (int)W->ne[3], t->ip[0], t->ip[1], t->ip[2], t->ip[3], t->ip[4], t->ip[5],
                     t->ip[6], 0, 0, 0, 0};
    d.Cg = d.C / d.G;
    d.OCg = d.OC / d.G;
    d.K = d.Cg * d.KH * d.KW;
    d.OHW = d.OH * d.OW;
    return d;
}

/* im2col and col2im go through a zero-padded copy of one input plane ([H+2ph, W+2pw], the
 * part's `pad` buffer, whose border stays zero), so every column row is OH plain copies of OW
 * elements with no bounds checks: about 3x faster than clipping each row against the border. */

/* n floats from in to o (not overlapping) in 16-byte moves, the last one overlapping the one
 * before instead of a scalar tail: rows here are short (14 floats in the FedAvg CNN), so the
 * tail loop of a plain copy costs as much as its body. */
static inline void copy_row(float *o, const float *in, int n)
{
    if (n < 4) {
        for (int i = 0; i < n; i++)
            o[i] = in[i];
        return;
    }
    int i = 0;
    for (; i + 4 <= n; i += 4)
        memcpy(o + i, in + i, 4 * sizeof *o);
    if (i < n)
        memcpy(o + n - 4, in + n - 4, 4 * sizeof *o);
}

/* Copies plane [H, W] into the interior of pad (the border is left as it is: zero). */
static void pad_plane(const conv_dims_t *d, const float *plane, float *pad)
{
    const int Wp = d->W + 2 * d->pw;
    for (int h = 0; h < d->H; h++)
        copy_row(pad + (size_t)(h + d->ph) * Wp + d->pw, plane + (size_t)h * d->W, d->W);
}

/* Columns of input channels [c0, c1) of group gi for n samples starting at x (the chunk's first
 * sample) into col [(c1-c0)*KH*KW, n*OHW]. pad: (H+2ph)*(W+2pw) floats, border zero. */
static void im2col(const conv_dims_t *d, const float *x, float *col, int n, int gi, int c0, int c1, float *pad)
{
    const int OHW = d->OHW, OW = d->OW, sw = d->sw, HW = d->H * d->W;
    const int padded = d->ph || d->pw, Wp = padded ? d->W + 2 * d->pw : d->W;
    const size_t ld = (size_t)n * OHW;
    for (int s = 0; s < n; s++)
        for (int c = c0; c < c1; c++) {
            const float *plane = x + ((size_t)s * d->C + (size_t)gi * d->Cg + c) * HW, *src = plane;
            if (padded) {
                pad_plane(d, plane, pad);
                src = pad;
            }
            for (int ki = 0; ki < d->KH; ki++)
                for (int kj = 0; kj < d->KW; kj++) {
                    float *row = col + ((size_t)((c - c0) * d->KH + ki) * d->KW + kj) * ld + (size_t)s * OHW;
                    for (int oh = 0; oh < d->OH; oh++) {
                        const float *in = src + (size_t)(oh * d->sh + ki * d->dh) * Wp + kj * d->dw;
                        float *o = row + (size_t)oh * OW;
                        if (sw == 1)
                            copy_row(o, in, OW);
                        else
                            for (int ow = 0; ow < OW; ow++)
                                o[ow] = in[ow * sw];
                    }
                }
        }
}

/* The gradient of the columns of channels [c0, c1) of group gi, col [(c1-c0)*KH*KW, n*OHW],
 * into dx of n samples starting at dx: stored when `store` (nothing else has written dx),
 * else added. Each plane is summed in pad (zeroed here) and then written once. */
static void col2im(const conv_dims_t *d, const float *col, float *dx, int n, int gi, int c0, int c1, float *pad,
                   int store)
{
    const int OHW = d->OHW, OW = d->OW, sw = d->sw, HW = d->H * d->W;
    const int Hp = d->H + 2 * d->ph, Wp = d->W + 2 * d->pw;
    const size_t ld = (size_t)n * OHW;
    for (int s = 0; s < n; s++)
        for (int c = c0; c < c1; c++) {
            memset(pad, 0, (size_t)Hp * Wp * sizeof *pad);
            for (int ki = 0; ki < d->KH; ki++)
                for (int kj = 0; kj < d->KW; kj++) {
                    const float *row = col + ((size_t)((c - c0) * d->KH + ki) * d->KW + kj) * ld + (size_t)s * OHW;
                    for (int oh = 0; oh < d->OH; oh++) {
                        float *in = pad + (size_t)(oh * d->sh + ki * d->dh) * Wp + kj * d->dw;
                        const float *o = row + (size_t)oh * OW;
                        if (sw == 1)
                            for (int ow = 0; ow < OW; ow++)
                                in[ow] += o[ow];
                        else
                            for (int ow = 0; ow < OW; ow++)
                                in[ow * sw] += o[ow];
                    }
                }
            float *plane = dx + ((size_t)s * d->C + (size_t)gi * d->Cg + c) * HW;
            for (int h = 0; h < d->H; h++) {
                const float *in = pad + (size_t)(h + d->ph) * Wp + d->pw;
                float *o = plane + (size_t)h * d->W;
                if (store)
                    copy_row(o, in, d->W);
                else
                    for (int w = 0; w < d->W; w++)
                        o[w] += in[w];
            }
        }
}

/* Bytes of ReLU mask per output plane (planes start on a byte, so parts never share one). */
static size_t mask_bytes(int ohw) { return ((size_t)ohw + 7) / 8; }

/* Bit i of m: v[i] > 0, for n floats. */
static void relu_mask(const float *v, int n, uint8_t *m)
{
    int i = 0;
#if defined(__SSE2__)
    const __m128 z = _mm_setzero_ps();
    for (; i + 8 <= n; i += 8)
        m[i / 8] = (uint8_t)(_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(v + i), z)) |
                             _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(v + i + 4), z)) << 4);
#endif
    for (; i < n; i += 8) {
        unsigned b = 0;
        for (int k = 0; k < 8 && i + k < n; k++)
            b |= (unsigned)(v[i + k] > 0.0f) << k;
        m[i / 8] = (uint8_t)b;
    }
}

/* o[i] = dy[i] where bit i of m is set, else 0. */
static void relu_mask_apply(const float *dy, const uint8_t *m, int n, float *o)
{
    int i = 0;
#if defined(__SSE2__)
    const __m128i lo = _mm_setr_epi32(1, 2, 4, 8), hi = _mm_setr_epi32(16, 32, 64, 128);
    for (; i + 8 <= n; i += 8) {
        const __m128i b = _mm_set1_epi32(m[i / 8]);
        const __m128 k0 = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(b, lo), lo));
        const __m128 k1 = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(b, hi), hi));
        _mm_storeu_ps(o + i, _mm_and_ps(k0, _mm_loadu_ps(dy + i)));
        _mm_storeu_ps(o + i + 4, _mm_and_ps(k1, _mm_loadu_ps(dy + i + 4)));
    }
#endif
    for (; i < n; i++)
        o[i] = (m[i >> 3] >> (i & 7)) & 1 ? dy[i] : 0.0f;
}

/* Samples per sgemm: 1 when a sample has enough output pixels (the output needs no copy),
 * else enough to reach CONV_MIN_COLS. FEDNAS_CONV_CHUNK overrides (benchmarks). */
static int chunk_samples(const conv_dims_t *d, int B)
{
    const char *e = getenv("FEDNAS_CONV_CHUNK");
    const int forced = e ? atoi(e) : 0;
    int S = forced > 0 ? forced : (d->OHW >= CONV_MIN_COLS ? 1 : (CONV_MIN_COLS + d->OHW - 1) / d->OHW);
    return S < B ? S : B;
}

/* Input channels per column block (at least one). */
static int channel_block(const conv_dims_t *d, int S)
{
    size_t per = (size_t)d->KH * d->KW * S * d->OHW * sizeof(float);
    size_t cb = CONV_BLOCK_BYTES / (per ? per : 1);
    if (cb < 1)
        cb = 1;
    return cb < (size_t)d->Cg ? (int)cb : d->Cg;
}

/* Sum of n floats with eight independent partial sums (a single running sum is one long
 * dependency chain); fixed order, so reproducible. */
static float sum_floats(const float *r, int n)
{
    float a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            a[k] += r[i + k];
    float t = 0.0f;
    for (; i < n; i++)
        t += r[i];
    return t + (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
}

typedef struct {
    conv_dims_t d;
    int B, S, CB, parts; /* CB: input channels per column block */
    int relu;            /* ReLU fused into the output (ip[7]) */
    uint8_t *mask;       /* with relu: output > 0, mask_bytes(OHW) per (sample, channel) plane */
    const float *x, *W, *bias, *dy;
    float *y, *dx, *dW, *db;
    int dx_fresh;
    float *scratch;     /* part_floats per part: columns, [dcol,] chunk output, padded planes */
    size_t part_floats;
    size_t pad_floats;  /* one zero-padded input plane */
    float *dW_part;     /* parts-1 private weight-gradient sums (parts 1..), OC*K floats each */
    float *db_part;     /* parts-1 private bias-gradient sums, OC floats each */
} conv_job_t;

static void sample_range(const conv_job_t *j, int p, int *lo, int *hi)
{
    *lo = (int)((long)j->B * p / j->parts);
    *hi = (int)((long)j->B * (p + 1) / j->parts);
}

static void conv_fwd_part(void *ctx, int64_t begin, int64_t end)
{
    const conv_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const int OHW = d->OHW, K = d->K, OCg = d->OCg, KK = d->KH * d->KW;
    for (int64_t p = begin; p < end; p++) {
        float *col = j->scratch + (size_t)p * j->part_floats, *tmp = col + (size_t)j->CB * KK * j->S * OHW;
        float *pad = tmp + (size_t)OCg * j->S * OHW;
        memset(pad, 0, j->pad_floats * sizeof *pad); /* the border; im2col writes the interior */
        int lo, hi;
        sample_range(j, (int)p, &lo, &hi);
        for (int s0 = lo; s0 < hi; s0 += j->S) {
            const int n = hi - s0 < j->S ? hi - s0 : j->S, N = n * OHW;
            for (int gi = 0; gi < d->G; gi++) {
                /* one sample: the product is the output block itself; several: a chunk to scatter */
                float *out = n == 1 ? j->y + ((size_t)s0 * d->OC + (size_t)gi * OCg) * OHW : tmp;
                for (int c0 = 0; c0 < d->Cg; c0 += j->CB) {
                    const int c1 = c0 + j->CB < d->Cg ? c0 + j->CB : d->Cg;
                    im2col(d, j->x + (size_t)s0 * d->C * d->H * d->W, col, n, gi, c0, c1, pad);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, N, (c1 - c0) * KK, 1.0f,
                                j->W + (size_t)gi * OCg * K + (size_t)c0 * KK, K, col, N, c0 ? 1.0f : 0.0f, out, N);
                }
                if (n == 1 && !j->bias && !j->relu)
                    continue;
                /* bias, ReLU (and the scatter of a chunk) while the block is still in cache */
                for (int s = 0; s < n; s++)
                    for (int oc = 0; oc < OCg; oc++) {
                        float *dst = j->y + ((size_t)(s0 + s) * d->OC + (size_t)gi * OCg + oc) * OHW;
                        const float *src = out + (size_t)oc * N + (size_t)s * OHW;
                        const float bv = j->bias ? j->bias[gi * OCg + oc] : 0.0f;
                        if (j->relu) {
                            for (int i = 0; i < OHW; i++) {
                                float v = src[i] + bv;
                                dst[i] = v > 0.0f ? v : 0.0f;
                            }
                            relu_mask(dst, OHW, j->mask + ((size_t)(s0 + s) * d->OC + (size_t)gi * OCg + oc) *
                                                              mask_bytes(OHW));
                        } else
                            for (int i = 0; i < OHW; i++)
                                dst[i] = src[i] + bv;
                    }
            }
        }
    }
}

static void conv_bwd_part(void *ctx, int64_t begin, int64_t end)
{
    const conv_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const int OHW = d->OHW, K = d->K, OCg = d->OCg, KK = d->KH * d->KW, CHW = d->C * d->H * d->W;
    const size_t colf = (size_t)j->CB * KK * j->S * OHW;
    for (int64_t p = begin; p < end; p++) {
        float *col = j->scratch + (size_t)p * j->part_floats, *dcol = col + colf, *tmp = dcol + colf;
        float *pad = tmp + (size_t)OCg * j->S * OHW, *pad_acc = pad + j->pad_floats;
        memset(pad, 0, j->pad_floats * sizeof *pad);
        /* part 0 adds into the gradients themselves, the others into zeroed private sums */
        float *dW = j->dW && p > 0 ? j->dW_part + (size_t)(p - 1) * d->OC * K : j->dW;
        float *db = j->db && p > 0 ? j->db_part + (size_t)(p - 1) * d->OC : j->db;
        if (p > 0 && dW)
            memset(dW, 0, (size_t)d->OC * K * sizeof *dW);
        if (p > 0 && db)
            memset(db, 0, (size_t)d->OC * sizeof *db);
        int lo, hi;
        sample_range(j, (int)p, &lo, &hi);
        for (int s0 = lo; s0 < hi; s0 += j->S) {
            const int n = hi - s0 < j->S ? hi - s0 : j->S, N = n * OHW;
            for (int gi = 0; gi < d->G; gi++) {
                /* dy of the chunk as [OCg, n*OHW]: the tensor itself for one sample without ReLU;
                 * with a fused ReLU, dy where the output is positive, else 0 (ReLU's backward) */
                const float *dyc = j->dy + ((size_t)s0 * d->OC + (size_t)gi * OCg) * OHW;
                if (n > 1 || j->relu) {
                    for (int s = 0; s < n; s++)
                        for (int oc = 0; oc < OCg; oc++) {
                            const size_t plane = (size_t)(s0 + s) * d->OC + (size_t)gi * OCg + oc, at = plane * OHW;
                            float *o = tmp + (size_t)oc * N + (size_t)s * OHW;
                            if (j->relu)
                                relu_mask_apply(j->dy + at, j->mask + plane * mask_bytes(OHW), OHW, o);
                            else
                                memcpy(o, j->dy + at, (size_t)OHW * sizeof *o);
                        }
                    dyc = tmp;
                }
                if (db)
                    for (int oc = 0; oc < OCg; oc++)
                        db[gi * OCg + oc] += sum_floats(dyc + (size_t)oc * N, N);
                for (int c0 = 0; c0 < d->Cg; c0 += j->CB) {
                    const int c1 = c0 + j->CB < d->Cg ? c0 + j->CB : d->Cg, Kb = (c1 - c0) * KK;
                    const size_t woff = (size_t)gi * OCg * K + (size_t)c0 * KK;
                    if (dW) {
                        im2col(d, j->x + (size_t)s0 * CHW, col, n, gi, c0, c1, pad);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, Kb, N, 1.0f, dyc, N, col, N, 1.0f,
                                    dW + woff, K);
                    }
                    if (j->dx) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Kb, N, OCg, 1.0f, j->W + woff, K, dyc, N,
                                    0.0f, dcol, N);
                        col2im(d, dcol, j->dx + (size_t)s0 * CHW, n, gi, c0, c1, pad_acc, j->dx_fresh);
                    }
                }
            }
        }
    }
}

/* Depthwise convolution (one input channel per group: Cg = 1, any channel multiplier OCg),
 * direct. Through im2col each group's product is a [OCg, KH*KW] x [KH*KW, OHW] sgemm: a 1-row
 * matrix times a 9-row one, all call and packing overhead, so depthwise layers (the first half
 * of a separable conv, common in NAS spaces) ran far below the rest of the net. Here each output
 * row is a sum of KH*KW scaled input rows, a loop the compiler vectorizes; dw_* are compiled for
 * AVX-512, AVX2 and baseline x86-64 and the loader picks one by the CPU (target_clones).
 *
 * Work is split by channel, not by sample: a channel's weight gradient then depends on that
 * part's data only, so there are no per-part partial sums to add, batch 1 still runs on every
 * thread, and the result does not depend on the thread count at all. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DW_CLONES
#endif

typedef struct {
    conv_dims_t d;
    int B, relu;
    uint8_t *mask;
    const float *x, *W, *bias, *dy;
    float *y, *dx, *dW, *db;
    int dx_fresh;
    float *scratch;
    size_t part_floats, pad_floats;
    int parts;
} dw_job_t;

/* o[i] += w * in[i*sw], n floats. */
static inline void axpy_row(float *restrict o, const float *restrict in, float w, int n, int sw)
{
    if (sw == 1)
        for (int i = 0; i < n; i++)
            o[i] += w * in[i];
    else
        for (int i = 0; i < n; i++)
            o[i] += w * in[i * sw];
}

/* One output plane [OH, OW] of channel oc from the padded input plane src. */
DW_CLONES static void dw_plane_fwd(const conv_dims_t *d, const float *src, const float *w, float bv, float *o)
{
    const int Wp = d->W + 2 * d->pw;
    for (int oh = 0; oh < d->OH; oh++) {
        float *orow = o + (size_t)oh * d->OW;
        for (int ow = 0; ow < d->OW; ow++)
            orow[ow] = bv;
        for (int ki = 0; ki < d->KH; ki++)
            for (int kj = 0; kj < d->KW; kj++)
                axpy_row(orow, src + (size_t)(oh * d->sh + ki * d->dh) * Wp + kj * d->dw, w[ki * d->KW + kj], d->OW,
                         d->sw);
    }
}

/* Gradients of one plane: acc (KH*KW*OW floats) collects dW's products lane by lane (no
 * reduction across a row inside the loop, so it vectorizes), summed into dw at the end; dx's
 * contributions go into pad_acc, the zeroed padded plane. */
DW_CLONES static void dw_plane_bwd(const conv_dims_t *d, const float *src, const float *w, const float *dy,
                                   float *acc, float *dw, float *pad_acc)
{
    const int Wp = d->W + 2 * d->pw, KK = d->KH * d->KW, OW = d->OW;
    if (dw)
        memset(acc, 0, (size_t)KK * OW * sizeof *acc);
    for (int oh = 0; oh < d->OH; oh++) {
        const float *g = dy + (size_t)oh * OW;
        for (int ki = 0; ki < d->KH; ki++)
            for (int kj = 0; kj < d->KW; kj++) {
                const size_t at = (size_t)(oh * d->sh + ki * d->dh) * Wp + kj * d->dw;
                const int k = ki * d->KW + kj;
                if (dw) {
                    float *a = acc + (size_t)k * OW;
                    const float *in = src + at;
                    if (d->sw == 1)
                        for (int i = 0; i < OW; i++)
                            a[i] += g[i] * in[i];
                    else
                        for (int i = 0; i < OW; i++)
                            a[i] += g[i] * in[i * d->sw];
                }
                if (pad_acc) {
                    float *in = pad_acc + at;
                    const float wk = w[k];
                    if (d->sw == 1)
                        for (int i = 0; i < OW; i++)
                            in[i] += wk * g[i];
                    else
                        for (int i = 0; i < OW; i++)
                            in[i * d->sw] += wk * g[i];
                }
            }
    }
    if (dw)
        for (int k = 0; k < KK; k++)
            dw[k] += sum_floats(acc + (size_t)k * OW, OW);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DW_AVX512 1
/* AVX-512 versions for stride-1 rows (the common case): the output row is done 16 pixels at a
 * time in a register across all KH*KW taps (the plain loops above load and store the row once
 * per tap), and the weight gradient keeps one register of products per tap across the whole
 * plane. Row ends use masked loads and stores, which never touch memory outside the mask. */
__attribute__((target("avx512f"))) static void dw_plane_fwd_512(const conv_dims_t *d, const float *src,
                                                                const float *w, float bv, float *o)
{
    const int Wp = d->W + 2 * d->pw, OW = d->OW;
    for (int oh = 0; oh < d->OH; oh++) {
        const float *base = src + (size_t)oh * d->sh * Wp;
        for (int ow0 = 0; ow0 < OW; ow0 += 16) {
            const __mmask16 m = OW - ow0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow0)) - 1);
            __m512 acc = _mm512_set1_ps(bv);
            for (int ki = 0; ki < d->KH; ki++) {
                const float *r = base + (size_t)ki * d->dh * Wp + ow0;
                for (int kj = 0; kj < d->KW; kj++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(w[ki * d->KW + kj]), _mm512_maskz_loadu_ps(m, r + kj * d->dw),
                                          acc);
            }
            _mm512_mask_storeu_ps(o + (size_t)oh * OW + ow0, m, acc);
        }
    }
}

/* dW of one plane, stride 1: one register of products per tap and 16 columns, over all rows. */
__attribute__((target("avx512f"))) static void dw_plane_dw_512(const conv_dims_t *d, const float *src,
                                                               const float *dy, float *dw)
{
    const int Wp = d->W + 2 * d->pw, OW = d->OW;
    for (int ki = 0; ki < d->KH; ki++)
        for (int kj = 0; kj < d->KW; kj++) {
            const float *in = src + (size_t)ki * d->dh * Wp + (size_t)kj * d->dw;
            __m512 acc = _mm512_setzero_ps();
            for (int ow0 = 0; ow0 < OW; ow0 += 16) {
                const __mmask16 m = OW - ow0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow0)) - 1);
                for (int oh = 0; oh < d->OH; oh++)
                    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dy + (size_t)oh * OW + ow0),
                                          _mm512_maskz_loadu_ps(m, in + (size_t)oh * Wp + ow0), acc);
            }
            dw[ki * d->KW + kj] += _mm512_reduce_add_ps(acc);
        }
}

/* dx of one plane, stride 1, as a correlation of the zero-bordered dy plane gp ([Hg, Wg], dy at
 * row Pt = dh*(KH-1), column Pl = dw*(KW-1)) with the kernel turned around: each dx pixel is
 * gathered in a register, so there is no read-modify-write per tap (the scattering form's
 * overlapping unaligned stores stall store forwarding). Adds to o when `add`, else stores. */
__attribute__((target("avx512f"))) static void dw_plane_dx_512(const conv_dims_t *d, const float *gp, int Wg,
                                                               const float *w, float *o, int add)
{
    const int Pt = d->dh * (d->KH - 1), Pl = d->dw * (d->KW - 1), W = d->W;
    for (int h = 0; h < d->H; h++)
        for (int w0 = 0; w0 < W; w0 += 16) {
            const __mmask16 m = W - w0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (W - w0)) - 1);
            float *out = o + (size_t)h * W + w0;
            __m512 acc = add ? _mm512_maskz_loadu_ps(m, out) : _mm512_setzero_ps();
            for (int ki = 0; ki < d->KH; ki++) {
                const float *r = gp + (size_t)(h + d->ph - ki * d->dh + Pt) * Wg + (w0 + d->pw + Pl);
                for (int kj = 0; kj < d->KW; kj++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(w[ki * d->KW + kj]), _mm512_maskz_loadu_ps(m, r - kj * d->dw),
                                          acc);
            }
            _mm512_mask_storeu_ps(out, m, acc);
        }
}

/* The zero-bordered dy plane's size for dw_plane_dx_512: every row and column it reads. */
static void dw_gp_dims(const conv_dims_t *d, int *Hg, int *Wg)
{
    const int Pt = d->dh * (d->KH - 1), Pl = d->dw * (d->KW - 1);
    *Hg = d->H + d->ph + Pt > Pt + d->OH ? d->H + d->ph + Pt : Pt + d->OH;
    *Wg = d->W + d->pw + Pl > Pl + d->OW ? d->W + d->pw + Pl : Pl + d->OW;
}

static int dw_use_512(const conv_dims_t *d)
{
    static int has = -1;
    if (has < 0)
        has = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return has && d->sw == 1 && d->sh == 1;
}
#else
static int dw_use_512(const conv_dims_t *d)
{
    (void)d;
    return 0;
}
#endif

static void dw_channels(const dw_job_t *j, int p, int *g0, int *g1)
{
    *g0 = (int)((long)j->d.G * p / j->parts);
    *g1 = (int)((long)j->d.G * (p + 1) / j->parts);
}

static void dw_fwd_part(void *ctx, int64_t begin, int64_t end)
{
    const dw_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const int OHW = d->OHW, KK = d->KH * d->KW, HW = d->H * d->W, use512 = dw_use_512(d);
    for (int64_t p = begin; p < end; p++) {
        float *pad = j->scratch + (size_t)p * j->part_floats;
        memset(pad, 0, j->pad_floats * sizeof *pad);
        int g0, g1;
        dw_channels(j, (int)p, &g0, &g1);
        for (int s = 0; s < j->B; s++)
            for (int gi = g0; gi < g1; gi++) {
                const float *plane = j->x + ((size_t)s * d->C + gi) * HW, *src = plane;
                if (d->ph || d->pw) {
                    pad_plane(d, plane, pad);
                    src = pad;
                }
                for (int oc = gi * d->OCg; oc < (gi + 1) * d->OCg; oc++) {
                    const size_t pl = (size_t)s * d->OC + oc;
                    float *o = j->y + pl * OHW;
#ifdef DW_AVX512
                    if (use512)
                        dw_plane_fwd_512(d, src, j->W + (size_t)oc * KK, j->bias ? j->bias[oc] : 0.0f, o);
                    else
#endif
                        dw_plane_fwd(d, src, j->W + (size_t)oc * KK, j->bias ? j->bias[oc] : 0.0f, o);
                    if (j->relu) {
                        for (int i = 0; i < OHW; i++)
                            o[i] = o[i] > 0.0f ? o[i] : 0.0f;
                        relu_mask(o, OHW, j->mask + pl * mask_bytes(OHW));
                    }
                }
            }
    }
}

static void dw_bwd_part(void *ctx, int64_t begin, int64_t end)
{
    const dw_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const int OHW = d->OHW, KK = d->KH * d->KW, HW = d->H * d->W, Wp = d->W + 2 * d->pw, use512 = dw_use_512(d);
    for (int64_t p = begin; p < end; p++) {
        float *pad = j->scratch + (size_t)p * j->part_floats, *pad_acc = pad + j->pad_floats;
        float *dyt = pad_acc + j->pad_floats, *acc = dyt + OHW, *gp = acc + (size_t)KK * d->OW;
        int Hg, Wg;
        dw_gp_dims(d, &Hg, &Wg);
        const int Pt = d->dh * (d->KH - 1), Pl = d->dw * (d->KW - 1);
        memset(pad, 0, j->pad_floats * sizeof *pad);
        memset(gp, 0, (size_t)Hg * Wg * sizeof *gp); /* the border; each plane's dy fills the interior */
        int g0, g1;
        dw_channels(j, (int)p, &g0, &g1);
        for (int s = 0; s < j->B; s++)
            for (int gi = g0; gi < g1; gi++) {
                const float *plane = j->x + ((size_t)s * d->C + gi) * HW, *src = plane;
                if (j->dW && (d->ph || d->pw)) {
                    pad_plane(d, plane, pad);
                    src = pad;
                }
                if (j->dx && !use512)
                    memset(pad_acc, 0, j->pad_floats * sizeof *pad_acc);
                for (int oc = gi * d->OCg; oc < (gi + 1) * d->OCg; oc++) {
                    const size_t pl = (size_t)s * d->OC + oc;
                    const float *g = j->dy + pl * OHW;
                    if (j->relu) {
                        relu_mask_apply(g, j->mask + pl * mask_bytes(OHW), OHW, dyt);
                        g = dyt;
                    }
                    if (j->db)
                        j->db[oc] += sum_floats(g, OHW);
#ifdef DW_AVX512
                    if (use512) {
                        if (j->dW)
                            dw_plane_dw_512(d, src, g, j->dW + (size_t)oc * KK);
                        if (j->dx) {
                            for (int oh = 0; oh < d->OH; oh++)
                                memcpy(gp + (size_t)(oh + Pt) * Wg + Pl, g + (size_t)oh * d->OW,
                                       (size_t)d->OW * sizeof *gp);
                            dw_plane_dx_512(d, gp, Wg, j->W + (size_t)oc * KK, j->dx + ((size_t)s * d->C + gi) * HW,
                                            !j->dx_fresh || oc > gi * d->OCg);
                        }
                        continue;
                    }
#endif
                        dw_plane_bwd(d, src, j->W + (size_t)oc * KK, g, acc, j->dW ? j->dW + (size_t)oc * KK : NULL,
                                     j->dx ? pad_acc : NULL);
                }
                if (!j->dx || use512)
                    continue;
                float *dst = j->dx + ((size_t)s * d->C + gi) * HW;
                for (int h = 0; h < d->H; h++) {
                    const float *in = pad_acc + (size_t)(h + d->ph) * Wp + d->pw;
                    float *o = dst + (size_t)h * d->W;
                    if (j->dx_fresh)
                        copy_row(o, in, d->W);
                    else
                        for (int w = 0; w < d->W; w++)
                            o[w] += in[w];
                }
            }
    }
}

static int dw_parts(engine_graph_t *g, int G)
{
    const int t = 2 * engine_threadpool_size(engine_graph_pool(g));
    return t < G ? t : G;
}

static void dw_fwd(engine_graph_t *g, dw_job_t *j)
{
    j->pad_floats = (size_t)(j->d.H + 2 * j->d.ph) * (j->d.W + 2 * j->d.pw);
    j->part_floats = (j->pad_floats + 15) / 16 * 16;
    j->parts = dw_parts(g, j->d.G);
    j->scratch = engine_graph_scratch(g, (size_t)j->parts * j->part_floats * sizeof(float));
    if (j->scratch)
        engine_parallel_for(engine_graph_pool(g), j->parts, 1, dw_fwd_part, j);
}

static void dw_bwd(engine_graph_t *g, dw_job_t *j)
{
    j->pad_floats = (size_t)(j->d.H + 2 * j->d.ph) * (j->d.W + 2 * j->d.pw);
    int Hg, Wg;
    dw_gp_dims(&j->d, &Hg, &Wg);
    j->part_floats = 2 * j->pad_floats + (size_t)j->d.OHW + (size_t)j->d.KH * j->d.KW * j->d.OW + (size_t)Hg * Wg;
    j->part_floats = (j->part_floats + 15) / 16 * 16;
    j->parts = dw_parts(g, j->d.G);
    j->scratch = engine_graph_scratch(g, (size_t)j->parts * j->part_floats * sizeof(float));
    if (j->scratch)
        engine_parallel_for(engine_graph_pool(g), j->parts, 1, dw_bwd_part, j);
}

/* FEDNAS_CONV_IM2COL=1 sends every convolution through im2col + sgemm, the reference path
 * (tests compare the direct kernels against it; benchmarks measure what they gain). Read on
 * every call, as FEDNAS_CONV_CHUNK is: a getenv per conv op is noise next to the op. */
static int conv_force_im2col(void)
{
    const char *e = getenv("FEDNAS_CONV_IM2COL");
    return e && atoi(e) > 0;
}

/* Two parts per thread: if the OS deschedules a worker mid-part, the others take the
 * remaining parts instead of waiting for it (engine_parallel_for claims parts dynamically).
 * Each part has its own scratch, so when one part's is large (big images: a channel's columns
 * alone are KH*KW times the plane) only one part per thread keeps memory in check. */
#define CONV_PART_SCRATCH_BYTES ((size_t)4 << 20)
static int parts_for(engine_graph_t *g, int B, size_t part_floats)
{
    int threads = engine_threadpool_size(engine_graph_pool(g));
    int t = part_floats * sizeof(float) > CONV_PART_SCRATCH_BYTES ? threads : 2 * threads;
    return t < B ? t : B;
}

void cpu_conv2d_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0];
    conv_job_t j = {.d = dims_of(t), .B = (int)x->ne[0], .x = x->data, .W = t->src[1]->data,
                    .bias = t->src[2] ? t->src[2]->data : NULL, .y = t->data, .relu = t->ip[7]};
    if (j.relu) {
        t->saved = j.mask = engine_arena_alloc(engine_graph_arena(g), (size_t)j.B * j.d.OC * mask_bytes(j.d.OHW));
        if (!j.mask) {
            engine_graph_fail(g, FN_ENOMEM, "conv2d: out of memory for the ReLU mask");
            return;
        }
    }
    if (j.d.Cg == 1 && j.d.G > 1 && !conv_force_im2col()) {
        dw_job_t w = {.d = j.d, .B = j.B, .relu = j.relu, .mask = j.mask, .x = j.x, .W = j.W, .bias = j.bias, .y = j.y};
        dw_fwd(g, &w);
        return;
    }
    j.S = chunk_samples(&j.d, j.B);
    j.CB = channel_block(&j.d, j.S);
    j.pad_floats = (size_t)(j.d.H + 2 * j.d.ph) * (j.d.W + 2 * j.d.pw);
    j.part_floats = ((size_t)j.CB * j.d.KH * j.d.KW + j.d.OCg) * j.S * j.d.OHW + j.pad_floats;
    j.part_floats = (j.part_floats + 15) / 16 * 16; /* each part's buffer on its own cache lines */
    j.parts = parts_for(g, j.B, j.part_floats);
    j.scratch = engine_graph_scratch(g, (size_t)j.parts * j.part_floats * sizeof(float));
    if (!j.scratch)
        return;
    engine_parallel_blas(engine_graph_pool(g), j.parts, 1, conv_fwd_part, &j);
}

void cpu_conv2d_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0];
    conv_job_t j = {.d = dims_of(t), .B = (int)x->ne[0], .x = x->data, .W = t->src[1]->data, .dy = t->grad,
                    .relu = t->ip[7], .mask = t->saved};
    j.dx = cpu_src_grad_out(g, t, 0, &j.dx_fresh);
    j.dW = cpu_src_grad(g, t, 1);
    j.db = cpu_src_grad(g, t, 2);
    if (engine_graph_error(g, NULL) || (!j.dx && !j.dW && !j.db))
        return;
    if (j.d.Cg == 1 && j.d.G > 1 && !conv_force_im2col()) {
        dw_job_t w = {.d = j.d, .B = j.B, .relu = j.relu, .mask = j.mask, .x = j.x, .W = j.W, .dy = j.dy,
                      .dx = j.dx, .dW = j.dW, .db = j.db, .dx_fresh = j.dx_fresh};
        dw_bwd(g, &w);
        return;
    }
    j.S = chunk_samples(&j.d, j.B);
    j.CB = channel_block(&j.d, j.S);
    j.pad_floats = (size_t)(j.d.H + 2 * j.d.ph) * (j.d.W + 2 * j.d.pw);
    j.part_floats = (2 * (size_t)j.CB * j.d.KH * j.d.KW + j.d.OCg) * j.S * j.d.OHW + 2 * j.pad_floats;
    j.part_floats = (j.part_floats + 15) / 16 * 16;
    j.parts = parts_for(g, j.B, j.part_floats);
    const size_t wfl = (size_t)j.d.OC * j.d.K, extra = (size_t)(j.parts - 1) * (wfl + j.d.OC);
    j.scratch = engine_graph_scratch(g, ((size_t)j.parts * j.part_floats + extra) * sizeof(float));
    if (!j.scratch)
        return;
    j.dW_part = j.scratch + (size_t)j.parts * j.part_floats;
    j.db_part = j.dW_part + (size_t)(j.parts - 1) * wfl;
    engine_parallel_blas(engine_graph_pool(g), j.parts, 1, conv_bwd_part, &j);
    /* parts' sums in part order: the same order for a given thread count, whatever the timing */
    for (int p = 1; p < j.parts; p++) {
        if (j.dW) {
            const float *s = j.dW_part + (size_t)(p - 1) * wfl;
            for (size_t i = 0; i < wfl; i++)
                j.dW[i] += s[i];
        }
        if (j.db) {
            const float *s = j.db_part + (size_t)(p - 1) * j.d.OC;
            for (int i = 0; i < j.d.OC; i++)
                j.db[i] += s[i];
        }
    }
}
