/* Depthwise convolution (one input channel per group: Cg = 1, any channel multiplier OCg),
 * direct. Through im2col each group's product is a [OCg, KH*KW] x [KH*KW, OHW] sgemm: a 1-row
 * matrix times a 9-row one, all call and packing overhead, so depthwise layers (the first half
 * of a separable conv, common in NAS spaces) ran far below the rest of the net. Here each output
 * row is a sum of KH*KW scaled input rows. Stride-1 planes (nearly all of them) take the
 * hand-written AVX-512 kernels below when the CPU has AVX-512 (checked at run time); other
 * strides and CPUs take plain loops that the compiler vectorizes, built for AVX-512, AVX2 and
 * baseline x86-64 with the loader picking one by the CPU (target_clones). Tests compare both
 * against the im2col path and a double-precision reference (test_engine_conv_paths).
 *
 * Work is split by channel, not by sample: a channel's weight gradient then depends on that
 * part's data only, so there are no per-part partial sums to add, batch 1 still runs on every
 * thread, and the result does not depend on the thread count at all. */
#include <stdint.h>
#include <string.h>

#include "engine/ops_conv.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DW_CLONES
#endif

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
    return conv_use_avx512() && d->sw == 1 && d->sh == 1;
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
    const int glue512 = conv_glue_avx512();
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
                    if (j->relu && glue512)
                        conv_relu_mask_512(o, OHW, j->mask + pl * mask_bytes(OHW));
                    else if (j->relu) {
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
    const int glue512 = conv_glue_avx512();
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
                        relu_mask_apply_sel(glue512, g, j->mask + pl * mask_bytes(OHW), OHW, dyt);
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

void conv_dw_fwd(engine_graph_t *g, dw_job_t *j)
{
    j->pad_floats = (size_t)(j->d.H + 2 * j->d.ph) * (j->d.W + 2 * j->d.pw);
    j->part_floats = (j->pad_floats + 15) / 16 * 16;
    j->parts = dw_parts(g, j->d.G);
    j->scratch = engine_graph_scratch(g, (size_t)j->parts * j->part_floats * sizeof(float));
    if (j->scratch)
        engine_parallel_for(engine_graph_pool(g), j->parts, 1, dw_fwd_part, j);
}

void conv_dw_bwd(engine_graph_t *g, dw_job_t *j)
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
