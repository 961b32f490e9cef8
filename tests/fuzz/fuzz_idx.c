/* fuzz_idx: engine_idx_load (IDX3 images + IDX1 labels, plain or gzip) on arbitrary files.
 * The reader takes paths, so the two files are memfds reached through /proc/self/fd. Input:
 * bytes 0..1 the image file's length (little-endian, clamped to what is there), then the image
 * file, then the label file. On success: the counts agree, every image byte and label is
 * readable (ASan checks the sizes), every label < num_classes <= 256, a plain (not gzip) image
 * file is exactly 16 + count x rows x cols bytes, and a gzip file ends with its last member. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <zlib.h>

#include "engine/idx.h"
#include "fuzz_seed.h"

static int g_fd[2];
static char g_path[2][64];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_idx: %s\n", what);
    abort();
}

/* gzip (as Debian ships the data sets) of n bytes into out; returns the length. */
static size_t gzip(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        die("deflateInit2 failed");
    z.next_in = (uint8_t *)in, z.avail_in = (uInt)n, z.next_out = out, z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        die("deflate failed");
    size_t len = z.total_out;
    deflateEnd(&z);
    return len;
}

/* Seeds: 3 images of 2 x 3 pixels and their labels, plain and gzip. */
static void write_seeds(const char *dir)
{
    uint8_t img[16 + 18] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3};
    uint8_t lab[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 9, 0, 4};
    for (int i = 0; i < 18; i++)
        img[16 + i] = (uint8_t)(i * 14);
    uint8_t buf[512], gi[256], gl[256];
    uint16_t n = sizeof img;
    memcpy(buf, &n, 2);
    memcpy(buf + 2, img, sizeof img);
    fuzz_write_seed(dir, "plain", buf, 2 + sizeof img, lab, sizeof lab);
    size_t ni = gzip(img, sizeof img, gi, sizeof gi), nl = gzip(lab, sizeof lab, gl, sizeof gl);
    n = (uint16_t)ni;
    memcpy(buf, &n, 2);
    memcpy(buf + 2, gi, ni);
    fuzz_write_seed(dir, "gzip", buf, 2 + ni, gl, nl);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; i++) {
        g_fd[i] = memfd_create(i ? "labels" : "images", 0);
        if (g_fd[i] < 0)
            die("memfd_create failed");
        snprintf(g_path[i], sizeof g_path[i], "/proc/self/fd/%d", g_fd[i]);
    }
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir)
        write_seeds(dir);
    return 0;
}

/* The oracle for gzip files: the bytes the gzip members (one after another) take up, or 0 when
 * the data is not a complete sequence of members. A file accepted must be exactly that long:
 * anything after the last member is trailing bytes (idx.h). */
static size_t gzip_extent(const uint8_t *p, size_t n)
{
    size_t off = 0;
    uint8_t out[4096];
    while (off < n) {
        if (n - off < 2 || p[off] != 0x1f || p[off + 1] != 0x8b)
            return off;
        z_stream z = {0};
        if (inflateInit2(&z, 31) != Z_OK)
            die("inflateInit2 failed");
        z.next_in = (uint8_t *)p + off, z.avail_in = (uInt)(n - off);
        int r;
        do {
            z.next_out = out, z.avail_out = sizeof out;
            r = inflate(&z, Z_NO_FLUSH);
        } while (r == Z_OK);
        size_t used = z.total_in;
        inflateEnd(&z);
        if (r != Z_STREAM_END)
            return 0;
        off += used;
    }
    return off;
}

static void put(int i, const uint8_t *p, size_t n)
{
    if (ftruncate(g_fd[i], 0) != 0 || (n && pwrite(g_fd[i], p, n, 0) != (ssize_t)n))
        die("cannot write the memfd");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t ilen = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2, size -= 2;
    if (ilen > size)
        ilen = size;
    put(0, data, ilen);
    put(1, data + ilen, size - ilen);

    engine_dataset_t d;
    err_t e = {0};
    int rc = engine_idx_load(g_path[0], g_path[1], &d, &e);
    if (rc != 0) {
        if (d.images || d.labels || d.count)
            die("a refused file left data behind");
        if (rc != FN_EINVAL && rc != FN_ENOMEM)
            die("a malformed file gave an error other than FN_EINVAL");
        return 0;
    }
    if (d.count < 1 || d.rows < 1 || d.cols < 1 || d.num_classes < 1 || d.num_classes > 256)
        die("accepted a dataset with bad dimensions");
    size_t n = (size_t)d.count * (size_t)d.rows * (size_t)d.cols;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++)
        sink ^= d.images[i];
    (void)sink;
    int max_label = 0;
    for (int i = 0; i < d.count; i++) {
        if (d.labels[i] >= d.num_classes)
            die("a label >= num_classes");
        if (d.labels[i] > max_label)
            max_label = d.labels[i];
    }
    if (max_label + 1 != d.num_classes)
        die("num_classes is not 1 + the largest label");
    if (!(ilen >= 2 && data[0] == 0x1f && data[1] == 0x8b) && ilen != 16 + n)
        die("a plain image file's length differs from its header");
    size_t llen = size - ilen;
    const uint8_t *lab = data + ilen;
    if (ilen >= 2 && data[0] == 0x1f && data[1] == 0x8b && gzip_extent(data, ilen) != ilen)
        die("accepted a gzip image file with bytes after its last gzip member");
    if (llen >= 2 && lab[0] == 0x1f && lab[1] == 0x8b && gzip_extent(lab, llen) != llen)
        die("accepted a gzip label file with bytes after its last gzip member");
    engine_dataset_free(&d);
    return 0;
}
