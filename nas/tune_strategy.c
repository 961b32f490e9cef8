/* The tuning strategy: random or regularized-evolution sampling of recipes, and asynchronous
 * successive halving (ASHA, Li et al. 2020) over epochs. State is a pure function of the seed
 * and the ask/tell sequence (no clock), as nas/strategy.h's, so a search resumes by replay. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "engine/optim.h"
#include "nas/controller.h"
#include "nas/tune.h"

typedef struct trial {
    nas_tune_recipe_t raw; /* every parameter drawn (mutation may switch an inactive one on) */
    nas_tune_proposal_t p;
    int asked[NAS_TUNE_MAX_RUNGS], told[NAS_TUNE_MAX_RUNGS], ok[NAS_TUNE_MAX_RUNGS];
    double acc[NAS_TUNE_MAX_RUNGS];
} trial_t;

struct nas_tune_strategy {
    nas_tune_config_t c;
    nas_tune_recipe_t base;
    rng_t rng;
    trial_t *t;
    int n, cap;
    int asked, told;
    int *pop, npop; /* evolution: trials that joined, oldest first */
};

static double sig4(double x)
{
    char b[32];
    snprintf(b, sizeof b, "%.4g", x);
    return strtod(b, NULL);
}

static double draw(rng_t *r, const nas_tune_dom_t *d)
{
    double u = rng_uniform(r);
    switch (d->kind) {
    case NAS_TUNE_DOM_CHOICE: return d->choice[(int)rng_below(r, (uint64_t)d->n)];
    case NAS_TUNE_DOM_UNIFORM: return sig4(d->lo + u * (d->hi - d->lo));
    case NAS_TUNE_DOM_LOG_UNIFORM: return sig4(exp(log(d->lo) + u * (log(d->hi) - log(d->lo))));
    default: return d->choice[0];
    }
}

/* The effective recipe: parameters that do not apply to the optimizer are dropped. */
static void effective(const nas_tune_recipe_t *raw, nas_tune_recipe_t *out)
{
    *out = *raw;
    int ot = (int)raw->v[NAS_TUNE_P_OPTIMIZER];
    if (ot != ENGINE_OPTIM_SGD && ot != ENGINE_OPTIM_RMSPROP)
        out->v[NAS_TUNE_P_MOMENTUM] = NAN;
    if (ot != ENGINE_OPTIM_SGD)
        out->v[NAS_TUNE_P_NESTEROV] = NAN;
    else if (!(raw->v[NAS_TUNE_P_MOMENTUM] > 0))
        out->v[NAS_TUNE_P_NESTEROV] = 0;
}

int nas_tune_strategy_create(const nas_tune_config_t *c, const nas_tune_recipe_t *base, nas_tune_strategy_t **out, err_t *err)
{
    *out = NULL;
    if (c->trials < 1 || c->nrungs < 1 || c->nrungs > NAS_TUNE_MAX_RUNGS)
        return err_set(err, FN_EINVAL, "tune: need >= 1 trial and 1..%d rungs", NAS_TUNE_MAX_RUNGS);
    nas_tune_strategy_t *s = FN_CALLOC(1, sizeof *s);
    s->c = *c;
    s->base = *base;
    rng_seed(&s->rng, rng_derive(c->seed, 0x74756e65ULL));
    s->pop = FN_CALLOC((size_t)c->population + 1, sizeof *s->pop);
    *out = s;
    return 0;
}

void nas_tune_strategy_free(nas_tune_strategy_t *s)
{
    if (!s)
        return;
    free(s->t);
    free(s->pop);
    free(s);
}

static void finish(nas_tune_strategy_t *s, trial_t *t, int rung, nas_tune_proposal_t *p)
{
    t->p.rung = rung;
    t->p.epochs = s->c.rungs[rung];
    t->asked[rung] = 1;
    *p = t->p;
    if (rung > 0) {
        p->parent = -1;
        snprintf(p->mutation, sizeof p->mutation, "promote rung %d -> %d", rung - 1, rung);
    }
    s->asked++;
}

/* ASHA: the best not-yet-promoted trial in the top 1/eta of those told at a rung, highest rung
 * first. Failed evaluations count among the told but are never promoted; ties in accuracy go
 * to the earlier trial. */
static int promotion(nas_tune_strategy_t *s, int *trial, int *rung)
{
    int *order = FN_CALLOC((size_t)s->n + 1, sizeof *order);
    int found = 0;
    for (int k = s->c.nrungs - 2; k >= 0 && !found; k--) {
        int told = 0, m = 0;
        for (int i = 0; i < s->n; i++) {
            told += s->t[i].told[k];
            if (!s->t[i].told[k] || !s->t[i].ok[k])
                continue;
            int j = m++; /* insertion by accuracy, stable in trial order */
            while (j > 0 && s->t[order[j - 1]].acc[k] < s->t[i].acc[k]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
        int top = told / s->c.eta;
        for (int r = 0; r < top && r < m; r++)
            if (!s->t[order[r]].asked[k + 1]) {
                *trial = order[r];
                *rung = k + 1;
                found = 1;
                break;
            }
    }
    free(order);
    return found;
}

static void mutate(nas_tune_strategy_t *s, const nas_tune_recipe_t *parent, nas_tune_recipe_t *child, char *what, size_t n)
{
    *child = *parent;
    int free_params[NAS_TUNE_NPARAMS], nf = 0;
    for (int p = 0; p < NAS_TUNE_NPARAMS; p++)
        if (s->c.space[p].kind != NAS_TUNE_DOM_FIXED)
            free_params[nf++] = p;
    if (nf == 0) {
        snprintf(what, n, "no free parameter");
        return;
    }
    int p = free_params[rng_below(&s->rng, (uint64_t)nf)];
    const nas_tune_dom_t *d = &s->c.space[p];
    double old = parent->v[p], v = old;
    for (int tries = 0; tries < 8 && v == old; tries++) {
        if (d->kind == NAS_TUNE_DOM_CHOICE) {
            v = draw(&s->rng, d);
        } else {
            /* a multiplicative step (log) or a tenth of the range (uniform), kept inside */
            double z = rng_normal(&s->rng);
            v = d->kind == NAS_TUNE_DOM_LOG_UNIFORM ? old * exp(0.5 * z) : old + 0.1 * (d->hi - d->lo) * z;
            v = sig4(v < d->lo ? d->lo : v > d->hi ? d->hi : v);
        }
    }
    child->v[p] = v;
    snprintf(what, n, "%s %.4g -> %.4g", nas_tune_param_name((nas_tune_param_t)p), old, v);
}

static trial_t *new_trial(nas_tune_strategy_t *s)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        trial_t *nt = realloc(s->t, (size_t)s->cap * sizeof *nt);
        FN_CHECK(nt);
        s->t = nt;
    }
    trial_t *t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    t->p.trial = s->n++;
    t->p.parent = -1;
    return t;
}

int nas_tune_strategy_ask(nas_tune_strategy_t *s, nas_tune_proposal_t *p, err_t *err)
{
    (void)err;
    int ti, rung;
    if (s->c.asha && promotion(s, &ti, &rung)) {
        finish(s, &s->t[ti], rung, p);
        return 0;
    }
    if (s->n >= s->c.trials)
        return s->asked > s->told ? NAS_TUNE_ASK_WAIT : NAS_TUNE_ASK_DONE;
    trial_t *t = new_trial(s);
    /* Every parameter is drawn for every trial (a constant use of the generator), then the
     * experiment's own recipe or a mutation may replace the draw. */
    for (int k = 0; k < NAS_TUNE_NPARAMS; k++)
        t->raw.v[k] = draw(&s->rng, &s->c.space[k]);
    snprintf(t->p.mutation, sizeof t->p.mutation, "random");
    if (t->p.trial == 0 && s->c.enqueue_default) {
        for (int k = 0; k < NAS_TUNE_NPARAMS; k++)
            if (!isnan(s->base.v[k]))
                t->raw.v[k] = s->base.v[k];
        snprintf(t->p.mutation, sizeof t->p.mutation, "the experiment's recipe");
    } else if (s->c.sampler == NAS_TUNE_SAMPLER_EVOLUTION && t->p.trial >= s->c.population && s->npop > 0) {
        /* regularized evolution: the best of S distinct members drawn at random */
        int S = s->c.sample < s->npop ? s->c.sample : s->npop, best = -1;
        int idx[4097];
        for (int i = 0; i < s->npop; i++)
            idx[i] = i;
        rng_shuffle_int(&s->rng, idx, s->npop);
        for (int i = 0; i < S; i++) {
            int m = s->pop[idx[i]];
            if (best < 0 || s->t[m].acc[0] > s->t[best].acc[0] || (s->t[m].acc[0] == s->t[best].acc[0] && m < best))
                best = m;
        }
        mutate(s, &s->t[best].raw, &t->raw, t->p.mutation, sizeof t->p.mutation);
        t->p.parent = best;
    }
    effective(&t->raw, &t->p.recipe);
    nas_tune_recipe_hash(&t->p.recipe, t->p.hash);
    finish(s, t, 0, p);
    return 0;
}

int nas_tune_strategy_tell(nas_tune_strategy_t *s, const nas_tune_proposal_t *p, int ok, double val_acc, err_t *err)
{
    if (p->trial < 0 || p->trial >= s->n || p->rung < 0 || p->rung >= s->c.nrungs)
        return err_set(err, FN_ESTATE, "tune: trial %d rung %d was never asked", p->trial, p->rung);
    trial_t *t = &s->t[p->trial];
    if (!t->asked[p->rung] || t->told[p->rung])
        return err_set(err, FN_ESTATE, "tune: trial %d rung %d is not outstanding", p->trial, p->rung);
    if (ok && !(val_acc >= 0 && val_acc <= 1))
        return err_set(err, FN_EINVAL, "tune: accuracy %g outside [0, 1]", val_acc);
    t->told[p->rung] = 1;
    t->ok[p->rung] = ok;
    t->acc[p->rung] = ok ? val_acc : -1;
    s->told++;
    if (ok && p->rung == 0 && s->c.sampler == NAS_TUNE_SAMPLER_EVOLUTION) {
        s->pop[s->npop++] = p->trial;
        if (s->npop > s->c.population) {
            memmove(s->pop, s->pop + 1, (size_t)(s->npop - 1) * sizeof *s->pop);
            s->npop--;
        }
    }
    return 0;
}


/* ---- behind the controller's interface ---- */

_Static_assert(NAS_TUNE_ASK_WAIT == NAS_ASK_WAIT && NAS_TUNE_ASK_DONE == NAS_ASK_DONE,
               "the sampler answers in the controller's terms");

typedef struct ctl_adapter {
    nas_tune_strategy_t *st;
    const json_t *base_train;
    const char *arch;
    double max_epochs;
} ctl_adapter_t;

static int adapter_ask(void *impl, nas_ask_t *a, err_t *err)
{
    ctl_adapter_t *ad = impl;
    nas_tune_proposal_t p;
    int rc = nas_tune_strategy_ask(ad->st, &p, err);
    if (rc != 0)
        return rc;
    json_t *g = nas_tune_recipe_json(&p.recipe), *tr = nas_tune_recipe_train(&p.recipe, ad->base_train, ad->max_epochs);
    store_nas_candidate_t *r = &a->row;
    *r = (store_nas_candidate_t){.cand_id = p.trial, .rung = p.rung, .parent = p.parent, .budget = p.epochs,
                                 .genome = json_dumps(g, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6)),
                                 .arch = strdup(ad->arch)};
    snprintf(r->hash, sizeof r->hash, "%s", p.hash);
    snprintf(r->mutation, sizeof r->mutation, "%s", p.mutation);
    a->recipe = json_dumps(tr, JSON_COMPACT | JSON_REAL_PRECISION(8));
    json_decref(g);
    json_decref(tr);
    a->proposal = malloc(sizeof p);
    FN_CHECK(r->genome && a->recipe && r->arch && a->proposal);
    memcpy(a->proposal, &p, sizeof p);
    a->progress = 1;
    return 0;
}

static int adapter_tell(void *impl, const void *proposal, const store_nas_candidate_t *row, err_t *err)
{
    ctl_adapter_t *ad = impl;
    return nas_tune_strategy_tell(ad->st, proposal, strcmp(row->status, "done") == 0, row->val_accuracy, err);
}

static void adapter_free(void *impl)
{
    ctl_adapter_t *ad = impl;
    nas_tune_strategy_free(ad->st);
    free(ad);
}

int nas_tune_strategy_ctl(const nas_tune_config_t *c, const json_t *base_train, const char *arch,
                          nas_ctl_strategy_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    nas_tune_recipe_t base;
    nas_tune_recipe_from_train(base_train, &base);
    ctl_adapter_t *ad = FN_CALLOC(1, sizeof *ad);
    *ad = (ctl_adapter_t){.base_train = base_train, .arch = arch, .max_epochs = c->max_epochs};
    int rc = nas_tune_strategy_create(c, &base, &ad->st, err);
    if (rc != 0) {
        free(ad);
        return rc;
    }
    *out = (nas_ctl_strategy_t){.impl = ad, .ask = adapter_ask, .tell = adapter_tell, .free = adapter_free};
    return 0;
}
