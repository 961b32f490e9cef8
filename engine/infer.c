/* infer: plan building, batch-norm folding, export and the fp32/int8 forward (see infer.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"
#include "engine/nn.h"

static const char *const kinds[] = {"conv2d", "linear", "batchnorm", "relu", "maxpool", "avgpool",
                                    "global_avgpool", "flatten", "dropout"};

static int geti(const json_t *o, const char *key, int def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static float *fdup(const float *v, size_t n)
{
    float *d = malloc((n ? n : 1) * sizeof *d);
    if (d && n)
        memcpy(d, v, n * sizeof *d);
    return d;
}

static void layer_free(ilayer_t *l)
{
    free(l->w), free(l->b), free(l->gamma), free(l->beta), free(l->rm), free(l->rv);
    free(l->qw), free(l->qwk), free(l->qwp), free(l->qwi), free(l->wscale), free(l->wsum), free(l->hist), free(l->wp), free(l->wc);
    json_decref(l->json);
    json_decref(l->pool_json);
}

void engine_infer_free(engine_infer_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        layer_free(&p->L[i]);
    free(p->L);
    free(p->buf[0]), free(p->buf[1]), free(p->col), free(p->dcol), free(p->qa), free(p->qx), free(p->acc), free(p->es), free(p->full);
    free(p);
}

int engine_infer_num_layers(const engine_infer_t *p) { return p->n; }

void engine_infer_shape(const engine_infer_t *p, int *c, int *h, int *w, int *classes)
{
    *c = p->c, *h = p->h, *w = p->w, *classes = p->classes;
}

/* Walks the layer list with shapes, copying weights out of the vector (params first, then the
 * batch-norm buffers, in layer order: the layout engine/nn.c gives them). */
static int build(engine_infer_t *p, const json_t *layers, const float *vec, size_t nparams, size_t nbuf, err_t *err)
{
    size_t np = json_array_size(layers), po = 0, bo = 0;
    p->L = calloc(np ? np : 1, sizeof *p->L);
    if (!p->L)
        return err_set(err, FN_ENOMEM, "infer: out of memory");
    int nd = 3, s[3] = {p->c, p->h, p->w};
    for (size_t i = 0; i < np; i++) {
        const json_t *o = json_array_get(layers, i);
        const char *t = json_string_value(json_object_get(o, "type"));
        ilayer_t *l = &p->L[p->n];
        l->kind = -1;
        for (int k = 0; k < (int)(sizeof kinds / sizeof *kinds); k++)
            if (t && strcmp(t, kinds[k]) == 0)
                l->kind = k;
        if (l->kind < 0)
            return err_set(err, FN_EINVAL, "layers[%zu] (%s): not supported by the inference runtime (it takes "
                           "conv2d, linear, batchnorm, relu, maxpool, avgpool, global_avgpool, flatten, dropout)",
                           i, t ? t : "?");
        l->src_index = (int)i;
        l->json = json_deep_copy(o);
        p->n++;
        l->in_nd = nd;
        memcpy(l->in, s, sizeof s);
        switch (l->kind) {
        case IL_CONV: {
            if (geti(o, "groups", 1) != 1 || geti(o, "dilation", 1) != 1)
                return err_set(err, FN_EINVAL, "layers[%zu] (conv2d): only groups 1 and dilation 1 are supported", i);
            l->cout = geti(o, "out", 0);
            l->k = geti(o, "kernel", 0);
            l->stride = geti(o, "stride", 1);
            const json_t *pd = json_object_get(o, "padding");
            l->pad = json_is_string(pd) ? (strcmp(json_string_value(pd), "same") == 0 ? (l->k - 1) / 2 : 0)
                                        : geti(o, "padding", 0);
            l->has_bias = !json_is_false(json_object_get(o, "bias"));
            l->K = s[0] * l->k * l->k;
            nd = 3;
            s[0] = l->cout;
            s[1] = (l->in[1] + 2 * l->pad - l->k) / l->stride + 1;
            s[2] = (l->in[2] + 2 * l->pad - l->k) / l->stride + 1;
            break;
        }
        case IL_LINEAR:
            l->K = (int)ishape_numel(nd, s);
            l->cout = json_object_get(o, "out") ? geti(o, "out", 0) : p->classes;
            l->has_bias = !json_is_false(json_object_get(o, "bias"));
            nd = 1;
            s[0] = l->cout;
            break;
        case IL_BN: {
            int C = s[0];
            l->eps = json_is_number(json_object_get(o, "eps")) ? (float)json_number_value(json_object_get(o, "eps"))
                                                                : 1e-5f;
            if (po + 2 * (size_t)C > nparams || bo + 2 * (size_t)C > nbuf)
                return err_set(err, FN_EINVAL, "layers[%zu] (batchnorm): the vector is too short", i);
            l->gamma = fdup(vec + po, C), l->beta = fdup(vec + po + C, C);
            l->rm = fdup(vec + nparams + bo, C), l->rv = fdup(vec + nparams + bo + C, C);
            po += 2 * (size_t)C, bo += 2 * (size_t)C;
            break;
        }
        case IL_MAXPOOL:
        case IL_AVGPOOL:
            l->k = geti(o, "kernel", 2);
            l->stride = geti(o, "stride", l->k);
            l->pad = geti(o, "padding", 0);
            if (nd != 3)
                return err_set(err, FN_EINVAL, "layers[%zu] (%s): needs an image input", i, t);
            s[1] = (s[1] + 2 * l->pad - l->k) / l->stride + 1;
            s[2] = (s[2] + 2 * l->pad - l->k) / l->stride + 1;
            break;
        case IL_GAP: /* [C][H][W] -> [C] */
            if (nd != 3)
                return err_set(err, FN_EINVAL, "layers[%zu] (%s): needs an image input", i, t);
            nd = 1;
            break;
        case IL_FLATTEN:
            s[0] = (int)ishape_numel(nd, s);
            nd = 1;
            break;
        default: break;
        }
        if (l->kind == IL_CONV || l->kind == IL_LINEAR) {
            size_t nw = (size_t)l->cout * l->K;
            if (po + nw + (l->has_bias ? (size_t)l->cout : 0) > nparams)
                return err_set(err, FN_EINVAL, "layers[%zu] (%s): the vector is too short", i, t);
            l->w = fdup(vec + po, nw);
            po += nw;
            if (l->has_bias) {
                l->b = fdup(vec + po, l->cout);
                po += (size_t)l->cout;
            }
        }
        l->out_nd = nd;
        memcpy(l->out, s, sizeof s);
    }
    if (po != nparams || bo != nbuf)
        return err_set(err, FN_EINVAL, "infer: the layers use %zu parameters and %zu buffers, the model has %zu and %zu",
                       po, bo, nparams, nbuf);
    if (nd != 1 || s[0] != p->classes)
        return err_set(err, FN_EINVAL, "infer: the last layer gives %zu values per sample, not %d classes",
                       ishape_numel(nd, s), p->classes);
    return 0;
}

/* The kernels on packed weights that go with p->qimpl. */
static void set_packed(engine_infer_t *p)
{
    int vnni = p->qimpl == ENGINE_QGEMM_VNNI || p->qimpl == ENGINE_QGEMM_AMX;
    p->qpacked = vnni ? engine_qgemm_packed_get() : NULL;
    p->qamx = p->qimpl == ENGINE_QGEMM_AMX ? engine_qgemm_amx_get() : NULL;
    p->qkoff = engine_qgemm_koff_get(p->qimpl);
}

int engine_infer_create(const json_t *arch, const float *vec, size_t n, int c, int h, int w, int classes,
                        engine_infer_t **out, err_t *err)
{
    *out = NULL;
    engine_net_t *net = NULL;
    json_t *layers = NULL;
    if (engine_net_create(arch, c, h, w, classes, &net, err) < 0)
        return err->code;
    size_t np = engine_net_num_params(net), nb = engine_net_num_buffers(net);
    engine_net_free(net);
    if (n != np + nb)
        return err_set(err, FN_EINVAL, "model: the vector has %zu floats, the architecture needs %zu (%zu parameters "
                       "+ %zu buffers)", n, np + nb, np, nb);
    if (engine_net_expand(arch, classes, &layers, err) < 0)
        return err->code;
    engine_infer_t *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(layers);
        return err_set(err, FN_ENOMEM, "infer: out of memory");
    }
    p->c = c, p->h = h, p->w = w, p->classes = classes;
    p->qimpl = engine_qgemm_best();
    p->qgemm = engine_qgemm_get(p->qimpl);
    set_packed(p);
    int rc = build(p, layers, vec, np, nb, err);
    json_decref(layers);
    if (rc < 0) {
        engine_infer_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int engine_infer_set_qgemm(engine_infer_t *p, engine_qgemm_impl_t impl, err_t *err)
{
    engine_qgemm_fn f = engine_qgemm_get(impl);
    if (!f)
        return err_set(err, FN_EINVAL, "qgemm: this CPU cannot run the %s kernel", engine_qgemm_name(impl));
    p->qgemm = f;
    p->qimpl = impl == ENGINE_QGEMM_AUTO ? engine_qgemm_best() : impl;
    set_packed(p);
    return 0;
}

/* BN(y) = gamma (y - mean) / sqrt(var + eps) + beta: a per-channel scale a and shift, folded
 * into the rows of W and the bias of the layer before. A ReLU after a conv/linear and a 2x2
 * stride-2 max pool after a conv join its epilogue (engine/infer_fp32.c): one pass over the
 * conv's output instead of three. A batch norm after a fused ReLU or pool stays (neither
 * commutes with a negative scale). */
int engine_infer_fold(engine_infer_t *p, err_t *err)
{
    (void)err;
    int j = 0;
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        ilayer_t *prev = j > 0 ? &p->L[j - 1] : NULL;
        int lin = prev && (prev->kind == IL_CONV || prev->kind == IL_LINEAR);
        if (l->kind == IL_BN && lin && !prev->relu && !prev->pool && !p->quantized) {
            if (!prev->b) {
                prev->b = calloc((size_t)prev->cout, sizeof *prev->b);
                if (!prev->b)
                    return err_set(err, FN_ENOMEM, "fold: out of memory");
                prev->has_bias = 1;
            }
            for (int o = 0; o < prev->cout; o++) {
                float a = l->gamma[o] / sqrtf(l->rv[o] + l->eps);
                for (int k = 0; k < prev->K; k++)
                    prev->w[(size_t)o * prev->K + k] *= a;
                prev->b[o] = (prev->b[o] - l->rm[o]) * a + l->beta[o];
            }
            ilayer_weights_changed(prev);
            memcpy(prev->out, l->out, sizeof prev->out);
            layer_free(l);
            continue;
        }
        if (l->kind == IL_MAXPOOL && prev && prev->kind == IL_CONV && !prev->pool && l->k == 2 && l->stride == 2 &&
            l->pad == 0) {
            prev->pool = 1;
            prev->pool_json = l->json;
            l->json = NULL;
            memcpy(prev->out, l->out, sizeof prev->out);
            layer_free(l);
            continue;
        }
        if (l->kind == IL_RELU && lin) {
            prev->relu = 1;
            layer_free(l);
            continue;
        }
        if (l->kind == IL_DROPOUT) {
            layer_free(l);
            continue;
        }
        if (j != i)
            p->L[j] = *l;
        j++;
    }
    p->n = j;
    return 0;
}

int engine_infer_export(const engine_infer_t *p, json_t **arch, float **vec, size_t *n, err_t *err)
{
    size_t np = 0, nb = 0;
    for (int i = 0; i < p->n; i++) {
        const ilayer_t *l = &p->L[i];
        if (l->kind == IL_CONV || l->kind == IL_LINEAR)
            np += (size_t)l->cout * l->K + (l->b ? (size_t)l->cout : 0);
        else if (l->kind == IL_BN)
            np += 2 * (size_t)l->in[0], nb += 2 * (size_t)l->in[0];
    }
    float *v = malloc((np + nb ? np + nb : 1) * sizeof *v);
    json_t *L = json_array();
    if (!v || !L) {
        free(v);
        json_decref(L);
        return err_set(err, FN_ENOMEM, "export: out of memory");
    }
    size_t po = 0, bo = np;
    for (int i = 0; i < p->n; i++) {
        const ilayer_t *l = &p->L[i];
        if (l->kind == IL_CONV || l->kind == IL_LINEAR) {
            json_t *o = l->kind == IL_CONV ? json_pack("{s:s,s:i,s:i,s:i,s:i,s:b}", "type", "conv2d", "out", l->cout,
                                                       "kernel", l->k, "stride", l->stride, "padding", l->pad,
                                                       "bias", l->b != NULL)
                                           : json_pack("{s:s,s:i,s:b}", "type", "linear", "out", l->cout, "bias",
                                                       l->b != NULL);
            json_array_append_new(L, o);
            memcpy(v + po, l->w, (size_t)l->cout * l->K * sizeof *v);
            po += (size_t)l->cout * l->K;
            if (l->b) {
                memcpy(v + po, l->b, (size_t)l->cout * sizeof *v);
                po += (size_t)l->cout;
            }
            if (l->relu)
                json_array_append_new(L, json_pack("{s:s}", "type", "relu"));
            if (l->pool)
                json_array_append_new(L, json_deep_copy(l->pool_json));
        } else {
            json_array_append_new(L, json_deep_copy(l->json));
            if (l->kind == IL_BN) {
                size_t C = (size_t)l->in[0];
                memcpy(v + po, l->gamma, C * sizeof *v), memcpy(v + po + C, l->beta, C * sizeof *v);
                memcpy(v + bo, l->rm, C * sizeof *v), memcpy(v + bo + C, l->rv, C * sizeof *v);
                po += 2 * C, bo += 2 * C;
            }
        }
    }
    *arch = json_pack("{s:s,s:o}", "type", "layers", "layers", L);
    *vec = v;
    *n = np + nb;
    return 0;
}

/* ---- forward ---- */

/* Rows are output pixels, K ordered (ky, kx, c) over a channel-last input x [H][W][C], so each
 * kernel row is one contiguous copy; padding gets zp, then zeros up to Kp. */
__attribute__((noinline)) static void im2row_u8(const uint8_t *x, int C, int H, int W, int k, int s, int pad, int OH,
                                                int OW, int Kp, uint8_t zp, uint8_t *A)
{
    size_t kc = (size_t)k * C;
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            uint8_t *r = A + (size_t)(oy * OW + ox) * Kp;
            int x0 = ox * s - pad, klo = x0 < 0 ? -x0 : 0, khi = W - x0 < k ? W - x0 : k;
            if (khi < klo)
                khi = klo;
            for (int ky = 0; ky < k; ky++, r += kc) {
                int iy = oy * s - pad + ky;
                if (iy < 0 || iy >= H) {
                    memset(r, zp, kc);
                    continue;
                }
                const uint8_t *src = x + ((size_t)iy * W + x0) * C;
                if (kc <= 32) { /* few channels (a first layer): bytes, not library calls */
                    for (int kx = 0; kx < k; kx++) {
                        int in = kx >= klo && kx < khi;
                        for (int c = 0; c < C; c++)
                            r[kx * C + c] = in ? src[kx * C + c] : zp;
                    }
                    continue;
                }
                if (klo)
                    memset(r, zp, (size_t)klo * C);
                memcpy(r + (size_t)klo * C, src + (size_t)klo * C, (size_t)(khi - klo) * C);
                if (khi < k)
                    memset(r + (size_t)khi * C, zp, (size_t)(k - khi) * C);
            }
            memset(r, 0, (size_t)Kp - kc * k);
        }
}

/* x [C][HW] to channel-last uint8 q [HW][C]. */
__attribute__((noinline)) static void quant_u8_hwc(const float *x, int C, int HW, float scale, int zp, uint8_t *q)
{
    float inv = 1.0f / scale, z = (float)zp + 0.5f;
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
        for (int i = 0; i < HW; i++) {
            float v = xc[i] * inv + z;
            v = v < 0 ? 0 : v > 255.0f ? 255.0f : v;
            q[(size_t)i * C + c] = (uint8_t)v;
        }
    }
}

__attribute__((noinline)) static void quant_u8(const float *x, size_t n, float scale, int zp, uint8_t *q)
{
    float inv = 1.0f / scale, z = (float)zp + 0.5f;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv + z;
        v = v < 0 ? 0 : v > 255.0f ? 255.0f : v;
        q[i] = (uint8_t)v;
    }
}

static void record(ilayer_t *l, const float *x, size_t n, int stats)
{
    if (stats == 1) {
        for (size_t i = 0; i < n; i++) {
            if (x[i] < l->amin)
                l->amin = x[i];
            if (x[i] > l->amax)
                l->amax = x[i];
        }
        return;
    }
    float m = fmaxf(fabsf(l->amin), fabsf(l->amax));
    if (m <= 0)
        return;
    float sc = IHIST / m;
    for (size_t i = 0; i < n; i++) {
        int b = (int)(fabsf(x[i]) * sc);
        l->hist[b >= IHIST ? IHIST - 1 : b] += 1;
    }
}

static int run_conv(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B, int int8)
{
    if (!int8)
        return infer_conv_fp32(p, l, x, y, B);
    if (p->qkoff && l->qwi && infer_avx512()) /* FEDNAS_INFER_PORTABLE=1: the im2row path */
        return infer_qconv_run(p, l, x, y, B);
    /* OH, OW: the conv's own output; with a fused pool, l->out is the pooled one */
    int C = l->in[0], H = l->in[1], W = l->in[2], OH = (H + 2 * l->pad - l->k) / l->stride + 1,
        OW = (W + 2 * l->pad - l->k) / l->stride + 1, P = OH * OW;
    size_t in_n = (size_t)C * H * W, out_n = (size_t)l->cout * l->out[1] * l->out[2];
    if (l->pool && infer_grow((void **)&p->full, &p->full_cap, (size_t)l->cout * P * sizeof(float)))
        return -1;
    if (infer_grow((void **)&p->qx, &p->qx_cap, in_n) || infer_grow((void **)&p->qa, &p->qa_cap, (size_t)P * l->Kp) ||
        infer_grow((void **)&p->es, &p->es_cap, 2 * (size_t)l->cout * sizeof(float)) ||
        infer_grow((void **)&p->acc, &p->acc_cap, (size_t)P * l->cout * sizeof(int32_t)))
        return -1;
    p->eb = p->es + l->cout;
    for (int b = 0; b < B; b++) {
        quant_u8_hwc(x + b * in_n, C, H * W, l->ascale, l->azp, p->qx);
        im2row_u8(p->qx, C, H, W, l->k, l->stride, l->pad, OH, OW, l->Kp, (uint8_t)l->azp, p->qa);
        if (p->qpacked && l->qwp)
            p->qpacked(P, l->cout, l->Kp, p->qa, l->Kp, l->qwp, p->acc, l->cout);
        else
            p->qgemm(P, l->cout, l->Kp, p->qa, l->Kp, l->qwk, l->Kp, p->acc, l->cout);
        float *yb = l->pool ? p->full : y + b * out_n;
        for (int o = 0; o < l->cout; o++) {
            p->es[o] = l->ascale * l->wscale[o];
            p->eb[o] = (l->b ? l->b[o] : 0) - (float)(l->azp * l->wsum[o]) * p->es[o];
        }
        /* acc is [P][cout], y is [cout][P]: transposed in tiles of 16 pixels that stay in L1 */
        for (int q0 = 0; q0 < P; q0 += 16) {
            int q1 = q0 + 16 < P ? q0 + 16 : P;
            for (int o = 0; o < l->cout; o++) {
                float es = p->es[o], eb = p->eb[o], *yo = yb + (size_t)o * P;
                const int32_t *a = p->acc + o;
                for (int q = q0; q < q1; q++) {
                    float v = (float)a[(size_t)q * l->cout] * es + eb;
                    yo[q] = l->relu && v < 0 ? 0 : v;
                }
            }
        }
        if (l->pool)
            infer_maxpool2(yb, l->cout, OH, OW, y + b * out_n);
    }
    return 0;
}

static int run_linear(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B, int int8)
{
    if (!int8)
        return infer_linear_fp32(p, l, x, y, B);
    /* AMX takes rows in 16s (the extra rows are zero) and writes whole 16-column blocks */
    int amx = p->qamx && l->qwp, M = amx ? (B + 15) / 16 * 16 : B, ldc = amx ? (l->cout + 15) / 16 * 16 : l->cout;
    if (infer_grow((void **)&p->qa, &p->qa_cap, (size_t)M * l->Kp) ||
        infer_grow((void **)&p->acc, &p->acc_cap, (size_t)M * ldc * sizeof(int32_t)))
        return -1;
    for (int b = 0; b < B; b++) {
        uint8_t *r = p->qa + (size_t)b * l->Kp;
        quant_u8(x + (size_t)b * l->K, (size_t)l->K, l->ascale, l->azp, r);
        memset(r + l->K, 0, (size_t)(l->Kp - l->K));
    }
    memset(p->qa + (size_t)B * l->Kp, 0, (size_t)(M - B) * l->Kp);
    if (amx)
        p->qamx(M, l->cout, l->Kp / 64, p->qa, l->Kp, NULL, l->qwp, p->acc, ldc);
    else if (p->qpacked && l->qwp)
        p->qpacked(B, l->cout, l->Kp, p->qa, l->Kp, l->qwp, p->acc, ldc);
    else
        p->qgemm(B, l->cout, l->Kp, p->qa, l->Kp, l->qw, l->Kp, p->acc, ldc);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < l->cout; o++) {
            float v = (float)(p->acc[(size_t)b * ldc + o] - l->azp * l->wsum[o]) * (l->ascale * l->wscale[o]) +
                      (l->b ? l->b[o] : 0);
            y[(size_t)b * l->cout + o] = l->relu && v < 0 ? 0 : v;
        }
    return 0;
}

__attribute__((noinline)) static void run_pool(const ilayer_t *l, const float *x, float *y, int B)
{
    int C = l->in[0], H = l->in[1], W = l->in[2], OH = l->out[1], OW = l->out[2];
    if (l->kind == IL_MAXPOOL && l->k == 2 && l->stride == 2 && l->pad == 0) { /* the common case */
        for (int b = 0; b < B; b++)
            infer_maxpool2(x + (size_t)b * C * H * W, C, H, W, y + (size_t)b * C * OH * OW);
        return;
    }
    for (int bc = 0; bc < B * C; bc++) {
        const float *xi = x + (size_t)bc * H * W;
        float *yo = y + (size_t)bc * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                float m = l->kind == IL_MAXPOOL ? -INFINITY : 0;
                for (int ky = 0; ky < l->k; ky++) {
                    int iy = oy * l->stride - l->pad + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < l->k; kx++) {
                        int ix = ox * l->stride - l->pad + kx;
                        if (ix < 0 || ix >= W)
                            continue;
                        float v = xi[iy * W + ix];
                        m = l->kind == IL_MAXPOOL ? (v > m ? v : m) : m + v;
                    }
                }
                yo[oy * OW + ox] = l->kind == IL_MAXPOOL ? m : m / (float)(l->k * l->k);
            }
    }
}

int engine_infer_run(engine_infer_t *p, const float *x, int B, float *logits, int int8, int stats, err_t *err)
{
    if (int8 && !p->quantized)
        return err_set(err, FN_EINVAL, "infer: int8 forward before engine_infer_quantize");
    size_t maxn = (size_t)p->c * p->h * p->w;
    for (int i = 0; i < p->n; i++)
        if (ishape_numel(p->L[i].out_nd, p->L[i].out) > maxn)
            maxn = ishape_numel(p->L[i].out_nd, p->L[i].out);
    size_t need = maxn * (size_t)B * sizeof(float);
    if (p->buf_cap < need) {
        free(p->buf[0]), free(p->buf[1]);
        p->buf[0] = malloc(need), p->buf[1] = malloc(need);
        p->buf_cap = p->buf[0] && p->buf[1] ? need : 0;
        if (!p->buf_cap)
            return err_set(err, FN_ENOMEM, "infer: out of memory");
    }
    const float *cur = x;
    int which = 0;
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        size_t in_n = ishape_numel(l->in_nd, l->in);
        float *y = p->buf[which];
        int rc = 0;
        if (stats && (l->kind == IL_CONV || l->kind == IL_LINEAR))
            record(l, cur, in_n * B, stats);
        switch (l->kind) {
        case IL_CONV: rc = run_conv(p, l, cur, y, B, int8); break;
        case IL_LINEAR: rc = run_linear(p, l, cur, y, B, int8); break;
        case IL_BN: {
            int C = l->in[0];
            size_t hw = in_n / (size_t)C;
            for (int b = 0; b < B; b++)
                for (int c = 0; c < C; c++) {
                    float a = l->gamma[c] / sqrtf(l->rv[c] + l->eps), sh = l->beta[c] - l->rm[c] * a;
                    const float *xi = cur + b * in_n + c * hw;
                    float *yo = y + b * in_n + c * hw;
                    for (size_t q = 0; q < hw; q++)
                        yo[q] = xi[q] * a + sh;
                }
            break;
        }
        case IL_RELU:
            for (size_t q = 0; q < in_n * B; q++)
                y[q] = cur[q] > 0 ? cur[q] : 0;
            break;
        case IL_MAXPOOL:
        case IL_AVGPOOL: run_pool(l, cur, y, B); break;
        case IL_GAP: {
            size_t hw = (size_t)l->in[1] * l->in[2];
            for (int bc = 0; bc < B * l->in[0]; bc++) {
                double s = 0;
                for (size_t q = 0; q < hw; q++)
                    s += cur[bc * hw + q];
                y[bc] = (float)(s / (double)hw);
            }
            break;
        }
        default: /* flatten, dropout: the data is already flat */
            continue;
        }
        if (rc < 0)
            return err_set(err, FN_ENOMEM, "infer: out of memory");
        cur = y;
        which ^= 1;
    }
    memcpy(logits, cur, (size_t)B * p->classes * sizeof(float));
    return 0;
}

int engine_infer_forward(engine_infer_t *p, const float *x, int B, float *logits, int int8, err_t *err)
{
    return engine_infer_run(p, x, B, logits, int8, 0, err);
}
