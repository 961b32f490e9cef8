#include "nas/strategy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "nas/controller.h"
#include "nas/pareto.h"

/* One evaluation: a proposal as asked, and its result once told. */
typedef struct {
    nas_proposal_t p;
    int told;
    nas_result_t r;
    int promoted; /* asha: this rung's result was promoted to the next rung */
} eval_t;

struct nas_strategy {
    nas_config_t cfg;
    rng_t rng;
    eval_t *ev; /* every ask, in order */
    int nev, capev;
    int next_id, told, ok;
    /* evolution: the population as indices into ev, oldest first.
     * nsga2: the parents of the current generation (with their ranks and crowding). */
    int *pop, npop;
    int *prank;
    double *pcrowd;
    /* nsga2 */
    int init_asked; /* random initial genomes asked (<= mu) */
    int *gen, ngen; /* the current generation's offspring (indices into ev) */
    int gen_ready;  /* parents complete and ranked: offspring may be asked */
    /* asha */
    int nrungs;
    double budgets[32];
};

static int grow(void **p, int n, int *cap, size_t size)
{
    if (n < *cap)
        return 0;
    int nc = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, (size_t)nc * size);
    FN_CHECK(q);
    *p = q;
    *cap = nc;
    return 0;
}

int nas_strategy_create(const nas_config_t *cfg, uint64_t seed, nas_strategy_t **out, err_t *err)
{
    *out = NULL;
    /* A trial draw on a copy of the generator: the space must admit a candidate, and the
     * strategy's own stream must not depend on this check. */
    rng_t probe;
    rng_seed(&probe, seed);
    nas_genome_t g;
    int rc = nas_genome_random(&cfg->space, &probe, &g, err);
    if (rc)
        return rc;
    if (cfg->strategy.kind == NAS_STRATEGY_EVOLUTION && (cfg->strategy.population < 1 || cfg->strategy.sample < 1))
        return err_set(err, FN_EINVAL, "nas: evolution needs population >= 1 and sample >= 1");
    if (cfg->strategy.kind == NAS_STRATEGY_NSGA2 &&
        (cfg->strategy.mu < 1 || cfg->strategy.lambda < 1 || cfg->strategy.nobjectives < 1 ||
         cfg->strategy.nobjectives > NAS_MAX_OBJECTIVES))
        return err_set(err, FN_EINVAL, "nas: nsga2 needs mu >= 1, lambda >= 1 and 1..%d objectives",
                       NAS_MAX_OBJECTIVES);
    if (cfg->strategy.kind == NAS_STRATEGY_ASHA &&
        (!(cfg->strategy.r > 0) || cfg->strategy.eta < 2 || !(cfg->strategy.max_epochs >= cfg->strategy.r)))
        return err_set(err, FN_EINVAL, "nas: asha needs r > 0, eta >= 2 and max_epochs >= r");
    nas_strategy_t *s = calloc(1, sizeof *s);
    FN_CHECK(s);
    s->cfg = *cfg;
    rng_seed(&s->rng, seed);
    if (cfg->strategy.kind == NAS_STRATEGY_ASHA) {
        /* r * eta^k exactly (no accumulated rounding): 0.25, 0.75, 2.25 for r 0.25, eta 3 */
        for (int k = 0; k < 32; k++) {
            double b = cfg->strategy.r * pow((double)cfg->strategy.eta, k);
            if (b > cfg->strategy.max_epochs * (1 + 1e-12))
                break;
            s->budgets[s->nrungs++] = b;
        }
    }
    *out = s;
    return 0;
}

void nas_strategy_free(nas_strategy_t *s)
{
    if (!s)
        return;
    free(s->ev);
    free(s->pop);
    free(s->prank);
    free(s->pcrowd);
    free(s->gen);
    free(s);
}

int nas_strategy_asked(const nas_strategy_t *s) { return s->nev; }
int nas_strategy_told(const nas_strategy_t *s) { return s->told; }

/* Appends a new evaluation and returns it. */
static eval_t *push(nas_strategy_t *s)
{
    grow((void **)&s->ev, s->nev, &s->capev, sizeof *s->ev);
    eval_t *e = &s->ev[s->nev++];
    memset(e, 0, sizeof *e);
    return e;
}

/* Draws of a genome before a repeat is accepted. A proposal whose canonical hash was asked
 * before is drawn again (pymoo's and NNI's searches drop duplicates likewise): a repeat would
 * spend one of the budget's evaluations on a result the store already holds. A space with
 * nothing new left must not stall the search, so after this many draws the repeat stands and
 * the hash cache answers it. */
#define NAS_FRESH_TRIES 64

static int asked_before(const nas_strategy_t *s, const nas_genome_t *g)
{
    char h[NAS_HASH_LEN];
    nas_genome_hash(&s->cfg.space, g, h);
    for (int i = 0; i < s->nev; i++)
        if (strcmp(s->ev[i].p.hash, h) == 0)
            return 1;
    return 0;
}

static int new_random(nas_strategy_t *s, nas_proposal_t *p, const char *why, err_t *err)
{
    memset(p, 0, sizeof *p);
    int repeat = 1;
    for (int t = 0; t < NAS_FRESH_TRIES && repeat; t++) {
        int rc = nas_genome_random(&s->cfg.space, &s->rng, &p->genome, err);
        if (rc)
            return rc;
        repeat = asked_before(s, &p->genome);
    }
    p->id = s->next_id++;
    p->parent_id = -1;
    snprintf(p->mutation, sizeof p->mutation, "%s%s", why, repeat ? " (repeat)" : "");
    return 0;
}

/* The child of ev[parent] one mutation away, redrawn while it repeats an asked genome; a fresh
 * random genome when nothing mutates or every draw repeats. */
static int new_child(nas_strategy_t *s, int parent, const nas_genome_t *base, const char *prefix, nas_proposal_t *p,
                     err_t *err)
{
    memset(p, 0, sizeof *p);
    char desc[96];
    int repeat = 1;
    for (int t = 0; t < NAS_FRESH_TRIES && repeat; t++) {
        if (nas_genome_mutate(&s->cfg.space, &s->rng, base, &p->genome, desc, sizeof desc, NULL) != 0)
            return new_random(s, p, "random (the parent has no mutation)", err);
        repeat = asked_before(s, &p->genome);
    }
    if (repeat) /* the parent's neighbourhood is spent: a new genome beats a repeat */
        return new_random(s, p, "random (nothing new one mutation from the parent)", err);
    p->id = s->next_id++;
    p->parent_id = s->ev[parent].p.id;
    snprintf(p->parent, sizeof p->parent, "%s", s->ev[parent].p.hash);
    snprintf(p->mutation, sizeof p->mutation, "%s%s", prefix, desc);
    return 0;
}

static void finish(nas_strategy_t *s, nas_proposal_t *p, double epochs)
{
    p->epochs = epochs;
    nas_genome_hash(&s->cfg.space, &p->genome, p->hash);
    eval_t *e = push(s);
    e->p = *p;
}

/* ---- regularized evolution ---- */

static int ask_evolution(nas_strategy_t *s, nas_proposal_t *p, err_t *err)
{
    int P = s->cfg.strategy.population, S = s->cfg.strategy.sample;
    /* The first P proposals initialise the population; later ones before any result
     * (more workers than P) are random too, since there is no parent yet. */
    if (s->nev < P || s->npop == 0)
        return new_random(s, p, "random", err);
    /* S distinct members uniformly (a partial shuffle of positions); the best is the parent */
    int idx[NAS_MAX_POPULATION], n = s->npop, k = S < n ? S : n, best = -1;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)rng_below(&s->rng, (uint64_t)(n - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        int e = s->pop[idx[i]];
        if (best < 0 || s->ev[e].r.val_acc > s->ev[best].r.val_acc)
            best = e;
    }
    return new_child(s, best, &s->ev[best].p.genome, "", p, err);
}

static void tell_evolution(nas_strategy_t *s, int e)
{
    if (s->ev[e].r.status != NAS_RESULT_OK)
        return;
    int P = s->cfg.strategy.population;
    if (s->npop == P) { /* aging: the oldest goes, whatever its accuracy */
        memmove(s->pop, s->pop + 1, (size_t)(P - 1) * sizeof *s->pop);
        s->npop--;
    }
    if (!s->pop)
        s->pop = calloc((size_t)P, sizeof *s->pop);
    FN_CHECK(s->pop);
    s->pop[s->npop++] = e;
}

/* ---- NSGA-II ---- */

static double objective(const nas_strategy_t *s, int e, int k)
{
    const nas_result_t *r = &s->ev[e].r;
    switch (s->cfg.strategy.objectives[k]) {
    case NAS_OBJ_VAL_ACC: return 1.0 - r->val_acc;
    case NAS_OBJ_PARAMS: return r->params;
    case NAS_OBJ_FLOPS: return r->flops;
    default: return r->latency_ms;
    }
}

/* Ranks and crowding distances of the candidates idx[0..n) (indices into ev). */
static void rank_set(const nas_strategy_t *s, const int *idx, int n, int *rank, double *crowd)
{
    int m = s->cfg.strategy.nobjectives;
    double *pts = malloc((size_t)(n ? n : 1) * (size_t)m * sizeof *pts);
    int *front = malloc((size_t)(n ? n : 1) * sizeof *front);
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    FN_CHECK(pts && front && d);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < m; k++)
            pts[(size_t)i * m + k] = objective(s, idx[i], k);
    int nf = nas_pareto_sort(pts, n, m, rank);
    for (int f = 0; f < nf; f++) {
        int cnt = 0;
        for (int i = 0; i < n; i++)
            if (rank[i] == f)
                front[cnt++] = i;
        nas_pareto_crowding(pts, m, front, cnt, d);
        for (int a = 0; a < cnt; a++)
            crowd[front[a]] = d[a];
    }
    free(pts);
    free(front);
    free(d);
}

/* Survival: the best mu of idx[0..n) by rank, then crowding (larger first), then age. */
static void survive(nas_strategy_t *s, const int *idx, int n)
{
    int mu = s->cfg.strategy.mu, *rank = malloc((size_t)(n ? n : 1) * sizeof *rank);
    double *crowd = malloc((size_t)(n ? n : 1) * sizeof *crowd);
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    FN_CHECK(rank && crowd && order);
    rank_set(s, idx, n, rank, crowd);
    for (int i = 0; i < n; i++)
        order[i] = i;
    /* insertion sort: n is small (mu + lambda) and the order must be stable */
    for (int i = 1; i < n; i++) {
        int o = order[i], j = i - 1;
        while (j >= 0 && (rank[order[j]] > rank[o] || (rank[order[j]] == rank[o] && crowd[order[j]] < crowd[o]))) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = o;
    }
    int keep = n < mu ? n : mu;
    int *np = malloc((size_t)(keep ? keep : 1) * sizeof *np);
    FN_CHECK(np);
    for (int i = 0; i < keep; i++)
        np[i] = idx[order[i]];
    free(s->pop);
    s->pop = np;
    s->npop = keep;
    /* parents are ranked among themselves for the tournaments */
    free(s->prank);
    free(s->pcrowd);
    s->prank = malloc((size_t)(keep ? keep : 1) * sizeof *s->prank);
    s->pcrowd = malloc((size_t)(keep ? keep : 1) * sizeof *s->pcrowd);
    FN_CHECK(s->prank && s->pcrowd);
    rank_set(s, s->pop, s->npop, s->prank, s->pcrowd);
    free(rank);
    free(crowd);
    free(order);
    s->ngen = 0;
    s->gen_ready = 1;
}

/* Binary tournament on (rank, -crowding): the position in pop of the winner. */
static int tournament(nas_strategy_t *s)
{
    int a = (int)rng_below(&s->rng, (uint64_t)s->npop), b = (int)rng_below(&s->rng, (uint64_t)s->npop);
    if (s->prank[b] < s->prank[a] || (s->prank[b] == s->prank[a] && s->pcrowd[b] > s->pcrowd[a]))
        return b;
    return a;
}

static int ask_nsga2(nas_strategy_t *s, nas_proposal_t *p, err_t *err)
{
    int mu = s->cfg.strategy.mu, lambda = s->cfg.strategy.lambda;
    if (s->init_asked < mu) {
        int rc = new_random(s, p, "random", err);
        if (rc == 0)
            s->init_asked++;
        return rc;
    }
    if (!s->gen_ready || s->ngen >= lambda)
        return NAS_ASK_WAIT; /* the generation is complete only when all its results are in */
    int rc;
    if (s->npop == 0) {
        rc = new_random(s, p, "random (no parent survived)", err);
    } else {
        int a = s->pop[tournament(s)];
        if (s->cfg.strategy.crossover > 0 && rng_uniform(&s->rng) < s->cfg.strategy.crossover) {
            int b = s->pop[tournament(s)];
            nas_genome_t x;
            nas_genome_crossover(&s->cfg.space, &s->rng, &s->ev[a].p.genome, &s->ev[b].p.genome, &x);
            char pre[64];
            snprintf(pre, sizeof pre, "crossover %d x %d, ", s->ev[a].p.id, s->ev[b].p.id);
            rc = new_child(s, a, &x, pre, p, err);
        } else {
            rc = new_child(s, a, &s->ev[a].p.genome, "", p, err);
        }
    }
    if (rc == 0) {
        if (!s->gen)
            s->gen = malloc((size_t)lambda * sizeof *s->gen);
        FN_CHECK(s->gen);
        s->gen[s->ngen++] = s->nev; /* the index finish() gives it */
    }
    return rc;
}

static void tell_nsga2(nas_strategy_t *s, int e)
{
    int mu = s->cfg.strategy.mu, lambda = s->cfg.strategy.lambda;
    if (!s->gen_ready) {
        /* initialisation: the parents are the ok ones among the first mu, once all are in */
        int told = 0;
        for (int i = 0; i < s->nev && i < mu; i++)
            told += s->ev[i].told;
        if (s->init_asked == mu && told == mu) {
            int *idx = malloc((size_t)mu * sizeof *idx), n = 0;
            FN_CHECK(idx);
            for (int i = 0; i < mu; i++)
                if (s->ev[i].r.status == NAS_RESULT_OK)
                    idx[n++] = i;
            survive(s, idx, n);
            free(idx);
        }
        return;
    }
    (void)e;
    if (s->ngen < lambda)
        return;
    for (int i = 0; i < s->ngen; i++)
        if (!s->ev[s->gen[i]].told)
            return;
    /* (mu + lambda): parents and the ok offspring compete */
    int n = 0, *idx = malloc((size_t)(s->npop + s->ngen) * sizeof *idx);
    FN_CHECK(idx);
    for (int i = 0; i < s->npop; i++)
        idx[n++] = s->pop[i];
    for (int i = 0; i < s->ngen; i++)
        if (s->ev[s->gen[i]].r.status == NAS_RESULT_OK)
            idx[n++] = s->gen[i];
    survive(s, idx, n);
    free(idx);
}

/* ---- ASHA ---- */

/* Sorts the told rung-k evaluations best first: ok before failed, accuracy, then id. */
static int rung_sorted(const nas_strategy_t *s, int k, int *out)
{
    int n = 0;
    for (int i = 0; i < s->nev; i++)
        if (s->ev[i].p.rung == k && s->ev[i].told)
            out[n++] = i;
    for (int i = 1; i < n; i++) {
        int o = out[i], j = i - 1;
        for (; j >= 0; j--) {
            const eval_t *a = &s->ev[out[j]], *b = &s->ev[o];
            int aok = a->r.status == NAS_RESULT_OK, bok = b->r.status == NAS_RESULT_OK;
            int b_first = bok > aok || (bok == aok && bok && b->r.val_acc > a->r.val_acc);
            if (!b_first)
                break;
            out[j + 1] = out[j];
        }
        out[j + 1] = o;
    }
    return n;
}

static int ask_asha(nas_strategy_t *s, nas_proposal_t *p, err_t *err)
{
    int eta = s->cfg.strategy.eta;
    int *sorted = malloc((size_t)(s->nev ? s->nev : 1) * sizeof *sorted);
    FN_CHECK(sorted);
    /* Li et al. 2020, get_job: from the highest rung that can promote down to rung 0, the first
     * candidate in the top 1/eta of its rung (so far) that was not promoted yet. */
    for (int k = s->nrungs - 2; k >= 0; k--) {
        int n = rung_sorted(s, k, sorted), top = n / eta;
        for (int i = 0; i < top; i++) {
            eval_t *e = &s->ev[sorted[i]];
            if (e->promoted || e->r.status != NAS_RESULT_OK)
                continue;
            e->promoted = 1;
            memset(p, 0, sizeof *p);
            p->id = e->p.id;
            p->genome = e->p.genome;
            p->parent_id = e->p.id;
            snprintf(p->parent, sizeof p->parent, "%s", e->p.hash);
            snprintf(p->mutation, sizeof p->mutation, "promote rung %d -> %d", k, k + 1);
            p->rung = k + 1;
            p->promotion = 1;
            free(sorted);
            return 0;
        }
    }
    free(sorted);
    return new_random(s, p, "random", err);
}

/* ---- the interface ---- */

int nas_strategy_ask(nas_strategy_t *s, nas_proposal_t *out, err_t *err)
{
    nas_proposal_t p;
    int rc;
    switch (s->cfg.strategy.kind) {
    case NAS_STRATEGY_EVOLUTION: rc = ask_evolution(s, &p, err); break;
    case NAS_STRATEGY_NSGA2: rc = ask_nsga2(s, &p, err); break;
    case NAS_STRATEGY_ASHA: rc = ask_asha(s, &p, err); break;
    default: rc = new_random(s, &p, "random", err); break;
    }
    if (rc != 0)
        return rc;
    finish(s, &p, s->cfg.strategy.kind == NAS_STRATEGY_ASHA ? s->budgets[p.rung] : s->cfg.epochs);
    *out = p;
    return 0;
}

int nas_strategy_tell(nas_strategy_t *s, const nas_proposal_t *p, const nas_result_t *r, err_t *err)
{
    int e = -1;
    for (int i = s->nev - 1; i >= 0; i--)
        if (s->ev[i].p.id == p->id && s->ev[i].p.rung == p->rung) {
            e = i;
            break;
        }
    if (e < 0)
        return err_set(err, FN_ESTATE, "nas: candidate %d (rung %d) was never asked", p->id, p->rung);
    if (s->ev[e].told)
        return err_set(err, FN_ESTATE, "nas: candidate %d (rung %d) was already told", p->id, p->rung);
    if (r->status != NAS_RESULT_OK && r->status != NAS_RESULT_FAILED)
        return err_set(err, FN_EINVAL, "nas: result status %d is neither ok nor failed", (int)r->status);
    if (r->status == NAS_RESULT_OK &&
        (!(r->val_acc >= 0 && r->val_acc <= 1) || !(r->params >= 0) || !(r->flops >= 0) || !(r->latency_ms >= 0) ||
         !isfinite(r->params) || !isfinite(r->flops) || !isfinite(r->latency_ms)))
        return err_set(err, FN_EINVAL, "nas: candidate %d: accuracy %g must be in [0, 1] and params %g, flops %g, "
                       "latency %g finite and >= 0", p->id, r->val_acc, r->params, r->flops, r->latency_ms);
    s->ev[e].told = 1;
    s->ev[e].r = *r;
    s->told++;
    s->ok += r->status == NAS_RESULT_OK;
    switch (s->cfg.strategy.kind) {
    case NAS_STRATEGY_EVOLUTION: tell_evolution(s, e); break;
    case NAS_STRATEGY_NSGA2: tell_nsga2(s, e); break;
    default: break; /* random search keeps only the history; ASHA reads it at each ask */
    }
    return 0;
}

int nas_strategy_best(const nas_strategy_t *s, nas_proposal_t *p, nas_result_t *r, err_t *err)
{
    int best = -1;
    for (int i = 0; i < s->nev; i++) {
        const eval_t *e = &s->ev[i];
        if (!e->told || e->r.status != NAS_RESULT_OK)
            continue;
        if (best < 0 || e->p.rung > s->ev[best].p.rung ||
            (e->p.rung == s->ev[best].p.rung && e->r.val_acc > s->ev[best].r.val_acc))
            best = i;
    }
    if (best < 0)
        return err_set(err, FN_ENOTFOUND, "nas: no candidate has an ok result yet");
    if (p)
        *p = s->ev[best].p;
    if (r)
        *r = s->ev[best].r;
    return 0;
}

/* ---- behind the controller's interface ---- */

typedef struct ctl_adapter {
    nas_strategy_t *st;
    const nas_config_t *cfg;
    double epochs_asked;
} ctl_adapter_t;

static int adapter_ask(void *impl, nas_ask_t *a, err_t *err)
{
    ctl_adapter_t *ad = impl;
    const nas_config_t *cfg = ad->cfg;
    int asha = cfg->strategy.kind == NAS_STRATEGY_ASHA;
    /* ASHA's budget counts epochs consumed, in units of one full evaluation's epochs. */
    if (asha ? !(ad->epochs_asked < cfg->budget * (cfg->epochs > 0 ? cfg->epochs : 1) - 1e-9)
             : nas_strategy_asked(ad->st) >= cfg->budget)
        return NAS_ASK_DONE;
    nas_proposal_t p;
    int rc = nas_strategy_ask(ad->st, &p, err);
    if (rc != 0)
        return rc;
    json_t *gj = NULL, *model = NULL;
    if ((rc = nas_genome_to_json(&cfg->space, &p.genome, &gj, err)) < 0 ||
        (rc = nas_genome_decode(&cfg->space, &p.genome, &model, err)) < 0) {
        json_decref(gj);
        return rc;
    }
    store_nas_candidate_t *r = &a->row;
    r->genome = json_dumps(gj, JSON_COMPACT);
    r->arch = json_dumps(model, JSON_COMPACT);
    json_decref(gj);
    json_decref(model);
    a->proposal = malloc(sizeof p);
    FN_CHECK(r->genome && r->arch && a->proposal);
    memcpy(a->proposal, &p, sizeof p);
    *r = (store_nas_candidate_t){.cand_id = p.id, .rung = p.rung, .parent = p.parent_id, .budget = p.epochs,
                                 .genome = r->genome, .arch = r->arch};
    snprintf(r->hash, sizeof r->hash, "%s", p.hash);
    snprintf(r->mutation, sizeof r->mutation, "%s", p.mutation);
    a->progress = asha ? p.epochs : 1;
    ad->epochs_asked += p.epochs;
    return 0;
}

static int adapter_tell(void *impl, const void *proposal, const store_nas_candidate_t *row, err_t *err)
{
    ctl_adapter_t *ad = impl;
    nas_result_t res = {.status = strcmp(row->status, "done") == 0 ? NAS_RESULT_OK : NAS_RESULT_FAILED,
                        .val_acc = row->val_accuracy,
                        .params = (double)row->params,
                        .flops = row->flops,
                        .latency_ms = row->latency_ms};
    return nas_strategy_tell(ad->st, proposal, &res, err);
}

static void adapter_free(void *impl)
{
    ctl_adapter_t *ad = impl;
    nas_strategy_free(ad->st);
    free(ad);
}

int nas_strategy_ctl(const nas_config_t *cfg, nas_ctl_strategy_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    ctl_adapter_t *ad = FN_CALLOC(1, sizeof *ad);
    ad->cfg = cfg;
    int rc = nas_strategy_create(cfg, cfg->seed, &ad->st, err);
    if (rc != 0) {
        free(ad);
        return rc;
    }
    *out = (nas_ctl_strategy_t){.impl = ad, .ask = adapter_ask, .tell = adapter_tell, .free = adapter_free};
    return 0;
}
