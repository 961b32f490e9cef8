/* safetensors.c: the format. Map: dtypes; writing (canonical sorted header, temporary file
 * fsynced, renamed, folder fsynced); reading (mapped; every offset, shape and dtype checked,
 * overlaps and gaps refused); a net's blob with its architecture JSON in the metadata. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "engine/safetensors.c assumes a little-endian host (safetensors data is little-endian)"
#endif

static const struct {
    const char *name;
    size_t size;
} DTYPES[ENGINE_ST_NUM_DTYPES] = {
    [ENGINE_ST_BOOL] = {"BOOL", 1},       [ENGINE_ST_U8] = {"U8", 1},
    [ENGINE_ST_I8] = {"I8", 1},           [ENGINE_ST_F8_E5M2] = {"F8_E5M2", 1},
    [ENGINE_ST_F8_E4M3] = {"F8_E4M3", 1}, [ENGINE_ST_I16] = {"I16", 2},
    [ENGINE_ST_U16] = {"U16", 2},         [ENGINE_ST_F16] = {"F16", 2},
    [ENGINE_ST_BF16] = {"BF16", 2},       [ENGINE_ST_I32] = {"I32", 4},
    [ENGINE_ST_U32] = {"U32", 4},         [ENGINE_ST_F32] = {"F32", 4},
    [ENGINE_ST_F64] = {"F64", 8},         [ENGINE_ST_I64] = {"I64", 8},
    [ENGINE_ST_U64] = {"U64", 8},
};

const char *engine_safetensors_dtype_name(engine_st_dtype_t dtype)
{
    return (unsigned)dtype < ENGINE_ST_NUM_DTYPES ? DTYPES[dtype].name : NULL;
}

size_t engine_safetensors_dtype_size(engine_st_dtype_t dtype)
{
    return (unsigned)dtype < ENGINE_ST_NUM_DTYPES ? DTYPES[dtype].size : 0;
}

int engine_safetensors_dtype_parse(const char *name)
{
    for (int i = 0; name && i < ENGINE_ST_NUM_DTYPES; i++)
        if (strcmp(name, DTYPES[i].name) == 0)
            return i;
    return -1;
}

/* Element count times dtype size, or false on overflow (a corrupt shape must not wrap around
 * and pass the size check). */
static bool tensor_nbytes(engine_st_dtype_t dtype, int ndim, const uint64_t *shape, uint64_t *out)
{
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != 0 && n > UINT64_MAX / shape[d])
            return false;
        n *= shape[d];
    }
    uint64_t sz = DTYPES[dtype].size;
    if (n > UINT64_MAX / sz)
        return false;
    *out = n * sz;
    return true;
}

static void shape_str(const engine_st_tensor_t *t, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRIu64, d ? "," : "", t->shape[d]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

/* ---------------------------------------------------------------- writing */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        FN_CHECK(p != NULL);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf_t *b, uint64_t v)
{
    char tmp[32];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%" PRIu64, v));
}

/* A JSON string exactly as serde_json writes it: only '"', '\\' and bytes below 0x20 escaped,
 * the short forms \b \t \n \f \r where JSON has them, \u00xx (lowercase) otherwise; everything
 * else, including non-ASCII UTF-8 and DEL, passes through. */
static void sb_json_string(sbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        default:
            if (*p < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[*p >> 4];
                esc[5] = hex[*p & 15];
                sb_put(b, esc, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF): the header must be
 * valid UTF-8 for every reader, so a bad name is refused before anything is written. */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        int extra;
        uint32_t cp, min;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        s++;
        for (int k = 0; k < extra; k++, s++) {
            if ((*s & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (*s & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
    }
    return true;
}

/* The reference's order: dtype descending (largest alignment first), then name (bytewise). */
static int cmp_write_order(const void *a, const void *b)
{
    const engine_st_tensor_t *ta = *(const engine_st_tensor_t *const *)a, *tb = *(const engine_st_tensor_t *const *)b;
    if (ta->dtype != tb->dtype)
        return ta->dtype > tb->dtype ? -1 : 1;
    return strcmp(ta->name, tb->name);
}

/* Checks the arguments and builds the padded header; *order_out receives the tensors in write
 * order, each with nbytes filled in (caller frees). */
static int build_header(const engine_st_tensor_t *t, int nt, const engine_st_kv_t *meta, int nmeta,
                        sbuf_t *hdr, engine_st_tensor_t **order_out, err_t *err)
{
    if (nt < 0 || nmeta < 0 || (nt > 0 && !t) || (nmeta > 0 && !meta))
        return err_set(err, FN_EINVAL, "safetensors: bad tensor or metadata list (%d tensors, %d metadata)",
                       nt, nmeta);
    uint64_t *nbytes = FN_CALLOC((size_t)nt, sizeof *nbytes);
    int rc = FN_OK;
    for (int i = 0; i < nt && rc == FN_OK; i++) {
        const engine_st_tensor_t *x = &t[i];
        if (!x->name)
            rc = err_set(err, FN_EINVAL, "safetensors: tensor %d has no name", i);
        else if (strcmp(x->name, "__metadata__") == 0)
            rc = err_set(err, FN_EINVAL, "safetensors: a tensor cannot be named \"__metadata__\" (the format reserves it)");
        else if (!utf8_valid(x->name))
            rc = err_set(err, FN_EINVAL, "safetensors: tensor %d: name is not valid UTF-8", i);
        else if ((unsigned)x->dtype >= ENGINE_ST_NUM_DTYPES)
            rc = err_set(err, FN_EINVAL, "safetensors: tensor \"%s\": unknown dtype %d", x->name, (int)x->dtype);
        else if (x->ndim < 0 || x->ndim > ENGINE_ST_MAX_DIMS)
            rc = err_set(err, FN_EINVAL, "safetensors: tensor \"%s\": %d dimensions (0..%d allowed)", x->name,
                         x->ndim, ENGINE_ST_MAX_DIMS);
        else if (!tensor_nbytes(x->dtype, x->ndim, x->shape, &nbytes[i]))
            rc = err_set(err, FN_EINVAL, "safetensors: tensor \"%s\": shape overflows 64 bits", x->name);
        else if (nbytes[i] > 0 && !x->data)
            rc = err_set(err, FN_EINVAL, "safetensors: tensor \"%s\": no data", x->name);
        for (int j = 0; j < i && rc == FN_OK; j++)
            if (strcmp(t[j].name, x->name) == 0)
                rc = err_set(err, FN_EINVAL, "safetensors: tensor name \"%s\" appears twice", x->name);
    }
    for (int i = 0; i < nmeta && rc == FN_OK; i++) {
        if (!meta[i].key || !meta[i].value)
            rc = err_set(err, FN_EINVAL, "safetensors: metadata entry %d has no %s", i, meta[i].key ? "value" : "key");
        else if (!utf8_valid(meta[i].key) || !utf8_valid(meta[i].value))
            rc = err_set(err, FN_EINVAL, "safetensors: metadata \"%s\" is not valid UTF-8", meta[i].key);
        for (int j = 0; j < i && rc == FN_OK; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                rc = err_set(err, FN_EINVAL, "safetensors: metadata key \"%s\" appears twice", meta[i].key);
    }
    if (rc != FN_OK) {
        free(nbytes);
        return rc;
    }

    const engine_st_tensor_t **sorted = FN_MALLOC((size_t)(nt ? nt : 1) * sizeof *sorted);
    for (int i = 0; i < nt; i++)
        sorted[i] = &t[i];
    if (nt > 1)
        qsort(sorted, (size_t)nt, sizeof *sorted, cmp_write_order);
    engine_st_tensor_t *order = FN_MALLOC((size_t)(nt ? nt : 1) * sizeof *order);
    for (int k = 0; k < nt; k++) {
        order[k] = *sorted[k];
        order[k].nbytes = nbytes[sorted[k] - t];
    }
    free(sorted);
    free(nbytes);

    sb_str(hdr, "{");
    bool first = true;
    if (nmeta > 0) {
        sb_str(hdr, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                sb_str(hdr, ",");
            sb_json_string(hdr, meta[i].key);
            sb_str(hdr, ":");
            sb_json_string(hdr, meta[i].value);
        }
        sb_str(hdr, "}");
        first = false;
    }
    uint64_t offset = 0;
    for (int k = 0; k < nt; k++) {
        const engine_st_tensor_t *x = &order[k];
        if (!first)
            sb_str(hdr, ",");
        first = false;
        sb_json_string(hdr, x->name);
        sb_str(hdr, ":{\"dtype\":\"");
        sb_str(hdr, DTYPES[x->dtype].name);
        sb_str(hdr, "\",\"shape\":[");
        for (int d = 0; d < x->ndim; d++) {
            if (d)
                sb_str(hdr, ",");
            sb_u64(hdr, x->shape[d]);
        }
        sb_str(hdr, "],\"data_offsets\":[");
        sb_u64(hdr, offset);
        sb_str(hdr, ",");
        if (x->nbytes > UINT64_MAX - offset) {
            free(order);
            return err_set(err, FN_EINVAL, "safetensors: total tensor size overflows 64 bits");
        }
        offset += x->nbytes;
        sb_u64(hdr, offset);
        sb_str(hdr, "]}");
    }
    sb_str(hdr, "}");
    while (hdr->len % 8)
        sb_str(hdr, " ");
    if (hdr->len > ENGINE_ST_MAX_HEADER) {
        free(order);
        return err_set(err, FN_EINVAL, "safetensors: header of %zu bytes exceeds the format's limit of %llu",
                       hdr->len, (unsigned long long)ENGINE_ST_MAX_HEADER);
    }
    *order_out = order;
    return FN_OK;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int engine_safetensors_serialize(const engine_st_tensor_t *tensors, int num_tensors,
                                 const engine_st_kv_t *meta, int num_meta, uint8_t **out,
                                 size_t *out_len, err_t *err)
{
    sbuf_t hdr = {0};
    engine_st_tensor_t *order;
    int rc = build_header(tensors, num_tensors, meta, num_meta, &hdr, &order, err);
    if (rc != FN_OK) {
        free(hdr.p);
        return rc;
    }
    uint64_t total = 8 + hdr.len;
    for (int k = 0; k < num_tensors; k++)
        total += order[k].nbytes;
    if (total > SIZE_MAX) {
        free(hdr.p), free(order);
        return err_set(err, FN_EINVAL, "safetensors: %" PRIu64 " bytes do not fit in memory", total);
    }
    uint8_t *buf = FN_MALLOC((size_t)total);
    put_le64(buf, hdr.len);
    memcpy(buf + 8, hdr.p, hdr.len);
    size_t pos = 8 + hdr.len;
    for (int k = 0; k < num_tensors; k++) {
        if (order[k].nbytes)
            memcpy(buf + pos, order[k].data, (size_t)order[k].nbytes);
        pos += (size_t)order[k].nbytes;
    }
    free(hdr.p), free(order);
    *out = buf;
    *out_len = (size_t)total;
    return FN_OK;
}

static bool write_all(int fd, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t w = write(fd, b, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (uint64_t)w;
    }
    return true;
}

/* Makes the rename durable too: a checkpoint the server reports as saved must survive a crash. */
static void fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some file systems refuse fsync on directories */
        close(fd);
    }
}

int engine_safetensors_save(const char *path, const engine_st_tensor_t *tensors, int num_tensors,
                            const engine_st_kv_t *meta, int num_meta, err_t *err)
{
    static _Atomic unsigned tmp_counter;
    if (!path)
        return err_set(err, FN_EINVAL, "safetensors: no path to save to");
    sbuf_t hdr = {0};
    engine_st_tensor_t *order;
    int rc = build_header(tensors, num_tensors, meta, num_meta, &hdr, &order, err);
    if (rc != FN_OK) {
        free(hdr.p);
        return err_wrap(err, "saving %s: ", path);
    }
    /* Write beside the target and rename, so a crash never leaves a half-written model where a
     * reader (or a resuming server) would find it. The temporary name is unique per process and
     * call, and created with mode 0666 so the umask applies as for any new file. */
    size_t cap = strlen(path) + 64;
    char *tmp = FN_MALLOC(cap);
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), tmp_counter++);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        rc = err_set(err, FN_EIO, "saving %s: cannot create a temporary file: %s", path, strerror(errno));
        goto out;
    }
    uint8_t len8[8];
    put_le64(len8, hdr.len);
    bool ok = write_all(fd, len8, 8) && write_all(fd, hdr.p, hdr.len);
    for (int k = 0; ok && k < num_tensors; k++)
        ok = write_all(fd, order[k].data, order[k].nbytes);
    if (ok)
        ok = fsync(fd) == 0;
    int saved_errno = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved_errno = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        saved_errno = errno;
    }
    if (!ok) {
        unlink(tmp);
        rc = err_set(err, FN_EIO, "saving %s: %s", path, strerror(saved_errno));
    } else {
        fsync_parent_dir(path);
    }
out:
    free(tmp), free(hdr.p), free(order);
    return rc;
}

/* ---------------------------------------------------------------- reading */

struct engine_safetensors {
    uint8_t *base; /* the whole file */
    size_t len;
    bool mapped;
    const uint8_t *buffer; /* base + 8 + N */
    int count;
    engine_st_tensor_t *tensors; /* buffer order */
    char **names;
    int num_meta;
    engine_st_kv_t *meta;
    char **meta_strings; /* 2 * num_meta */
};

void engine_safetensors_close(engine_safetensors_t *st)
{
    if (!st)
        return;
    if (st->mapped)
        munmap(st->base, st->len);
    else
        free(st->base);
    for (int i = 0; i < st->count; i++)
        free(st->names[i]);
    for (int i = 0; i < 2 * st->num_meta; i++)
        free(st->meta_strings[i]);
    free(st->names);
    free(st->tensors);
    free(st->meta);
    free(st->meta_strings);
    free(st);
}

/* A header entry while parsing: the tensor and its begin offset in the buffer. */
typedef struct entry {
    engine_st_tensor_t t;
    uint64_t begin;
} entry_t;

static int cmp_offsets(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    /* Empty tensors share their begin with the next one; keep them first. */
    if (x->t.nbytes != y->t.nbytes)
        return x->t.nbytes < y->t.nbytes ? -1 : 1;
    return 0;
}

/* A JSON integer in [0, 2^63): jansson's json_int_t is signed 64-bit. */
static bool json_u64(const json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

/* Parses one tensor entry; its name is set by the caller. */
static int parse_entry(const char *what, const char *name, json_t *v, entry_t *en, err_t *err)
{
    engine_st_tensor_t *t = &en->t;
    if (!json_is_object(v))
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": expected an object with dtype, shape, data_offsets",
                       what, name);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return err_set(err, FN_EINVAL, "%s: tensor \"%s\": unknown key \"%s\"", what, name, k);
    }
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": missing \"%s\"", what, name,
                       !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd))
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": dtype must be a string", what, name);
    int dt = engine_safetensors_dtype_parse(json_string_value(jd));
    if (dt < 0)
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": unknown dtype \"%s\"", what, name, json_string_value(jd));
    t->dtype = (engine_st_dtype_t)dt;
    if (!json_is_array(js))
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": shape must be an array of integers", what, name);
    if (json_array_size(js) > ENGINE_ST_MAX_DIMS)
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": %zu dimensions, fednas reads at most %d", what, name,
                       json_array_size(js), ENGINE_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int d = 0; d < t->ndim; d++)
        if (!json_u64(json_array_get(js, (size_t)d), &t->shape[d]))
            return err_set(err, FN_EINVAL, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", what,
                           name, d);
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &b) ||
        !json_u64(json_array_get(jo, 1), &e))
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": data_offsets must be [begin, end], non-negative integers",
                       what, name);
    if (e < b)
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": data_offsets [%" PRIu64 ",%" PRIu64 "] end before begin",
                       what, name, b, e);
    uint64_t need;
    char sh[256];
    shape_str(t, sh, sizeof sh);
    if (!tensor_nbytes(t->dtype, t->ndim, t->shape, &need))
        return err_set(err, FN_EINVAL, "%s: tensor \"%s\": shape %s overflows 64 bits", what, name, sh);
    if (need != e - b)
        return err_set(err, FN_EINVAL,
                       "%s: tensor \"%s\": shape %s of %s needs %" PRIu64 " bytes but data_offsets [%" PRIu64
                       ",%" PRIu64 "] hold %" PRIu64,
                       what, name, sh, DTYPES[t->dtype].name, need, b, e, e - b);
    en->begin = b;
    t->nbytes = need;
    return FN_OK;
}

/* Validates st->base[0..len) and fills the tables; st owns base already. */
static int parse_image(engine_safetensors_t *st, const char *what, err_t *err)
{
    const uint8_t *p = st->base;
    if (st->len < 8)
        return err_set(err, FN_EINVAL, "%s: truncated: %zu bytes, a safetensors file starts with an 8-byte header length",
                       what, st->len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | p[i];
    if (n > ENGINE_ST_MAX_HEADER)
        return err_set(err, FN_EINVAL, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes "
                       "(not a safetensors file?)", what, n, (unsigned long long)ENGINE_ST_MAX_HEADER);
    if (n > st->len - 8)
        return err_set(err, FN_EINVAL, "%s: header length %" PRIu64 " is larger than the %zu bytes after it "
                       "(truncated file?)", what, n, st->len - 8);
    if (n < 2 || p[8] != '{')
        return err_set(err, FN_EINVAL, "%s: the header must be a JSON object starting with '{'", what);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_set(err, FN_EINVAL, "%s: header is not valid JSON: %s (header line %d, column %d)", what,
                       jerr.text, jerr.line, jerr.column);
    int rc = FN_OK;
    entry_t *ents = NULL;
    if (!json_is_object(root)) {
        rc = err_set(err, FN_EINVAL, "%s: the header must be a JSON object", what);
        goto out;
    }
    size_t nkeys = json_object_size(root);
    st->tensors = FN_CALLOC(nkeys, sizeof *st->tensors);
    st->names = FN_CALLOC(nkeys, sizeof *st->names);
    ents = FN_CALLOC(nkeys, sizeof *ents);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = err_set(err, FN_EINVAL, "%s: __metadata__ must be an object of strings", what);
                break;
            }
            size_t nm = json_object_size(v);
            st->meta = FN_CALLOC(nm, sizeof *st->meta);
            st->meta_strings = FN_CALLOC(2 * nm, sizeof *st->meta_strings);
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    rc = err_set(err, FN_EINVAL, "%s: __metadata__ \"%s\": value must be a string", what, mk);
                    break;
                }
                int i = st->num_meta++;
                st->meta_strings[2 * i] = strdup(mk);
                st->meta_strings[2 * i + 1] = strdup(json_string_value(mv));
                FN_CHECK(st->meta_strings[2 * i] && st->meta_strings[2 * i + 1]);
                st->meta[i].key = st->meta_strings[2 * i];
                st->meta[i].value = st->meta_strings[2 * i + 1];
            }
            if (rc != FN_OK)
                break;
            continue;
        }
        entry_t *en = &ents[st->count];
        rc = parse_entry(what, key, v, en, err);
        if (rc != FN_OK)
            break;
        st->names[st->count] = strdup(key);
        FN_CHECK(st->names[st->count] != NULL);
        en->t.name = st->names[st->count];
        st->count++;
    }
    if (rc != FN_OK)
        goto out;

    /* The buffer must be tiled exactly: sort by begin, then each tensor starts where the last
     * ended, and the last ends at the end of the file. */
    qsort(ents, (size_t)st->count, sizeof *ents, cmp_offsets);
    uint64_t buffer_len = st->len - 8 - n, pos = 0;
    for (int i = 0; i < st->count; i++) {
        const engine_st_tensor_t *t = &ents[i].t;
        uint64_t b = ents[i].begin;
        if (b != pos) {
            if (b < pos)
                rc = err_set(err, FN_EINVAL, "%s: tensor \"%s\": data_offsets [%" PRIu64 ",%" PRIu64
                             "] overlap tensor \"%s\", which ends at %" PRIu64, what, t->name, b, b + t->nbytes,
                             ents[i - 1].t.name, pos);
            else
                rc = err_set(err, FN_EINVAL, "%s: tensor \"%s\": data_offsets [%" PRIu64 ",%" PRIu64
                             "] leave a gap of %" PRIu64 " bytes after offset %" PRIu64, what, t->name, b,
                             b + t->nbytes, b - pos, pos);
            goto out;
        }
        if (t->nbytes > buffer_len - pos) {
            rc = err_set(err, FN_EINVAL, "%s: tensor \"%s\": data_offsets [%" PRIu64 ",%" PRIu64
                         "] run past the end of the %" PRIu64 "-byte buffer (truncated file?)", what, t->name,
                         b, b + t->nbytes, buffer_len);
            goto out;
        }
        pos += t->nbytes;
    }
    if (pos != buffer_len) {
        rc = err_set(err, FN_EINVAL, "%s: %" PRIu64 " bytes after the last tensor's data (offset %" PRIu64
                     "): trailing garbage or a missing tensor", what, buffer_len - pos, pos);
        goto out;
    }
    st->buffer = p + 8 + n;
    for (int i = 0; i < st->count; i++) {
        st->tensors[i] = ents[i].t;
        st->tensors[i].data = st->buffer + ents[i].begin;
    }
out:
    free(ents);
    json_decref(root);
    return rc;
}

static int open_image(engine_safetensors_t *st, const char *what, engine_safetensors_t **out, err_t *err)
{
    int rc = parse_image(st, what, err);
    if (rc != FN_OK) {
        engine_safetensors_close(st);
        return rc;
    }
    *out = st;
    return FN_OK;
}

int engine_safetensors_parse(const void *bytes, size_t len, const char *what, engine_safetensors_t **out,
                             err_t *err)
{
    *out = NULL;
    if (!what)
        what = "safetensors buffer";
    if (!bytes && len)
        return err_set(err, FN_EINVAL, "%s: no bytes", what);
    engine_safetensors_t *st = FN_CALLOC(1, sizeof *st);
    st->base = FN_MALLOC(len);
    if (len)
        memcpy(st->base, bytes, len);
    st->len = len;
    return open_image(st, what, out, err);
}

int engine_safetensors_open(const char *path, engine_safetensors_t **out, err_t *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? FN_ENOTFOUND : FN_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(err, FN_EIO, "%s: not a regular file", path);
    }
    engine_safetensors_t *st = FN_CALLOC(1, sizeof *st);
    st->len = (size_t)sb.st_size;
    if (st->len > 0) {
        /* Map rather than read: a model's tensors are then paged in on use and shared. */
        void *m = mmap(NULL, st->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            st->base = m;
            st->mapped = true;
        } else {
            st->base = FN_MALLOC(st->len);
            size_t got = 0;
            while (got < st->len) {
                ssize_t r = read(fd, st->base + got, st->len - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0) {
                    int e = errno;
                    close(fd);
                    engine_safetensors_close(st);
                    return err_set(err, FN_EIO, "%s: read failed: %s", path, r < 0 ? strerror(e) : "file shrank");
                }
                got += (size_t)r;
            }
        }
    }
    close(fd);
    return open_image(st, path, out, err);
}

int engine_safetensors_count(const engine_safetensors_t *st) { return st ? st->count : 0; }

const engine_st_tensor_t *engine_safetensors_at(const engine_safetensors_t *st, int i)
{
    return st && i >= 0 && i < st->count ? &st->tensors[i] : NULL;
}

const engine_st_tensor_t *engine_safetensors_find(const engine_safetensors_t *st, const char *name)
{
    for (int i = 0; st && name && i < st->count; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

const char *engine_safetensors_meta(const engine_safetensors_t *st, const char *key)
{
    for (int i = 0; st && key && i < st->num_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0)
            return st->meta[i].value;
    return NULL;
}

int engine_safetensors_meta_count(const engine_safetensors_t *st) { return st ? st->num_meta : 0; }

engine_st_kv_t engine_safetensors_meta_at(const engine_safetensors_t *st, int i)
{
    engine_st_kv_t none = {NULL, NULL};
    return st && i >= 0 && i < st->num_meta ? st->meta[i] : none;
}

/* ---------------------------------------------------------------- fednas conveniences */

int engine_safetensors_save_vector(const char *path, const char *name, const float *v, size_t n,
                                   const engine_st_kv_t *meta, int num_meta, err_t *err)
{
    engine_st_tensor_t t = {.name = name, .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {n}, .data = v};
    return engine_safetensors_save(path, &t, 1, meta, num_meta, err);
}

int engine_safetensors_read_f32(const engine_safetensors_t *st, const char *name, float *dst, size_t n,
                                err_t *err)
{
    const engine_st_tensor_t *t = engine_safetensors_find(st, name);
    if (!t)
        return err_set(err, FN_ENOTFOUND, "safetensors: no tensor \"%s\"", name ? name : "(null)");
    if (t->dtype != ENGINE_ST_F32)
        return err_set(err, FN_EINVAL, "safetensors: tensor \"%s\" is %s, expected F32", name,
                       DTYPES[t->dtype].name);
    if (t->nbytes != (uint64_t)n * 4)
        return err_set(err, FN_EINVAL, "safetensors: tensor \"%s\" holds %" PRIu64 " floats, expected %zu", name,
                       t->nbytes / 4, n);
    if (n)
        memcpy(dst, t->data, n * 4); /* memcpy: the data may be unaligned in unpadded files */
    return FN_OK;
}

int engine_safetensors_save_checkpoint(const char *path, const char *arch_json, const float *params,
                                       const float *m, const float *v, size_t n, uint64_t step, err_t *err)
{
    if ((m == NULL) != (v == NULL))
        return err_set(err, FN_EINVAL, "saving %s: optimizer moments m and v come together", path ? path : "(null)");
    engine_st_tensor_t t[3] = {
        {.name = "params", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {n}, .data = params},
        {.name = "optim.m", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {n}, .data = m},
        {.name = "optim.v", .dtype = ENGINE_ST_F32, .ndim = 1, .shape = {n}, .data = v},
    };
    char step_str[32];
    snprintf(step_str, sizeof step_str, "%" PRIu64, step);
    engine_st_kv_t meta[2];
    int nm = 0;
    if (arch_json)
        meta[nm++] = (engine_st_kv_t){ENGINE_ST_META_ARCH, arch_json};
    meta[nm++] = (engine_st_kv_t){ENGINE_ST_META_STEP, step_str};
    return engine_safetensors_save(path, t, m ? 3 : 1, meta, nm, err);
}
