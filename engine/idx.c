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

/* One IDX file being read: plain bytes, or gzip members inflated here. Not gzread: it stops at
 * the end of the last gzip member and silently skips whatever follows, so a file with bytes
 * appended after its gzip stream (a botched download, two files run together) would load,
 * against the no-trailing-bytes promise of idx.h. */
#define IDX_CHUNK ((size_t)1 << 17)
typedef struct idx_src {
    FILE *fp;
    uint8_t *in;   /* IDX_CHUNK bytes of the file; z.next_in/avail_in is the unread part */
    z_stream z;
    int gz;        /* the file starts with the gzip magic */
    int eof;       /* the file has no more bytes */
    int in_member; /* inside a gzip member whose end has not been reached */
    int members;   /* complete gzip members read */
    int zerr;      /* Z_OK, or what stopped the stream: Z_ERRNO, Z_DATA_ERROR, Z_BUF_ERROR (cut
                      short), Z_MEM_ERROR */
    int trailing;  /* Z_DATA_ERROR because bytes that are no gzip member follow the last one */
} idx_src_t;

static void idx_close(idx_src_t *f)
{
    if (f->gz)
        inflateEnd(&f->z);
    if (f->fp)
        fclose(f->fp);
    free(f->in);
    memset(f, 0, sizeof *f);
}

/* Refills the input buffer when it is empty; sets eof (and zerr on a read error). */
static void idx_fill(idx_src_t *f)
{
    if (f->z.avail_in > 0 || f->eof)
        return;
    size_t r = fread(f->in, 1, IDX_CHUNK, f->fp);
    if (r == 0) {
        f->eof = 1;
        if (ferror(f->fp))
            f->zerr = Z_ERRNO;
        return;
    }
    f->z.next_in = f->in;
    f->z.avail_in = (uInt)r;
}

static int idx_open(const char *path, idx_src_t *f, err_t *err)
{
    memset(f, 0, sizeof *f);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return err_set(err, FN_ENOTFOUND, "%s: no such file; check the path", path);
        return err_set(err, FN_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return err_set(err, FN_EINVAL, "%s: is a directory; pass the IDX file inside it", path);
    f->fp = fopen(path, "rb");
    if (!f->fp)
        return err_set(err, FN_EIO, "%s: cannot open: %s", path, strerror(errno));
    f->in = malloc(IDX_CHUNK);
    if (!f->in) {
        idx_close(f);
        return err_set(err, FN_ENOMEM, "%s: cannot allocate a read buffer", path);
    }
    idx_fill(f);
    f->gz = f->z.avail_in >= 2 && f->z.next_in[0] == 0x1f && f->z.next_in[1] == 0x8b;
    if (f->gz && inflateInit2(&f->z, 15 + 16) != Z_OK) {
        f->gz = 0;
        idx_close(f);
        return err_set(err, FN_ENOMEM, "%s: cannot start gzip decompression", path);
    }
    return 0;
}

/* Reads up to n bytes; returns how many arrived (short only at end of data or on error). */
static size_t idx_read(idx_src_t *f, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n && f->zerr == Z_OK) {
        idx_fill(f);
        if (f->zerr != Z_OK)
            break;
        if (!f->gz) {
            if (f->z.avail_in == 0)
                break;
            size_t k = n - got < f->z.avail_in ? n - got : f->z.avail_in;
            memcpy(buf + got, f->z.next_in, k);
            f->z.next_in += k;
            f->z.avail_in -= (uInt)k;
            got += k;
            continue;
        }
        if (!f->in_member) {
            if (f->z.avail_in == 0)
                break; /* the end of the file, right after a complete member */
            f->in_member = 1;
        }
        size_t want = n - got < IDX_MAX_READ ? n - got : IDX_MAX_READ;
        f->z.next_out = buf + got;
        f->z.avail_out = (uInt)want;
        int r = inflate(&f->z, Z_NO_FLUSH);
        got += want - f->z.avail_out;
        if (r == Z_STREAM_END) {
            f->members++;
            f->in_member = 0;
            inflateReset(&f->z);
        } else if (r == Z_BUF_ERROR || (r == Z_OK && f->z.avail_in == 0)) {
            if (f->eof)
                f->zerr = Z_BUF_ERROR; /* the file ends inside a member */
        } else if (r != Z_OK) {
            f->zerr = r == Z_MEM_ERROR ? Z_MEM_ERROR : Z_DATA_ERROR;
            f->trailing = f->members > 0 && f->z.total_out == 0;
        }
    }
    return got;
}

/* Explains why fewer than `want` bytes arrived at uncompressed offset `off`. */
static int idx_short_read(const idx_src_t *f, const char *path, const char *what, size_t off, size_t got,
                          size_t want, err_t *err)
{
    if (f->zerr == Z_ERRNO)
        return err_set(err, FN_EIO, "%s: read error at offset %zu: %s", path, off + got, strerror(errno));
    if ((f->zerr == Z_DATA_ERROR && !f->trailing) || f->zerr == Z_MEM_ERROR)
        return err_set(err, f->zerr == Z_MEM_ERROR ? FN_ENOMEM : FN_EINVAL,
                       "%s: corrupt gzip data near uncompressed offset %zu (%s); download the file again",
                       path, off + got, f->z.msg ? f->z.msg : "out of memory");
    return err_set(err, FN_EINVAL,
                   "%s: truncated: the %s ends at offset %zu but needs %zu bytes from offset %zu%s; "
                   "download the file again",
                   path, what, off + got, want, off,
                   f->zerr == Z_BUF_ERROR ? " (the gzip stream is cut short)" : "");
}

/* Reads one IDX file of unsigned bytes with `ndims` dimensions into a malloc'ed buffer. */
static int idx_read_file(const char *path, uint32_t magic, int ndims, uint32_t dims[3], uint8_t **data,
                         err_t *err)
{
    idx_src_t src, *f = &src;
    uint8_t *buf = NULL;
    int rc = idx_open(path, f, err);
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
    if (f->trailing) {
        rc = err_set(err, FN_EINVAL,
                     "%s: trailing bytes after the gzip stream (after uncompressed offset %zu); the file is "
                     "corrupt or something was appended to it; download the file again",
                     path, hlen + total);
        goto done;
    }
    if (f->zerr != Z_OK) {
        /* All data arrived but the gzip trailer (CRC, length) is missing or wrong. */
        rc = err_set(err, f->zerr == Z_ERRNO ? FN_EIO : FN_EINVAL,
                     "%s: the gzip stream is damaged after the data (%s); download the file again", path,
                     f->zerr == Z_ERRNO      ? strerror(errno)
                     : f->zerr == Z_BUF_ERROR ? "the file ends inside it"
                     : f->z.msg              ? f->z.msg
                                             : "invalid data");
        goto done;
    }
    *data = buf;
    buf = NULL;
done:
    free(buf);
    idx_close(f);
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
