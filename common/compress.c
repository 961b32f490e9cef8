#include "common/compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"

size_t compress_topk_count(size_t m, double fraction)
{
    if (m == 0)
        return 0;
    double k = ceil(fraction * (double)m);
    if (!(k >= 1))
        return 1;
    return k >= (double)m ? m : (size_t)k;
}

size_t compress_q8_chunks(size_t n) { return (n + COMPRESS_CHUNK - 1) / COMPRESS_CHUNK; }

typedef struct mag {
    float a;
    uint32_t i;
} mag_t;

/* Larger magnitude first; equal magnitudes by index, so the choice never depends on qsort. */
static int cmp_mag(const void *pa, const void *pb)
{
    const mag_t *a = pa, *b = pb;
    if (a->a != b->a)
        return a->a > b->a ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

int compress_topk(const float *x, size_t m, size_t k, uint32_t *indices, float *values, err_t *err)
{
    if (k < 1 || k > m || m > UINT32_MAX)
        return err_set(err, FN_EINVAL, "top-k: cannot keep %zu of %zu values", k, m);
    mag_t *v = FN_MALLOC(m * sizeof *v);
    for (size_t i = 0; i < m; i++) {
        if (!isfinite(x[i])) {
            free(v);
            return err_set(err, FN_EINVAL, "top-k: value %zu is not finite", i);
        }
        v[i] = (mag_t){fabsf(x[i]), (uint32_t)i};
    }
    qsort(v, m, sizeof *v, cmp_mag);
    for (size_t i = 0; i < k; i++)
        indices[i] = v[i].i;
    free(v);
    qsort(indices, k, sizeof *indices, fn_cmp_u32);
    for (size_t i = 0; i < k; i++)
        values[i] = x[indices[i]];
    return 0;
}

int compress_q8_encode(const float *x, size_t n, uint64_t seed, uint8_t *codes, float *scales, err_t *err)
{
    rng_t r;
    rng_seed(&r, seed);
    for (size_t c = 0; c * COMPRESS_CHUNK < n; c++) {
        size_t lo = c * COMPRESS_CHUNK, hi = lo + COMPRESS_CHUNK < n ? lo + COMPRESS_CHUNK : n;
        float mn = INFINITY, mx = -INFINITY;
        for (size_t i = lo; i < hi; i++) {
            if (!isfinite(x[i]))
                return err_set(err, FN_EINVAL, "quantization: value %zu is not finite", i);
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        scales[2 * c] = mn;
        scales[2 * c + 1] = mx;
        double step = ((double)mx - (double)mn) / 255.0;
        for (size_t i = lo; i < hi; i++) {
            if (!(step > 0)) {
                codes[i] = 0;
                continue;
            }
            double t = ((double)x[i] - (double)mn) / step, f = floor(t);
            if (f < 0)
                f = 0;
            if (f > 255)
                f = 255;
            /* Up with probability t - f: E[code] = t, the decoded value is unbiased. */
            double code = f + (rng_uniform(&r) < t - f);
            codes[i] = (uint8_t)(code > 255 ? 255 : code);
        }
    }
    return 0;
}

int compress_q8_decode(const uint8_t *codes, size_t n, const float *scales, size_t nscales, float *out, err_t *err)
{
    size_t chunks = compress_q8_chunks(n);
    if (!codes || !scales || nscales != 2 * chunks)
        return err_set(err, FN_EPROTO, "quantized update: %zu scales for %zu codes (expected %zu)", nscales, n,
                       2 * chunks);
    for (size_t c = 0; c < chunks; c++) {
        float mn = scales[2 * c], mx = scales[2 * c + 1];
        if (!isfinite(mn) || !isfinite(mx) || !(mn <= mx))
            return err_set(err, FN_EPROTO, "quantized update: chunk %zu has an invalid range [%g, %g]", c, mn, mx);
        double step = ((double)mx - (double)mn) / 255.0;
        size_t lo = c * COMPRESS_CHUNK, hi = lo + COMPRESS_CHUNK < n ? lo + COMPRESS_CHUNK : n;
        /* mn + 255 * step can land past mx by a rounding error, which matters when mx is tiny
         * next to mn (it can even flip the sign): clamp so every value stays in the chunk's range. */
        for (size_t i = lo; i < hi; i++) {
            double v = (double)mn + codes[i] * step;
            out[i] = (float)(v > (double)mx ? (double)mx : v);
        }
    }
    return 0;
}

int compress_topk_scatter(const uint32_t *indices, const float *values, size_t k, size_t m, float *out, err_t *err)
{
    if (!indices || !values || k < 1 || k > m)
        return err_set(err, FN_EPROTO, "sparse update: %zu values for %zu parameters", k, m);
    for (size_t i = 0; i < k; i++) {
        if (indices[i] >= m || (i > 0 && indices[i] <= indices[i - 1]))
            return err_set(err, FN_EPROTO, "sparse update: index %zu (%u) is out of order or range (m = %zu)", i,
                           indices[i], m);
        if (!isfinite(values[i]))
            return err_set(err, FN_EPROTO, "sparse update: value %zu is not finite", i);
    }
    memset(out, 0, m * sizeof *out);
    for (size_t i = 0; i < k; i++)
        out[indices[i]] = values[i];
    return 0;
}

int compress_encode(const compress_spec_t *spec, const float *x, size_t m, uint64_t seed, compress_enc_t *enc,
                    err_t *err)
{
    memset(enc, 0, sizeof *enc);
    int rc = 0;
    const float *src = x;
    enc->n = m;
    if (spec->topk > 0) {
        enc->n = compress_topk_count(m, spec->topk);
        enc->indices = FN_MALLOC(enc->n * sizeof *enc->indices);
        enc->values = FN_MALLOC(enc->n * sizeof *enc->values);
        if ((rc = compress_topk(x, m, enc->n, enc->indices, enc->values, err)) < 0)
            goto fail;
        src = enc->values;
    }
    if (spec->quantize == 8) {
        enc->nscales = 2 * compress_q8_chunks(enc->n);
        enc->codes = FN_MALLOC(enc->n ? enc->n : 1);
        enc->scales = FN_MALLOC((enc->nscales ? enc->nscales : 1) * sizeof *enc->scales);
        if ((rc = compress_q8_encode(src, enc->n, seed, enc->codes, enc->scales, err)) < 0)
            goto fail;
        free(enc->values);
        enc->values = NULL;
    } else if (!enc->values) {
        enc->values = FN_MALLOC((m ? m : 1) * sizeof *enc->values);
        memcpy(enc->values, x, m * sizeof *x);
    }
    return 0;
fail:
    compress_enc_free(enc);
    return rc;
}

int compress_decode(const compress_spec_t *spec, size_t m, const uint32_t *indices, size_t nindices,
                    const float *values, size_t nvalues, const uint8_t *codes, size_t ncodes, const float *scales,
                    size_t nscales, float *scratch, float *out, err_t *err)
{
    size_t n = spec->topk > 0 ? compress_topk_count(m, spec->topk) : m;
    if (spec->topk > 0 && (!indices || nindices != n))
        return err_set(err, FN_EPROTO, "sparse update: %zu indices (expected %zu)", indices ? nindices : 0, n);
    if (spec->quantize == 8) {
        if (!codes || ncodes != n)
            return err_set(err, FN_EPROTO, "quantized update: %zu codes (expected %zu)", codes ? ncodes : 0, n);
        float *vals = spec->topk > 0 ? scratch : out;
        int rc = compress_q8_decode(codes, n, scales, scales ? nscales : 0, vals, err);
        if (rc < 0)
            return rc;
        return spec->topk > 0 ? compress_topk_scatter(indices, vals, n, m, out, err) : 0;
    }
    if (!values || nvalues != n)
        return err_set(err, FN_EPROTO, "update: %zu values (expected %zu)", values ? nvalues : 0, n);
    if (spec->topk > 0)
        return compress_topk_scatter(indices, values, n, m, out, err);
    for (size_t i = 0; i < m; i++)
        if (!isfinite(values[i]))
            return err_set(err, FN_EPROTO, "update: value %zu is not finite", i);
    memcpy(out, values, m * sizeof *out);
    return 0;
}

void compress_enc_free(compress_enc_t *enc)
{
    free(enc->indices);
    free(enc->values);
    free(enc->codes);
    free(enc->scales);
    memset(enc, 0, sizeof *enc);
}
