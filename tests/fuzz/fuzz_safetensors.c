/* fuzz_safetensors: engine_safetensors_parse (the buffer entry of the model file reader) on
 * arbitrary bytes. On success every tensor's bytes are read in full (ASan checks they lie
 * inside the file) and the file is written back with engine_safetensors_serialize and parsed
 * again: the same tensors (name, dtype, shape, bytes) and the same metadata must come out, and
 * serializing that second parse must give the same bytes (the writer is canonical). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "fuzz_seed.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_safetensors: %s\n", what);
    abort();
}

static void same_content(const engine_safetensors_t *a, const engine_safetensors_t *b)
{
    if (engine_safetensors_count(a) != engine_safetensors_count(b) ||
        engine_safetensors_meta_count(a) != engine_safetensors_meta_count(b))
        die("round trip changed the number of tensors or metadata entries");
    for (int i = 0; i < engine_safetensors_count(a); i++) {
        const engine_st_tensor_t *x = engine_safetensors_at(a, i);
        const engine_st_tensor_t *y = engine_safetensors_find(b, x->name);
        if (!y || y->dtype != x->dtype || y->ndim != x->ndim || y->nbytes != x->nbytes ||
            memcmp(y->shape, x->shape, (size_t)x->ndim * sizeof x->shape[0]) != 0 ||
            (x->nbytes && memcmp(x->data, y->data, x->nbytes) != 0))
            die("round trip changed a tensor");
    }
    for (int i = 0; i < engine_safetensors_meta_count(a); i++) {
        engine_st_kv_t kv = engine_safetensors_meta_at(a, i);
        const char *v = engine_safetensors_meta(b, kv.key);
        if (!v || strcmp(v, kv.value) != 0)
            die("round trip changed a metadata entry");
    }
}

static int serialize(const engine_safetensors_t *st, uint8_t **out, size_t *len)
{
    int nt = engine_safetensors_count(st), nm = engine_safetensors_meta_count(st);
    engine_st_tensor_t *t = calloc((size_t)nt + 1, sizeof *t);
    engine_st_kv_t *kv = calloc((size_t)nm + 1, sizeof *kv);
    for (int i = 0; i < nt; i++)
        t[i] = *engine_safetensors_at(st, i);
    for (int i = 0; i < nm; i++)
        kv[i] = engine_safetensors_meta_at(st, i);
    err_t e = {0};
    int rc = engine_safetensors_serialize(t, nt, kv, nm, out, len, &e);
    free(t);
    free(kv);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    engine_safetensors_t *st = NULL;
    err_t e = {0};
    int rc = engine_safetensors_parse(data, size, "fuzz", &st, &e);
    if (rc != 0) {
        if (st)
            die("a refused file left an open handle");
        if (rc != FN_EINVAL && rc != FN_ENOMEM)
            die("a malformed file gave an error other than FN_EINVAL");
        return 0;
    }
    uint64_t total = 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < engine_safetensors_count(st); i++) {
        const engine_st_tensor_t *t = engine_safetensors_at(st, i);
        if (!t || !t->name || engine_safetensors_find(st, t->name) != t)
            die("a tensor cannot be found by its name");
        uint64_t n = engine_safetensors_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        if (n != t->nbytes || t->ndim < 0 || t->ndim > ENGINE_ST_MAX_DIMS)
            die("a tensor's byte count differs from its shape");
        for (uint64_t b = 0; b < t->nbytes; b++)
            sink ^= ((const uint8_t *)t->data)[b];
        total += t->nbytes;
    }
    (void)sink;
    if (total > size)
        die("tensors hold more bytes than the file");

    uint8_t *bytes = NULL, *bytes2 = NULL;
    size_t len = 0, len2 = 0;
    if (serialize(st, &bytes, &len) != 0)
        die("cannot serialize a file that parsed");
    engine_safetensors_t *st2 = NULL;
    if (engine_safetensors_parse(bytes, len, "fuzz-roundtrip", &st2, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        die("cannot parse what the writer wrote");
    }
    same_content(st, st2);
    same_content(st2, st);
    if (serialize(st2, &bytes2, &len2) != 0 || len2 != len || memcmp(bytes, bytes2, len) != 0)
        die("the writer is not canonical: a second round trip changed the bytes");
    free(bytes);
    free(bytes2);
    engine_safetensors_close(st2);
    engine_safetensors_close(st);
    return 0;
}

/* Seeds: files as the writer makes them (plus tests/data/safetensors, copied by gen_seeds.sh). */
static void write_seed(const char *dir, const char *name, const engine_st_tensor_t *t, int nt,
                       const engine_st_kv_t *kv, int nkv)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    err_t e = {0};
    if (engine_safetensors_serialize(t, nt, kv, nkv, &bytes, &len, &e) != 0)
        die("cannot serialize a seed");
    fuzz_write_seed(dir, name, bytes, len, NULL, 0);
    free(bytes);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (!dir)
        return 0;
    float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {0.5f, -0.5f};
    int64_t steps = 7;
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    uint8_t flag = 1;
    engine_st_tensor_t t[5] = {
        {.name = "dense.weight", .dtype = ENGINE_ST_F32, .ndim = 2, .shape = {2, 3}, .data = w},
        {.name = "dense.bias", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {2}, .data = b},
        {.name = "step", .dtype = ENGINE_ST_I64, .ndim = 0, .data = &steps},
        {.name = "half", .dtype = ENGINE_ST_F16, .ndim = 1, .shape = {3}, .data = h},
        {.name = "empty", .dtype = ENGINE_ST_BOOL, .ndim = 2, .shape = {0, 4}, .data = &flag},
    };
    engine_st_kv_t kv[2] = {{ENGINE_ST_META_ARCH, "{\"type\":\"layers\",\"layers\":[{\"dense\":2}]}"},
                            {ENGINE_ST_META_FORMAT, "pt"}};
    write_seed(dir, "model", t, 2, kv, 2);
    write_seed(dir, "dtypes", t, 5, NULL, 0);
    write_seed(dir, "vector", t + 1, 1, kv + 1, 1);
    write_seed(dir, "no-tensors", NULL, 0, kv, 1);
    return 0;
}
