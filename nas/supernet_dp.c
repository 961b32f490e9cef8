/* Data-parallel supernet training (nas/supernet_dp.h): the packing of a step's path gradients
 * into one flat buffer, the shard loop around the all-reduce, and the replicas' checksum. */
#include "nas/supernet_dp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "nas/supernet_internal.h"

/* A step's open paths and where each one's gradient sits in the flat buffer. */
typedef struct dp_step {
    int k;
    sn_path_t *p;
    size_t *base; /* path i's gradient: buf[base[i] .. base[i + 1]); the tail from base[k] */
    size_t n;     /* floats, tail included */
} dp_step_t;

#define TAIL_LOSS(st, i) ((st)->base[(st)->k] + (size_t)(i))
#define TAIL_CORRECT(st) ((st)->base[(st)->k] + (size_t)(st)->k)
#define TAIL_FAILED(st) ((st)->base[(st)->k] + (size_t)(st)->k + 1)

static void step_close(dp_step_t *st)
{
    for (int i = 0; i < st->k && st->p; i++)
        nas_sn_path_close(&st->p[i]);
    free(st->p);
    free(st->base);
    memset(st, 0, sizeof *st);
}

/* Opens the paths in order (a later path may grow a tensor an earlier one created, exactly as in
 * nas_supernet_train, where each path is loaded after the previous one's backward). */
static int step_open(nas_supernet_t *s, const nas_genome_t *g, int k, dp_step_t *st, err_t *err)
{
    memset(st, 0, sizeof *st);
    st->p = calloc((size_t)k, sizeof *st->p);
    st->base = calloc((size_t)k + 1, sizeof *st->base);
    if (!st->p || !st->base) {
        step_close(st);
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    }
    for (int i = 0; i < k; i++) {
        int rc = nas_sn_path_open(s, &g[i], &st->p[i], err);
        if (rc) {
            step_close(st);
            return rc;
        }
        st->k = i + 1;
        st->base[i + 1] = st->base[i] + engine_net_num_params(st->p[i].net);
    }
    st->n = st->base[k] + (size_t)k + 2;
    return 0;
}

/* buf's path gradients into the nets, then into the store (clipped, 1/k each) and one SGD step. */
static void step_unpack_apply(nas_supernet_t *s, dp_step_t *st, const float *buf, double lr)
{
    for (int i = 0; i < st->k; i++) {
        engine_net_t *net = st->p[i].net;
        memcpy(engine_net_grads(net), buf + st->base[i], engine_net_num_params(net) * sizeof(float));
        nas_sn_accumulate(s, net, st->p[i].ids, st->p[i].views, 1.0 / st->k);
    }
    nas_sn_apply(s, lr);
}

int nas_supernet_dp_layout(nas_supernet_t *s, const nas_genome_t *g, int k, nas_supernet_dp_seg_t *segs, int cap,
                           int *nseg, size_t *total, err_t *err)
{
    dp_step_t st;
    *nseg = 0;
    *total = 0;
    if (k < 1 || k > 64)
        return err_set(err, FN_EINVAL, "supernet: %d paths in a step; expected 1..64", k);
    int rc = step_open(s, g, k, &st, err);
    if (rc)
        return rc;
    for (int i = 0; i < k && rc == 0; i++) {
        engine_net_t *net = st.p[i].net;
        for (int t = 0; t < engine_net_num_tensors(net); t++) {
            if (*nseg == cap) {
                rc = err_set(err, FN_EINVAL, "supernet: the step has more than %d tensors", cap);
                break;
            }
            const engine_param_info_t *in = engine_net_tensor(net, t);
            size_t cnt = 1;
            for (int d = 0; d < in->ndim; d++)
                cnt *= (size_t)in->shape[d];
            segs[(*nseg)++] = (nas_supernet_dp_seg_t){
                .path = i, .store_id = st.p[i].ids[t], .offset = st.base[i] + in->offset, .count = cnt};
        }
    }
    *total = st.n;
    step_close(&st);
    return rc;
}

int nas_supernet_dp_apply(nas_supernet_t *s, const nas_genome_t *g, int k, const float *buf, size_t total, double lr,
                          err_t *err)
{
    dp_step_t st;
    if (k < 1 || k > 64 || !(lr >= 0))
        return err_set(err, FN_EINVAL, "supernet: a step needs 1..64 paths and lr >= 0");
    int rc = step_open(s, g, k, &st, err);
    if (rc)
        return rc;
    if (total != st.n)
        rc = err_set(err, FN_EINVAL, "supernet: a buffer of %zu floats for a step of %zu", total, st.n);
    else {
        step_unpack_apply(s, &st, buf, lr);
        s->steps++;
    }
    step_close(&st);
    return rc;
}

uint64_t nas_supernet_checksum(const nas_supernet_t *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
#define FNV(ptr, len)                                                                                                  \
    do {                                                                                                               \
        const unsigned char *b_ = (const unsigned char *)(ptr);                                                        \
        for (size_t i_ = 0; i_ < (size_t)(len); i_++)                                                                  \
            h = (h ^ b_[i_]) * 0x100000001b3ULL;                                                                       \
    } while (0)
    for (int t = 0; t < s->nt; t++) {
        const sn_tensor_t *x = &s->t[t];
        size_t n = 1;
        for (int d = 0; d < x->nd; d++)
            n *= (size_t)x->shape[d];
        FNV(x->key, strlen(x->key) + 1);
        FNV(&x->nd, sizeof x->nd);
        FNV(x->shape, sizeof x->shape);
        FNV(x->w, n * sizeof *x->w);
        FNV(x->v, n * sizeof *x->v);
        FNV(x->init, n);
    }
#undef FNV
    return h;
}

static uint64_t fnv_words(uint64_t h, const void *p, size_t bytes)
{
    const unsigned char *b = p;
    for (; bytes >= 4; bytes -= 4, b += 4) { /* word-wise: 4x faster than byte-wise FNV on the images */
        uint32_t w;
        memcpy(&w, b, 4);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (; bytes; bytes--, b++)
        h = (h ^ *b) * 0x100000001b3ULL;
    return h;
}

int nas_supernet_dp_fingerprint(const nas_supernet_t *s, const engine_source_t *src, const int *idx, int n,
                                double epochs, uint64_t *out, err_t *err)
{
    uint64_t h = nas_supernet_checksum(s);
    int shape[5] = {n, src->channels, src->height, src->width, src->num_classes};
    h = fnv_words(h, shape, sizeof shape);
    /* field by field: a struct's padding need not agree */
    const double od[5] = {epochs, s->o.lr, s->o.momentum, s->o.weight_decay, s->o.clip_norm};
    const int64_t oi[6] = {s->o.batch_size, (int64_t)s->o.seed, s->o.recal_batches, s->o.paths_per_step, s->steps,
                           (int64_t)s->epochs};
    h = fnv_words(h, od, sizeof od);
    h = fnv_words(h, oi, sizeof oi);
    if (n > 0)
        h = fnv_words(h, idx, (size_t)n * sizeof *idx);
    enum { CHUNK = 256 };
    const size_t feat = (size_t)src->channels * src->height * src->width;
    float *x = malloc(CHUNK * feat * sizeof *x);
    uint8_t *y = malloc(CHUNK);
    if (!x || !y) {
        free(x);
        free(y);
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    }
    for (int i = 0; i < n; i += CHUNK) {
        int m = n - i < CHUNK ? n - i : CHUNK;
        engine_source_gather(src, idx + i, m, x, y);
        h = fnv_words(h, x, (size_t)m * feat * sizeof *x);
        h = fnv_words(h, y, (size_t)m);
    }
    free(x);
    free(y);
    *out = h;
    return 0;
}

/* This process's shards of one global batch: forward and backward of every path on each, their
 * gradients weighted by the shard's share of the batch and summed into buf. A failure marks
 * TAIL_FAILED instead of returning, so that the step's all-reduce still happens everywhere. */
static void run_shards(nas_supernet_t *s, const engine_source_t *src, const int *rows, int bs,
                       const nas_supernet_dp_t *dp, dp_step_t *st, float *buf, float *x, uint8_t *y, err_t *err)
{
    memset(buf, 0, st->n * sizeof *buf);
    for (int j = dp->first; j < dp->first + dp->count; j++) {
        int lo = (int)((long long)j * bs / dp->shards), hi = (int)((long long)(j + 1) * bs / dp->shards);
        int nj = hi - lo;
        /* the share of the global mean: exactly 1 for one shard, 0.5 for two halves */
        float w = (float)((double)nj / bs);
        engine_source_gather(src, rows + lo, nj, x, y);
        int correct = 0;
        for (int i = 0; i < st->k; i++) {
            double loss = 0;
            if (nas_sn_path_grad(s, &st->p[i], x, y, nj, &loss, &correct, err)) {
                buf[TAIL_FAILED(st)] = 1;
                return;
            }
            const float *gr = engine_net_grads(st->p[i].net);
            float *b = buf + st->base[i];
            size_t np = engine_net_num_params(st->p[i].net);
            if (j == dp->first) /* w * g exactly, as one process with one shard computes it */
                for (size_t e = 0; e < np; e++)
                    b[e] = w * gr[e];
            else
                for (size_t e = 0; e < np; e++)
                    b[e] += w * gr[e];
            buf[TAIL_LOSS(st, i)] += (float)(w * loss);
        }
        buf[TAIL_CORRECT(st)] += (float)correct;
    }
}

int nas_supernet_dp_train(nas_supernet_t *s, const engine_source_t *src, const int *idx, int n, double epochs,
                          const nas_supernet_dp_t *dp, nas_supernet_stats_t *st, int *agreed, err_t *err)
{
    nas_supernet_stats_t z;
    int agreed_z;
    if (!st)
        st = &z;
    if (!agreed)
        agreed = &agreed_z;
    memset(st, 0, sizeof *st);
    *agreed = 0;
    /* the group shares n, epochs, the data and the options: their refusals are every process's */
    *agreed = 1;
    if (n < 1 || !(epochs > 0) || epochs > 1e4)
        return err_set(err, FN_EINVAL, "supernet: training needs samples and epochs in (0, 10000]");
    if (src->channels != s->sp.in_c || src->height != s->sp.in_h || src->width != s->sp.in_w)
        return err_set(err, FN_EINVAL, "supernet: the data's %dx%dx%d images are not the space's %dx%dx%d",
                       src->channels, src->height, src->width, s->sp.in_c, s->sp.in_h, s->sp.in_w);
    const int bs = s->o.batch_size < n ? s->o.batch_size : n;
    if (dp->shards > 1 && bs < 2 * dp->shards)
        return err_set(err, FN_EINVAL, "supernet: a batch of %d split over %d ranks leaves shards of fewer than 2 "
                       "samples (batch norm needs 2): raise nas.batch_size to >= %d or run fewer ranks",
                       bs, dp->shards, 2 * dp->shards);
    *agreed = 0;
    if (dp->shards < 1 || dp->count < 1 || dp->first < 0 || dp->first + dp->count > dp->shards ||
        (!dp->allreduce && dp->count != dp->shards))
        return err_set(err, FN_EINVAL, "supernet: shards [%d, %d) of %d%s", dp->first, dp->first + dp->count,
                       dp->shards, dp->allreduce ? "" : " without an all-reduce: one process must compute them all");
    const long per_epoch = n / bs; /* full batches only, as nas_supernet_train */
    long total = (long)ceil(epochs * (double)per_epoch);
    if (total < 1)
        total = 1;
    const int feat = src->channels * src->height * src->width, kp = s->o.paths_per_step;
    const int rows = (bs + dp->shards - 1) / dp->shards + 1; /* the largest shard */
    int *order = malloc((size_t)n * sizeof *order);
    float *x = malloc((size_t)rows * feat * sizeof *x), *buf = NULL;
    uint8_t *y = malloc((size_t)rows);
    nas_genome_t *g = calloc((size_t)kp, sizeof *g);
    size_t capbuf = 0;
    int rc = 0;
    if (!order || !x || !y || !g)
        rc = err_set(err, FN_ENOMEM, "supernet: out of memory");
    double t0 = fn_mono(), lsum = 0, correct = 0, seen = 0;
    for (long t = 0; t < total && rc == 0; t++) {
        long pos = t % per_epoch;
        if (pos == 0) {
            memcpy(order, idx, (size_t)n * sizeof *order);
            rng_t r;
            rng_seed(&r, rng_derive(s->o.seed, 0x73687566ULL + (uint64_t)s->epochs++));
            rng_shuffle_int(&r, order, n);
            lsum = correct = seen = 0;
        }
        double lr = 0.5 * s->o.lr * (1.0 + cos(3.14159265358979323846 * (double)t / (double)total));
        for (int i = 0; i < kp && rc == 0; i++)
            if ((rc = nas_genome_random(&s->sp, &s->draw, &g[i], err)) == 0)
                nas_sn_note_path(s, &g[i]);
        dp_step_t step;
        if (rc || (rc = step_open(s, g, kp, &step, err)))
            break;
        if (step.n > capbuf) {
            float *nb = realloc(buf, step.n * sizeof *buf);
            if (!nb) {
                step_close(&step);
                rc = err_set(err, FN_ENOMEM, "supernet: out of memory");
                break;
            }
            buf = nb;
            capbuf = step.n;
        }
        err_t mine = {0};
        run_shards(s, src, order + pos * bs, bs, dp, &step, buf, x, y, &mine);
        int failed_here = buf[TAIL_FAILED(&step)] > 0;
        if (dp->allreduce && (rc = dp->allreduce(dp->ctx, buf, step.n, err)) < 0) {
            step_close(&step);
            break;
        }
        if (buf[TAIL_FAILED(&step)] > 0) {
            *agreed = 1;
            if (failed_here)
                rc = err_set(err, mine.code ? mine.code : FN_EINVAL, "%s", mine.msg);
            else
                rc = err_set(err, FN_EINVAL, "supernet: step %ld: %.0f other rank(s) failed on their shard (see their "
                             "log)", s->steps, buf[TAIL_FAILED(&step)]);
            nas_sn_discard(s);
            step_close(&step);
            break;
        }
        step_unpack_apply(s, &step, buf, lr);
        s->steps++;
        for (int i = 0; i < kp; i++)
            lsum += (double)buf[TAIL_LOSS(&step, i)] * bs;
        correct += buf[TAIL_CORRECT(&step)];
        seen += (double)bs * kp;
        step_close(&step);
    }
    st->steps = s->steps;
    st->loss = seen > 0 ? lsum / seen : 0;
    st->accuracy = seen > 0 ? correct / seen : 0;
    st->seconds = fn_mono() - t0;
    st->paths = (int)s->nseen;
    free(order);
    free(x);
    free(y);
    free(g);
    free(buf);
    return rc;
}
