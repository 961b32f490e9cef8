/* compress: lossy encodings of a client's update for the plain (no secure aggregation) uplink.
 * Pure functions on float vectors: 8-bit stochastic quantization per chunk, top-k
 * sparsification, and both (top-k, then the kept values quantized); the decoders check every
 * count, index and scale, so a server can run them on untrusted input. */
#ifndef FEDNAS_COMMON_COMPRESS_H
#define FEDNAS_COMMON_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Values per quantization chunk: each chunk carries its own (min, max), so one large
 * coordinate costs resolution only within its 1024 neighbours. */
#define COMPRESS_CHUNK 1024

/* What the experiment asked for: quantize 0 (off) or 8; topk 0 (off) or the fraction kept. */
typedef struct compress_spec {
    int quantize;
    double topk;
} compress_spec_t;

/* One encoded update. Wire frames, in order: top-k adds "indices" (uint32, strictly increasing,
 * each < m); then either "values" (float32, k of them) or, when quantized, "codes" (uint8, one
 * per value) and "scales" (float32, (min, max) of each chunk of COMPRESS_CHUNK codes). */
typedef struct compress_enc {
    size_t n;          /* values encoded: m, or k under top-k */
    uint32_t *indices; /* k, or NULL without top-k */
    float *values;     /* n, or NULL when quantized */
    uint8_t *codes;    /* n, or NULL when not quantized */
    float *scales;     /* nscales = 2 * chunks, or NULL */
    size_t nscales;
} compress_enc_t;

/* Coordinates top-k keeps of m: ceil(fraction * m), at least 1, at most m. */
size_t compress_topk_count(size_t m, double fraction);
/* Chunks (min, max pairs) that n quantized values need. */
size_t compress_q8_chunks(size_t n);

/* Indices of the k values of largest magnitude, ties to the lower index, written in increasing
 * order, with their values. FN_EINVAL for a non-finite value or k outside [1, m]. */
int compress_topk(const float *x, size_t m, size_t k, uint32_t *indices, float *values, err_t *err);
/* codes[i] = min + code * (max - min) / 255 per chunk, rounded stochastically (up with the
 * probability of the remainder), so every decoded value is unbiased and within one step
 * (max - min) / 255 of x. The draws come from rng_t seeded by seed (reproducible, not secret:
 * the rounding noise protects nothing). scales gets 2 * compress_q8_chunks(n) floats.
 * FN_EINVAL for a non-finite value. */
int compress_q8_encode(const float *x, size_t n, uint64_t seed, uint8_t *codes, float *scales, err_t *err);
/* out[i] = the decoded values; FN_EPROTO when nscales is not 2 * chunks or a scale pair is
 * not finite with min <= max. */
int compress_q8_decode(const uint8_t *codes, size_t n, const float *scales, size_t nscales, float *out, err_t *err);
/* out (m floats) = zero except out[indices[i]] = values[i]; FN_EPROTO unless the indices are
 * strictly increasing and < m and every value is finite. */
int compress_topk_scatter(const uint32_t *indices, const float *values, size_t k, size_t m, float *out, err_t *err);

/* Encodes x (m floats) as spec says into *enc (allocated; compress_enc_free). */
int compress_encode(const compress_spec_t *spec, const float *x, size_t m, uint64_t seed, compress_enc_t *enc,
                    err_t *err);
/* Decodes into out (m floats), checking that every array has the size spec and m imply;
 * scratch holds k floats when both top-k and quantization are on (NULL otherwise).
 * FN_EPROTO for anything malformed. */
int compress_decode(const compress_spec_t *spec, size_t m, const uint32_t *indices, size_t nindices,
                    const float *values, size_t nvalues, const uint8_t *codes, size_t ncodes, const float *scales,
                    size_t nscales, float *scratch, float *out, err_t *err);
void compress_enc_free(compress_enc_t *enc);

#endif
