/* fuzz_compress: the update decoders (common/compress.h) on untrusted arrays, and the encoders'
 * round trip. Byte 0 picks the mode and the spec: bit 0 quantize (8 bits), bit 1 top-k, bit 7 the
 * round-trip mode; byte 1 is the top-k fraction in 1/256ths (0 means 1/256).
 *   decode mode: bytes 2..3 m (little-endian, at most MAX_M), then four u16 counts (indices,
 *     values, codes, scales; 0xffff means "absent", a NULL array) and the arrays themselves,
 *     filled from the rest of the input (zeros past its end). On success every decoded value is
 *     finite; top-k leaves at most k nonzero coordinates; quantized values lie in their chunk's
 *     [min, max].
 *   round-trip mode: the rest of the input as float32 values x (non-finite ones replaced by
 *     their byte pattern as an integer), encoded and decoded: top-k keeps exactly k coordinates,
 *     none smaller in magnitude than one it dropped, the kept ones exactly (or, quantized,
 *     within one quantization step of the chunk). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/compress.h"
#include "fuzz_seed.h"

#define MAX_M 4096
#define ABSENT 0xffffu

static void die(const char *what)
{
    fprintf(stderr, "fuzz_compress: %s\n", what);
    abort();
}

static size_t take(const uint8_t **p, size_t *left, void *dst, size_t n)
{
    size_t k = n < *left ? n : *left;
    memcpy(dst, *p, k);
    memset((uint8_t *)dst + k, 0, n - k);
    *p += k, *left -= k;
    return k;
}

static void decode_mode(const compress_spec_t *spec, const uint8_t *p, size_t left)
{
    uint16_t m16 = 0, cnt[4] = {0};
    take(&p, &left, &m16, 2);
    take(&p, &left, cnt, sizeof cnt);
    size_t m = m16 % (MAX_M + 1);
    size_t len[4];
    for (int i = 0; i < 4; i++)
        len[i] = cnt[i] == ABSENT ? 0 : cnt[i];
    /* Exactly sized heap copies, so ASan sees any read past what the header declares. */
    uint32_t *indices = cnt[0] == ABSENT ? NULL : malloc(len[0] * 4 + 1);
    float *values = cnt[1] == ABSENT ? NULL : malloc(len[1] * 4 + 1);
    uint8_t *codes = cnt[2] == ABSENT ? NULL : malloc(len[2] + 1);
    float *scales = cnt[3] == ABSENT ? NULL : malloc(len[3] * 4 + 1);
    if (indices)
        take(&p, &left, indices, len[0] * 4);
    if (values)
        take(&p, &left, values, len[1] * 4);
    if (codes)
        take(&p, &left, codes, len[2]);
    if (scales)
        take(&p, &left, scales, len[3] * 4);
    size_t k = spec->topk > 0 ? compress_topk_count(m, spec->topk) : m;
    float *scratch = spec->topk > 0 && spec->quantize ? malloc(k * sizeof *scratch + 1) : NULL;
    float *out = malloc(m * sizeof *out + 1);
    err_t e = {0};
    int rc = compress_decode(spec, m, indices, len[0], values, len[1], codes, len[2], scales, len[3], scratch, out, &e);
    if (rc == 0) {
        size_t nonzero = 0;
        for (size_t i = 0; i < m; i++) {
            if (!isfinite(out[i]))
                die("decoded a non-finite value");
            nonzero += out[i] != 0;
        }
        if (nonzero > k)
            die("top-k decoded more nonzero coordinates than k");
        if (spec->quantize && !(spec->topk > 0))
            for (size_t i = 0; i < m; i++) {
                size_t c = i / COMPRESS_CHUNK;
                if (out[i] < scales[2 * c] || out[i] > scales[2 * c + 1])
                    die("quantized value outside its chunk's range");
            }
    } else if (rc != FN_EPROTO) {
        die("malformed input gave an error other than FN_EPROTO");
    } else if (!e.msg[0]) {
        die("an error without a message");
    }
    free(indices);
    free(values);
    free(codes);
    free(scales);
    free(scratch);
    free(out);
}

static void roundtrip_mode(const compress_spec_t *spec, const uint8_t *p, size_t left)
{
    size_t m = left / 4;
    if (m == 0)
        return;
    if (m > MAX_M)
        m = MAX_M;
    float *x = malloc(m * sizeof *x);
    memcpy(x, p, m * sizeof *x);
    for (size_t i = 0; i < m; i++)
        if (!isfinite(x[i])) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            x[i] = (float)(u & 0xffffff);
        }
    compress_enc_t enc;
    err_t e = {0};
    if (compress_encode(spec, x, m, 42, &enc, &e) != 0)
        die("cannot encode finite values");
    size_t k = spec->topk > 0 ? compress_topk_count(m, spec->topk) : m;
    if (enc.n != k)
        die("encoded count differs from compress_topk_count");
    float *scratch = malloc(k * sizeof *scratch);
    float *out = malloc(m * sizeof *out);
    if (compress_decode(spec, m, enc.indices, enc.indices ? enc.n : 0, enc.values, enc.values ? enc.n : 0,
                        enc.codes, enc.codes ? enc.n : 0, enc.scales, enc.nscales, scratch, out, &e) != 0)
        die("cannot decode what the encoder wrote");
    /* The kept set: every coordinate without top-k, else the indices. */
    uint8_t *kept = calloc(m, 1);
    for (size_t j = 0; j < k; j++)
        kept[enc.indices ? enc.indices[j] : j] = 1;
    float min_kept = INFINITY, max_dropped = 0;
    for (size_t i = 0; i < m; i++) {
        if (kept[i])
            min_kept = fminf(min_kept, fabsf(x[i]));
        else
            max_dropped = fmaxf(max_dropped, fabsf(x[i]));
    }
    if (max_dropped > min_kept)
        die("top-k dropped a coordinate larger than one it kept");
    for (size_t j = 0; j < k; j++) {
        size_t i = enc.indices ? enc.indices[j] : j;
        if (!spec->quantize) {
            if (out[i] != x[i])
                die("a kept value changed without quantization");
            continue;
        }
        size_t c = j / COMPRESS_CHUNK;
        double step = ((double)enc.scales[2 * c + 1] - (double)enc.scales[2 * c]) / 255.0;
        if (fabs((double)out[i] - (double)x[i]) > step * 1.0001 + 1e-30 + fabs((double)x[i]) * 1e-6)
            die("a quantized value moved by more than one step");
    }
    for (size_t i = 0; i < m; i++)
        if (!kept[i] && out[i] != 0)
            die("a dropped coordinate decoded nonzero");
    free(kept);
    free(scratch);
    free(out);
    free(x);
    compress_enc_free(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    compress_spec_t spec = {.quantize = (data[0] & 1) ? 8 : 0,
                            .topk = (data[0] & 2) ? (data[1] ? data[1] : 1) / 256.0 : 0};
    if (data[0] & 0x80)
        roundtrip_mode(&spec, data + 2, size - 2);
    else
        decode_mode(&spec, data + 2, size - 2);
    return 0;
}

/* Seeds: encoder outputs laid out for the decode mode, and plain vectors for the round trip. */
static void put(uint8_t **buf, size_t *len, const void *p, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    if (n)
        memcpy(*buf + *len, p, n);
    *len += n;
}

static void write_seed(const char *dir, int flags, uint8_t frac, size_t m)
{
    compress_spec_t spec = {.quantize = (flags & 1) ? 8 : 0, .topk = (flags & 2) ? frac / 256.0 : 0};
    float *x = malloc(m * sizeof *x);
    for (size_t i = 0; i < m; i++)
        x[i] = (float)((double)((i * 7919) % 101) - 50.0) / 16.0f;
    compress_enc_t enc;
    err_t e = {0};
    if (compress_encode(&spec, x, m, 1, &enc, &e) != 0)
        die("cannot encode a seed");
    uint8_t *buf = NULL;
    size_t len = 0;
    uint8_t head[2] = {(uint8_t)flags, frac};
    uint16_t m16 = (uint16_t)m;
    uint16_t cnt[4] = {enc.indices ? (uint16_t)enc.n : ABSENT, enc.values ? (uint16_t)enc.n : ABSENT,
                       enc.codes ? (uint16_t)enc.n : ABSENT, enc.scales ? (uint16_t)enc.nscales : ABSENT};
    put(&buf, &len, head, 2);
    put(&buf, &len, &m16, 2);
    put(&buf, &len, cnt, sizeof cnt);
    if (enc.indices)
        put(&buf, &len, enc.indices, enc.n * 4);
    if (enc.values)
        put(&buf, &len, enc.values, enc.n * 4);
    if (enc.codes)
        put(&buf, &len, enc.codes, enc.n);
    if (enc.scales)
        put(&buf, &len, enc.scales, enc.nscales * 4);
    char name[64];
    snprintf(name, sizeof name, "decode-q%d-topk%d-m%zu", flags & 1, flags & 2 ? frac : 0, m);
    fuzz_write_seed(dir, name, buf, len, NULL, 0);
    head[0] |= 0x80;
    snprintf(name, sizeof name, "roundtrip-q%d-topk%d-m%zu", flags & 1, flags & 2 ? frac : 0, m);
    fuzz_write_seed(dir, name, head, 2, x, m * sizeof *x);
    free(buf);
    free(x);
    compress_enc_free(&enc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir) {
        write_seed(dir, 0, 0, 16);
        write_seed(dir, 1, 0, 40);
        write_seed(dir, 2, 64, 40);
        write_seed(dir, 3, 32, 1100); /* two quantization chunks */
    }
    return 0;
}
