#include "nas/genome.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "engine/nn.h"

/* Edge e of the cell joins node edge_from[e] to edge_to[e] (config.h order). */
static const int edge_from[NAS_CELL_EDGES] = {0, 0, 1, 0, 1, 2};
static const int edge_to[NAS_CELL_EDGES] = {1, 2, 2, 3, 3, 3};

static int in_list(const int *vals, int n, int v)
{
    for (int i = 0; i < n; i++)
        if (vals[i] == v)
            return 1;
    return 0;
}

static int op_allowed(const nas_space_t *sp, int op)
{
    for (int i = 0; i < sp->nops; i++)
        if ((int)sp->ops[i] == op)
            return 1;
    return 0;
}

static int edge_allowed(const nas_space_t *sp, int op)
{
    for (int i = 0; i < sp->nedge_ops; i++)
        if ((int)sp->edge_ops[i] == op)
            return 1;
    return 0;
}

/* Which edges lie on a path from node 0 to the output: live[e] = 1. Returns the count. */
static int cell_live_edges(const int *edge, int *live)
{
    int fwd[NAS_CELL_NODES] = {1, 0, 0, 0}, bwd[NAS_CELL_NODES] = {0, 0, 0, 1};
    /* edges are in topological order of their target, so one pass forward ... */
    for (int e = 0; e < NAS_CELL_EDGES; e++)
        if (edge[e] != NAS_EDGE_NONE && fwd[edge_from[e]])
            fwd[edge_to[e]] = 1;
    /* ... and one pass backward settle reachability */
    for (int e = NAS_CELL_EDGES - 1; e >= 0; e--)
        if (edge[e] != NAS_EDGE_NONE && bwd[edge_to[e]])
            bwd[edge_from[e]] = 1;
    int n = 0;
    for (int e = 0; e < NAS_CELL_EDGES; e++) {
        live[e] = edge[e] != NAS_EDGE_NONE && fwd[edge_from[e]] && bwd[edge_to[e]];
        n += live[e];
    }
    return n;
}

int nas_genome_validate(const nas_space_t *sp, const nas_genome_t *g, err_t *err)
{
    if (g->kind != sp->kind)
        return err_set(err, FN_EINVAL, "genome: a %s genome for a %s space", g->kind == NAS_SPACE_CELL ? "cell" : "macro",
                       sp->kind == NAS_SPACE_CELL ? "cell" : "macro");
    if (sp->kind == NAS_SPACE_MACRO) {
        if (g->nlayers != sp->layers)
            return err_set(err, FN_EINVAL, "genome: %d layers, the space has %d", g->nlayers, sp->layers);
        int red = 0;
        for (int i = 0; i < g->nlayers; i++) {
            const nas_macro_layer_t *L = &g->layer[i];
            if (!op_allowed(sp, L->op))
                return err_set(err, FN_EINVAL, "genome: layer %d: operation %d is not in the space", i, L->op);
            if (!in_list(sp->widths, sp->nwidths, L->width))
                return err_set(err, FN_EINVAL, "genome: layer %d: width %d is not in the space", i, L->width);
            if (L->bn != 0 && L->bn != 1)
                return err_set(err, FN_EINVAL, "genome: layer %d: bn must be 0 or 1", i);
            if ((sp->batchnorm == NAS_BN_ON && !L->bn) || (sp->batchnorm == NAS_BN_OFF && L->bn))
                return err_set(err, FN_EINVAL, "genome: layer %d: batch norm is fixed %s in this space", i,
                               sp->batchnorm == NAS_BN_ON ? "on" : "off");
            if (L->reduce != 0 && L->reduce != 1)
                return err_set(err, FN_EINVAL, "genome: layer %d: reduce must be 0 or 1", i);
            red += L->reduce;
        }
        if (red != sp->reductions)
            return err_set(err, FN_EINVAL, "genome: %d reductions, the space places %d", red, sp->reductions);
        int h = sp->in_h, w = sp->in_w;
        for (int i = 0; i < red; i++) {
            if (h < 2 || w < 2)
                return err_set(err, FN_EINVAL, "genome: reduction %d would shrink a %dx%d image below 1x1", i + 1, h,
                               w);
            h /= 2;
            w /= 2;
        }
        return 0;
    }
    for (int e = 0; e < NAS_CELL_EDGES; e++)
        if (!edge_allowed(sp, g->edge[e]))
            return err_set(err, FN_EINVAL, "genome: edge %d-%d: operation %d is not in the space", edge_from[e],
                           edge_to[e], g->edge[e]);
    if (!in_list(sp->cells, sp->ncells, g->cells))
        return err_set(err, FN_EINVAL, "genome: %d cells per stage is not in the space", g->cells);
    if (!in_list(sp->widths, sp->nwidths, g->width))
        return err_set(err, FN_EINVAL, "genome: width %d is not in the space", g->width);
    int live[NAS_CELL_EDGES];
    if (cell_live_edges(g->edge, live) == 0)
        return err_set(err, FN_EINVAL, "genome: the cell has no path from its input to its output");
    return 0;
}

/* ---- canonical form and hash ---- */

static int is_pool(int op) { return op == NAS_OP_MAXPOOL3 || op == NAS_OP_AVGPOOL3; }

void nas_genome_canonical(const nas_space_t *sp, const nas_genome_t *g, nas_genome_t *out)
{
    nas_genome_t c;
    memset(&c, 0, sizeof c);
    c.kind = g->kind;
    if (g->kind == NAS_SPACE_MACRO) {
        /* An identity layer is no computation: its reductions belong to the layer before it
         * (or to one leading identity layer), which is where they act on the same tensor. */
        for (int i = 0; i < g->nlayers && i < NAS_MAX_LAYERS; i++) {
            const nas_macro_layer_t *L = &g->layer[i];
            if (L->op == NAS_OP_IDENTITY) {
                if (L->reduce <= 0)
                    continue;
                if (c.nlayers == 0) {
                    c.layer[0].op = NAS_OP_IDENTITY;
                    c.nlayers = 1;
                }
                c.layer[c.nlayers - 1].reduce += L->reduce;
                continue;
            }
            nas_macro_layer_t *o = &c.layer[c.nlayers++];
            o->op = L->op;
            o->width = is_pool(L->op) ? 0 : L->width;
            o->bn = L->bn ? 1 : 0;
            o->reduce = L->reduce > 0 ? L->reduce : 0;
        }
        *out = c;
        return;
    }
    c.cells = g->cells;
    c.width = g->width;
    int live[NAS_CELL_EDGES];
    cell_live_edges(g->edge, live);
    for (int e = 0; e < NAS_CELL_EDGES; e++)
        c.edge[e] = live[e] ? g->edge[e] : NAS_EDGE_NONE;
    /* The only relabelling of nodes 1 and 2 that keeps i < j swaps them, and it is possible
     * only without an edge 1-2; it exchanges edges 0-1 with 0-2 and 1-3 with 2-3. */
    if (c.edge[2] == NAS_EDGE_NONE) {
        int s[NAS_CELL_EDGES] = {c.edge[1], c.edge[0], NAS_EDGE_NONE, c.edge[3], c.edge[5], c.edge[4]};
        int e = 0;
        while (e < NAS_CELL_EDGES && s[e] == c.edge[e])
            e++;
        if (e < NAS_CELL_EDGES && s[e] < c.edge[e])
            memcpy(c.edge, s, sizeof s);
    }
    *out = c;
}

/* The canonical encoding as text: what the hash covers, readable when debugging a cache. */
static void encode(const nas_space_t *sp, const nas_genome_t *c, char *buf, size_t cap)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "fednas-nas-v1 in=%dx%dx%d classes=%d ", sp->in_c, sp->in_h, sp->in_w,
                          sp->classes);
    if (c->kind == NAS_SPACE_MACRO) {
        n += (size_t)snprintf(buf + n, cap - n, "macro");
        for (int i = 0; i < c->nlayers && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, " %s/%d/%d/%d", nas_macro_op_name((nas_macro_op_t)c->layer[i].op),
                                  c->layer[i].width, c->layer[i].bn, c->layer[i].reduce);
    } else {
        n += (size_t)snprintf(buf + n, cap - n, "cell stages=%d cells=%d width=%d edges", sp->stages, c->cells,
                              c->width);
        for (int e = 0; e < NAS_CELL_EDGES && n < cap; e++)
            n += (size_t)snprintf(buf + n, cap - n, " %s", nas_edge_op_name((nas_edge_op_t)c->edge[e]));
    }
}

void nas_genome_hash(const nas_space_t *sp, const nas_genome_t *g, char out[NAS_HASH_LEN])
{
    nas_genome_t c;
    nas_genome_canonical(sp, g, &c);
    char buf[2048];
    encode(sp, &c, buf, sizeof buf);
    /* idempotent and thread-safe; libsodium asks for it before any other call */
    if (sodium_init() < 0)
        FN_CHECK(!"libsodium failed to initialise");
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)buf, strlen(buf));
    sodium_bin2hex(out, NAS_HASH_LEN, h, sizeof h);
}

/* ---- random draws, mutation, crossover ---- */

static int pick(rng_t *r, const int *vals, int n) { return vals[rng_below(r, (uint64_t)n)]; }

void nas_genome_place_reductions(const nas_space_t *sp, rng_t *r, nas_genome_t *g)
{
    /* a uniform subset of the layers (partial shuffle) */
    int pos[NAS_MAX_LAYERS];
    for (int i = 0; i < sp->layers; i++)
        pos[i] = i;
    for (int i = 0; i < sp->reductions; i++) {
        int j = i + (int)rng_below(r, (uint64_t)(sp->layers - i));
        int t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
        g->layer[pos[i]].reduce = 1;
    }
}

static void random_raw(const nas_space_t *sp, rng_t *r, nas_genome_t *g)
{
    memset(g, 0, sizeof *g);
    g->kind = sp->kind;
    if (sp->kind == NAS_SPACE_MACRO) {
        g->nlayers = sp->layers;
        for (int i = 0; i < sp->layers; i++) {
            nas_macro_layer_t *L = &g->layer[i];
            L->op = (int)sp->ops[rng_below(r, (uint64_t)sp->nops)];
            L->width = pick(r, sp->widths, sp->nwidths);
            L->bn = sp->batchnorm == NAS_BN_SEARCH ? (int)rng_below(r, 2) : sp->batchnorm == NAS_BN_ON;
        }
        nas_genome_place_reductions(sp, r, g);
        return;
    }
    for (int e = 0; e < NAS_CELL_EDGES; e++)
        g->edge[e] = (int)sp->edge_ops[rng_below(r, (uint64_t)sp->nedge_ops)];
    g->cells = pick(r, sp->cells, sp->ncells);
    g->width = pick(r, sp->widths, sp->nwidths);
}

int nas_genome_random(const nas_space_t *sp, rng_t *r, nas_genome_t *out, err_t *err)
{
    /* Only a cell can be drawn invalid (no path): even with one non-"none" op among two, the
     * single edge 0-3 alone makes a path half the time, so redrawing ends quickly. */
    for (int tries = 0; tries < 10000; tries++) {
        random_raw(sp, r, out);
        if (nas_genome_validate(sp, out, NULL) == 0)
            return 0;
    }
    return err_set(err, FN_EINVAL, "nas: no valid genome drawn in 10000 tries; the space admits (almost) none");
}

/* A value from vals[0..n) other than cur (n >= 2 and cur among them, or any if cur is not). */
static int pick_other(rng_t *r, const int *vals, int n, int cur)
{
    int others[NAS_MAX_CHOICES > NAS_MACRO_OP_COUNT ? NAS_MAX_CHOICES : NAS_MACRO_OP_COUNT], k = 0;
    for (int i = 0; i < n; i++)
        if (vals[i] != cur)
            others[k++] = vals[i];
    return k ? others[rng_below(r, (uint64_t)k)] : cur;
}

enum { M_OP, M_WIDTH, M_BN, M_REDUCE, M_EDGE, M_CELLS, M_COUNT };

/* One mutation of g in place; desc says what changed. Returns -1 when the space has none. */
static int mutate_once(const nas_space_t *sp, rng_t *r, nas_genome_t *g, char *desc, size_t cap)
{
    int kinds[M_COUNT], nk = 0;
    if (sp->kind == NAS_SPACE_MACRO) {
        if (sp->nops >= 2)
            kinds[nk++] = M_OP;
        if (sp->nwidths >= 2)
            kinds[nk++] = M_WIDTH;
        if (sp->batchnorm == NAS_BN_SEARCH)
            kinds[nk++] = M_BN;
        if (sp->reductions > 0 && sp->reductions < sp->layers)
            kinds[nk++] = M_REDUCE;
    } else {
        if (sp->nedge_ops >= 2)
            kinds[nk++] = M_EDGE;
        if (sp->nwidths >= 2)
            kinds[nk++] = M_WIDTH;
        if (sp->ncells >= 2)
            kinds[nk++] = M_CELLS;
    }
    if (nk == 0)
        return -1;
    int kind = kinds[rng_below(r, (uint64_t)nk)];
    int ops[NAS_MACRO_OP_COUNT];
    switch (kind) {
    case M_OP: {
        int i = (int)rng_below(r, (uint64_t)g->nlayers), old = g->layer[i].op;
        for (int k = 0; k < sp->nops; k++)
            ops[k] = (int)sp->ops[k];
        g->layer[i].op = pick_other(r, ops, sp->nops, old);
        snprintf(desc, cap, "layer %d op %s -> %s", i, nas_macro_op_name((nas_macro_op_t)old),
                 nas_macro_op_name((nas_macro_op_t)g->layer[i].op));
        return 0;
    }
    case M_WIDTH:
        if (sp->kind == NAS_SPACE_MACRO) {
            int i = (int)rng_below(r, (uint64_t)g->nlayers), old = g->layer[i].width;
            g->layer[i].width = pick_other(r, sp->widths, sp->nwidths, old);
            snprintf(desc, cap, "layer %d width %d -> %d", i, old, g->layer[i].width);
        } else {
            int old = g->width;
            g->width = pick_other(r, sp->widths, sp->nwidths, old);
            snprintf(desc, cap, "width %d -> %d", old, g->width);
        }
        return 0;
    case M_BN: {
        int i = (int)rng_below(r, (uint64_t)g->nlayers);
        g->layer[i].bn = !g->layer[i].bn;
        snprintf(desc, cap, "layer %d batchnorm %s", i, g->layer[i].bn ? "on" : "off");
        return 0;
    }
    case M_REDUCE: {
        int from[NAS_MAX_LAYERS], to[NAS_MAX_LAYERS], nf = 0, nt = 0;
        for (int i = 0; i < g->nlayers; i++) {
            if (g->layer[i].reduce)
                from[nf++] = i;
            else
                to[nt++] = i;
        }
        int a = from[rng_below(r, (uint64_t)nf)], b = to[rng_below(r, (uint64_t)nt)];
        g->layer[a].reduce = 0;
        g->layer[b].reduce = 1;
        snprintf(desc, cap, "reduction after layer %d -> after layer %d", a, b);
        return 0;
    }
    case M_EDGE: {
        int e = (int)rng_below(r, NAS_CELL_EDGES), old = g->edge[e];
        int eo[NAS_EDGE_OP_COUNT];
        for (int k = 0; k < sp->nedge_ops; k++)
            eo[k] = (int)sp->edge_ops[k];
        g->edge[e] = pick_other(r, eo, sp->nedge_ops, old);
        snprintf(desc, cap, "edge %d-%d %s -> %s", edge_from[e], edge_to[e], nas_edge_op_name((nas_edge_op_t)old),
                 nas_edge_op_name((nas_edge_op_t)g->edge[e]));
        return 0;
    }
    case M_CELLS: {
        int old = g->cells;
        g->cells = pick_other(r, sp->cells, sp->ncells, old);
        snprintf(desc, cap, "cells per stage %d -> %d", old, g->cells);
        return 0;
    }
    }
    return -1;
}

int nas_genome_mutate(const nas_space_t *sp, rng_t *r, const nas_genome_t *parent, nas_genome_t *child, char *desc,
                      size_t desc_cap, err_t *err)
{
    char ph[NAS_HASH_LEN], ch[NAS_HASH_LEN], d[128];
    nas_genome_hash(sp, parent, ph);
    /* A change to a dead gene (a pool's width, an edge off every path) builds the same
     * network: redraw, so that a child is always a new candidate one step away. */
    for (int tries = 0; tries < 200; tries++) {
        nas_genome_t c = *parent;
        if (mutate_once(sp, r, &c, d, sizeof d) < 0)
            return err_set(err, FN_EINVAL, "nas: the space has a single choice for every gene; nothing to mutate");
        if (nas_genome_validate(sp, &c, NULL) != 0)
            continue;
        nas_genome_hash(sp, &c, ch);
        if (strcmp(ch, ph) == 0)
            continue;
        *child = c;
        if (desc && desc_cap)
            snprintf(desc, desc_cap, "%s", d);
        return 0;
    }
    return err_set(err, FN_EINVAL, "nas: no mutation of this genome gives a different valid network (200 tries)");
}

void nas_genome_crossover(const nas_space_t *sp, rng_t *r, const nas_genome_t *a, const nas_genome_t *b,
                          nas_genome_t *out)
{
    for (int tries = 0; tries < 100; tries++) {
        nas_genome_t c = *a;
        if (sp->kind == NAS_SPACE_MACRO) {
            /* reductions stay a's so that their count is kept */
            for (int i = 0; i < c.nlayers; i++)
                if (rng_below(r, 2)) {
                    int red = c.layer[i].reduce;
                    c.layer[i] = b->layer[i];
                    c.layer[i].reduce = red;
                }
        } else {
            for (int e = 0; e < NAS_CELL_EDGES; e++)
                if (rng_below(r, 2))
                    c.edge[e] = b->edge[e];
            if (rng_below(r, 2))
                c.cells = b->cells;
            if (rng_below(r, 2))
                c.width = b->width;
        }
        if (nas_genome_validate(sp, &c, NULL) == 0) {
            *out = c;
            return;
        }
    }
    *out = *a;
}
