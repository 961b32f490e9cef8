/* infer_quant: post-training INT8 quantization of an inference plan (see infer.h):
 * per-channel symmetric weights, activation ranges from min/max, percentile or entropy (KL)
 * calibration over a calibration set, and the quantized model file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"
#include "engine/safetensors.h"

void engine_quant_rows(const float *w, int rows, int cols, int8_t *q, int ldq, float *scale)
{
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        float m = 0;
        for (int c = 0; c < cols; c++)
            m = fmaxf(m, fabsf(wr[c]));
        float s = m > 0 ? m / 127.0f : 1.0f;
        scale[r] = s;
        for (int c = 0; c < cols; c++) {
            long v = lrintf(wr[c] / s);
            q[(size_t)r * ldq + c] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
        for (int c = cols; c < ldq; c++)
            q[(size_t)r * ldq + c] = 0;
    }
}

double engine_calib_percentile(const double *hist, int nbins, double max, double percentile)
{
    double total = 0, run = 0;
    for (int i = 0; i < nbins; i++)
        total += hist[i];
    if (total <= 0)
        return max;
    for (int i = 0; i < nbins; i++) {
        run += hist[i];
        if (run >= total * percentile / 100.0)
            return (i + 1) * max / nbins;
    }
    return max;
}

/* TensorRT's entropy calibrator (Migacz, "8-bit Inference with TensorRT", GTC 2017): for each
 * candidate threshold bin i, P is hist[0..i) with the outliers added to its last bin, Q is
 * hist[0..i) (without the outliers) merged into `levels` bins and spread back over its non-empty
 * bins; the threshold with the smallest KL(P || Q) wins. Empty stretches cost nothing, so a lone
 * outlier after a gap is kept; a long thin tail is clipped. */
double engine_calib_entropy(const double *hist, int nbins, double max, int levels)
{
    if (nbins <= levels)
        return max;
    double *P = malloc((size_t)nbins * sizeof *P), *Q = malloc((size_t)nbins * sizeof *Q);
    if (!P || !Q) {
        free(P), free(Q);
        return max;
    }
    double tail = 0;
    for (int i = levels; i < nbins; i++)
        tail += hist[i];
    double best = INFINITY;
    int best_i = nbins;
    for (int i = levels; i <= nbins; i++) {
        memcpy(P, hist, (size_t)i * sizeof *P);
        P[i - 1] += tail; /* tail = sum hist[i..nbins) */
        if (i < nbins)
            tail -= hist[i];
        double psum = 0;
        for (int k = 0; k < i; k++)
            psum += P[k];
        if (psum <= 0)
            continue;
        for (int q = 0; q < levels; q++) {
            int a = (int)((long)q * i / levels), b = (int)((long)(q + 1) * i / levels);
            double s = 0;
            int nz = 0;
            for (int k = a; k < b; k++) {
                s += hist[k];
                nz += hist[k] > 0;
            }
            for (int k = a; k < b; k++)
                Q[k] = hist[k] > 0 ? s / nz : 0;
        }
        double qsum = 0;
        for (int k = 0; k < i; k++)
            qsum += Q[k];
        double kl = 0;
        for (int k = 0; k < i; k++) {
            if (P[k] <= 0)
                continue;
            double pk = P[k] / psum, qk = Q[k] / qsum;
            kl += qk > 0 ? pk * log(pk / qk) : pk * 30.0; /* Q empty where P is not: heavily penalised */
        }
        if (kl < best) {
            best = kl;
            best_i = i;
        }
    }
    free(P), free(Q);
    return (best_i + 0.5) * max / nbins > max ? max : (best_i + 0.5) * max / nbins;
}

int infer_pack_int8(ilayer_t *l)
{
    free(l->wsum), free(l->qwk), free(l->qwp), free(l->qwi);
    l->qwk = NULL, l->qwp = NULL, l->qwi = NULL;
    if (!(l->wsum = malloc((size_t)l->cout * sizeof *l->wsum)))
        return -1;
    for (int o = 0; o < l->cout; o++) {
        int32_t s = 0;
        for (int k = 0; k < l->K; k++)
            s += l->qw[(size_t)o * l->Kp + k];
        l->wsum[o] = s;
    }
    if (l->kind == IL_CONV) { /* (c, ky, kx) -> (ky, kx, c) for channel-last im2row */
        int C = l->in[0], k = l->k;
        if (!(l->qwk = calloc((size_t)l->cout * l->Kp, 1)))
            return -1;
        for (int o = 0; o < l->cout; o++)
            for (int c = 0; c < C; c++)
                for (int t = 0; t < k * k; t++)
                    l->qwk[(size_t)o * l->Kp + (size_t)t * C + c] = l->qw[(size_t)o * l->Kp + (size_t)c * k * k + t];
    }
    if (engine_qgemm_packed_get() && !(l->qwp = engine_qgemm_pack(l->cout, l->Kp, l->qwk ? l->qwk : l->qw, l->Kp)))
        return -1;
    if (l->kind == IL_CONV && l->stride == 1 && engine_qgemm_koff_get(ENGINE_QGEMM_VNNI) && infer_qconv_pack(l) < 0)
        return -1;
    return 0;
}

/* Per-channel int8 weights (and their packed forms) of every conv/linear layer. */
static int quant_weights(engine_infer_t *p, err_t *err)
{
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        if (l->kind != IL_CONV && l->kind != IL_LINEAR)
            continue;
        l->Kp = engine_qgemm_kpad(l->K);
        free(l->qw), free(l->wscale), free(l->hist);
        l->qw = malloc((size_t)l->cout * l->Kp);
        l->wscale = malloc((size_t)l->cout * sizeof *l->wscale);
        l->hist = calloc(IHIST, sizeof *l->hist);
        if (!l->qw || !l->wscale || !l->hist)
            return err_set(err, FN_ENOMEM, "quantize: out of memory");
        engine_quant_rows(l->w, l->cout, l->K, l->qw, l->Kp, l->wscale);
        if (infer_pack_int8(l) < 0)
            return err_set(err, FN_ENOMEM, "quantize: out of memory");
        l->amin = INFINITY, l->amax = -INFINITY;
    }
    return 0;
}

int engine_infer_quantize(engine_infer_t *p, const float *x, int B, engine_calib_t calib, double percentile,
                          err_t *err)
{
    if (B < 1)
        return err_set(err, FN_EINVAL, "quantize: the calibration set is empty");
    if (calib == ENGINE_CALIB_PERCENTILE && !(percentile > 0 && percentile <= 100))
        return err_set(err, FN_EINVAL, "quantize: percentile %g is not in (0, 100]", percentile);
    if (quant_weights(p, err) < 0)
        return err->code;
    size_t per = (size_t)p->c * p->h * p->w;
    float *logits = malloc((size_t)64 * p->classes * sizeof *logits);
    if (!logits)
        return err_set(err, FN_ENOMEM, "quantize: out of memory");
    int passes = calib == ENGINE_CALIB_MINMAX ? 1 : 2;
    for (int pass = 1; pass <= passes; pass++)
        for (int b0 = 0; b0 < B; b0 += 64) {
            int nb = B - b0 < 64 ? B - b0 : 64;
            if (engine_infer_run(p, x + (size_t)b0 * per, nb, logits, 0, pass, err) < 0) {
                free(logits);
                return err->code;
            }
        }
    free(logits);
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        if (l->kind != IL_CONV && l->kind != IL_LINEAR)
            continue;
        int nonneg = l->amin >= 0;
        double m = fmax(fabs(l->amin), fabs(l->amax)), t = m;
        if (calib == ENGINE_CALIB_PERCENTILE)
            t = engine_calib_percentile(l->hist, IHIST, m, percentile);
        else if (calib == ENGINE_CALIB_ENTROPY)
            t = engine_calib_entropy(l->hist, IHIST, m, nonneg ? 255 : 128);
        if (!(t > 0))
            t = 1;
        /* Non-negative inputs (after ReLU, pixels) use all 256 codes from 0; others are
         * symmetric around the zero point 128. */
        l->azp = nonneg ? 0 : 128;
        l->ascale = (float)(nonneg ? t / 255.0 : t / 127.0);
    }
    p->quantized = 1;
    return 0;
}

int engine_infer_quantize_ranges(engine_infer_t *p, const float *lo, const float *hi, int n, err_t *err)
{
    int k = 0;
    for (int i = 0; i < p->n; i++)
        k += p->L[i].kind == IL_CONV || p->L[i].kind == IL_LINEAR;
    if (n != k)
        return err_set(err, FN_EINVAL, "quantize: %d input ranges for %d conv/linear layers", n, k);
    for (int j = 0; j < n; j++)
        if (!(lo[j] <= hi[j]) || !isfinite(lo[j]) || !isfinite(hi[j]))
            return err_set(err, FN_EINVAL, "quantize: input range %d [%g, %g] is not a finite interval", j,
                           (double)lo[j], (double)hi[j]);
    if (quant_weights(p, err) < 0)
        return err->code;
    k = 0;
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        if (l->kind != IL_CONV && l->kind != IL_LINEAR)
            continue;
        /* the grid engine/qat.c fakes: engine_qat_grid */
        if (lo[k] >= 0) {
            l->azp = 0;
            l->ascale = hi[k] > 0 ? hi[k] / 255.0f : 1.0f;
        } else {
            float t = fmaxf(fabsf(lo[k]), fabsf(hi[k]));
            l->azp = 128;
            l->ascale = t > 0 ? t / 127.0f : 1.0f;
        }
        l->amin = lo[k], l->amax = hi[k];
        k++;
    }
    p->quantized = 1;
    return 0;
}

int engine_infer_save_int8(const engine_infer_t *p, const char *path, err_t *err)
{
    if (!p->quantized)
        return err_set(err, FN_EINVAL, "%s: the model is not quantized", path);
    int nt = 0;
    engine_st_tensor_t *t = calloc((size_t)p->n * 5 + 1, sizeof *t);
    char(*names)[64] = calloc((size_t)p->n * 5 + 1, sizeof *names);
    int8_t **packed = calloc((size_t)p->n + 1, sizeof *packed);
    json_t *arch = NULL;
    float *vec = NULL;
    size_t nv = 0;
    int rc = 0;
    if (!t || !names || !packed) {
        rc = err_set(err, FN_ENOMEM, "save: out of memory");
        goto out;
    }
    for (int i = 0; i < p->n; i++) {
        const ilayer_t *l = &p->L[i];
        if (l->kind != IL_CONV && l->kind != IL_LINEAR)
            continue;
        packed[i] = malloc((size_t)l->cout * l->K);
        if (!packed[i]) {
            rc = err_set(err, FN_ENOMEM, "save: out of memory");
            goto out;
        }
        for (int o = 0; o < l->cout; o++)
            memcpy(packed[i] + (size_t)o * l->K, l->qw + (size_t)o * l->Kp, (size_t)l->K);
        const char *what[5] = {"weight", "weight_scale", "bias", "input_scale", "input_zero_point"};
        for (int k = 0; k < 5; k++) {
            if (k == 2 && !l->b)
                continue;
            engine_st_tensor_t *e = &t[nt];
            snprintf(names[nt], sizeof names[nt], "layers.%d.%s", i, what[k]);
            e->name = names[nt];
            e->ndim = k == 0 ? 2 : 1;
            e->shape[0] = k >= 3 ? 1 : (uint64_t)l->cout;
            e->shape[1] = (uint64_t)l->K;
            e->dtype = k == 0 ? ENGINE_ST_I8 : k == 4 ? ENGINE_ST_I32 : ENGINE_ST_F32;
            e->data = k == 0 ? (const void *)packed[i] : k == 1 ? (const void *)l->wscale : k == 2 ? (const void *)l->b
                      : k == 3 ? (const void *)&l->ascale : (const void *)&l->azp;
            nt++;
        }
    }
    if ((rc = engine_infer_export(p, &arch, &vec, &nv, err)) < 0)
        goto out;
    char *arch_text = json_dumps(arch, JSON_COMPACT);
    char shape[64];
    snprintf(shape, sizeof shape, "[%d,%d,%d]", p->c, p->h, p->w);
    engine_st_kv_t meta[3] = {{ENGINE_ST_META_ARCH, arch_text ? arch_text : "{}"}, {"fednas.quant", "int8"},
                              {"fednas.input", shape}};
    rc = engine_safetensors_save(path, t, nt, meta, 3, err);
    free(arch_text);
out:
    if (packed)
        for (int i = 0; i < p->n; i++)
            free(packed[i]);
    free(packed), free(t), free(names), free(vec);
    json_decref(arch);
    return rc;
}
