/* engine/idx: IDX loading, plain and gzip, and every way a file can be wrong. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/idx.h"

static char g_dir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/fednas-test-idx-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ & 3];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint8_t pixel(int i) { return (uint8_t)(i * 7 + 3); }
static uint8_t label(int i) { return (uint8_t)((i * 3) % 5); } /* max 4: num_classes 5 */

static void write_bytes(const char *path, int gz, const uint8_t *b, size_t n)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b, 1, n, f), n);
        assert_int_equal(fclose(f), 0);
    }
}

/* An IDX3 image file with `count` images of rows x cols; `have` images of data actually written
 * and `extra` garbage bytes appended. */
static void write_images(const char *path, int gz, uint32_t magic, int count, int rows, int cols, int have, int extra)
{
    size_t n = 16 + (size_t)have * rows * cols + (size_t)extra;
    uint8_t *b = calloc(1, n);
    put32(b, magic), put32(b + 4, (uint32_t)count), put32(b + 8, (uint32_t)rows), put32(b + 12, (uint32_t)cols);
    for (size_t i = 0; i < (size_t)have * rows * cols; i++)
        b[16 + i] = pixel((int)i);
    write_bytes(path, gz, b, n);
    free(b);
}

static void write_labels(const char *path, int gz, uint32_t magic, int count)
{
    size_t n = 8 + (size_t)count;
    uint8_t *b = calloc(1, n);
    put32(b, magic), put32(b + 4, (uint32_t)count);
    for (int i = 0; i < count; i++)
        b[8 + i] = label(i);
    write_bytes(path, gz, b, n);
    free(b);
}

static void check_loaded(const engine_dataset_t *d, int count, int rows, int cols)
{
    assert_int_equal(d->count, count);
    assert_int_equal(d->rows, rows);
    assert_int_equal(d->cols, cols);
    assert_int_equal(d->num_classes, 5);
    for (int i = 0; i < count * rows * cols; i++)
        assert_int_equal(d->images[i], pixel(i));
    for (int i = 0; i < count; i++)
        assert_int_equal(d->labels[i], label(i));
}

static void test_load_plain(void **state)
{
    (void)state;
    write_images(tpath("p-img"), 0, 0x803, 7, 3, 4, 7, 0);
    write_labels(tpath("p-lab"), 0, 0x801, 7);
    engine_dataset_t d;
    err_t e = {0};
    assert_int_equal(engine_idx_load(tpath("p-img"), tpath("p-lab"), &d, &e), 0);
    check_loaded(&d, 7, 3, 4);
    engine_dataset_free(&d);
    assert_null(d.images);
    engine_dataset_free(&d); /* twice is harmless */
}

static void test_load_gzip_and_mixed(void **state)
{
    (void)state;
    /* Larger than zlib's buffers so the read loop runs more than once. */
    write_images(tpath("g-img.gz"), 1, 0x803, 600, 28, 28, 600, 0);
    write_labels(tpath("g-lab.gz"), 1, 0x801, 600);
    write_labels(tpath("g-lab"), 0, 0x801, 600);
    engine_dataset_t d;
    err_t e = {0};
    assert_int_equal(engine_idx_load(tpath("g-img.gz"), tpath("g-lab.gz"), &d, &e), 0);
    check_loaded(&d, 600, 28, 28);
    engine_dataset_free(&d);
    assert_int_equal(engine_idx_load(tpath("g-img.gz"), tpath("g-lab"), &d, &e), 0);
    check_loaded(&d, 600, 28, 28);
    engine_dataset_free(&d);
}

static void test_bad_magic(void **state)
{
    (void)state;
    write_images(tpath("m-img"), 0, 0x0d03, 2, 2, 2, 2, 0); /* float images: not ours */
    write_labels(tpath("m-lab"), 0, 0x801, 2);
    engine_dataset_t d;
    err_t e = {0};
    assert_int_equal(engine_idx_load(tpath("m-img"), tpath("m-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, tpath("m-img")));
    assert_non_null(strstr(e.msg, "magic"));
    assert_null(d.images);

    /* Swapped paths: the label file is read as images; the message says so. */
    write_images(tpath("m-img2"), 0, 0x803, 2, 2, 2, 2, 0);
    assert_int_equal(engine_idx_load(tpath("m-lab"), tpath("m-img2"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, tpath("m-lab")));
    assert_non_null(strstr(e.msg, "swap"));
}

static void test_truncated(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    write_labels(tpath("t-lab"), 0, 0x801, 5);
    /* Header says 5 images, data for 4 (plain and gzip). */
    write_images(tpath("t-img"), 0, 0x803, 5, 3, 3, 4, 0);
    assert_int_equal(engine_idx_load(tpath("t-img"), tpath("t-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, tpath("t-img")));
    assert_non_null(strstr(e.msg, "truncated"));
    write_images(tpath("t-img.gz"), 1, 0x803, 5, 3, 3, 4, 0);
    assert_int_equal(engine_idx_load(tpath("t-img.gz"), tpath("t-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, tpath("t-img.gz")));
    /* A header cut short. */
    write_bytes(tpath("t-short"), 0, (const uint8_t[]){0, 0, 8, 3, 0, 0}, 6);
    assert_int_equal(engine_idx_load(tpath("t-short"), tpath("t-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "truncated"));
    /* A gzip stream cut in the middle. */
    write_images(tpath("t-cut.gz"), 1, 0x803, 5, 100, 100, 5, 0);
    struct stat st;
    assert_int_equal(stat(tpath("t-cut.gz"), &st), 0);
    assert_int_equal(truncate(tpath("t-cut.gz"), st.st_size / 2), 0);
    assert_true(engine_idx_load(tpath("t-cut.gz"), tpath("t-lab"), &d, &e) < 0);
    assert_non_null(strstr(e.msg, tpath("t-cut.gz")));
    assert_null(d.images);
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    write_images(tpath("x-img"), 0, 0x803, 3, 2, 2, 3, 1);
    write_labels(tpath("x-lab"), 0, 0x801, 3);
    assert_int_equal(engine_idx_load(tpath("x-img"), tpath("x-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "trailing"));
    assert_non_null(strstr(e.msg, tpath("x-img")));
}

/* Found by fuzz_idx: gzread skips bytes after the last gzip member, so they went unnoticed.
 * Garbage after the stream is refused; a further (empty) gzip member is still a valid file. */
static void test_trailing_after_gzip(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    write_labels(tpath("gt-lab"), 0, 0x801, 5); /* labels 0..4: num_classes 5 */
    static const uint8_t junk[] = {0x1f, 'x', 0, 0, 0};
    for (size_t n = 1; n <= sizeof junk; n += 3) {
        write_images(tpath("gt-img.gz"), 1, 0x803, 5, 2, 2, 5, 0);
        FILE *f = fopen(tpath("gt-img.gz"), "ab");
        assert_non_null(f);
        assert_int_equal(fwrite(junk, 1, n, f), n);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(engine_idx_load(tpath("gt-img.gz"), tpath("gt-lab"), &d, &e), FN_EINVAL);
        /* A lone 0x1f may start another member, cut short; 0x1f 'x' cannot. */
        assert_non_null(strstr(e.msg, n == 1 ? "damaged after the data" : "trailing bytes after the gzip stream"));
        assert_non_null(strstr(e.msg, tpath("gt-img.gz")));
        assert_null(d.images);
    }
    write_images(tpath("gt-img.gz"), 1, 0x803, 5, 2, 2, 5, 0);
    gzFile g = gzopen(tpath("gt-img.gz"), "ab"); /* appends a second, empty member */
    assert_non_null(g);
    assert_int_equal(gzclose(g), Z_OK);
    assert_int_equal(engine_idx_load(tpath("gt-img.gz"), tpath("gt-lab"), &d, &e), 0);
    check_loaded(&d, 5, 2, 2);
    engine_dataset_free(&d);
}

static void test_count_mismatch_and_zero_dims(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    write_images(tpath("c-img"), 0, 0x803, 4, 2, 2, 4, 0);
    write_labels(tpath("c-lab"), 0, 0x801, 3);
    assert_int_equal(engine_idx_load(tpath("c-img"), tpath("c-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "4 images"));
    assert_non_null(strstr(e.msg, "3 labels"));
    write_images(tpath("z-img"), 0, 0x803, 4, 0, 2, 4, 0);
    assert_int_equal(engine_idx_load(tpath("z-img"), tpath("c-lab"), &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "dimension 1"));
}

static void test_missing_file(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    write_labels(tpath("n-lab"), 0, 0x801, 3);
    assert_int_equal(engine_idx_load(tpath("nope"), tpath("n-lab"), &d, &e), FN_ENOTFOUND);
    assert_non_null(strstr(e.msg, tpath("nope")));
    assert_int_equal(engine_idx_load(g_dir, tpath("n-lab"), &d, &e), FN_EINVAL); /* a directory */
}

static void test_fmnist_missing(void **state)
{
    (void)state;
    engine_dataset_t d;
    err_t e = {0};
    assert_int_equal(engine_fmnist_load("/nonexistent/fednas/fmnist", "train", &d, &e), FN_ENOTFOUND);
    assert_non_null(strstr(e.msg, "apt-get install dataset-fashion-mnist"));
    assert_non_null(strstr(e.msg, "/nonexistent/fednas/fmnist"));
    /* The directory exists but holds no IDX files. */
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", g_dir);
    assert_int_equal(mkdir(empty, 0700), 0);
    assert_int_equal(engine_fmnist_load(empty, "test", &d, &e), FN_ENOTFOUND);
    assert_non_null(strstr(e.msg, "apt-get install dataset-fashion-mnist"));
    assert_non_null(strstr(e.msg, "t10k-images-idx3-ubyte"));
    assert_int_equal(engine_fmnist_load(empty, "validation", &d, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "validation"));
}

static void test_fmnist_layout(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fm", g_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    char p[400];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_images(p, 1, 0x803, 9, 4, 4, 9, 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_labels(p, 1, 0x801, 9);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir); /* unpacked mirrors */
    write_images(p, 0, 0x803, 6, 4, 4, 6, 0);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir);
    write_labels(p, 0, 0x801, 6);
    engine_dataset_t d;
    err_t e = {0};
    assert_int_equal(engine_fmnist_load(dir, "train", &d, &e), 0);
    check_loaded(&d, 9, 4, 4);
    engine_dataset_free(&d);
    assert_int_equal(engine_fmnist_load(dir, "test", &d, &e), 0);
    check_loaded(&d, 6, 4, 4);
    engine_dataset_free(&d);
}

static void test_fmnist_real(void **state)
{
    (void)state;
    struct stat st;
    if (stat(ENGINE_FMNIST_DEFAULT_DIR, &st) != 0) {
        print_message("skipping: %s not installed (apt-get install dataset-fashion-mnist)\n",
                      ENGINE_FMNIST_DEFAULT_DIR);
        skip();
    }
    engine_dataset_t d;
    err_t e = {0};
    int rc = engine_fmnist_load(ENGINE_FMNIST_DEFAULT_DIR, "test", &d, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(d.count, 10000);
    assert_int_equal(d.rows, 28);
    assert_int_equal(d.cols, 28);
    assert_int_equal(d.num_classes, 10);
    int hist[10] = {0};
    for (int i = 0; i < d.count; i++)
        hist[d.labels[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], 1000); /* the test split is balanced */
    engine_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_plain),
        cmocka_unit_test(test_load_gzip_and_mixed),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_trailing_after_gzip),
        cmocka_unit_test(test_count_mismatch_and_zero_dims),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_fmnist_missing),
        cmocka_unit_test(test_fmnist_layout),
        cmocka_unit_test(test_fmnist_real),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
