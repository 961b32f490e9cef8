#include "nas/controller.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "nas/genome.h"
#include "nas/supernet.h"

/* The tell order. Telling results as they arrive would let ASHA promote, and evolution pick
 * parents, by the workers' timing: two runs with one seed would differ, and a resumed run from
 * an uninterrupted one. Telling in ask order is reproducible but blocks the head of the line
 * when budgets differ (ASHA: a 9-epoch promotion asked before 1-epoch candidates holds them,
 * done, until it ends, and with the ask window full a worker idles). So results are told in
 * the order they would arrive on a virtual clock: the run's workers take the candidates in ask
 * order, each evaluation takes its budget in epochs, a candidate is told when its virtual
 * evaluation ends (ties: ask order) and the clock moves to that time. The order is a function
 * of the asks alone (reproducible, replayable) and close to the real arrival order, since an
 * evaluation's time is close to proportional to its epochs. With equal budgets (every strategy
 * but ASHA) it is exactly the ask order. A resumed run tells its recorded tells in their
 * recorded order first (tell_seq), then goes on by the clock. */
typedef struct cand {
    nas_ask_t a;
    store_nas_candidate_t row;
    int complete;   /* done, or failed for good */
    int in_flight;
    int told;
    int64_t waiting_on; /* an earlier identical candidate (hash and budget) still being evaluated */
    int64_t recorded_tell; /* replay: the row's tell_seq in the store (-1: not told) */
    double vend;    /* the virtual clock's end of its evaluation */
} cand_t;

struct nas_ctl {
    const nas_ctl_opts_t *o;
    nas_workers_t *w;
    cand_t *c;
    int n, cap;      /* asked */
    int untold;      /* asked, not yet told */
    int first_untold; /* the oldest candidate not yet told */
    int done;        /* the strategy said NAS_ASK_DONE */
    store_nas_candidate_t *stored;
    int n_stored, n_recorded; /* stored rows; of which told (tell_seq >= 0) */
    double vnow, *vfree;      /* the virtual clock, and when each virtual worker is free */
    nas_progress_t pr;
    double t0;
};

uint64_t nas_eval_seed(uint64_t search_seed, const char *hash, double epochs, int diverged)
{
    uint64_t h = 0;
    for (int i = 0; i < 16 && hash[i]; i++) {
        char ch = hash[i];
        h = h << 4 | (uint64_t)(ch >= 'a' ? ch - 'a' + 10 : ch >= 'A' ? ch - 'A' + 10 : ch - '0');
    }
    uint64_t e = (uint64_t)llround(epochs * 1000.0);
    return rng_derive(rng_derive(rng_derive(search_seed, h), e), (uint64_t)diverged);
}

static int put(nas_ctl_t *x, const store_nas_candidate_t *row, err_t *err)
{
    return store_nas_candidate_put(x->o->store, x->o->run_id, row, err);
}

static void copy_metrics(store_nas_candidate_t *dst, const store_nas_candidate_t *src)
{
    dst->has_metrics = src->has_metrics;
    dst->val_accuracy = src->val_accuracy;
    dst->val_loss = src->val_loss;
    dst->train_loss = src->train_loss;
    dst->params = src->params;
    dst->flops = src->flops;
    dst->latency_ms = src->latency_ms;
    dst->threads = src->threads;
}

/* o takes src's result from the cache (src is done). */
static void serve_cached(cand_t *o, const store_nas_candidate_t *src)
{
    copy_metrics(&o->row, src);
    o->row.cached_from = src->cached_from >= 0 ? src->cached_from : src->seq;
    snprintf(o->row.status, sizeof o->row.status, "done");
    snprintf(o->row.worker, sizeof o->row.worker, "cache");
    o->row.started_at = o->row.ended_at = fn_now();
    o->complete = 1;
}

static void ask_free(nas_ask_t *a)
{
    free(a->row.genome);
    free(a->row.arch);
    free(a->recipe);
    free(a->proposal);
}

/* Asks one proposal and records it; NAS_ASK_WAIT / NAS_ASK_DONE from the strategy. */
static int ask_one(nas_ctl_t *x, err_t *err)
{
    nas_ask_t a;
    memset(&a, 0, sizeof a);
    const nas_ctl_strategy_t *st = &x->o->strategy;
    int rc = st->ask(st->impl, &a, err);
    if (rc != 0) {
        ask_free(&a);
        x->done |= rc == NAS_ASK_DONE;
        return rc < 0 ? err_wrap(err, "candidate %d: ", x->n) : rc;
    }
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 64;
        cand_t *nc = realloc(x->c, (size_t)x->cap * sizeof *nc);
        FN_CHECK(nc);
        x->c = nc;
    }
    cand_t *c = &x->c[x->n];
    memset(c, 0, sizeof *c);
    c->a = a;
    c->waiting_on = -1;
    store_nas_candidate_t *r = &c->row;
    *r = a.row;
    r->seq = x->n;
    r->cached_from = r->tell_seq = -1;
    r->queued_at = fn_now();
    snprintf(r->status, sizeof r->status, "queued");
    x->n++;
    x->untold++;
    /* The virtual clock: the first free of the run's workers takes it for its epochs. */
    int k = 0;
    for (int i = 1; i < x->o->workers; i++)
        k = x->vfree[i] < x->vfree[k] ? i : k;
    c->vend = x->vfree[k] = (x->vnow > x->vfree[k] ? x->vnow : x->vfree[k]) + r->budget;
    c->recorded_tell = -1;
    if (r->seq < x->n_stored) {
        /* Replay: the strategy must ask exactly what it asked the first time. */
        store_nas_candidate_t *old = &x->stored[r->seq];
        if (strcmp(old->hash, r->hash) != 0 || old->budget != r->budget)
            return err_set(err, FN_ESTATE,
                           "resume: candidate %lld replays as %.12s... at %g epochs but the run recorded %.12s... at "
                           "%g epochs; the search settings, their seed or the workers setting changed",
                           (long long)r->seq, r->hash, r->budget, old->hash, old->budget);
        /* The recorded row (the same proposal: its attempts, reason, times, metrics, status),
         * with this ask's texts (the loaded row's are freed with the loaded rows). */
        c->recorded_tell = old->tell_seq;
        *r = *old;
        r->genome = c->a.row.genome;
        r->arch = c->a.row.arch;
        r->tell_seq = -1;
        int final_fail = strcmp(old->status, "failed") == 0 && old->attempts > x->o->retries;
        if (strcmp(old->status, "done") == 0 || final_fail) {
            c->complete = 1;
            return 0; /* nothing changed: no write */
        }
        /* queued, running (the controller died meanwhile) or failed with retries left: again. */
        snprintf(r->status, sizeof r->status, "queued");
    }
    /* The hash cache: an earlier evaluation of the same candidate at the same budget. */
    for (int j = r->seq - 1; j >= 0; j--) {
        cand_t *o = &x->c[j];
        if (strcmp(o->row.hash, r->hash) != 0 || o->row.budget != r->budget)
            continue;
        if (o->complete && strcmp(o->row.status, "done") == 0)
            serve_cached(c, &o->row);
        else if (!o->complete)
            /* Wait on the evaluation itself: o may be a waiter, which no worker ever reports. */
            c->waiting_on = o->waiting_on >= 0 ? o->waiting_on : j;
        if (c->complete || c->waiting_on >= 0)
            break;
    }
    return put(x, r, err);
}

static int dispatch(nas_ctl_t *x, err_t *err)
{
    for (int i = x->first_untold; i < x->n && nas_workers_busy(x->w) < nas_workers_size(x->w); i++) {
        cand_t *c = &x->c[i];
        if (c->complete || c->in_flight || c->waiting_on >= 0)
            continue;
        nas_job_t job = {.id = c->row.seq,
                         .final = 0,
                         .epochs = c->row.budget,
                         .seed = nas_eval_seed(x->o->seed, c->row.hash, c->row.budget, c->row.diverged),
                         .arch = c->row.arch,
                         .genome = c->row.genome,
                         .recipe = c->a.recipe};
        int rc = nas_workers_submit(x->w, &job, err);
        if (rc < 0)
            return rc;
        c->in_flight = 1;
        snprintf(c->row.status, sizeof c->row.status, "running");
        c->row.started_at = fn_now();
        c->row.ended_at = c->row.seconds = 0;
        if ((rc = put(x, &c->row, err)) < 0)
            return rc;
    }
    return 0;
}

/* The candidate to tell next (the tell order above), or NULL when it is not asked yet. */
static cand_t *next_to_tell(nas_ctl_t *x)
{
    cand_t *next = NULL;
    for (int i = x->first_untold; i < x->n; i++) {
        cand_t *c = &x->c[i];
        if (c->told)
            continue;
        if (x->pr.told < x->n_recorded) {
            if (c->recorded_tell == x->pr.told)
                return c;
        } else if (!next || c->vend < next->vend) {
            next = c;
        }
    }
    return next;
}

/* Tells the next candidate (next_to_tell) if it is complete; one at a time, so that the
 * strategy's view of the search (and so every later proposal) never depends on the workers'
 * timing. */
static int tell_ready(nas_ctl_t *x, int *told, err_t *err)
{
    *told = 0;
    cand_t *c = next_to_tell(x);
    if (!c || !c->complete)
        return 0;
    store_nas_candidate_t *r = &c->row;
    const nas_ctl_strategy_t *st = &x->o->strategy;
    int rc = st->tell(st->impl, c->a.proposal, r, err);
    if (rc < 0)
        return err_wrap(err, "telling candidate %lld: ", (long long)r->seq);
    int64_t ts = x->pr.told;
    if (r->tell_seq != ts) {
        r->tell_seq = ts;
        if ((rc = put(x, r, err)) < 0)
            return rc;
    }
    int ok = strcmp(r->status, "done") == 0;
    x->pr.told++;
    x->pr.progress += c->a.progress;
    if (ok && r->val_accuracy > x->pr.best) {
        x->pr.best = r->val_accuracy;
        x->pr.best_seq = r->seq;
    }
    x->pr.failed += !ok;
    c->told = 1;
    x->untold--;
    x->vnow = c->vend > x->vnow ? c->vend : x->vnow;
    while (x->first_untold < x->n && x->c[x->first_untold].told)
        x->first_untold++;
    *told = 1;
    if (x->o->on_candidate)
        x->o->on_candidate(x->o->cb_ctx, r, &x->pr);
    return 0;
}

static int on_result(nas_ctl_t *x, nas_job_done_t *d, err_t *err)
{
    if (d->final || d->id < 0 || d->id >= x->n || !x->c[d->id].in_flight)
        return err_set(err, FN_ESTATE, "a worker returned candidate %lld, which is not being evaluated",
                       (long long)d->id);
    cand_t *c = &x->c[d->id];
    store_nas_candidate_t *r = &c->row;
    c->in_flight = 0;
    r->attempts++;
    snprintf(r->worker, sizeof r->worker, "%s", d->worker);
    r->ended_at = fn_now();
    r->seconds = d->r.train_seconds > 0 ? d->r.train_seconds : r->ended_at - r->started_at;
    x->pr.evaluated++;
    if (d->r.ok) {
        snprintf(r->status, sizeof r->status, "done");
        r->has_metrics = 1;
        r->val_accuracy = d->r.accuracy;
        r->val_loss = d->r.loss;
        r->train_loss = d->r.train_loss;
        r->params = d->r.params;
        r->flops = d->r.flops;
        r->latency_ms = d->r.latency_ms;
        r->threads = d->r.threads;
        c->complete = 1;
    } else {
        snprintf(r->reason, sizeof r->reason, "%s", d->r.reason);
        if (!d->worker_died && strncmp(d->r.reason, "diverged", 8) == 0)
            r->diverged++;
        snprintf(r->status, sizeof r->status, "failed");
        c->complete = r->attempts > x->o->retries;
        if (!c->complete)
            log_info("candidate %lld failed (attempt %d of %d): %s; retrying", (long long)r->seq, r->attempts,
                     x->o->retries + 1, r->reason);
    }
    int rc = put(x, r, err);
    /* Identical candidates waiting on this one take its result, or run themselves if it failed. */
    for (int j = (int)d->id + 1; rc == 0 && c->complete && j < x->n; j++) {
        cand_t *o = &x->c[j];
        if (o->waiting_on != d->id)
            continue;
        o->waiting_on = -1;
        if (strcmp(r->status, "done") == 0) {
            serve_cached(o, r);
            o->row.cached_from = r->seq;
            rc = put(x, &o->row, err);
        }
    }
    return rc;
}

static int in_flight(const nas_ctl_t *x)
{
    int k = 0;
    for (int i = x->first_untold; i < x->n; i++)
        k += x->c[i].in_flight;
    return k;
}

static void tick(nas_ctl_t *x)
{
    x->pr.running = in_flight(x);
    x->pr.elapsed = fn_mono() - x->t0;
    if (x->o->on_tick)
        x->o->on_tick(x->o->cb_ctx, &x->pr);
}

static int search_loop(nas_ctl_t *x, err_t *err)
{
    /* Up to two asks per worker outstanding: a worker that finishes while the next candidate
     * to tell is still training takes a queued one instead of idling. The window is fixed by
     * the run's workers (stored with the run), so the call sequence still is. */
    const int W = 2 * x->o->workers;
    for (;;) {
        int stopping = x->o->stop && *x->o->stop;
        int rc = 0;
        while (!stopping && !x->done && x->untold < W) {
            if ((rc = ask_one(x, err)) < 0)
                return rc;
            if (rc != 0)
                break;
        }
        if (!stopping && !x->done && x->untold == 0)
            return err_set(err, FN_ESTATE, "the strategy asks to wait with nothing outstanding");
        if (!stopping && (rc = dispatch(x, err)) < 0)
            return rc;
        int told;
        if ((rc = tell_ready(x, &told, err)) < 0)
            return rc;
        if (told)
            continue;
        if (stopping)
            return FN_ESTATE; /* in-flight evaluations are abandoned: resume re-runs them */
        if (x->untold == 0)
            return 0;
        cand_t *next = next_to_tell(x);
        if (!next)
            return err_set(err, FN_ESTATE, "resume: the run's tell %d cannot be replayed (its candidate is never "
                           "asked); the search settings, their seed or the workers setting changed", x->pr.told);
        /* Every candidate not told waits on an evaluation; with none in flight the search would
         * wait forever: fail loudly instead. */
        if (in_flight(x) == 0)
            return err_set(err, FN_ESTATE, "internal error: candidate %lld waits with no evaluation in flight",
                           (long long)next->row.seq);
        tick(x);
        nas_job_done_t d;
        rc = nas_workers_wait(x->w, 0.25, &d, err);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            rc = on_result(x, &d, err);
            nas_job_done_free(&d);
            if (rc < 0)
                return rc;
        }
    }
}

/* ---- the final retrainings --------------------------------------------------------------------- */

static int cmp_best(const void *a, const void *b)
{
    const store_nas_candidate_t *x = *(store_nas_candidate_t *const *)a, *y = *(store_nas_candidate_t *const *)b;
    /* A candidate ranks by its longest evaluation (ASHA's highest rung, as the strategies' own
     * best), then by accuracy; without ASHA every budget is the same. */
    if (x->budget != y->budget)
        return x->budget > y->budget ? -1 : 1;
    if (x->val_accuracy != y->val_accuracy)
        return x->val_accuracy > y->val_accuracy ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

int nas_ctl_top(const nas_ctl_t *x, int k, int64_t *seqs)
{
    const store_nas_candidate_t **best = FN_CALLOC((size_t)x->n + 1, sizeof *best);
    int nb = 0;
    for (int i = 0; i < x->n; i++)
        if (strcmp(x->c[i].row.status, "done") == 0 && x->c[i].row.cached_from < 0)
            best[nb++] = &x->c[i].row;
    qsort(best, (size_t)nb, sizeof *best, cmp_best);
    /* One per architecture (recipe): one evaluated at several budgets (ASHA) counts once. */
    int m = 0;
    for (int i = 0; i < nb && m < k; i++) {
        int dup = 0;
        for (int j = 0; j < m; j++)
            dup |= strcmp(best[j]->hash, best[i]->hash) == 0;
        if (!dup)
            best[m++] = best[i];
    }
    for (int i = 0; i < m; i++)
        seqs[i] = best[i]->seq;
    free(best);
    return m;
}

const store_nas_candidate_t *nas_ctl_row(const nas_ctl_t *x, int64_t seq, const char **recipe)
{
    if (seq < 0 || seq >= x->n)
        return NULL;
    if (recipe)
        *recipe = x->c[seq].a.recipe;
    return &x->c[seq].row;
}

static int final_phase(nas_ctl_t *x, const nas_ctl_final_t *job, int k, err_t *err)
{
    if (k <= 0)
        return 0;
    int64_t have[64];
    int rc = store_nas_final_done(x->o->store, x->o->run_id, have, err);
    int attempts[NAS_CTL_MAX_FINAL + 1] = {0}, busy[NAS_CTL_MAX_FINAL + 1] = {0},
        finished[NAS_CTL_MAX_FINAL + 1] = {0};
    int left = 0;
    for (int r = 1; r <= k; r++) /* a stored rank of another candidate (an extended search) is redone */
        if (have[r] != STORE_NAS_NO_FINAL && have[r] == job[r - 1].seq)
            finished[r] = 1;
        else
            left++;
    while (rc == 0 && left > 0) {
        if (x->o->stop && *x->o->stop) {
            rc = FN_ESTATE;
            break;
        }
        for (int r = 1; r <= k && rc == 0 && nas_workers_busy(x->w) < nas_workers_size(x->w); r++) {
            if (finished[r] || busy[r])
                continue;
            const nas_ctl_final_t *j = &job[r - 1];
            nas_job_t nj = {.id = r,
                            .final = 1,
                            .epochs = j->epochs,
                            .seed = nas_eval_seed(x->o->seed ^ 0x66696e616cULL, j->seed_key, j->epochs, attempts[r]),
                            .arch = j->arch,
                            .recipe = j->recipe};
            rc = nas_workers_submit(x->w, &nj, err);
            busy[r] = 1;
        }
        if (rc < 0)
            break;
        tick(x);
        nas_job_done_t d;
        int got = nas_workers_wait(x->w, 0.25, &d, err);
        if (got < 0) {
            rc = got;
            break;
        }
        if (got == 0)
            continue;
        int r = (int)d.id;
        if (!d.final || r < 1 || r > k || !busy[r]) {
            nas_job_done_free(&d);
            rc = err_set(err, FN_ESTATE, "a worker returned a retraining (rank %d) that is not running", r);
            break;
        }
        const nas_ctl_final_t *j = &job[r - 1];
        busy[r] = 0;
        attempts[r]++;
        if (d.r.ok) {
            store_nas_final_t f = {.rank = r,
                                   .seq = j->seq,
                                   .arch = j->arch,
                                   .recipe = j->stored_recipe,
                                   .test_accuracy = d.r.accuracy,
                                   .test_loss = d.r.loss,
                                   .val_accuracy = j->val_accuracy,
                                   .flops = d.r.flops,
                                   .latency_ms = d.r.latency_ms,
                                   .seconds = d.r.train_seconds,
                                   .params = d.r.params,
                                   .weights = d.weights,
                                   .n_weights = d.n_weights};
            rc = store_nas_final_put(x->o->store, x->o->run_id, &f, err);
            finished[r] = 1;
            left--;
            if (rc == 0 && x->o->on_final)
                x->o->on_final(x->o->cb_ctx, &f, j->stored_recipe);
        } else if (attempts[r] > x->o->retries) {
            log_warn("retraining %s failed for good: %s", j->what, d.r.reason);
            finished[r] = 1;
            left--;
        } else {
            log_info("retraining %s failed (attempt %d): %s; retrying", j->what, attempts[r], d.r.reason);
        }
        nas_job_done_free(&d);
    }
    return rc;
}

int nas_ctl_run(const nas_ctl_opts_t *o, err_t *err)
{
    nas_ctl_t x = {.o = o,
                   .w = o->pool,
                   .pr = {.budget = o->budget, .unit = o->unit, .best = -1, .best_seq = -1},
                   .t0 = fn_mono()};
    int rc = store_nas_candidates_load(o->store, o->run_id, &x.stored, &x.n_stored, err);
    for (int i = 0; rc == 0 && i < x.n_stored; i++)
        if (x.stored[i].seq != i)
            rc = err_set(err, FN_ESTATE, "resume: run %lld's candidates are not numbered 0..%d", (long long)o->run_id,
                         x.n_stored - 1);
    /* The recorded tells are 0..n_recorded-1, each once (they are replayed in that order). */
    for (int i = 0; rc == 0 && i < x.n_stored; i++)
        x.n_recorded += x.stored[i].tell_seq >= 0;
    for (int i = 0; rc == 0 && i < x.n_stored; i++)
        if (x.stored[i].tell_seq >= x.n_recorded)
            rc = err_set(err, FN_ESTATE, "resume: run %lld's tell order is not 0..%d", (long long)o->run_id,
                         x.n_recorded - 1);
    if (rc == 0 && o->workers < 1)
        rc = err_set(err, FN_EINVAL, "a search needs >= 1 worker (got %d)", o->workers);
    if (rc == 0)
        x.vfree = FN_CALLOC((size_t)o->workers, sizeof *x.vfree);
    if (rc == 0)
        rc = search_loop(&x, err);
    nas_ctl_final_t *jobs = FN_CALLOC(NAS_CTL_MAX_FINAL, sizeof *jobs);
    int k = 0;
    if (rc == 0 && o->finals)
        rc = k = o->finals(o->finals_ctx, &x, jobs, NAS_CTL_MAX_FINAL, err);
    if (rc >= 0)
        rc = final_phase(&x, jobs, k, err);
    if (rc == FN_ESTATE && o->stop && *o->stop)
        err_set(err, FN_ESTATE, "stopped; `fednas %s --resume %lld` continues the search", o->command,
                (long long)o->run_id);
    free(jobs);
    free(x.vfree);
    if (o->strategy.free)
        o->strategy.free(o->strategy.impl);
    for (int i = 0; i < x.n; i++)
        ask_free(&x.c[i].a);
    free(x.c);
    store_nas_candidates_free(x.stored, x.n_stored);
    return rc;
}

/* ---- `fednas nas` ------------------------------------------------------------------------------- */

static char *recipe_json(const nas_search_t *s)
{
    const engine_train_config_t *t = &s->eval.train;
    json_t *j = json_pack("{s:i, s:s, s:f, s:i, s:s, s:i, s:i, s:s}", "epochs", s->cfg->retrain_epochs, "optimizer",
                          engine_optim_type_name(t->optim.type), "lr", (double)t->optim.lr, "batch_size",
                          t->batch_size, "schedule", engine_schedule_type_name(t->schedule.type), "train_images",
                          s->data->n_all, "test_images", s->data->n_test, "init", "from scratch");
    json_error_t je;
    json_t *aug = s->augment ? json_loads(s->augment, 0, &je) : NULL;
    json_object_set_new(j, "augment", aug ? aug : json_string("none"));
    json_object_set_new(j, "momentum", json_real(t->optim.momentum));
    json_object_set_new(j, "weight_decay", json_real(t->optim.weight_decay));
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    return text;
}

typedef struct nas_finals {
    const nas_search_t *s;
    char *recipe;
} nas_finals_t;

/* The top k architectures, retrained from scratch with the search's recipe. */
static int nas_finals(void *ctx, const nas_ctl_t *c, nas_ctl_final_t *jobs, int max, err_t *err)
{
    (void)err;
    nas_finals_t *f = ctx;
    const nas_config_t *cfg = f->s->cfg;
    int64_t seqs[NAS_CTL_MAX_FINAL];
    int k = nas_ctl_top(c, cfg->top_k < max ? cfg->top_k : max, seqs);
    if (k > 0)
        f->recipe = recipe_json(f->s);
    for (int i = 0; i < k; i++) {
        const store_nas_candidate_t *r = nas_ctl_row(c, seqs[i], NULL);
        jobs[i] = (nas_ctl_final_t){.seq = r->seq,
                                    .val_accuracy = r->val_accuracy,
                                    .arch = r->arch,
                                    .stored_recipe = f->recipe,
                                    .seed_key = r->hash,
                                    .epochs = cfg->retrain_epochs};
        snprintf(jobs[i].what, sizeof jobs[i].what, "rank %d (candidate %lld)", i + 1, (long long)r->seq);
    }
    return k;
}

int nas_search_run(nas_search_t *s, err_t *err)
{
    const nas_config_t *cfg = s->cfg;
    int asha = cfg->strategy.kind == NAS_STRATEGY_ASHA;
    nas_finals_t fin = {.s = s};
    nas_ctl_opts_t o = {.pool = s->workers, /* caller-owned (MPI ranks), else our own */
                        .workers = cfg->workers,
                        .retries = cfg->retries,
                        .seed = cfg->seed,
                        .store = s->store,
                        .run_id = s->run_id,
                        .command = "nas",
                        .budget = asha ? cfg->budget * (cfg->epochs > 0 ? cfg->epochs : 1) : cfg->budget,
                        .unit = asha ? "epochs" : "evaluations",
                        .finals = nas_finals,
                        .finals_ctx = &fin,
                        .on_candidate = s->on_candidate,
                        .on_tick = s->on_tick,
                        .on_final = s->on_final,
                        .cb_ctx = s->cb_ctx,
                        .stop = s->stop};
    /* Workers fork before this process touches the engine, so none inherits a thread pool. */
    int rc = 0;
    if (!o.pool && cfg->evaluation == NAS_EVAL_WEIGHT_SHARING) /* trains the supernet first */
        rc = nas_supernet_workers_start(cfg, s->data, &s->eval, s->threads * cfg->workers, &o.pool, err);
    else if (!o.pool)
        rc = nas_workers_start_local(cfg->workers, s->threads, s->data, &s->eval, &o.pool, err);
    if (rc == 0)
        rc = nas_strategy_ctl(cfg, &o.strategy, err);
    if (rc == 0)
        rc = nas_ctl_run(&o, err);
    if (o.pool != s->workers)
        nas_workers_close(o.pool);
    free(fin.recipe);
    return rc;
}
