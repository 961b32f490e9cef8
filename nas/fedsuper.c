/* fedsuper: the server's supernet in a federated search (nas/fedsuper.h). */
#include "nas/fedsuper.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/nn.h"
#include "nas/slice.h"
#include "nas/supernet.h"

typedef struct fs_tensor {
    char key[NAS_SUPERNET_KEY_LEN];
    int nd;
    int64_t shape[4];
    size_t n;
    float *w;
    uint8_t *init;
    double *sum, *cnt; /* this round's weighted changes, allocated when first trained */
} fs_tensor_t;

typedef struct fs_buffers {
    char hash[NAS_HASH_LEN];
    size_t n;
    float *v;
    double *sum, cnt; /* a genome's statistics are trained whole: one count */
    uint8_t *var;     /* which are running variances (the engine initialises those to 1, means to 0) */
} fs_buffers_t;

static int ensure_pending(struct fs_tensor *t, err_t *err);

struct nas_fedsuper {
    nas_space_t sp;
    uint64_t seed;
    nas_supernet_t *keys; /* an empty supernet: only its key rule is used */
    fs_tensor_t *t;
    int nt, cap;
    fs_buffers_t *b;
    int nb, capb;
};

int nas_fedsuper_create(const nas_space_t *sp, uint64_t seed, nas_fedsuper_t **out, err_t *err)
{
    *out = NULL;
    nas_fedsuper_t *fs = calloc(1, sizeof *fs);
    if (!fs)
        return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
    fs->sp = *sp;
    fs->seed = seed;
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    int rc = nas_supernet_create(sp, &o, &fs->keys, err);
    if (rc) {
        free(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

static void clear_tensors(nas_fedsuper_t *fs)
{
    for (int i = 0; i < fs->nt; i++) {
        free(fs->t[i].w);
        free(fs->t[i].init);
        free(fs->t[i].sum);
        free(fs->t[i].cnt);
    }
    for (int i = 0; i < fs->nb; i++) {
        free(fs->b[i].v);
        free(fs->b[i].sum);
        free(fs->b[i].var);
    }
    fs->nt = fs->nb = 0;
}

void nas_fedsuper_free(nas_fedsuper_t *fs)
{
    if (!fs)
        return;
    clear_tensors(fs);
    free(fs->t);
    free(fs->b);
    nas_supernet_free(fs->keys);
    free(fs);
}

static size_t numel(int nd, const int64_t *shape)
{
    size_t n = 1;
    for (int d = 0; d < nd; d++)
        n *= (size_t)shape[d];
    return n;
}

static int find_tensor(const nas_fedsuper_t *fs, const char *key)
{
    for (int i = 0; i < fs->nt; i++)
        if (strcmp(fs->t[i].key, key) == 0)
            return i;
    return -1;
}

static int find_buffers(const nas_fedsuper_t *fs, const char *hash)
{
    for (int i = 0; i < fs->nb; i++)
        if (strcmp(fs->b[i].hash, hash) == 0)
            return i;
    return -1;
}


/* The tensor stored under key, created or grown to cover shape (a grown tensor keeps each
 * element at its multi-index; new elements are uninitialised). */
static int tensor_get(nas_fedsuper_t *fs, const char *key, int nd, const int64_t *shape, int *id, err_t *err)
{
    int i = find_tensor(fs, key);
    if (i < 0) {
        if (fs->nt == fs->cap) {
            int cap = fs->cap ? 2 * fs->cap : 64;
            fs_tensor_t *t = realloc(fs->t, (size_t)cap * sizeof *t);
            if (!t)
                return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
            fs->t = t;
            fs->cap = cap;
        }
        i = fs->nt++;
        memset(&fs->t[i], 0, sizeof fs->t[i]);
        snprintf(fs->t[i].key, sizeof fs->t[i].key, "%s", key);
        fs->t[i].nd = nd;
    }
    fs_tensor_t *t = &fs->t[i];
    if (t->nd != nd)
        return err_set(err, FN_EINVAL, "federated supernet: tensor %s has %d dimensions here and %d in the store", key,
                       nd, t->nd);
    int64_t ns[4] = {1, 1, 1, 1};
    int grow = t->w == NULL;
    for (int d = 0; d < nd; d++) {
        ns[d] = shape[d] > t->shape[d] ? shape[d] : t->shape[d];
        grow |= ns[d] != t->shape[d];
    }
    if (grow) {
        if (t->sum)
            return err_set(err, FN_ESTATE, "federated supernet: tensor %s grows while a round's changes are pending",
                           key);
        size_t n = numel(nd, ns);
        float *w = calloc(n, sizeof *w);
        uint8_t *in = calloc(n, 1);
        if (!w || !in) {
            free(w);
            free(in);
            return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
        }
        if (t->w) {
            fs_tensor_t big = *t;
            memcpy(big.shape, ns, sizeof ns);
            NAS_SLICE_FOR(&big, nd, t->shape, NULL, {
                w[o] = t->w[k];
                in[o] = t->init[k];
            });
        }
        free(t->w);
        free(t->init);
        t->w = w;
        t->init = in;
        memcpy(t->shape, ns, sizeof ns);
        t->n = n;
    }
    *id = i;
    return 0;
}

void nas_fedsuper_path_free(nas_fedsuper_path_t *p)
{
    if (!p)
        return;
    json_decref(p->arch);
    engine_model_free(p->model);
    free(p->ids);
    free(p->views);
    free(p);
}

static int path_buffers(nas_fedsuper_t *fs, nas_fedsuper_path_t *p, const float *init, err_t *err)
{
    p->buf = -1;
    if (p->m == p->np)
        return 0;
    int i = find_buffers(fs, p->hash);
    if (i < 0) {
        if (fs->nb == fs->capb) {
            int cap = fs->capb ? 2 * fs->capb : 32;
            fs_buffers_t *b = realloc(fs->b, (size_t)cap * sizeof *b);
            if (!b)
                return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
            fs->b = b;
            fs->capb = cap;
        }
        fs_buffers_t *b = &fs->b[fs->nb];
        memset(b, 0, sizeof *b);
        snprintf(b->hash, sizeof b->hash, "%s", p->hash);
        b->n = p->m - p->np;
        b->v = malloc(b->n * sizeof *b->v);
        if (!b->v)
            return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
        memcpy(b->v, init, b->n * sizeof *b->v);
        i = fs->nb++;
    }
    if (fs->b[i].n != p->m - p->np)
        return err_set(err, FN_EINVAL, "federated supernet: genome %.12s has %zu statistics here and %zu in the store",
                       p->hash, p->m - p->np, fs->b[i].n);
    fs_buffers_t *b = &fs->b[i];
    if (!b->var) {
        if (!(b->var = malloc(b->n)))
            return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
        for (size_t k = 0; k < b->n; k++)
            b->var[k] = init[k] == 1.0f;
    }
    p->buf = i;
    return 0;
}

int nas_fedsuper_path(nas_fedsuper_t *fs, const nas_genome_t *g, nas_fedsuper_path_t **out, err_t *err)
{
    *out = NULL;
    nas_fedsuper_path_t *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
    p->genome = *g;
    nas_genome_hash(&fs->sp, g, p->hash);
    char(*keys)[NAS_SUPERNET_KEY_LEN] = NULL;
    int rc = nas_genome_decode(&fs->sp, g, &p->arch, err);
    if (rc == 0 && (rc = engine_model_create_shape(p->arch, fs->sp.in_c, fs->sp.in_h, fs->sp.in_w, fs->sp.classes,
                                                   &p->model, err)) != 0)
        err_wrap(err, "federated supernet: the decoded genome does not build: ");
    if (rc)
        goto done;
    engine_net_t *net = engine_model_net(p->model);
    p->m = engine_model_num_federated(p->model);
    p->np = engine_model_num_params(p->model);
    p->nt = engine_net_num_tensors(net);
    p->ids = calloc((size_t)(p->nt > 0 ? p->nt : 1), sizeof *p->ids);
    p->views = calloc((size_t)(p->nt > 0 ? p->nt : 1), sizeof *p->views);
    keys = calloc((size_t)(p->nt > 0 ? p->nt : 1), sizeof *keys);
    if (!p->ids || !p->views || !keys) {
        rc = err_set(err, FN_ENOMEM, "federated supernet: out of memory");
        goto done;
    }
    int count = 0;
    if ((rc = nas_supernet_keys(fs->keys, g, keys, p->views, p->nt, &count, err)) != 0)
        goto done;
    if (count != p->nt) {
        rc = err_set(err, FN_EINVAL, "federated supernet: %d keys for a model of %d tensors", count, p->nt);
        goto done;
    }
    /* Everything the path reads exists at a covering shape before any element is read. */
    int need_init = 0;
    for (int i = 0; i < p->nt && rc == 0; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        int64_t ext[4];
        nas_slice_extent(in->ndim, in->shape, &p->views[i], ext);
        if ((rc = tensor_get(fs, keys[i], in->ndim, ext, &p->ids[i], err)) == 0) {
            const fs_tensor_t *t = &fs->t[p->ids[i]];
            NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], need_init |= !t->init[o]);
        }
    }
    if (rc)
        goto done;
    /* the genome's own initialisation: the store's seed and the hash's first 16 hex digits */
    char h16[17];
    memcpy(h16, p->hash, 16);
    h16[16] = '\0';
    engine_model_init(p->model, rng_derive(fs->seed, strtoull(h16, NULL, 16)));
    const float *w0 = engine_model_params(p->model);
    for (int i = 0; need_init && i < p->nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        fs_tensor_t *t = &fs->t[p->ids[i]];
        const float *src = w0 + in->offset;
        NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], {
            if (!t->init[o]) {
                t->w[o] = src[k];
                t->init[o] = 1;
            }
        });
    }
    rc = path_buffers(fs, p, w0 + p->np, err);
done:
    free(keys);
    if (rc) {
        nas_fedsuper_path_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void nas_fedsuper_slice(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, float *out)
{
    engine_net_t *net = engine_model_net(p->model);
    for (int i = 0; i < p->nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        const fs_tensor_t *t = &fs->t[p->ids[i]];
        float *dst = out + in->offset;
        NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], dst[k] = t->w[o]);
    }
    if (p->buf >= 0)
        memcpy(out + p->np, fs->b[p->buf].v, fs->b[p->buf].n * sizeof *out);
}

int nas_fedsuper_add(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *delta, double w, err_t *err)
{
    if (!(w > 0) || !isfinite(w))
        return err_set(err, FN_EINVAL, "federated supernet: weight %g is not positive", w);
    for (size_t i = 0; i < p->m; i++)
        if (!isfinite(delta[i]))
            return err_set(err, FN_EINVAL, "federated supernet: value %zu of the change is not finite", i);
    engine_net_t *net = engine_model_net(p->model);
    for (int i = 0; i < p->nt; i++) {
        int rc = ensure_pending(&fs->t[p->ids[i]], err);
        if (rc)
            return rc;
    }
    for (int i = 0; i < p->nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        fs_tensor_t *t = &fs->t[p->ids[i]];
        const float *src = delta + in->offset;
        NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], {
            t->sum[o] += w * src[k];
            t->cnt[o] += w;
        });
    }
    if (p->buf >= 0) {
        fs_buffers_t *b = &fs->b[p->buf];
        if (!b->sum && !(b->sum = calloc(b->n, sizeof *b->sum)))
            return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
        for (size_t k = 0; k < b->n; k++)
            b->sum[k] += w * delta[p->np + k];
        b->cnt += w;
    }
    return 0;
}

size_t nas_fedsuper_apply(nas_fedsuper_t *fs)
{
    size_t changed = 0;
    for (int i = 0; i < fs->nt; i++) {
        fs_tensor_t *t = &fs->t[i];
        if (!t->sum)
            continue;
        for (size_t k = 0; k < t->n; k++)
            if (t->cnt[k] > 0) {
                t->w[k] = (float)(t->w[k] + t->sum[k] / t->cnt[k]);
                changed++;
            }
        free(t->sum);
        free(t->cnt);
        t->sum = t->cnt = NULL;
    }
    for (int i = 0; i < fs->nb; i++) {
        fs_buffers_t *b = &fs->b[i];
        if (!b->sum)
            continue;
        /* A variance is never negative: a mean of changes under secure aggregation carries the
         * encoding's rounding, and a dead channel's variance sits at 0. */
        for (size_t k = 0; k < b->n; k++) {
            b->v[k] = (float)(b->v[k] + b->sum[k] / b->cnt);
            if (b->var && b->var[k] && b->v[k] < 0)
                b->v[k] = 0;
        }
        changed += b->n;
        free(b->sum);
        b->sum = NULL;
        b->cnt = 0;
    }
    return changed;
}

void nas_fedsuper_discard(nas_fedsuper_t *fs)
{
    for (int i = 0; i < fs->nt; i++) {
        free(fs->t[i].sum);
        free(fs->t[i].cnt);
        fs->t[i].sum = fs->t[i].cnt = NULL;
    }
    for (int i = 0; i < fs->nb; i++) {
        free(fs->b[i].sum);
        fs->b[i].sum = NULL;
        fs->b[i].cnt = 0;
    }
}

size_t nas_fedsuper_size(const nas_fedsuper_t *fs)
{
    size_t n = 0;
    for (int i = 0; i < fs->nt; i++)
        n += fs->t[i].n;
    for (int i = 0; i < fs->nb; i++)
        n += fs->b[i].n;
    return n;
}

/* ---- secure aggregation's fixed layout ---- */

size_t nas_fedsuper_num_params(const nas_fedsuper_t *fs)
{
    size_t n = 0;
    for (int i = 0; i < fs->nt; i++)
        n += fs->t[i].n;
    return n;
}

static size_t layout_offset(const nas_fedsuper_t *fs, int id)
{
    size_t off = 0;
    for (int i = 0; i < id; i++)
        off += fs->t[i].n;
    return off;
}

void nas_fedsuper_layout_of(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, int64_t *offset,
                            int64_t (*shape)[4])
{
    for (int i = 0; i < p->nt; i++) {
        const fs_tensor_t *t = &fs->t[p->ids[i]];
        offset[i] = (int64_t)layout_offset(fs, p->ids[i]);
        for (int d = 0; d < 4; d++)
            shape[i][d] = d < t->nd ? t->shape[d] : 1;
    }
}

void nas_fedsuper_scatter(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *v, float *full)
{
    memset(full, 0, nas_fedsuper_num_params(fs) * sizeof *full);
    engine_net_t *net = engine_model_net(p->model);
    for (int i = 0; i < p->nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        const fs_tensor_t *t = &fs->t[p->ids[i]];
        float *dst = full + layout_offset(fs, p->ids[i]);
        const float *src = v + in->offset;
        NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], dst[o] = src[k]);
    }
}

static int ensure_pending(struct fs_tensor *t, err_t *err)
{
    if (!t->sum) {
        t->sum = calloc(t->n, sizeof *t->sum);
        t->cnt = calloc(t->n, sizeof *t->cnt);
        if (!t->sum || !t->cnt)
            return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
    }
    return 0;
}

int nas_fedsuper_add_sum(nas_fedsuper_t *fs, const nas_fedsuper_path_t *const *survivors, int n, const float *sum,
                         err_t *err)
{
    size_t np = nas_fedsuper_num_params(fs);
    for (size_t i = 0; i < np; i++)
        if (!isfinite(sum[i]))
            return err_set(err, FN_EINVAL, "federated supernet: value %zu of the sum is not finite", i);
    for (int j = 0; j < n; j++) {
        const nas_fedsuper_path_t *p = survivors[j];
        engine_net_t *net = engine_model_net(p->model);
        for (int i = 0; i < p->nt; i++) {
            const engine_param_info_t *in = engine_net_tensor(net, i);
            fs_tensor_t *t = &fs->t[p->ids[i]];
            int rc = ensure_pending(t, err);
            if (rc)
                return rc;
            NAS_SLICE_FOR(t, in->ndim, in->shape, &p->views[i], t->cnt[o] += 1);
        }
    }
    size_t off = 0;
    for (int i = 0; i < fs->nt; off += fs->t[i].n, i++) {
        fs_tensor_t *t = &fs->t[i];
        if (t->sum) /* elements no survivor reads hold only cancelled masks: their count stays 0 */
            for (size_t k = 0; k < t->n; k++)
                t->sum[k] += sum[off + k];
    }
    return 0;
}

int nas_fedsuper_add_stats_sum(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *sum, double count,
                               err_t *err)
{
    if (p->buf < 0)
        return 0;
    if (!(count > 0))
        return err_set(err, FN_EINVAL, "federated supernet: a statistics sum of %g sites", count);
    fs_buffers_t *b = &fs->b[p->buf];
    for (size_t k = 0; k < b->n; k++)
        if (!isfinite(sum[k]))
            return err_set(err, FN_EINVAL, "federated supernet: statistic %zu of the sum is not finite", k);
    if (!b->sum && !(b->sum = calloc(b->n, sizeof *b->sum)))
        return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
    for (size_t k = 0; k < b->n; k++)
        b->sum[k] += sum[k];
    b->cnt += count;
    return 0;
}

/* ---- the checkpoint block: "FNSUPER1", counts, then each tensor (key, nd, shape, values,
 * init flags) and each genome's statistics (hash, n, values); little-endian host layout ---- */

#define FS_MAGIC "FNSUPER1"

typedef struct wbuf {
    unsigned char *p;
    size_t len, cap;
} wbuf_t;

static int put(wbuf_t *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

int nas_fedsuper_save(const nas_fedsuper_t *fs, void **blob, size_t *len, err_t *err)
{
    wbuf_t b = {0};
    int64_t counts[2] = {fs->nt, fs->nb};
    int bad = put(&b, FS_MAGIC, 8) || put(&b, counts, sizeof counts);
    for (int i = 0; !bad && i < fs->nt; i++) {
        const fs_tensor_t *t = &fs->t[i];
        int64_t nd = t->nd;
        bad = put(&b, t->key, sizeof t->key) || put(&b, &nd, sizeof nd) || put(&b, t->shape, sizeof t->shape) ||
              put(&b, t->w, t->n * sizeof *t->w) || put(&b, t->init, t->n);
    }
    for (int i = 0; !bad && i < fs->nb; i++) {
        const fs_buffers_t *q = &fs->b[i];
        int64_t n = (int64_t)q->n;
        bad = put(&b, q->hash, sizeof q->hash) || put(&b, &n, sizeof n) || put(&b, q->v, q->n * sizeof *q->v);
    }
    if (bad) {
        free(b.p);
        return err_set(err, FN_ENOMEM, "federated supernet: out of memory");
    }
    *blob = b.p;
    *len = b.len;
    return 0;
}

typedef struct rbuf {
    const unsigned char *p;
    size_t len, at;
} rbuf_t;

static int get(rbuf_t *b, void *dst, size_t n)
{
    if (n > b->len - b->at)
        return -1;
    memcpy(dst, b->p + b->at, n);
    b->at += n;
    return 0;
}

int nas_fedsuper_load(nas_fedsuper_t *fs, const void *blob, size_t len, err_t *err)
{
    rbuf_t b = {blob, len, 0};
    char magic[8];
    int64_t counts[2];
    if (get(&b, magic, 8) || memcmp(magic, FS_MAGIC, 8) != 0 || get(&b, counts, sizeof counts) || counts[0] < 0 ||
        counts[1] < 0 || counts[0] > 1000000 || counts[1] > 1000000)
        return err_set(err, FN_EINVAL, "federated supernet: the checkpoint is not a supernet block (bad header)");
    clear_tensors(fs);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < counts[0]; i++) {
        fs_tensor_t t = {0};
        int64_t nd;
        if (get(&b, t.key, sizeof t.key) || get(&b, &nd, sizeof nd) || get(&b, t.shape, sizeof t.shape) || nd < 1 ||
            nd > 4 || memchr(t.key, '\0', sizeof t.key) == NULL) {
            rc = err_set(err, FN_EINVAL, "federated supernet: tensor %lld of the checkpoint is malformed", (long long)i);
            break;
        }
        t.nd = (int)nd;
        size_t n = 1;
        for (int d = 0; d < 4 && rc == 0; d++)
            if (t.shape[d] < 1 || t.shape[d] > (1 << 24) || (n *= (size_t)t.shape[d]) > ((size_t)1 << 31))
                rc = err_set(err, FN_EINVAL, "federated supernet: tensor %s of the checkpoint has a bad shape", t.key);
        if (rc)
            break;
        t.n = n;
        if (find_tensor(fs, t.key) >= 0) {
            rc = err_set(err, FN_EINVAL, "federated supernet: tensor %s appears twice in the checkpoint", t.key);
            break;
        }
        if (n * 5 > b.len - b.at) {
            rc = err_set(err, FN_EINVAL, "federated supernet: the checkpoint ends inside tensor %s", t.key);
            break;
        }
        int id;
        int64_t sh[4];
        memcpy(sh, t.shape, sizeof sh);
        if ((rc = tensor_get(fs, t.key, t.nd, sh, &id, err)) != 0)
            break;
        get(&b, fs->t[id].w, n * sizeof(float));
        get(&b, fs->t[id].init, n);
    }
    for (int64_t i = 0; rc == 0 && i < counts[1]; i++) {
        fs_buffers_t q = {0};
        int64_t n;
        if (get(&b, q.hash, sizeof q.hash) || get(&b, &n, sizeof n) || n < 1 || (size_t)n > (b.len - b.at) / 4 ||
            memchr(q.hash, '\0', sizeof q.hash) == NULL || find_buffers(fs, q.hash) >= 0) {
            rc = err_set(err, FN_EINVAL, "federated supernet: statistics %lld of the checkpoint are malformed",
                         (long long)i);
            break;
        }
        q.n = (size_t)n;
        if (fs->nb == fs->capb) {
            int cap = fs->capb ? 2 * fs->capb : 32;
            fs_buffers_t *nb = realloc(fs->b, (size_t)cap * sizeof *nb);
            if (!nb) {
                rc = err_set(err, FN_ENOMEM, "federated supernet: out of memory");
                break;
            }
            fs->b = nb;
            fs->capb = cap;
        }
        if (!(q.v = malloc(q.n * sizeof *q.v))) {
            rc = err_set(err, FN_ENOMEM, "federated supernet: out of memory");
            break;
        }
        get(&b, q.v, q.n * sizeof *q.v);
        fs->b[fs->nb++] = q;
    }
    if (rc == 0 && b.at != b.len)
        rc = err_set(err, FN_EINVAL, "federated supernet: %zu bytes after the end of the checkpoint", b.len - b.at);
    if (rc)
        clear_tensors(fs);
    return rc;
}
