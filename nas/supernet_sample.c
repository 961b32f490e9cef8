/* The supernet's path draws (nas/supernet.h, nas_supernet_draw): uniform, or uniform with strict
 * fairness (FairNAS, Chu et al. 2021). Fair: every gene (macro: each layer's op, width and
 * batch-norm flag; cell: each edge's op, the cells per stage, the width) walks through a fresh
 * random permutation of its choices, one entry per draw, so within each of its cycles every
 * choice is drawn exactly once. Each gene's choices are still equally likely at every draw, as
 * specs/nas.md's uniform sampling asks (a permutation's entry is uniform, and the genes'
 * permutations are independent); what fairness removes is the chance imbalance of a short
 * training, in which a uniform draw gives one layer's op 20% more steps than another's. The
 * reductions' places are drawn uniformly per draw, as nas_genome_random does. A fair draw
 * that is not a valid genome (a cell with no input-to-output path) is replaced by a uniform
 * one; its genes' cycles advance anyway. */
#include <string.h>

#include "common/rng.h"
#include "nas/genome.h"
#include "nas/supernet.h"
#include "nas/supernet_internal.h"

/* The next entry of gene k's cycle over n choices, reshuffled when a cycle ends. */
static int cycle_next(sn_sampler_t *f, rng_t *r, int k, int n)
{
    sn_cycle_t *c = &f->gene[k];
    if (c->n != n || c->pos >= n) {
        for (int i = 0; i < n; i++)
            c->perm[i] = (int8_t)i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rng_below(r, (uint64_t)(i + 1));
            int8_t t = c->perm[i];
            c->perm[i] = c->perm[j];
            c->perm[j] = t;
        }
        c->n = n;
        c->pos = 0;
    }
    return c->perm[c->pos++];
}

static void fair_raw(nas_supernet_t *s, nas_genome_t *g)
{
    const nas_space_t *sp = &s->sp;
    sn_sampler_t *f = &s->sampler;
    rng_t *r = &s->draw;
    memset(g, 0, sizeof *g);
    g->kind = sp->kind;
    if (sp->kind == NAS_SPACE_MACRO) {
        g->nlayers = sp->layers;
        for (int i = 0; i < sp->layers; i++) {
            nas_macro_layer_t *L = &g->layer[i];
            L->op = (int)sp->ops[cycle_next(f, r, 3 * i, sp->nops)];
            L->width = sp->widths[cycle_next(f, r, 3 * i + 1, sp->nwidths)];
            L->bn = sp->batchnorm == NAS_BN_SEARCH ? cycle_next(f, r, 3 * i + 2, 2) : sp->batchnorm == NAS_BN_ON;
        }
        nas_genome_place_reductions(sp, r, g);
        return;
    }
    for (int e = 0; e < NAS_CELL_EDGES; e++)
        g->edge[e] = (int)sp->edge_ops[cycle_next(f, r, e, sp->nedge_ops)];
    g->cells = sp->cells[cycle_next(f, r, NAS_CELL_EDGES, sp->ncells)];
    g->width = sp->widths[cycle_next(f, r, NAS_CELL_EDGES + 1, sp->nwidths)];
}

int nas_supernet_draw(nas_supernet_t *s, nas_genome_t *out, err_t *err)
{
    if (s->o.sampling != NAS_SUPERNET_SAMPLE_FAIR)
        return nas_genome_random(&s->sp, &s->draw, out, err);
    fair_raw(s, out);
    if (nas_genome_validate(&s->sp, out, NULL) == 0)
        return 0;
    return nas_genome_random(&s->sp, &s->draw, out, err);
}
