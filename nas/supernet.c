/* The supernet's weight store, the genome-to-key mapping and path training (nas/supernet.h);
 * scoring and batch-norm recalibration are in supernet_score.c. */
#include "nas/supernet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "nas/slice.h"
#include "nas/supernet_internal.h"

void nas_supernet_opts_default(nas_supernet_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->batch_size = 64;
    o->lr = 0.05;
    o->momentum = 0.9;
    o->seed = 1;
    o->recal_batches = NAS_RECAL_MIN_BATCHES;
    o->clip_norm = 5;
    o->paths_per_step = 1;
}

int nas_supernet_create(const nas_space_t *sp, const nas_supernet_opts_t *o, nas_supernet_t **out, err_t *err)
{
    *out = NULL;
    if (o->batch_size < 1 || o->batch_size > 65536)
        return err_set(err, FN_EINVAL, "supernet: batch size %d out of 1..65536", o->batch_size);
    if (!(o->lr > 0) || !(o->momentum >= 0 && o->momentum < 1) || !(o->weight_decay >= 0) || !(o->clip_norm >= 0))
        return err_set(err, FN_EINVAL, "supernet: expected lr > 0, momentum in [0, 1), weight decay >= 0, clip >= 0");
    if (o->paths_per_step < 1 || o->paths_per_step > 64)
        return err_set(err, FN_EINVAL, "supernet: %d paths per step; expected 1..64", o->paths_per_step);
    if (o->sampling != NAS_SUPERNET_SAMPLE_UNIFORM && o->sampling != NAS_SUPERNET_SAMPLE_FAIR)
        return err_set(err, FN_EINVAL, "supernet: sampling %d; expected uniform (0) or fair (1)", o->sampling);
    if (o->recal_batches < NAS_RECAL_MIN_BATCHES)
        return err_set(err, FN_EINVAL, "supernet: %d recalibration batches; specs/nas.md asks for at least %d",
                       o->recal_batches, NAS_RECAL_MIN_BATCHES);
    nas_supernet_t *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    s->sp = *sp;
    s->o = *o;
    rng_seed(&s->draw, rng_derive(o->seed, 0x70617468)); /* "path" */
    s->g = engine_graph_create((size_t)4 << 20, rng_derive(o->seed, 0x67726170));
    if (!s->g) {
        free(s);
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    }
    *out = s;
    return 0;
}

void nas_supernet_free(nas_supernet_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nt; i++) {
        free(s->t[i].w);
        free(s->t[i].v);
        free(s->t[i].g);
        free(s->t[i].hit);
        free(s->t[i].init);
    }
    free(s->t);
    free(s->seen);
    engine_graph_free(s->g);
    free(s);
}

int nas_supernet_num_tensors(const nas_supernet_t *s) { return s->nt; }
const char *nas_supernet_tensor_key(const nas_supernet_t *s, int id)
{
    return id >= 0 && id < s->nt ? s->t[id].key : NULL;
}
const float *nas_supernet_tensor(const nas_supernet_t *s, int id, int *ndim, int64_t shape[4])
{
    if (id < 0 || id >= s->nt)
        return NULL;
    *ndim = s->t[id].nd;
    for (int i = 0; i < 4; i++)
        shape[i] = i < s->t[id].nd ? s->t[id].shape[i] : 1;
    return s->t[id].w;
}

int nas_supernet_find(const nas_supernet_t *s, const char *key)
{
    for (int i = 0; i < s->nt; i++)
        if (strcmp(s->t[i].key, key) == 0)
            return i;
    return -1;
}

/* ---- keys: which choice each tensor of a decoded genome belongs to ---- */

static int is_conv_op(int op)
{
    return op == NAS_OP_CONV3 || op == NAS_OP_CONV5 || op == NAS_OP_SEP3 || op == NAS_OP_SEP5 || op == NAS_OP_DIL3;
}

static int is_sep_op(int op) { return op == NAS_OP_SEP3 || op == NAS_OP_SEP5; }

/* The stored kernel of a convolution family: 5x5 when the space has a 5x5 or dilated op of the
 * family (a 3x3 reads its centre, the dilated 3x3 its even lattice), else 3x3. */
static int family_frame(const nas_space_t *sp, int sep)
{
    for (int i = 0; i < sp->nops; i++) {
        int op = (int)sp->ops[i];
        if (sep ? op == NAS_OP_SEP5 : (op == NAS_OP_CONV5 || op == NAS_OP_DIL3))
            return 5;
    }
    return 3;
}

/* The decoded model's top-level layers, each with the key prefix of the choice it belongs to
 * and, for its kernel, the view into the stored one (kv: offset, step; 0, 1 when leading).
 * This follows nas/decode.c's layout layer for layer; the total is checked against the decoded
 * list, so a change there that this misses fails loudly instead of sharing the wrong weights. */
static int top_prefixes(const nas_space_t *sp, const nas_genome_t *c, int njson, char (*pre)[NAS_SUPERNET_KEY_LEN],
                        int (*kv)[2], err_t *err)
{
    int j = 0, convs = 0;
    for (int k = 0; k < njson; k++)
        kv[k][0] = 0, kv[k][1] = 1;
    if (sp->kind == NAS_SPACE_MACRO) {
        int run = 0; /* parameter-free layers since the last convolution */
        for (int i = 0; i < c->nlayers; i++) {
            const nas_macro_layer_t *L = &c->layer[i];
            int id = L->op == NAS_OP_IDENTITY, cv = is_conv_op(L->op), sep = is_sep_op(L->op);
            int cnt = sep ? 2 : id ? 0 : 1;
            cnt += (!id && L->bn) + cv + L->reduce;
            if (j + cnt > njson)
                break;
            for (int k = 0; k < cnt; k++) {
                const char *role = k == 0                   ? (sep ? "dw" : "conv")
                                   : k == 1 && sep          ? "pw"
                                   : k == 1 + sep && L->bn ? "bn"
                                                            : "x"; /* relu, reductions: no tensors */
                if (cv)
                    snprintf(pre[j + k], NAS_SUPERNET_KEY_LEN, "m%d.%s.%s", convs, sep ? "sep" : "conv", role);
                else /* a pool's only tensors are its batch norm's */
                    snprintf(pre[j + k], NAS_SUPERNET_KEY_LEN, "m%d.p%d.%s.%s", convs, run, nas_macro_op_name(L->op),
                             k == 1 && L->bn ? "bn" : "x");
            }
            if (cv) {
                int frame = family_frame(sp, sep), ks = L->op == NAS_OP_CONV5 || L->op == NAS_OP_SEP5 ? 5 : 3;
                kv[j][0] = L->op == NAS_OP_DIL3 ? 0 : (frame - ks) / 2;
                kv[j][1] = L->op == NAS_OP_DIL3 && frame == 5 ? 2 : 1;
            }
            j += cnt;
            if (cv) {
                convs++;
                run = 0;
            } else if (!id) {
                run++;
            }
        }
    } else {
        snprintf(pre[j++], NAS_SUPERNET_KEY_LEN, "stem.0");
        snprintf(pre[j++], NAS_SUPERNET_KEY_LEN, "stem.1");
        for (int st = 0; st < sp->stages && j < njson; st++) {
            if (st > 0)
                snprintf(pre[j++], NAS_SUPERNET_KEY_LEN, "s%d.res", st);
            for (int n = 0; n < c->cells && j < njson; n++)
                snprintf(pre[j++], NAS_SUPERNET_KEY_LEN, "s%d.c%d", st, n);
        }
    }
    int tail = sp->kind == NAS_SPACE_MACRO ? 2 : 4; /* [bn, relu,] global_avgpool, linear */
    if (j + tail != njson)
        return err_set(err, FN_EINVAL, "supernet: the decoded model has %d layers where the supernet expects %d "
                       "(nas/decode.c and nas/supernet.c disagree)", njson, j + tail);
    for (int k = 0; k < tail; k++) {
        if (sp->kind == NAS_SPACE_MACRO)
            snprintf(pre[j + k], NAS_SUPERNET_KEY_LEN, "tail.c%d.%d", convs, k);
        else
            snprintf(pre[j + k], NAS_SUPERNET_KEY_LEN, "tail.%d", k);
    }
    return 0;
}

int nas_sn_keys(const nas_space_t *sp, const nas_genome_t *canon, const json_t *arch, const engine_net_t *net,
            char (*keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t *views, err_t *err)
{
    const json_t *layers = json_object_get(arch, "layers");
    int njson = (int)json_array_size(layers);
    char(*pre)[NAS_SUPERNET_KEY_LEN] = calloc((size_t)(njson > 0 ? njson : 1), sizeof *pre);
    int(*kv)[2] = calloc((size_t)(njson > 0 ? njson : 1), sizeof *kv);
    if (!pre || !kv) {
        free(pre);
        free(kv);
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    }
    int rc = top_prefixes(sp, canon, njson, pre, kv, err);
    for (int i = 0; rc == 0 && i < engine_net_num_tensors(net); i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        const char *name = in->name;
        int j = -1, used = 0;
        if (sscanf(name, "model.layers[%d]%n", &j, &used) != 1 || used == 0 || j < 0 || j >= njson) {
            rc = err_set(err, FN_EINVAL, "supernet: unexpected tensor name \"%s\"", name);
            break;
        }
        const char *rest = name + used;
        int k = -1, u2 = 0;
        if (sp->kind == NAS_SPACE_CELL && sscanf(rest, ".edges[%d]%n", &k, &u2) == 1 && u2 > 0) {
            /* the cell's JSON lists only the live edges, in canonical edge order */
            int e = 0, seen = -1;
            for (; e < NAS_CELL_EDGES; e++)
                if (canon->edge[e] != NAS_EDGE_NONE && ++seen == k)
                    break;
            if (e == NAS_CELL_EDGES) {
                rc = err_set(err, FN_EINVAL, "supernet: tensor \"%s\" names edge %d of a cell with fewer", name, k);
                break;
            }
            snprintf(keys[i], NAS_SUPERNET_KEY_LEN, "%s.e%d.%s%s", pre[j], e, nas_edge_op_name(canon->edge[e]),
                     rest + u2);
        } else {
            snprintf(keys[i], NAS_SUPERNET_KEY_LEN, "%s%s", pre[j], rest);
        }
        if (views) {
            nas_slice_view_leading(&views[i]);
            if (in->ndim == 4 && strcmp(rest, ".weight") == 0)
                for (int d = 2; d < 4; d++) {
                    views[i].off[d] = kv[j][0];
                    views[i].step[d] = kv[j][1];
                }
        }
    }
    free(pre);
    free(kv);
    return rc;
}

void nas_sn_path_genome(const nas_supernet_t *s, const nas_genome_t *g, nas_genome_t *out)
{
    *out = *g;
    if (s->sp.kind == NAS_SPACE_MACRO)
        for (int i = 0; i < out->nlayers; i++)
            if (is_conv_op(out->layer[i].op))
                out->layer[i].bn = 1;
}

int nas_sn_build(const nas_supernet_t *s, const nas_genome_t *g, json_t **arch, engine_net_t **net,
             char (**keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t **views, err_t *err)
{
    *net = NULL;
    *keys = NULL;
    *views = NULL;
    nas_genome_t c;
    int rc = nas_genome_decode(&s->sp, g, arch, err);
    if (rc)
        return err_wrap(err, "supernet: ");
    nas_genome_canonical(&s->sp, g, &c);
    rc = engine_net_create(*arch, s->sp.in_c, s->sp.in_h, s->sp.in_w, s->sp.classes, net, err);
    if (rc) {
        json_decref(*arch);
        *arch = NULL;
        return err_wrap(err, "supernet: the decoded genome does not build: ");
    }
    int nt = engine_net_num_tensors(*net);
    *keys = calloc((size_t)(nt > 0 ? nt : 1), sizeof **keys);
    *views = calloc((size_t)(nt > 0 ? nt : 1), sizeof **views);
    if (!*keys || !*views)
        rc = err_set(err, FN_ENOMEM, "supernet: out of memory");
    else
        rc = nas_sn_keys(&s->sp, &c, *arch, *net, *keys, *views, err);
    if (rc) {
        free(*keys);
        *keys = NULL;
        free(*views);
        *views = NULL;
        engine_net_free(*net);
        *net = NULL;
        json_decref(*arch);
        *arch = NULL;
    }
    return rc;
}

int nas_supernet_keys(const nas_supernet_t *s, const nas_genome_t *g, char (*keys)[NAS_SUPERNET_KEY_LEN],
                      nas_slice_view_t *views, int cap, int *count, err_t *err)
{
    json_t *arch;
    engine_net_t *net;
    char(*k)[NAS_SUPERNET_KEY_LEN];
    nas_slice_view_t *v;
    int rc = nas_sn_build(s, g, &arch, &net, &k, &v, err);
    if (rc)
        return rc;
    int nt = engine_net_num_tensors(net);
    *count = nt;
    if (nt > cap) {
        rc = err_set(err, FN_EINVAL, "supernet: %d tensors do not fit %d keys", nt, cap);
    } else {
        memcpy(keys, k, (size_t)nt * sizeof *k);
        if (views)
            memcpy(views, v, (size_t)nt * sizeof *v);
    }
    free(k);
    free(v);
    engine_net_free(net);
    json_decref(arch);
    return rc;
}

/* ---- the store ---- */

static size_t numel(int nd, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= (size_t)shape[i];
    return n;
}

/* The stored tensor for key, created or grown so that it covers shape: a grown tensor keeps its
 * elements at the same multi-indices (the leading slice), and new elements are uninitialised. */
static int store_get(nas_supernet_t *s, const char *key, int nd, const int64_t *shape, int *id, err_t *err)
{
    int i = nas_supernet_find(s, key);
    if (i < 0) {
        if (s->nt == s->cap) {
            int cap = s->cap ? 2 * s->cap : 64;
            sn_tensor_t *t = realloc(s->t, (size_t)cap * sizeof *t);
            if (!t)
                return err_set(err, FN_ENOMEM, "supernet: out of memory");
            s->t = t;
            s->cap = cap;
        }
        i = s->nt++;
        sn_tensor_t *t = &s->t[i];
        memset(t, 0, sizeof *t);
        snprintf(t->key, sizeof t->key, "%s", key);
        t->nd = nd;
    }
    sn_tensor_t *t = &s->t[i];
    if (t->nd != nd)
        return err_set(err, FN_EINVAL, "supernet: tensor %s has %d dimensions here and %d in the store", key, nd, t->nd);
    int grow = t->w == NULL;
    int64_t ns[4] = {1, 1, 1, 1};
    for (int d = 0; d < nd; d++) {
        ns[d] = shape[d] > t->shape[d] ? shape[d] : t->shape[d];
        grow |= ns[d] != t->shape[d];
    }
    if (grow) {
        size_t n = numel(nd, ns);
        float *w = calloc(n, sizeof *w), *v = calloc(n, sizeof *v), *gs = calloc(n, sizeof *gs);
        uint8_t *in = calloc(n, 1), *hit = calloc(n, 1);
        if (!w || !v || !gs || !in || !hit) {
            free(w);
            free(v);
            free(gs);
            free(in);
            free(hit);
            return err_set(err, FN_ENOMEM, "supernet: out of memory");
        }
        if (t->w) {
            /* old element (a,b,c,d) keeps its multi-index in the larger shape */
            int64_t os[4] = {1, 1, 1, 1}, q[4] = {1, 1, 1, 1};
            for (int d = 0; d < nd; d++) {
                os[d] = t->shape[d];
                q[d] = ns[d];
            }
            size_t k = 0;
            for (int64_t a = 0; a < os[0]; a++)
                for (int64_t b = 0; b < os[1]; b++)
                    for (int64_t c = 0; c < os[2]; c++)
                        for (int64_t e = 0; e < os[3]; e++, k++) {
                            size_t o = (size_t)(((a * q[1] + b) * q[2] + c) * q[3] + e);
                            w[o] = t->w[k];
                            v[o] = t->v[k];
                            gs[o] = t->g[k];
                            hit[o] = t->hit[k];
                            in[o] = t->init[k];
                        }
        }
        free(t->w);
        free(t->v);
        free(t->g);
        free(t->hit);
        free(t->init);
        t->w = w;
        t->v = v;
        t->g = gs;
        t->hit = hit;
        t->init = in;
        for (int d = 0; d < nd; d++)
            t->shape[d] = ns[d];
    }
    *id = i;
    return 0;
}


int nas_sn_load(nas_supernet_t *s, engine_net_t *net, char (*keys)[NAS_SUPERNET_KEY_LEN], const nas_slice_view_t *views,
            int persist, uint64_t init_seed, int *ids, err_t *err)
{
    int nt = engine_net_num_tensors(net);
    float *p = engine_net_params(net);
    int need_init = !persist; /* scoring: always, so a score never depends on what ran before */
    for (int i = 0; i < nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        ids[i] = -1;
        if (persist) {
            int64_t ext[4];
            nas_slice_extent(in->ndim, in->shape, &views[i], ext);
            int rc = store_get(s, keys[i], in->ndim, ext, &ids[i], err);
            if (rc)
                return rc;
            const sn_tensor_t *t = &s->t[ids[i]];
            NAS_SLICE_FOR(t, in->ndim, in->shape, &views[i], need_init |= !t->init[o]);
        } else {
            ids[i] = nas_supernet_find(s, keys[i]);
        }
    }
    if (need_init)
        engine_net_init(net, init_seed);
    for (int i = 0; i < nt; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        float *dst = p + in->offset;
        if (ids[i] < 0)
            continue;
        sn_tensor_t *t = &s->t[ids[i]];
        if (!persist) {
            int64_t ext[4];
            nas_slice_extent(in->ndim, in->shape, &views[i], ext);
            int fits = t->nd == in->ndim;
            for (int d = 0; fits && d < in->ndim; d++)
                fits = ext[d] <= t->shape[d];
            if (!fits) /* a path wider than any trained one: keep the model's own values */
                continue;
        }
        NAS_SLICE_FOR(t, in->ndim, in->shape, &views[i], {
            if (t->init[o])
                dst[k] = t->w[o];
            else if (persist) {
                t->w[o] = dst[k];
                t->init[o] = 1;
            }
        });
    }
    return 0;
}

/* Adds `weight` times the path's (clipped) gradient to the store's step gradient, on the path's
 * slices only, and marks them reached. */
void nas_sn_accumulate(nas_supernet_t *s, engine_net_t *net, const int *ids, const nas_slice_view_t *views,
                   double weight)
{
    const float *gr = engine_net_grads(net);
    float scale = 1;
    if (s->o.clip_norm > 0) {
        /* one path's gradient can be huge (a deep path without batch norm, on weights other paths
         * tuned): clipping keeps it from wrecking the weights every other path shares */
        double sq = 0;
        for (size_t k = 0; k < engine_net_num_params(net); k++)
            sq += (double)gr[k] * gr[k];
        if (sqrt(sq) > s->o.clip_norm)
            scale = (float)(s->o.clip_norm / sqrt(sq));
    }
    scale *= (float)weight;
    for (int i = 0; i < engine_net_num_tensors(net); i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        const float *gi = gr + in->offset;
        sn_tensor_t *t = &s->t[ids[i]];
        NAS_SLICE_FOR(t, in->ndim, in->shape, &views[i], {
            t->g[o] += scale * gi[k];
            t->hit[o] = 1;
        });
    }
}

/* Momentum SGD on the elements this step's paths reached: the velocity of an element no path
 * used is untouched, as PyTorch's SGD leaves a parameter without a gradient alone. */
void nas_sn_apply(nas_supernet_t *s, double lr)
{
    const float mu = (float)s->o.momentum, wd = (float)s->o.weight_decay, a = (float)lr;
    for (int i = 0; i < s->nt; i++) {
        sn_tensor_t *t = &s->t[i];
        size_t n = numel(t->nd, t->shape);
        for (size_t o = 0; o < n; o++)
            if (t->hit[o]) {
                float gk = t->g[o] + wd * t->w[o];
                t->v[o] = mu * t->v[o] + gk;
                t->w[o] -= a * t->v[o];
                t->g[o] = 0;
                t->hit[o] = 0;
            }
    }
}

static int argmax(const float *z, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (z[i] > z[b])
            b = i;
    return b;
}

/* Drops a failed step's partial gradient, so that the next step starts clean. */
void nas_sn_discard(nas_supernet_t *s)
{
    for (int t = 0; t < s->nt; t++) {
        size_t n = numel(s->t[t].nd, s->t[t].shape);
        memset(s->t[t].g, 0, n * sizeof(float));
        memset(s->t[t].hit, 0, n);
    }
}

void nas_sn_path_close(sn_path_t *p)
{
    free(p->ids);
    free(p->keys);
    free(p->views);
    engine_net_free(p->net);
    json_decref(p->arch);
    memset(p, 0, sizeof *p);
}

int nas_sn_path_open(nas_supernet_t *s, const nas_genome_t *g, sn_path_t *p, err_t *err)
{
    memset(p, 0, sizeof *p);
    nas_genome_t twin;
    nas_sn_path_genome(s, g, &twin);
    int rc = nas_sn_build(s, &twin, &p->arch, &p->net, &p->keys, &p->views, err);
    if (rc)
        return rc;
    int nt = engine_net_num_tensors(p->net);
    p->ids = calloc((size_t)(nt > 0 ? nt : 1), sizeof *p->ids);
    if (!p->ids)
        rc = err_set(err, FN_ENOMEM, "supernet: out of memory");
    if (rc == 0)
        rc = nas_sn_load(s, p->net, p->keys, p->views, 1, rng_derive(s->o.seed, 0x696e6974ULL + (uint64_t)s->steps),
                     p->ids, err);
    if (rc)
        nas_sn_path_close(p);
    return rc;
}

int nas_sn_path_grad(nas_supernet_t *s, sn_path_t *p, const float *x, const uint8_t *y, int nb, double *loss,
                 int *correct, err_t *err)
{
    engine_net_t *net = p->net;
    engine_graph_t *gr = s->g;
    memset(engine_net_grads(net), 0, engine_net_num_params(net) * sizeof(float));
    engine_graph_reset(gr);
    engine_graph_set_grad(gr, 1);
    int64_t xs[4] = {nb, s->sp.in_c, s->sp.in_h, s->sp.in_w}, ys[1] = {nb};
    engine_tensor_t *xt = engine_graph_view(gr, (void *)x, NULL, ENGINE_F32, 4, xs);
    engine_tensor_t *logits = engine_net_forward(net, gr, xt, 1);
    engine_tensor_t *yt = engine_graph_view(gr, (void *)y, NULL, ENGINE_U8, 1, ys);
    engine_tensor_t *l = engine_softmax_xent(gr, logits, yt, 0);
    int rc = engine_graph_error(gr, err);
    if (rc == 0) {
        double lv = ((const float *)l->data)[0];
        if (loss)
            *loss = lv;
        if (correct)
            for (int r = 0; r < nb; r++)
                *correct += argmax((const float *)logits->data + (size_t)r * s->sp.classes, s->sp.classes) == y[r];
        if (!isfinite(lv))
            rc = err_set(err, FN_EINVAL, "supernet: step %ld: the loss is %g", s->steps, lv);
    }
    if (rc == 0)
        rc = engine_graph_backward(gr, l, NULL, err);
    return rc;
}

/* One path's forward and backward on the batch; its gradient, times weight, joins the step's. */
static int path_grad(nas_supernet_t *s, const nas_genome_t *g, const float *x, const uint8_t *y, int nb,
                     double weight, double *loss, int *correct, err_t *err)
{
    sn_path_t p;
    int rc = nas_sn_path_open(s, g, &p, err);
    if (rc)
        return rc;
    rc = nas_sn_path_grad(s, &p, x, y, nb, loss, correct, err);
    if (rc == 0)
        nas_sn_accumulate(s, p.net, p.ids, p.views, weight);
    nas_sn_path_close(&p);
    return rc;
}

int nas_supernet_step(nas_supernet_t *s, const nas_genome_t *g, const float *x, const uint8_t *y, int nb, double lr,
                      double *loss, err_t *err)
{
    if (nb < 1 || !(lr >= 0))
        return err_set(err, FN_EINVAL, "supernet: a step needs a batch of >= 1 and lr >= 0");
    int rc = path_grad(s, g, x, y, nb, 1.0, loss, NULL, err);
    if (rc) {
        nas_sn_discard(s);
        return rc;
    }
    nas_sn_apply(s, lr);
    s->steps++;
    return 0;
}

int nas_supernet_step_paths(nas_supernet_t *s, const nas_genome_t *g, int k, const float *x, const uint8_t *y, int nb,
                            double lr, double *loss, err_t *err)
{
    if (nb < 1 || !(lr >= 0) || k < 1)
        return err_set(err, FN_EINVAL, "supernet: a step needs >= 1 path, a batch of >= 1 and lr >= 0");
    double sum = 0;
    for (int i = 0; i < k; i++) {
        double l = 0;
        int rc = path_grad(s, &g[i], x, y, nb, 1.0 / k, &l, NULL, err);
        if (rc) {
            nas_sn_discard(s);
            return rc;
        }
        sum += l;
    }
    if (loss)
        *loss = sum / k;
    nas_sn_apply(s, lr);
    s->steps++;
    return 0;
}

/* Distinct canonical paths drawn, for the stats: a set of the hashes' first 64 bits. */
void nas_sn_note_path(nas_supernet_t *s, const nas_genome_t *g)
{
    char h[NAS_HASH_LEN];
    nas_genome_hash(&s->sp, g, h);
    uint64_t key = 0;
    for (int i = 0; i < 16; i++)
        key = key << 4 | (uint64_t)(h[i] <= '9' ? h[i] - '0' : h[i] - 'a' + 10);
    key |= 1; /* 0 marks an empty slot */
    if (2 * (s->nseen + 1) > s->capseen) {
        size_t cap = s->capseen ? 2 * s->capseen : 1024;
        uint64_t *t = calloc(cap, sizeof *t);
        if (!t)
            return;
        for (size_t i = 0; i < s->capseen; i++)
            if (s->seen[i]) {
                size_t j = s->seen[i] & (cap - 1);
                while (t[j])
                    j = (j + 1) & (cap - 1);
                t[j] = s->seen[i];
            }
        free(s->seen);
        s->seen = t;
        s->capseen = cap;
    }
    size_t j = key & (s->capseen - 1);
    while (s->seen[j] && s->seen[j] != key)
        j = (j + 1) & (s->capseen - 1);
    if (!s->seen[j]) {
        s->seen[j] = key;
        s->nseen++;
    }
}

int nas_supernet_train(nas_supernet_t *s, const engine_source_t *src, const int *idx, int n, double epochs,
                       nas_supernet_stats_t *st, err_t *err)
{
    nas_supernet_stats_t z;
    if (!st)
        st = &z;
    memset(st, 0, sizeof *st);
    if (n < 1 || !(epochs > 0) || epochs > 1e4)
        return err_set(err, FN_EINVAL, "supernet: training needs samples and epochs in (0, 10000]");
    if (src->channels != s->sp.in_c || src->height != s->sp.in_h || src->width != s->sp.in_w)
        return err_set(err, FN_EINVAL, "supernet: the data's %dx%dx%d images are not the space's %dx%dx%d",
                       src->channels, src->height, src->width, s->sp.in_c, s->sp.in_h, s->sp.in_w);
    const int bs = s->o.batch_size < n ? s->o.batch_size : n;
    const long per_epoch = n / bs; /* full batches only: batch norm sees bs samples every step */
    long total = (long)ceil(epochs * (double)per_epoch);
    if (total < 1)
        total = 1;
    const int feat = src->channels * src->height * src->width;
    int *order = malloc((size_t)n * sizeof *order);
    float *x = malloc((size_t)bs * feat * sizeof *x);
    uint8_t *y = malloc((size_t)bs);
    if (!order || !x || !y) {
        free(order);
        free(x);
        free(y);
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    }
    int rc = 0;
    const int kp = s->o.paths_per_step;
    double t0 = fn_mono(), lsum = 0;
    int correct = 0, seen = 0;
    for (long t = 0; t < total && rc == 0; t++) {
        long pos = t % per_epoch;
        if (pos == 0) {
            memcpy(order, idx, (size_t)n * sizeof *order);
            rng_t r;
            rng_seed(&r, rng_derive(s->o.seed, 0x73687566ULL + (uint64_t)s->epochs++));
            rng_shuffle_int(&r, order, n);
            lsum = 0;
            correct = seen = 0;
        }
        engine_source_gather(src, order + pos * bs, bs, x, y);
        double lr = 0.5 * s->o.lr * (1.0 + cos(3.14159265358979323846 * (double)t / (double)total));
        /* paths_per_step uniform paths on this batch, their gradients averaged into one update */
        for (int k = 0; k < kp && rc == 0; k++) {
            nas_genome_t g;
            rc = nas_supernet_draw(s, &g, err);
            if (rc)
                break;
            nas_sn_note_path(s, &g);
            double loss = 0;
            rc = path_grad(s, &g, x, y, bs, 1.0 / kp, &loss, &correct, err);
            lsum += loss * bs;
            seen += bs;
        }
        if (rc == 0) {
            nas_sn_apply(s, lr);
            s->steps++;
        } else {
            nas_sn_discard(s);
        }
    }
    st->steps = s->steps;
    st->loss = seen ? lsum / seen : 0;
    st->accuracy = seen ? (double)correct / seen : 0;
    st->seconds = fn_mono() - t0;
    st->paths = (int)s->nseen;
    free(order);
    free(x);
    free(y);
    return rc;
}
