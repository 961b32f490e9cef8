/* CPU kernels: conv2d as im2col + sgemm (DESIGN point 6), for any kernel, stride, padding,
 * dilation and groups. The batch is processed in chunks of S samples whose column matrix
 * [K, S*OH*OW] fits COL_BYTES, so one sgemm covers many samples (large N keeps OpenBLAS
 * efficient) while the scratch stays bounded whatever the batch size. im2col and col2im run
 * on the thread pool; sgemm runs on OpenBLAS's threads, never both at once.
 * (The chunking rule is below, at chunk_samples.) */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_cpu.h"

#define COL_BYTES ((size_t)8 << 20)

typedef struct {
    int C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G;
} conv_dims_t;

static conv_dims_t dims_of(const engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *W = t->src[1];
    conv_dims_t d = {(int)x->ne[1], (int)x->ne[2], (int)x->ne[3], (int)W->ne[0], (int)t->ne[2], (int)t->ne[3],
                     (int)W->ne[2], (int)W->ne[3], t->ip[0], t->ip[1], t->ip[2], t->ip[3], t->ip[4], t->ip[5],
                     t->ip[6]};
    return d;
}

typedef struct {
    const conv_dims_t *d;
    const float *x; /* the chunk's first sample */
    float *col;     /* [K, S*OHW] */
    float *dx;      /* col2im target: the chunk's first sample's gradient */
    int S, group;
} col_job_t;

/* Valid output range [lo, hi) along one axis for kernel offset k: in = o*s - p + k*dil in [0, n). */
static void out_range(int n, int on, int s, int p, int koff, int *lo, int *hi)
{
    int a = p - koff; /* o*s >= a */
    int l = a > 0 ? (a + s - 1) / s : 0;
    int b = n - 1 + p - koff; /* o*s <= b */
    int h = b >= 0 ? b / s + 1 : 0;
    if (h > on)
        h = on;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

static void im2col_items(void *ctx, int64_t begin, int64_t end)
{
    col_job_t *j = ctx;
    const conv_dims_t *d = j->d;
    const int Cg = d->C / d->G, OHW = d->OH * d->OW;
    const size_t ld = (size_t)j->S * OHW;
    for (int64_t it = begin; it < end; it++) {
        int s = (int)(it / Cg), c = (int)(it % Cg);
        const float *plane = j->x + ((size_t)s * d->C + (size_t)j->group * Cg + c) * d->H * d->W;
        for (int ki = 0; ki < d->KH; ki++) {
            int ohlo, ohhi;
            out_range(d->H, d->OH, d->sh, d->ph, ki * d->dh, &ohlo, &ohhi);
            for (int kj = 0; kj < d->KW; kj++) {
                int owlo, owhi;
                out_range(d->W, d->OW, d->sw, d->pw, kj * d->dw, &owlo, &owhi);
                float *row = j->col + ((size_t)(c * d->KH + ki) * d->KW + kj) * ld + (size_t)s * OHW;
                for (int oh = 0; oh < d->OH; oh++) {
                    float *o = row + (size_t)oh * d->OW;
                    if (oh < ohlo || oh >= ohhi) {
                        memset(o, 0, (size_t)d->OW * sizeof *o);
                        continue;
                    }
                    const float *in = plane + (size_t)(oh * d->sh - d->ph + ki * d->dh) * d->W - d->pw + kj * d->dw;
                    for (int ow = 0; ow < owlo; ow++)
                        o[ow] = 0.0f;
                    if (d->sw == 1)
                        memcpy(o + owlo, in + owlo, (size_t)(owhi - owlo) * sizeof *o);
                    else
                        for (int ow = owlo; ow < owhi; ow++)
                            o[ow] = in[ow * d->sw];
                    for (int ow = owhi; ow < d->OW; ow++)
                        o[ow] = 0.0f;
                }
            }
        }
    }
}

static void col2im_items(void *ctx, int64_t begin, int64_t end)
{
    col_job_t *j = ctx;
    const conv_dims_t *d = j->d;
    const int Cg = d->C / d->G, OHW = d->OH * d->OW;
    const size_t ld = (size_t)j->S * OHW;
    for (int64_t it = begin; it < end; it++) {
        int s = (int)(it / Cg), c = (int)(it % Cg);
        float *plane = j->dx + ((size_t)s * d->C + (size_t)j->group * Cg + c) * d->H * d->W;
        for (int ki = 0; ki < d->KH; ki++) {
            int ohlo, ohhi;
            out_range(d->H, d->OH, d->sh, d->ph, ki * d->dh, &ohlo, &ohhi);
            for (int kj = 0; kj < d->KW; kj++) {
                int owlo, owhi;
                out_range(d->W, d->OW, d->sw, d->pw, kj * d->dw, &owlo, &owhi);
                const float *row = j->col + ((size_t)(c * d->KH + ki) * d->KW + kj) * ld + (size_t)s * OHW;
                for (int oh = ohlo; oh < ohhi; oh++) {
                    const float *o = row + (size_t)oh * d->OW;
                    float *in = plane + (size_t)(oh * d->sh - d->ph + ki * d->dh) * d->W - d->pw + kj * d->dw;
                    for (int ow = owlo; ow < owhi; ow++)
                        in[ow * d->sw] += o[ow];
                }
            }
        }
    }
}

/* Samples per sgemm. A sample's own output [OC, OH*OW] is already the sgemm's C layout, so
 * with one sample per call the output and its gradient need no gather/scatter and the column
 * matrix stays cache-sized; only small feature maps (few columns) are batched, for sgemm
 * efficiency, at the price of a copy. FEDNAS_CONV_CHUNK overrides (benchmarks). */
static int chunk_samples(const conv_dims_t *d, int B)
{
    static int forced = -1;
    if (forced < 0) {
        const char *e = getenv("FEDNAS_CONV_CHUNK");
        forced = e ? atoi(e) : 0;
    }
    const int OHW = d->OH * d->OW;
    size_t per = (size_t)(d->C / d->G) * d->KH * d->KW * OHW * sizeof(float);
    int S = forced > 0 ? forced : (OHW >= 128 ? 1 : (256 + OHW - 1) / OHW);
    if ((size_t)S * per > COL_BYTES)
        S = (int)(COL_BYTES / (per ? per : 1));
    if (S < 1)
        S = 1;
    return S < B ? S : B;
}

void cpu_conv2d_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *Wt = t->src[1], *b = t->src[2];
    conv_dims_t d = dims_of(t);
    const int B = (int)x->ne[0], Cg = d.C / d.G, OCg = d.OC / d.G, OHW = d.OH * d.OW;
    const int K = Cg * d.KH * d.KW, S = chunk_samples(&d, B);
    float *col = engine_graph_scratch(g, ((size_t)K + OCg) * S * OHW * sizeof(float));
    if (!col)
        return;
    float *tmp = col + (size_t)K * S * OHW;
    const float *xd = x->data, *W = Wt->data;
    float *y = t->data;
    if (S == 1) {
        for (int s = 0; s < B; s++)
            for (int gi = 0; gi < d.G; gi++) {
                col_job_t j = {&d, xd + (size_t)s * d.C * d.H * d.W, col, NULL, 1, gi};
                engine_parallel_for(engine_graph_pool(g), Cg, 1, im2col_items, &j);
                float *dst = y + ((size_t)s * d.OC + (size_t)gi * OCg) * OHW;
                if (b)
                    for (int oc = 0; oc < OCg; oc++) {
                        float bv = ((const float *)b->data)[gi * OCg + oc];
                        for (int p = 0; p < OHW; p++)
                            dst[(size_t)oc * OHW + p] = bv;
                    }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, OHW, K, 1.0f, W + (size_t)gi * OCg * K, K,
                            col, OHW, b ? 1.0f : 0.0f, dst, OHW);
            }
        return;
    }
    for (int s0 = 0; s0 < B; s0 += S) {
        int n = B - s0 < S ? B - s0 : S;
        for (int gi = 0; gi < d.G; gi++) {
            col_job_t j = {&d, xd + (size_t)s0 * d.C * d.H * d.W, col, NULL, n, gi};
            /* With fewer columns than S, rows are n*OHW long: keep ld = n*OHW consistent. */
            engine_parallel_for(engine_graph_pool(g), (int64_t)n * Cg, 1, im2col_items, &j);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, n * OHW, K, 1.0f, W + (size_t)gi * OCg * K, K,
                        col, n * OHW, 0.0f, tmp, n * OHW);
            for (int s = 0; s < n; s++)
                for (int oc = 0; oc < OCg; oc++) {
                    float *dst = y + ((size_t)(s0 + s) * d.OC + (size_t)gi * OCg + oc) * OHW;
                    const float *src = tmp + (size_t)oc * n * OHW + (size_t)s * OHW;
                    if (b) {
                        float bv = ((const float *)b->data)[gi * OCg + oc];
                        for (int p = 0; p < OHW; p++)
                            dst[p] = src[p] + bv;
                    } else {
                        memcpy(dst, src, (size_t)OHW * sizeof *dst);
                    }
                }
        }
    }
}

void cpu_conv2d_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *Wt = t->src[1];
    conv_dims_t d = dims_of(t);
    const int B = (int)x->ne[0], Cg = d.C / d.G, OCg = d.OC / d.G, OHW = d.OH * d.OW;
    const int K = Cg * d.KH * d.KW, S = chunk_samples(&d, B);
    float *dx = cpu_src_grad(g, t, 0), *dW = cpu_src_grad(g, t, 1), *db = cpu_src_grad(g, t, 2);
    const float *dy = t->grad, *xd = x->data, *W = Wt->data;
    if (db)
        for (int s = 0; s < B; s++)
            for (int oc = 0; oc < d.OC; oc++) {
                const float *p = dy + ((size_t)s * d.OC + oc) * OHW;
                float acc = 0.0f;
                for (int i = 0; i < OHW; i++)
                    acc += p[i];
                db[oc] += acc;
            }
    if (!dx && !dW)
        return;
    float *col = engine_graph_scratch(g, ((size_t)2 * K + OCg) * S * OHW * sizeof(float));
    if (!col)
        return;
    float *tmp = col + (size_t)K * S * OHW, *dcol = tmp + (size_t)OCg * S * OHW;
    if (S == 1) {
        for (int s = 0; s < B; s++)
            for (int gi = 0; gi < d.G; gi++) {
                const float *dys = dy + ((size_t)s * d.OC + (size_t)gi * OCg) * OHW;
                if (dW) {
                    col_job_t j = {&d, xd + (size_t)s * d.C * d.H * d.W, col, NULL, 1, gi};
                    engine_parallel_for(engine_graph_pool(g), Cg, 1, im2col_items, &j);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, K, OHW, 1.0f, dys, OHW, col, OHW, 1.0f,
                                dW + (size_t)gi * OCg * K, K);
                }
                if (dx) {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, OCg, 1.0f, W + (size_t)gi * OCg * K, K,
                                dys, OHW, 0.0f, dcol, OHW);
                    col_job_t jb = {&d, NULL, dcol, dx + (size_t)s * d.C * d.H * d.W, 1, gi};
                    engine_parallel_for(engine_graph_pool(g), Cg, 1, col2im_items, &jb);
                }
            }
        return;
    }
    for (int s0 = 0; s0 < B; s0 += S) {
        int n = B - s0 < S ? B - s0 : S;
        for (int gi = 0; gi < d.G; gi++) {
            for (int s = 0; s < n; s++)
                for (int oc = 0; oc < OCg; oc++)
                    memcpy(tmp + (size_t)oc * n * OHW + (size_t)s * OHW,
                           dy + ((size_t)(s0 + s) * d.OC + (size_t)gi * OCg + oc) * OHW, (size_t)OHW * sizeof *tmp);
            col_job_t j = {&d, xd + (size_t)s0 * d.C * d.H * d.W, col, NULL, n, gi};
            if (dW) {
                engine_parallel_for(engine_graph_pool(g), (int64_t)n * Cg, 1, im2col_items, &j);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, K, n * OHW, 1.0f, tmp, n * OHW, col, n * OHW,
                            1.0f, dW + (size_t)gi * OCg * K, K);
            }
            if (dx) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, n * OHW, OCg, 1.0f, W + (size_t)gi * OCg * K, K,
                            tmp, n * OHW, 0.0f, dcol, n * OHW);
                col_job_t jb = {&d, NULL, dcol, dx + (size_t)s0 * d.C * d.H * d.W, n, gi};
                engine_parallel_for(engine_graph_pool(g), (int64_t)n * Cg, 1, col2im_items, &jb);
            }
        }
    }
}
