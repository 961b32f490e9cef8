#include "engine/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u /* unsigned byte, 3 dimensions */
#define IDX_MAGIC_LABELS 0x00000801u /* unsigned byte, 1 dimension */

/* A corrupt header can claim terabytes; grow the buffer as bytes actually arrive instead of
 * trusting the header with one huge allocation. */
#define IDX_FIRST_CHUNK ((size_t)16 << 20)
/* gzread takes an unsigned and returns an int. */
#define IDX_MAX_READ ((size_t)1 << 30)

static const char *fmnist_hint =
    "install it with `apt-get install dataset-fashion-mnist` (files land in " ENGINE_FMNIST_DEFAULT_DIR
    ") or pass the directory that holds the IDX files";

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int idx_open(const char *path, gzFile *f, err_t *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return err_set(err, FN_ENOTFOUND, "%s: no such file; check the path", path);
        return err_set(err, FN_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return err_set(err, FN_EINVAL, "%s: is a directory; pass the IDX file inside it", path);
    *f = gzopen(path, "rb");
    if (!*f)
        return err_set(err, FN_EIO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    gzbuffer(*f, 1 << 17);
    return 0;
}

/* Reads up to n bytes; returns how many arrived (short only at end of data or on error). */
static size_t idx_read(gzFile f, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < IDX_MAX_READ ? n - got : IDX_MAX_READ;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* Explains why fewer than `want` bytes arrived at uncompressed offset `off`. */
static int idx_short_read(gzFile f, const char *path, const char *what, size_t off, size_t got,
                          size_t want, err_t *err)
{
    int zerr = Z_OK;
    const char *zmsg = gzerror(f, &zerr);
    if (zerr == Z_ERRNO)
        return err_set(err, FN_EIO, "%s: read error at offset %zu: %s", path, off + got, strerror(errno));
    if (zerr == Z_DATA_ERROR || zerr == Z_MEM_ERROR)
        return err_set(err, zerr == Z_MEM_ERROR ? FN_ENOMEM : FN_EINVAL,
                       "%s: corrupt gzip data near uncompressed offset %zu (%s); download the file again",
                       path, off + got, zmsg);
    return err_set(err, FN_EINVAL,
                   "%s: truncated: the %s ends at offset %zu but needs %zu bytes from offset %zu%s; "
                   "download the file again",
                   path, what, off + got, want, off,
                   zerr == Z_BUF_ERROR ? " (the gzip stream is cut short)" : "");
}

/* zlib's gzread stops at the end of the last gzip member and silently skips whatever follows
 * it, so a file with bytes appended after its gzip stream (a botched download, two files run
 * together) would load. The file is walked once more with inflate, member by member, and
 * anything after the last complete member is refused. This costs a second decompression of
 * the file, a fraction of what parsing and training on it cost. */
static int idx_check_gzip_end(const char *path, err_t *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return err_set(err, FN_EIO, "%s: cannot reopen: %s", path, strerror(errno));
    const size_t chunk = (size_t)1 << 16;
    uint8_t *in = malloc(chunk), *out = malloc(chunk);
    z_stream z = {0};
    int rc = FN_OK;
    if (!in || !out || inflateInit2(&z, 15 + 16) != Z_OK) {
        rc = err_set(err, FN_ENOMEM, "%s: cannot allocate the gzip check", path);
        goto done_nozlib;
    }
    uint64_t end = 0; /* compressed bytes up to the end of the last complete member */
    int in_member = 0, bad = 0;
    for (;;) {
        if (z.avail_in == 0) {
            size_t n = fread(in, 1, chunk, fp);
            if (n == 0)
                break;
            z.next_in = in;
            z.avail_in = (uInt)n;
        }
        in_member = 1;
        z.next_out = out;
        z.avail_out = (uInt)chunk;
        int r = inflate(&z, Z_NO_FLUSH);
        if (r == Z_STREAM_END) {
            end += z.total_in;
            inflateReset(&z);
            in_member = 0;
        } else if (r != Z_OK && r != Z_BUF_ERROR) {
            bad = 1; /* not a gzip member: bytes after the stream */
            break;
        }
    }
    if (ferror(fp))
        rc = err_set(err, FN_EIO, "%s: read error: %s", path, strerror(errno));
    else if (bad || in_member)
        rc = err_set(err, FN_EINVAL,
                     "%s: trailing bytes after the gzip stream (it ends at byte %llu of the file); the file "
                     "is corrupt or something was appended to it; download the file again",
                     path, (unsigned long long)end);
    inflateEnd(&z);
done_nozlib:
    free(in);
    free(out);
    fclose(fp);
    return rc;
}

/* Reads one IDX file of unsigned bytes with `ndims` dimensions into a malloc'ed buffer. */
static int idx_read_file(const char *path, uint32_t magic, int ndims, uint32_t dims[3], uint8_t **data,
                         err_t *err)
{
    gzFile f = NULL;
    uint8_t *buf = NULL;
    int rc = idx_open(path, &f, err);
    if (rc)
        return rc;

    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims;
    size_t got = idx_read(f, hdr, hlen);
    if (got < 4) {
        rc = idx_short_read(f, path, "header", 0, got, hlen, err);
        goto done;
    }
    uint32_t found = be32(hdr);
    if (found != magic) {
        const char *hint = "";
        if (found == IDX_MAGIC_IMAGES)
            hint = " (that is an image file; did you swap the image and label paths?)";
        else if (found == IDX_MAGIC_LABELS)
            hint = " (that is a label file; did you swap the image and label paths?)";
        else if ((found >> 8) == 0x08)
            hint = " (unsigned bytes, but the wrong number of dimensions)";
        rc = err_set(err, FN_EINVAL,
                     "%s: bad magic number 0x%08x at offset 0, expected 0x%08x (IDX, unsigned byte, %d "
                     "dimension%s)%s; pass an IDX %s file",
                     path, found, magic, ndims, ndims > 1 ? "s" : "", hint, ndims > 1 ? "image" : "label");
        goto done;
    }
    if (got < hlen) {
        rc = idx_short_read(f, path, "header", 0, got, hlen, err);
        goto done;
    }
    size_t total = 1;
    for (int i = 0; i < ndims; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > INT_MAX) {
            rc = err_set(err, FN_EINVAL, "%s: dimension %d at offset %d is %u; expected 1..%d", path, i,
                         4 + 4 * i, dims[i], INT_MAX);
            goto done;
        }
        if (total > SIZE_MAX / dims[i]) {
            rc = err_set(err, FN_EINVAL, "%s: dimensions overflow the address space", path);
            goto done;
        }
        total *= dims[i];
    }

    size_t cap = total < IDX_FIRST_CHUNK ? total : IDX_FIRST_CHUNK, have = 0;
    buf = malloc(cap);
    if (!buf) {
        rc = err_set(err, FN_ENOMEM, "%s: cannot allocate %zu bytes", path, cap);
        goto done;
    }
    for (;;) {
        size_t r = idx_read(f, buf + have, cap - have);
        have += r;
        if (have == total)
            break;
        if (have < cap) {
            rc = idx_short_read(f, path, "data", hlen, have, total, err);
            goto done;
        }
        size_t ncap = cap > total / 2 ? total : cap * 2;
        uint8_t *nbuf = realloc(buf, ncap);
        if (!nbuf) {
            rc = err_set(err, FN_ENOMEM, "%s: cannot allocate %zu bytes for the data", path, ncap);
            goto done;
        }
        buf = nbuf;
        cap = ncap;
    }
    uint8_t extra;
    if (idx_read(f, &extra, 1) != 0) {
        rc = err_set(err, FN_EINVAL,
                     "%s: trailing bytes after offset %zu (the header's dimensions account for %zu data "
                     "bytes); the file is corrupt or its header is wrong",
                     path, hlen + total, total);
        goto done;
    }
    int zerr = Z_OK;
    gzerror(f, &zerr);
    if (zerr != Z_OK) {
        /* All data arrived but the gzip trailer (CRC, length) is missing or wrong. */
        rc = err_set(err, zerr == Z_ERRNO ? FN_EIO : FN_EINVAL,
                     "%s: the gzip stream is damaged after the data (%s); download the file again", path,
                     zerr == Z_ERRNO ? strerror(errno) : gzerror(f, &zerr));
        goto done;
    }
    if (!gzdirect(f) && (rc = idx_check_gzip_end(path, err)) != FN_OK)
        goto done;
    *data = buf;
    buf = NULL;
done:
    free(buf);
    if (f)
        gzclose(f);
    return rc;
}

int engine_idx_load(const char *images_path, const char *labels_path, engine_dataset_t *out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "engine_idx_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!images_path || !labels_path)
        return err_set(err, FN_EINVAL, "engine_idx_load: image and label paths are required");

    uint32_t idims[3], ldims[3];
    uint8_t *images = NULL, *labels = NULL;
    int rc = idx_read_file(images_path, IDX_MAGIC_IMAGES, 3, idims, &images, err);
    if (rc)
        return rc;
    rc = idx_read_file(labels_path, IDX_MAGIC_LABELS, 1, ldims, &labels, err);
    if (rc) {
        free(images);
        return rc;
    }
    if (idims[0] != ldims[0]) {
        free(images);
        free(labels);
        return err_set(err, FN_EINVAL,
                       "%s holds %u images but %s holds %u labels; pass files of the same split", images_path,
                       idims[0], labels_path, ldims[0]);
    }
    int max_label = 0;
    for (uint32_t i = 0; i < ldims[0]; i++)
        if (labels[i] > max_label)
            max_label = labels[i];
    out->images = images;
    out->labels = labels;
    out->count = (int)idims[0];
    out->rows = (int)idims[1];
    out->cols = (int)idims[2];
    out->num_classes = max_label + 1;
    return 0;
}

/* Finds "<prefix>.gz" or "<prefix>" in dir; Debian ships .gz, other mirrors ship them unpacked. */
static int fmnist_find(const char *dir, const char *prefix, char *path, size_t size, err_t *err)
{
    static const char *suffixes[] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        int n = snprintf(path, size, "%s/%s%s", dir, prefix, suffixes[i]);
        if (n < 0 || (size_t)n >= size)
            return err_set(err, FN_EINVAL, "engine_fmnist_load: directory path too long: %s", dir);
        struct stat st;
        if (stat(path, &st) == 0)
            return 0;
    }
    return err_set(err, FN_ENOTFOUND, "Fashion-MNIST file %s/%s[.gz] not found; %s", dir, prefix, fmnist_hint);
}

int engine_fmnist_load(const char *dir, const char *split, engine_dataset_t *out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "engine_fmnist_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir || !*dir)
        dir = ENGINE_FMNIST_DEFAULT_DIR;
    const char *stem;
    if (split && strcmp(split, "train") == 0)
        stem = "train";
    else if (split && (strcmp(split, "test") == 0 || strcmp(split, "t10k") == 0))
        stem = "t10k";
    else
        return err_set(err, FN_EINVAL, "engine_fmnist_load: unknown split \"%s\"; use \"train\" or \"test\"",
                       split ? split : "(null)");

    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return err_set(err, FN_ENOTFOUND, "Fashion-MNIST directory %s not found; %s", dir, fmnist_hint);

    char ipath[4096], lpath[4096], prefix[64];
    snprintf(prefix, sizeof prefix, "%s-images-idx3-ubyte", stem);
    int rc = fmnist_find(dir, prefix, ipath, sizeof ipath, err);
    if (rc)
        return rc;
    snprintf(prefix, sizeof prefix, "%s-labels-idx1-ubyte", stem);
    rc = fmnist_find(dir, prefix, lpath, sizeof lpath, err);
    if (rc)
        return rc;
    return engine_idx_load(ipath, lpath, out, err);
}

void engine_dataset_free(engine_dataset_t *d)
{
    if (!d)
        return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
