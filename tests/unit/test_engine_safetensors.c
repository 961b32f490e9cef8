/* engine/safetensors: round trips, byte-exact agreement with the reference writer (a fixture built
 * by hand from the spec, tests/data/safetensors/README.md, and byte strings from the reference's
 * own tests), and a clear FN_EINVAL for every kind of corrupt file. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rng.h"
#include "engine/safetensors.h"

#define FIXTURE FEDNAS_SOURCE_DIR "/tests/data/safetensors/simple.safetensors"

/* A fresh directory per test, so a failing test leaves nothing behind for the next. */
static char g_dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/fednas_st_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void test_dtypes(void **state)
{
    (void)state;
    assert_int_equal(engine_safetensors_dtype_parse("F32"), ENGINE_ST_F32);
    assert_int_equal(engine_safetensors_dtype_parse("BF16"), ENGINE_ST_BF16);
    assert_int_equal(engine_safetensors_dtype_parse("f32"), -1);
    assert_int_equal(engine_safetensors_dtype_parse("F33"), -1);
    assert_int_equal(engine_safetensors_dtype_size(ENGINE_ST_I64), 8);
    assert_int_equal(engine_safetensors_dtype_size(ENGINE_ST_BOOL), 1);
    assert_int_equal(engine_safetensors_dtype_size(ENGINE_ST_BF16), 2);
    assert_null(engine_safetensors_dtype_name(ENGINE_ST_NUM_DTYPES));
    for (int i = 0; i < ENGINE_ST_NUM_DTYPES; i++)
        assert_int_equal(engine_safetensors_dtype_parse(engine_safetensors_dtype_name((engine_st_dtype_t)i)), i);
}

static void test_round_trip(void **state)
{
    (void)state;
    float f32[2 * 3] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, -7.0f};
    uint16_t f16[5] = {0x3c00, 0x4000, 0xbc00, 0x0000, 0x7c00};
    uint16_t bf16[8] = {0x3f80, 0x4000, 0x4040, 0x4080, 1, 2, 3, 4};
    double f64 = 3.141592653589793;
    int64_t i64[4] = {-1, INT64_MAX, INT64_MIN, 42};
    int32_t i32[3] = {-5, 7, 1 << 30};
    int16_t i16[2] = {-300, 300};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[2 * 2 * 2 * 1] = {0, 1, 2, 3, 252, 253, 254, 255};
    uint8_t bools[3] = {1, 0, 1};
    engine_st_tensor_t in[] = {
        {.name = "w.f32", .dtype = ENGINE_ST_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "h.f16", .dtype = ENGINE_ST_F16, .ndim = 1, .shape = {5}, .data = f16},
        {.name = "b.bf16", .dtype = ENGINE_ST_BF16, .ndim = 3, .shape = {2, 2, 2}, .data = bf16},
        {.name = "scalar", .dtype = ENGINE_ST_F64, .ndim = 0, .data = &f64},
        {.name = "ints", .dtype = ENGINE_ST_I64, .ndim = 2, .shape = {2, 2}, .data = i64},
        {.name = "empty", .dtype = ENGINE_ST_I64, .ndim = 2, .shape = {0, 7}, .data = NULL},
        {.name = "i32", .dtype = ENGINE_ST_I32, .ndim = 1, .shape = {3}, .data = i32},
        {.name = "i16", .dtype = ENGINE_ST_I16, .ndim = 1, .shape = {2}, .data = i16},
        {.name = "i8", .dtype = ENGINE_ST_I8, .ndim = 1, .shape = {3}, .data = i8},
        {.name = "u8.4d", .dtype = ENGINE_ST_U8, .ndim = 4, .shape = {2, 2, 2, 1}, .data = u8},
        {.name = "mask", .dtype = ENGINE_ST_BOOL, .ndim = 1, .shape = {3}, .data = bools},
        {.name = "odd \"name\"\n\x1f/é", .dtype = ENGINE_ST_U8, .ndim = 1, .shape = {1}, .data = u8},
    };
    int nt = (int)(sizeof in / sizeof in[0]);
    engine_st_kv_t meta[] = {{ENGINE_ST_META_ARCH, "{\"type\":\"mlp\",\"hidden\":[64]}"},
                             {ENGINE_ST_META_STEP, "12"}};
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_dir);
    err_t e = {0};
    assert_int_equal(engine_safetensors_save(path, in, nt, meta, 2, &e), 0);
    assert_int_equal(count_dir_entries(), 1); /* no temporary file left behind */
    /* Created like any new file (mode 0666 less the umask), not 0600 as a mkstemp file would be. */
    mode_t mask = umask(0);
    umask(mask);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0666 & ~mask);

    engine_safetensors_t *st;
    int rc = engine_safetensors_open(path, &st, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(engine_safetensors_count(st), nt);
    for (int i = 0; i < nt; i++) {
        const engine_st_tensor_t *t = engine_safetensors_find(st, in[i].name);
        assert_non_null(t);
        assert_string_equal(t->name, in[i].name);
        assert_int_equal(t->dtype, in[i].dtype);
        assert_int_equal(t->ndim, in[i].ndim);
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], in[i].shape[d]);
            elems *= in[i].shape[d];
        }
        assert_int_equal(t->nbytes, elems * engine_safetensors_dtype_size(t->dtype));
        if (t->nbytes)
            assert_memory_equal(t->data, in[i].data, (size_t)t->nbytes);
        /* The writer's dtype-descending order and padding keep every tensor aligned. */
        assert_int_equal((uintptr_t)t->data % engine_safetensors_dtype_size(t->dtype), 0);
    }
    /* Buffer order: largest dtype first (I64 after F64 in the enum, so I64 first), by name. */
    assert_string_equal(engine_safetensors_at(st, 0)->name, "empty");
    assert_string_equal(engine_safetensors_at(st, 1)->name, "ints");
    assert_string_equal(engine_safetensors_at(st, 2)->name, "scalar");
    assert_string_equal(engine_safetensors_at(st, nt - 1)->name, "mask");
    assert_null(engine_safetensors_at(st, nt));
    assert_null(engine_safetensors_find(st, "nope"));
    assert_string_equal(engine_safetensors_meta(st, ENGINE_ST_META_ARCH), meta[0].value);
    assert_string_equal(engine_safetensors_meta(st, ENGINE_ST_META_STEP), "12");
    assert_null(engine_safetensors_meta(st, "missing"));
    assert_int_equal(engine_safetensors_meta_count(st), 2);
    assert_string_equal(engine_safetensors_meta_at(st, 0).key, ENGINE_ST_META_ARCH);
    assert_string_equal(engine_safetensors_meta_at(st, 1).key, ENGINE_ST_META_STEP);
    engine_safetensors_close(st);

    /* The in-memory writer produces the same bytes as the file writer. */
    uint8_t *mem;
    size_t mem_len, file_len;
    assert_int_equal(engine_safetensors_serialize(in, nt, meta, 2, &mem, &mem_len, &e), 0);
    uint8_t *file = read_whole(path, &file_len);
    assert_int_equal(mem_len, file_len);
    assert_memory_equal(mem, file, mem_len);
    /* The escaped name is written as serde_json writes it. */
    const char *esc = "\"odd \\\"name\\\"\\n\\u001f/\xc3\xa9\"";
    assert_non_null(memmem(file, file_len, esc, strlen(esc)));
    free(mem);
    free(file);
    unlink(path);
}

static const float A_DATA[4] = {1, 2, 3, 4};
static const int64_t B_DATA[3] = {0, 0, 0};

static void test_fixture_read(void **state)
{
    (void)state;
    engine_safetensors_t *st;
    err_t e = {0};
    int rc = engine_safetensors_open(FIXTURE, &st, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(engine_safetensors_count(st), 2);
    const engine_st_tensor_t *b = engine_safetensors_at(st, 0), *a = engine_safetensors_at(st, 1);
    assert_string_equal(b->name, "b");
    assert_int_equal(b->dtype, ENGINE_ST_I64);
    assert_int_equal(b->ndim, 1);
    assert_int_equal(b->shape[0], 3);
    assert_memory_equal(b->data, B_DATA, sizeof B_DATA);
    assert_string_equal(a->name, "a");
    assert_int_equal(a->dtype, ENGINE_ST_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 2);
    float got[4];
    assert_int_equal(engine_safetensors_read_f32(st, "a", got, 4, &e), 0);
    assert_memory_equal(got, A_DATA, sizeof got);
    assert_string_equal(engine_safetensors_meta(st, "k"), "v");
    assert_int_equal(engine_safetensors_read_f32(st, "a", got, 3, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "holds 4 floats, expected 3"));
    assert_int_equal(engine_safetensors_read_f32(st, "b", got, 3, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "is I64, expected F32"));
    assert_int_equal(engine_safetensors_read_f32(st, "c", got, 3, &e), FN_ENOTFOUND);
    engine_safetensors_close(st);
}

static void test_fixture_write(void **state)
{
    (void)state;
    /* Given in the caller's order a, b: the writer must reorder as the reference does. */
    engine_st_tensor_t t[2] = {
        {.name = "a", .dtype = ENGINE_ST_F32, .ndim = 2, .shape = {2, 2}, .data = A_DATA},
        {.name = "b", .dtype = ENGINE_ST_I64, .ndim = 1, .shape = {3}, .data = B_DATA},
    };
    engine_st_kv_t meta = {"k", "v"};
    size_t want_len, got_len;
    uint8_t *want = read_whole(FIXTURE, &want_len);
    assert_int_equal(want_len, 192);
    char path[512];
    snprintf(path, sizeof path, "%s/simple.safetensors", g_dir);
    err_t e = {0};
    assert_int_equal(engine_safetensors_save(path, t, 2, &meta, 1, &e), 0);
    uint8_t *got = read_whole(path, &got_len);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
    assert_int_equal(engine_safetensors_serialize(t, 2, &meta, 1, &got, &got_len, &e), 0);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
    free(want);
    unlink(path);
}

/* Byte strings from the reference implementation's own unit tests (tensor.rs). */
static void test_reference_bytes(void **state)
{
    (void)state;
    const float v[6] = {0, 1, 2, 3, 4, 5};
    engine_st_tensor_t t = {.name = "attn.0", .dtype = ENGINE_ST_F32, .ndim = 3, .shape = {1, 2, 3}, .data = v};
    uint8_t *out;
    size_t len;
    err_t e = {0};
    assert_int_equal(engine_safetensors_serialize(&t, 1, NULL, 0, &out, &len, &e), 0);
    const char *hdr = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    assert_int_equal(len, 8 + 64 + 24);
    const uint8_t len8[8] = {64, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(out, len8, 8);
    assert_memory_equal(out + 8, hdr, 64);
    const uint8_t data[24] = {0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
    assert_memory_equal(out + 72, data, 24);
    free(out);

    assert_int_equal(engine_safetensors_serialize(NULL, 0, NULL, 0, &out, &len, &e), 0);
    const uint8_t empty[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    assert_int_equal(len, 16);
    assert_memory_equal(out, empty, 16);
    free(out);

    engine_st_kv_t fw = {"framework", "pt"};
    assert_int_equal(engine_safetensors_serialize(NULL, 0, &fw, 1, &out, &len, &e), 0);
    assert_int_equal(len, 48);
    assert_int_equal(out[0], 40);
    assert_memory_equal(out + 8, "{\"__metadata__\":{\"framework\":\"pt\"}}     ", 40);
    engine_safetensors_t *st;
    assert_int_equal(engine_safetensors_parse(out, len, "mem", &st, &e), 0);
    assert_int_equal(engine_safetensors_count(st), 0);
    assert_string_equal(engine_safetensors_meta(st, "framework"), "pt");
    engine_safetensors_close(st);
    free(out);
}

/* A file image with the given header text (unpadded) and `buf_len` bytes of buffer. */
static uint8_t *make_image(const char *header, size_t buf_len, size_t *len)
{
    size_t n = strlen(header);
    *len = 8 + n + buf_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    return b;
}

/* Parses the image and expects FN_EINVAL with a message holding each of the fragments. */
static void expect_invalid(const uint8_t *img, size_t len, const char *frag1, const char *frag2)
{
    engine_safetensors_t *st = (engine_safetensors_t *)1;
    err_t e = {0};
    int rc = engine_safetensors_parse(img, len, "bad.safetensors", &st, &e);
    if (rc != FN_EINVAL)
        fail_msg("expected FN_EINVAL containing \"%s\", got %d (%s)", frag1, rc, e.msg);
    assert_null(st);
    if (!strstr(e.msg, "bad.safetensors") || !strstr(e.msg, frag1) || (frag2 && !strstr(e.msg, frag2)))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", e.msg, frag1, frag2 ? frag2 : "");
}

static void expect_header_invalid(const char *header, size_t buf_len, const char *frag1, const char *frag2)
{
    size_t len;
    uint8_t *img = make_image(header, buf_len, &len);
    expect_invalid(img, len, frag1, frag2);
    free(img);
}

static void test_corrupt(void **state)
{
    (void)state;
    size_t flen;
    uint8_t *fix = read_whole(FIXTURE, &flen);
    uint8_t *img = malloc(flen + 16);

    /* The untouched image parses: the cases below each break exactly one thing. */
    engine_safetensors_t *st;
    err_t e = {0};
    assert_int_equal(engine_safetensors_parse(fix, flen, "ok", &st, &e), 0);
    engine_safetensors_close(st);

    expect_invalid(fix, 0, "truncated", NULL);
    expect_invalid(fix, 5, "truncated", NULL);
    /* Cut inside the header, and inside the buffer. */
    expect_invalid(fix, 100, "larger than", NULL);
    expect_invalid(fix, flen - 4, "\"a\"", "run past the end");
    /* Trailing garbage. */
    memcpy(img, fix, flen);
    memcpy(img + flen, "garbage!", 8);
    expect_invalid(img, flen + 8, "8 bytes after the last tensor", NULL);
    /* Header length beyond the file, and beyond the format's limit. */
    memcpy(img, fix, flen);
    img[0] = 0x00, img[1] = 0x01; /* 256 */
    expect_invalid(img, flen, "larger than", NULL);
    img[0] = 0x90, img[1] = 0, img[7] = 0x40;
    expect_invalid(img, flen, "exceeds the limit", NULL);
    /* Bad JSON: break a quote. */
    memcpy(img, fix, flen);
    img[8 + 20] = '#';
    expect_invalid(img, flen, "not valid JSON", NULL);
    /* Header not starting with '{'. */
    memcpy(img, fix, flen);
    img[8] = ' ';
    expect_invalid(img, flen, "starting with '{'", NULL);
    /* Invalid UTF-8 inside a string. */
    memcpy(img, fix, flen);
    img[8 + 18] = 0xff; /* the "k" of the metadata key */
    expect_invalid(img, flen, "not valid JSON", NULL);

    /* Valid though unusual: entries in any order, empty tensors sharing an offset with the next
     * one or sitting at the very end, no padding. */
    {
        size_t len;
        uint8_t *ok = make_image("{\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                 "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                                 "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}",
                                 2, &len);
        int rc = engine_safetensors_parse(ok, len, "unusual", &st, &e);
        if (rc)
            fail_msg("%s", e.msg);
        assert_int_equal(engine_safetensors_count(st), 3);
        assert_string_equal(engine_safetensors_at(st, 0)->name, "e");
        assert_int_equal(engine_safetensors_find(st, "x")->nbytes, 2);
        engine_safetensors_close(st);
        free(ok);
    }

    const char *X8 = "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];
    /* Overlapping offsets. */
    snprintf(h, sizeof h, "{%s,\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", X8);
    expect_header_invalid(h, 12, "\"y\"", "overlap");
    /* Out of range. */
    snprintf(h, sizeof h, "{%s}", X8);
    expect_header_invalid(h, 4, "\"x\"", "run past the end");
    /* A gap. */
    snprintf(h, sizeof h, "{%s,\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", X8);
    expect_header_invalid(h, 20, "\"y\"", "gap of 4 bytes");
    /* Not starting at 0. */
    expect_header_invalid("{\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4, "\"x\"", "gap");
    /* Trailing bytes after the last tensor. */
    snprintf(h, sizeof h, "{%s}", X8);
    expect_header_invalid(h, 12, "4 bytes after the last tensor", NULL);
    /* Shape vs offsets. */
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "\"x\"",
                          "needs 12 bytes");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "\"x\"",
                          "needs 4 bytes");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8,
                          "\"x\"", "overflows");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "\"x\"",
                          "end before begin");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "\"x\"",
                          "shape[0]");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "\"x\"",
                          "shape[0]");
    expect_header_invalid("{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
                          "\"x\"", "9 dimensions");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "\"x\"",
                          "data_offsets");
    /* Unknown dtype, missing and unknown keys. */
    expect_header_invalid("{\"x\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "\"x\"",
                          "unknown dtype \"F33\"");
    expect_header_invalid("{\"x\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "\"x\"", "dtype");
    expect_header_invalid("{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "\"x\"", "missing \"dtype\"");
    expect_header_invalid("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8,
                          "\"x\"", "unknown key \"extra\"");
    expect_header_invalid("{\"x\":[1,2]}", 0, "\"x\"", "expected an object");
    /* Duplicate names, metadata that is not string to string. */
    snprintf(h, sizeof h, "{%s,%s}", X8, X8);
    expect_header_invalid(h, 8, "not valid JSON", "duplicate");
    expect_header_invalid("{\"__metadata__\":{\"k\":1}}", 0, "\"k\"", "must be a string");
    expect_header_invalid("{\"__metadata__\":[\"k\"]}", 0, "__metadata__", "object");
    expect_header_invalid("[]", 0, "'{'", NULL);
    expect_header_invalid("{} {}", 0, "not valid JSON", NULL);

    /* On disk: a missing file, and a truncated one. */
    assert_int_equal(engine_safetensors_open("/nonexistent/x.safetensors", &st, &e), FN_ENOTFOUND);
    assert_null(st);
    char path[512];
    snprintf(path, sizeof path, "%s/cut.safetensors", g_dir);
    FILE *f = fopen(path, "wb");
    fwrite(fix, 1, flen - 1, f);
    fclose(f);
    assert_int_equal(engine_safetensors_open(path, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "run past the end"));
    unlink(path);
    free(img);
    free(fix);
}

/* Random damage to the fixture (bytes overwritten, the file cut short) must give either a valid
 * file whose tensors lie inside it or FN_EINVAL: never a crash (the sanitizer build runs this). */
static void test_random_damage(void **state)
{
    (void)state;
    size_t flen;
    uint8_t *fix = read_whole(FIXTURE, &flen);
    uint8_t *img = malloc(flen);
    rng_t r;
    rng_seed(&r, 2024);
    int ok = 0, bad = 0;
    for (int it = 0; it < 5000; it++) {
        memcpy(img, fix, flen);
        int flips = 1 + (int)rng_below(&r, 3);
        for (int k = 0; k < flips; k++) {
            /* Mostly the length and the header, where the parsing happens. */
            size_t at = rng_below(&r, 4) ? rng_below(&r, 8 + 144) : rng_below(&r, flen);
            img[at] = (uint8_t)rng_below(&r, 256);
        }
        size_t len = rng_below(&r, 8) ? flen : rng_below(&r, flen + 1);
        engine_safetensors_t *st;
        err_t e = {0};
        int rc = engine_safetensors_parse(img, len, "damaged", &st, &e);
        if (rc == 0) {
            ok++;
            for (int i = 0; i < engine_safetensors_count(st); i++) {
                const engine_st_tensor_t *t = engine_safetensors_at(st, i);
                /* Everything the reader hands out is inside the (copied) image: reading every
                 * byte is what ASan checks. */
                assert_true(t->nbytes <= len);
                volatile uint8_t sink = 0;
                for (uint64_t j = 0; j < t->nbytes; j++)
                    sink ^= ((const uint8_t *)t->data)[j];
                (void)sink;
            }
            engine_safetensors_close(st);
        } else {
            assert_int_equal(rc, FN_EINVAL);
            assert_non_null(strstr(e.msg, "damaged"));
            bad++;
        }
    }
    assert_true(bad > 1000); /* the damage does reach the parser */
    assert_true(ok > 0);     /* and damage to tensor bytes alone is not an error */
    free(img);
    free(fix);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    float v[2] = {1, 2};
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
    err_t e = {0};
    engine_st_tensor_t dup[2] = {
        {.name = "w", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {2}, .data = v},
        {.name = "w", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {1}, .data = v},
    };
    assert_int_equal(engine_safetensors_save(path, dup, 2, NULL, 0, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "appears twice"));
    engine_st_tensor_t reserved = {.name = "__metadata__", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {2}, .data = v};
    assert_int_equal(engine_safetensors_save(path, &reserved, 1, NULL, 0, &e), FN_EINVAL);
    engine_st_tensor_t bad_utf8 = {.name = "w\xff", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {2}, .data = v};
    assert_int_equal(engine_safetensors_save(path, &bad_utf8, 1, NULL, 0, &e), FN_EINVAL);
    engine_st_tensor_t dims = {.name = "w", .dtype = ENGINE_ST_F32, .ndim = 9, .data = v};
    assert_int_equal(engine_safetensors_save(path, &dims, 1, NULL, 0, &e), FN_EINVAL);
    engine_st_tensor_t dt = {.name = "w", .dtype = ENGINE_ST_NUM_DTYPES, .ndim = 1, .shape = {2}, .data = v};
    assert_int_equal(engine_safetensors_save(path, &dt, 1, NULL, 0, &e), FN_EINVAL);
    engine_st_tensor_t nodata = {.name = "w", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {2}, .data = NULL};
    assert_int_equal(engine_safetensors_save(path, &nodata, 1, NULL, 0, &e), FN_EINVAL);
    engine_st_kv_t mdup[2] = {{"k", "1"}, {"k", "2"}};
    assert_int_equal(engine_safetensors_save(path, dup, 1, mdup, 2, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "metadata key \"k\""));
    assert_int_equal(count_dir_entries(), 0); /* nothing written */
    /* An unwritable place is FN_EIO, naming the path. */
    assert_int_equal(engine_safetensors_save("/nonexistent/dir/x.safetensors", dup, 1, NULL, 0, &e), FN_EIO);
    assert_non_null(strstr(e.msg, "/nonexistent/dir/x.safetensors"));
}

static void test_vector_and_checkpoint(void **state)
{
    (void)state;
    enum { N = 1000 };
    float *p = malloc(N * sizeof *p), *m = malloc(N * sizeof *m), *v = malloc(N * sizeof *v),
          *got = malloc(N * sizeof *got);
    for (int i = 0; i < N; i++)
        p[i] = (float)i * 0.5f, m[i] = -(float)i, v[i] = (float)(i * i);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    err_t e = {0};
    const char *arch = "{\"type\":\"mlp\",\"hidden\":[128,64]}";
    engine_st_kv_t meta = {ENGINE_ST_META_ARCH, arch};
    assert_int_equal(engine_safetensors_save_vector(path, "params", p, N, &meta, 1, &e), 0);
    engine_safetensors_t *st;
    assert_int_equal(engine_safetensors_open(path, &st, &e), 0);
    assert_int_equal(engine_safetensors_read_f32(st, "params", got, N, &e), 0);
    assert_memory_equal(got, p, N * sizeof *p);
    assert_string_equal(engine_safetensors_meta(st, ENGINE_ST_META_ARCH), arch);
    engine_safetensors_close(st);

    /* Overwrites the model atomically with a checkpoint. */
    assert_int_equal(engine_safetensors_save_checkpoint(path, arch, p, m, v, N, 1234567890123ULL, &e), 0);
    assert_int_equal(count_dir_entries(), 1);
    assert_int_equal(engine_safetensors_open(path, &st, &e), 0);
    assert_int_equal(engine_safetensors_count(st), 3);
    assert_int_equal(engine_safetensors_read_f32(st, "optim.m", got, N, &e), 0);
    assert_memory_equal(got, m, N * sizeof *m);
    assert_int_equal(engine_safetensors_read_f32(st, "optim.v", got, N, &e), 0);
    assert_memory_equal(got, v, N * sizeof *v);
    assert_string_equal(engine_safetensors_meta(st, ENGINE_ST_META_STEP), "1234567890123");
    engine_safetensors_close(st);
    assert_int_equal(engine_safetensors_save_checkpoint(path, NULL, p, m, NULL, N, 0, &e), FN_EINVAL);
    unlink(path);
    free(p), free(m), free(v), free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dtypes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixture_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixture_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reference_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vector_and_checkpoint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
