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
 * sgemms, so it never reads the output itself back from memory.
 *
 * Depthwise convs (one input channel per group) go to the direct kernel in ops_conv_dw.c, where
 * im2col's per-group products would be 1-row matrices; pointwise convs (1x1, stride 1, no pad)
 * use a sample's input as its column matrix. FEDNAS_CONV_IM2COL=1 turns both off (the reference
 * path for tests and benchmarks).
 *
 * On AVX-512 CPUs, stride-1 undilated ungrouped convs whose rows fill their vectors (or go flat)
 * take the direct kernels of ops_conv_direct.c instead: forward, input gradient and weight
 * gradient each where conv_direct_*usable() says so, the rest of the op staying here; square
 * 5x5 and 3x3 convs of 16 channels or more in and out run all three in Winograd tiles
 * (ops_conv_wino.c) on the same per-sample parts, the weight gradient's sums in the direct
 * kernel's per-part dW^T. */
#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_conv.h"

/* Column block: a block of input channels' columns for S samples, small enough to stay in a
 * core's L2 cache together with the sgemm's packed copy of it. */
#define CONV_BLOCK_BYTES ((size_t)256 << 10)
/* Output pixels per sgemm below which samples are batched. */
#define CONV_MIN_COLS 128

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

/* Columns of input channels [c0, c1) of group gi for n samples starting at x (the chunk's first
 * sample) into col [(c1-c0)*KH*KW, n*OHW]. pad: (H+2ph)*(W+2pw) floats, border zero. */
static void im2col(const conv_dims_t *d, const float *x, float *col, int n, int gi, int c0, int c1,
                            float *pad)
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
static void col2im(const conv_dims_t *d, const float *col, float *dx, int n, int gi, int c0, int c1,
                            float *pad, int store)
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

typedef struct {
    conv_dims_t d;
    int B, S, CB, parts; /* CB: input channels per column block */
    int relu;            /* ReLU fused into the output (ip[7]) */
    int glue512;         /* the ReLU masks and dy's transpose in AVX-512 (conv_glue_avx512()) */
    uint8_t *mask;       /* with relu: output > 0, mask_bytes(OHW) per (sample, channel) plane */
    const float *x, *W, *bias, *dy;
    float *y, *dx, *dW, *db;
    int dx_fresh;
    int pw_direct;      /* pointwise (1x1, stride 1, no pad) and not forced through im2col */
    int pw512;          /* pointwise, forward and dx by conv_pw_gemm (conv_pw_usable()) */
    int pw512_dw;       /* pointwise, dW by conv_pw_dw (where the direct dW does not take it) */
    float *Wt;          /* with pw512 in backward: W^T [C][OC] */
    float *scratch;     /* part_floats per part: columns, [dcol,] chunk output, padded planes */
    size_t part_floats;
    size_t pad_floats;  /* one zero-padded input plane */
    int dx_direct;      /* dx by the direct kernel (ops_conv_direct.c) from the flipped weights Wf */
    float *Wf;          /* with dx_direct: [C][OC][KH][KW]; with dx_oc: [OC*KH*KW][CP]; with dx_wino:
                         * the flipped transformed weights [36][OC][CP] (conv_wino_pack) */
    int fwd_oc, dx_oc;  /* forward / dx by conv_oc_sample (ops_conv_oc.c) */
    int wino, dx_wino;  /* forward / dx by conv_wino_sample (ops_conv_wino.c) */
    float *U;           /* with wino: the forward's transformed weights (conv_wino_pack) */
    float *Wt_oc;       /* with fwd_oc: W packed [C*KH*KW][OCP] */
    int OCP_oc, CP_oc;  /* OC and C rounded up to 16 */
    size_t dpad_floats; /* with dx_direct: the zero-bordered dy of one sample (and the kernel's tmp);
                         * with dx_wino: conv_wino_sample's tmp */
    int dw_direct;      /* dW by the direct kernel: dW^T summed per part in dwt, from dy^T */
    int dw_wino;        /* with dw_direct: by Winograd's tiles instead, summed in dyt (its acc) */
    int OCP;            /* with dw_direct: OC rounded up to 16 */
    size_t xpad_floats, dyt_floats, dwt_floats; /* with dw_direct: zero-bordered input, dy^T, dW^T;
                                                 * with dw_wino: its tmp, its transform-domain sum, dW^T */
    float *dW_part;     /* parts-1 private weight-gradient sums (parts 1..), OC*K floats each */
    float *db_part;     /* parts-1 private bias-gradient sums, OC floats each */
} conv_job_t;

/* 1x1, stride 1, no padding: a sample's column matrix is its input, [Cg, H*W] per group
 * (pointwise convs, the second half of a depthwise-separable block). */
static int pointwise(const conv_dims_t *d)
{
    return d->KH == 1 && d->KW == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

/* The column matrix of channels [c0, c1) of group gi for the n samples from s0: built in col,
 * or for one sample of a pointwise conv the input itself (no copy). */
static const float *col_of(const conv_job_t *j, int s0, int n, int gi, int c0, int c1, float *col, float *pad)
{
    const conv_dims_t *d = &j->d;
    const size_t CHW = (size_t)d->C * d->H * d->W;
    if (n == 1 && j->pw_direct)
        return j->x + (size_t)s0 * CHW + ((size_t)gi * d->Cg + c0) * d->H * d->W;
    im2col(d, j->x + (size_t)s0 * CHW, col, n, gi, c0, c1, pad);
    return col;
}

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
                    const float *cm = col_of(j, s0, n, gi, c0, c1, col, pad);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, N, (c1 - c0) * KK, 1.0f,
                                j->W + (size_t)gi * OCg * K + (size_t)c0 * KK, K, cm, N, c0 ? 1.0f : 0.0f, out, N);
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
                            relu_mask_sel(j->glue512, dst, OHW,
                                          j->mask + ((size_t)(s0 + s) * d->OC + (size_t)gi * OCg + oc) *
                                              mask_bytes(OHW));
                        } else
                            for (int i = 0; i < OHW; i++)
                                dst[i] = src[i] + bv;
                    }
            }
        }
    }
}

/* Forward of a pointwise conv by conv_pw_gemm, a sample at a time: its input is the product's
 * right operand, its output the product with bias, ReLU and mask applied in registers. */
static void conv_pw_fwd_part(void *ctx, int64_t begin, int64_t end)
{
    const conv_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const size_t CHW = (size_t)d->C * d->OHW, OCHW = (size_t)d->OC * d->OHW, mb = mask_bytes(d->OHW);
    for (int64_t p = begin; p < end; p++) {
        int lo, hi;
        sample_range(j, (int)p, &lo, &hi);
        for (int s = lo; s < hi; s++)
            conv_pw_gemm(d->OC, d->C, d->OHW, j->W, d->C, j->x + (size_t)s * CHW, d->OHW, j->bias, j->relu,
                         j->relu ? j->mask + (size_t)s * d->OC * mb : NULL, mb, j->y + (size_t)s * OCHW, d->OHW, 0);
    }
}

/* Forward by the direct kernel: each sample's input into the part's zero-bordered buffer (no
 * copy without padding), its output in one pass with bias and ReLU, then the ReLU mask while the
 * output is still in cache. */
static void conv_direct_fwd_part(void *ctx, int64_t begin, int64_t end)
{
    const conv_job_t *j = ctx;
    const conv_dims_t *d = &j->d;
    const size_t CHW = (size_t)d->C * d->H * d->W, OCHW = (size_t)d->OC * d->OHW;
    const int padded = !j->wino && (d->ph || d->pw);
    for (int64_t p = begin; p < end; p++) {
        float *pad = j->scratch + (size_t)p * j->part_floats;
        if (padded)
            memset(pad, 0, j->pad_floats * sizeof *pad);
        int lo, hi;
        sample_range(j, (int)p, &lo, &hi);
        for (int s = lo; s < hi; s++) {
            const float *xs = j->x + (size_t)s * CHW;
            if (padded)
                conv_direct_pad(xs, d->C, d->H, d->W, d->ph, d->pw, pad);
            float *ys = j->y + (size_t)s * OCHW;
            if (j->wino)
                conv_wino_sample(xs, (size_t)d->H * d->W, d->C, d->H, d->W, d->ph, d->pw, d->KH, j->U, d->OC, j->bias,
                                 ys, pad, 0, j->relu);
            else if (j->fwd_oc)
                conv_oc_sample(padded ? pad : xs, d->H + 2 * d->ph, d->W + 2 * d->pw, d->C, j->Wt_oc, j->OCP_oc, d->KH,
                               d->KW, j->bias, d->OC, ys, pad + j->pad_floats, 0, j->relu);
            else
                conv_direct_sample(padded ? pad : xs, d->H + 2 * d->ph, d->W + 2 * d->pw, d->C, j->W, d->K, d->KH,
                                   d->KW, j->bias, d->OC, ys, pad + j->pad_floats, 0, j->relu);
            if (j->relu)
                for (int oc = 0; oc < d->OC; oc++)
                    relu_mask_sel(j->glue512, ys + (size_t)oc * d->OHW, d->OHW,
                                  j->mask + ((size_t)s * d->OC + oc) * mask_bytes(d->OHW));
        }
    }
}

/* dx of the n samples of a chunk by the direct kernel: each sample's dy (dyc, [OC, n*OHW], the
 * ReLU already applied) into the zero-bordered buffer dpad, then the turned-around conv. */
static void conv_direct_dx_chunk(const conv_job_t *j, const float *dyc, int s0, int n, float *dpad)
{
    const conv_dims_t *d = &j->d;
    const int qh = d->KH - 1 - d->ph, qw = d->KW - 1 - d->pw, N = n * d->OHW;
    const int Hq = d->OH + 2 * qh, Wq = d->OW + 2 * qw;
    const size_t pq = (size_t)Hq * Wq, CHW = (size_t)d->C * d->H * d->W;
    for (int s = 0; s < n; s++) {
        if (j->dx_wino) { /* reads dy in place, zero-bordering it itself */
            conv_wino_sample(dyc + (size_t)s * d->OHW, (size_t)N, d->OC, d->OH, d->OW, qh, qw, d->KH, j->Wf, d->C, NULL,
                             j->dx + (size_t)(s0 + s) * CHW, dpad, !j->dx_fresh, 0);
            continue;
        }
        for (int oc = 0; oc < d->OC; oc++) {
            const float *src = dyc + (size_t)oc * N + (size_t)s * d->OHW;
            for (int h = 0; h < d->OH; h++)
                copy_row(dpad + oc * pq + (size_t)(h + qh) * Wq + qw, src + (size_t)h * d->OW, d->OW);
        }
        if (j->dx_oc)
            conv_oc_sample(dpad, Hq, Wq, d->OC, j->Wf, j->CP_oc, d->KH, d->KW, NULL, d->C,
                           j->dx + (size_t)(s0 + s) * CHW, dpad + (size_t)d->OC * pq, !j->dx_fresh, 0);
        else
            conv_direct_sample(dpad, Hq, Wq, d->OC, j->Wf, d->OC * d->KH * d->KW, d->KH, d->KW, NULL, d->C,
                               j->dx + (size_t)(s0 + s) * CHW, dpad + (size_t)d->OC * pq, !j->dx_fresh, 0);
    }
}

/* dW of the n samples of a chunk by the direct kernel into the part's dW^T sum dwt: each
 * sample's input zero-bordered in xpad (used in place without padding), its dy (dyc, [OC,
 * n*OHW], the ReLU applied) transposed into dyt, whose lanes past OC stay zero. */
static void conv_direct_dw_chunk(const conv_job_t *j, const float *dyc, int s0, int n, float *xpad, float *dyt,
                                 float *dwt)
{
    const conv_dims_t *d = &j->d;
    const size_t CHW = (size_t)d->C * d->H * d->W;
    const int N = n * d->OHW, padded = d->ph || d->pw;
    if (j->dw_wino) { /* xpad is its scratch, dyt its transform-domain sum */
        for (int s = 0; s < n; s++)
            conv_wino_dw_sample(j->x + (size_t)(s0 + s) * CHW, d->C, d->H, d->W, d->ph, d->pw, d->KH,
                                dyc + (size_t)s * d->OHW, (size_t)N, d->OC, dyt, xpad);
        return;
    }
    for (int s = 0; s < n; s++) {
        const float *xs = j->x + (size_t)(s0 + s) * CHW;
        if (padded)
            conv_direct_pad(xs, d->C, d->H, d->W, d->ph, d->pw, xpad);
        if (j->glue512)
            conv_transpose_dy_512(dyc + (size_t)s * d->OHW, N, d->OC, d->OHW, j->OCP, dyt);
        else
            for (int oc = 0; oc < d->OC; oc++) {
                const float *src = dyc + (size_t)oc * N + (size_t)s * d->OHW;
                for (int i = 0; i < d->OHW; i++)
                    dyt[(size_t)i * j->OCP + oc] = src[i];
            }
        conv_direct_dw_sample(padded ? xpad : xs, d->H + 2 * d->ph, d->W + 2 * d->pw, d->C, d->KH, d->KW, dyt, j->OCP,
                              dwt);
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
        float *pad = tmp + (size_t)OCg * j->S * OHW, *pad_acc = pad + j->pad_floats, *dpad = pad_acc + j->pad_floats;
        memset(pad, 0, j->pad_floats * sizeof *pad);
        if (j->dx_direct && !j->dx_wino) /* Winograd zero-borders its own copy */
            memset(dpad, 0, j->dpad_floats * sizeof *dpad);
        float *xpad = dpad + j->dpad_floats, *dyt = xpad + j->xpad_floats, *dwt = dyt + j->dyt_floats;
        if (j->dw_direct)
            memset(xpad, 0, (j->xpad_floats + j->dyt_floats + j->dwt_floats) * sizeof *xpad);
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
                                relu_mask_apply_sel(j->glue512, j->dy + at, j->mask + plane * mask_bytes(OHW), OHW,
                                                    o);
                            else
                                memcpy(o, j->dy + at, (size_t)OHW * sizeof *o);
                        }
                    dyc = tmp;
                }
                if (db)
                    for (int oc = 0; oc < OCg; oc++)
                        db[gi * OCg + oc] += sum_floats(dyc + (size_t)oc * N, N);
                if (j->dx_direct) /* one group: dyc is the whole chunk's dy */
                    conv_direct_dx_chunk(j, dyc, s0, n, dpad);
                if (j->dx && j->pw512) /* one group: dx of each sample = W^T times its dy columns */
                    for (int s = 0; s < n; s++)
                        conv_pw_gemm(d->C, d->OC, OHW, j->Wt, d->OC, dyc + (size_t)s * OHW, N, NULL, 0, NULL, 0,
                                     j->dx + (size_t)(s0 + s) * CHW, OHW, !j->dx_fresh);
                if (j->dw_direct && dW)
                    conv_direct_dw_chunk(j, dyc, s0, n, xpad, dyt, dwt);
                if (j->pw512_dw && dW) /* one group: all of dW from the chunk's dy and inputs */
                    conv_pw_dw(d->OC, d->C, OHW, n, dyc, N, (size_t)OHW, j->x + (size_t)s0 * CHW, OHW, (size_t)CHW, dW,
                               K);
                for (int c0 = 0; c0 < d->Cg; c0 += j->CB) {
                    const int c1 = c0 + j->CB < d->Cg ? c0 + j->CB : d->Cg, Kb = (c1 - c0) * KK;
                    const size_t woff = (size_t)gi * OCg * K + (size_t)c0 * KK;
                    if (dW && !j->dw_direct && !j->pw512_dw)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, Kb, N, 1.0f, dyc, N,
                                    col_of(j, s0, n, gi, c0, c1, col, pad), N, 1.0f, dW + woff, K);
                    if (!j->dx || j->dx_direct || j->pw512)
                        continue;
                    if (n == 1 && j->pw_direct) /* the column gradient is dx itself */
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Kb, N, OCg, 1.0f, j->W + woff, K, dyc, N,
                                    j->dx_fresh ? 0.0f : 1.0f, j->dx + (size_t)s0 * CHW + ((size_t)gi * d->Cg + c0) * N,
                                    N);
                    else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Kb, N, OCg, 1.0f, j->W + woff, K, dyc, N,
                                    0.0f, dcol, N);
                        col2im(d, dcol, j->dx + (size_t)s0 * CHW, n, gi, c0, c1, pad_acc, j->dx_fresh);
                    }
                }
            }
        }
        if (j->dw_wino && dW)
            conv_wino_dw_finish(dyt, d->C, d->OC, d->KH, dwt);
        if (j->dw_direct && dW) /* the part's dW^T into its dW, in a fixed order */
            for (int oc = 0; oc < d->OC; oc++)
                for (int q = 0; q < K; q++)
                    dW[(size_t)oc * K + q] += dwt[(size_t)q * j->OCP + oc];
    }
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
                    .bias = t->src[2] ? t->src[2]->data : NULL, .y = t->data, .relu = t->ip[7],
                    .glue512 = conv_glue_avx512()};
    if (j.relu) {
        t->saved = j.mask = engine_arena_alloc(engine_graph_arena(g), (size_t)j.B * j.d.OC * mask_bytes(j.d.OHW));
        if (!j.mask) {
            engine_graph_fail(g, FN_ENOMEM, "conv2d: out of memory for the ReLU mask");
            return;
        }
    }
    if (j.d.Cg == 1 && j.d.G > 1 && !conv_force_im2col()) {
        dw_job_t w = {.d = j.d, .B = j.B, .relu = j.relu, .mask = j.mask, .x = j.x, .W = j.W, .bias = j.bias, .y = j.y};
        conv_dw_fwd(g, &w);
        return;
    }
    j.wino = conv_wino_usable(&j.d);
    if (j.wino || conv_direct_usable(&j.d)) {
        j.fwd_oc = !j.wino && conv_oc_usable(&j.d);
        j.pad_floats = j.wino ? 0 : (size_t)j.d.C * (j.d.H + 2 * j.d.ph) * (j.d.W + 2 * j.d.pw);
        j.OCP_oc = (j.d.OC + 15) / 16 * 16;
        /* Winograd's buffers; or the padded input, then the output-channel kernel's
         * [pixel][channel] sums, or the flat mode's output (short rows) */
        j.part_floats = ((j.wino ? conv_wino_tmp_floats(j.d.C, j.d.OC, j.d.OH, j.d.OW, j.d.KH)
                                 : j.pad_floats + (j.fwd_oc ? conv_oc_tmp_floats(j.d.OHW, j.OCP_oc)
                                                            : conv_direct_tmp_floats(j.d.OC, j.d.H + 2 * j.d.ph,
                                                                                     j.d.W + 2 * j.d.pw, j.d.KH,
                                                                                     j.d.KW))) +
                         15) / 16 * 16;
        j.parts = parts_for(g, j.B, j.part_floats);
        const size_t wt = j.wino ? conv_wino_u_floats(j.d.C, j.d.OC) : j.fwd_oc ? (size_t)j.d.K * j.OCP_oc : 0;
        j.scratch = engine_graph_scratch(g, ((size_t)j.parts * j.part_floats + wt) * sizeof(float));
        if (!j.scratch)
            return;
        if (j.wino) {
            j.U = j.scratch + (size_t)j.parts * j.part_floats;
            conv_wino_pack(&j.d, j.W, 0, j.U);
        }
        if (j.fwd_oc) {
            j.Wt_oc = j.scratch + (size_t)j.parts * j.part_floats;
            conv_oc_pack(j.W, j.d.OC, j.d.K, j.OCP_oc, j.Wt_oc);
        }
        engine_parallel_for(engine_graph_pool(g), j.parts, 1, conv_direct_fwd_part, &j);
        return;
    }
    if (conv_pw_usable(&j.d)) {
        j.parts = parts_for(g, j.B, 0);
        engine_parallel_for(engine_graph_pool(g), j.parts, 1, conv_pw_fwd_part, &j);
        return;
    }
    j.pw_direct = pointwise(&j.d) && !conv_force_im2col();
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
                    .relu = t->ip[7], .mask = t->saved, .glue512 = conv_glue_avx512()};
    j.dx = cpu_src_grad_out(g, t, 0, &j.dx_fresh);
    j.dW = cpu_src_grad(g, t, 1);
    j.db = cpu_src_grad(g, t, 2);
    if (engine_graph_error(g, NULL) || (!j.dx && !j.dW && !j.db))
        return;
    if (j.d.Cg == 1 && j.d.G > 1 && !conv_force_im2col()) {
        dw_job_t w = {.d = j.d, .B = j.B, .relu = j.relu, .mask = j.mask, .x = j.x, .W = j.W, .dy = j.dy,
                      .dx = j.dx, .dW = j.dW, .db = j.db, .dx_fresh = j.dx_fresh};
        conv_dw_bwd(g, &w);
        return;
    }
    j.pw_direct = pointwise(&j.d) && !conv_force_im2col();
    j.pw512 = j.dx && conv_pw_usable(&j.d);
    j.S = chunk_samples(&j.d, j.B);
    j.CB = channel_block(&j.d, j.S);
    j.pad_floats = (size_t)(j.d.H + 2 * j.d.ph) * (j.d.W + 2 * j.d.pw);
    j.dx_wino = j.dx && conv_wino_dx_usable(&j.d);
    j.dx_direct = j.dx && (j.dx_wino || conv_direct_dx_usable(&j.d));
    j.dx_oc = j.dx_direct && !j.dx_wino && conv_oc_dx_usable(&j.d);
    j.CP_oc = (j.d.C + 15) / 16 * 16;
    if (j.dx_wino)
        j.dpad_floats = conv_wino_tmp_floats(j.d.OC, j.d.C, j.d.H, j.d.W, j.d.KH);
    else if (j.dx_direct) { /* the padded dy, then the output-channel kernel's sums or the flat mode's output */
        const int Hq = j.d.OH + 2 * (j.d.KH - 1 - j.d.ph), Wq = j.d.OW + 2 * (j.d.KW - 1 - j.d.pw);
        j.dpad_floats = (size_t)j.d.OC * Hq * Wq + (j.dx_oc ? conv_oc_tmp_floats(j.d.H * j.d.W, j.CP_oc)
                                                             : conv_direct_tmp_floats(j.d.C, Hq, Wq, j.d.KH, j.d.KW));
    }
    j.dw_wino = j.dW && conv_wino_dw_usable(&j.d);
    j.dw_direct = j.dW && (j.dw_wino || conv_direct_dw_usable(&j.d));
    j.pw512_dw = j.dW && !j.dw_direct && conv_pw_usable(&j.d);
    if (j.dw_direct) {
        j.OCP = (j.d.OC + 15) / 16 * 16;
        j.xpad_floats = j.dw_wino ? conv_wino_dw_tmp_floats(j.d.C, j.d.OC, j.d.OH, j.d.OW, j.d.KH)
                                  : (size_t)j.d.C * (j.d.H + 2 * j.d.ph) * (j.d.W + 2 * j.d.pw);
        j.dyt_floats = j.dw_wino ? conv_wino_dw_acc_floats(j.d.C, j.d.OC) : (size_t)j.d.OHW * j.OCP;
        j.dwt_floats = (size_t)j.d.K * j.OCP;
    }
    j.part_floats = (2 * (size_t)j.CB * j.d.KH * j.d.KW + j.d.OCg) * j.S * j.d.OHW + 2 * j.pad_floats + j.dpad_floats +
                    j.xpad_floats + j.dyt_floats + j.dwt_floats;
    j.part_floats = (j.part_floats + 15) / 16 * 16;
    j.parts = parts_for(g, j.B, j.part_floats);
    /* a part of the direct weight gradient clears, transposes and adds a whole dW^T: at small
     * batches one part per thread */
    if (j.dw_direct && j.B < 16 * engine_threadpool_size(engine_graph_pool(g)) &&
        j.parts > engine_threadpool_size(engine_graph_pool(g)))
        j.parts = engine_threadpool_size(engine_graph_pool(g));
    const size_t wfl = (size_t)j.d.OC * j.d.K, extra = (size_t)(j.parts - 1) * (wfl + j.d.OC);
    const size_t wfl_dx = j.dx_wino ? conv_wino_u_floats(j.d.OC, j.d.C)
                          : j.dx_oc ? (size_t)j.d.OC * j.d.KH * j.d.KW * j.CP_oc
                                    : wfl;
    j.scratch = engine_graph_scratch(g, ((size_t)j.parts * j.part_floats + extra + (j.dx_direct || j.pw512 ? wfl_dx : 0)) *
                                            sizeof(float));
    if (!j.scratch)
        return;
    j.dW_part = j.scratch + (size_t)j.parts * j.part_floats;
    j.db_part = j.dW_part + (size_t)(j.parts - 1) * wfl;
    if (j.dx_direct) {
        j.Wf = j.db_part + (size_t)(j.parts - 1) * j.d.OC;
        if (j.dx_wino)
            conv_wino_pack(&j.d, j.W, 1, j.Wf);
        else if (j.dx_oc)
            conv_oc_pack_flipped(&j.d, j.W, j.CP_oc, j.Wf);
        else
            conv_direct_flip(&j.d, j.W, j.Wf);
    }
    if (j.pw512) { /* W^T [C][OC]: the input gradient's left operand */
        j.Wt = j.db_part + (size_t)(j.parts - 1) * j.d.OC;
        for (int oc = 0; oc < j.d.OC; oc++)
            for (int c = 0; c < j.d.C; c++)
                j.Wt[(size_t)c * j.d.OC + oc] = j.W[(size_t)oc * j.d.C + c];
    }
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
