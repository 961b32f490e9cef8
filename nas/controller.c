#include "nas/controller.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "nas/genome.h"
#include "nas/strategy.h"
#include "nas/supernet.h"
#include "nas/worker.h"

/* One ask, kept in ask order. The tell order is the ask order: a candidate is told only when
 * every earlier one has been, so the strategy sees the same call sequence however the workers'
 * timings interleave, and a resumed search can replay it from the rows. */
typedef struct cand {
    nas_proposal_t p;
    store_nas_candidate_t row;
    int complete;   /* done, or failed for good */
    int in_flight;
    int64_t waiting_on; /* an earlier identical candidate (hash and budget) still being evaluated */
} cand_t;

typedef struct ctl {
    nas_search_t *s;
    nas_strategy_t *st;
    nas_workers_t *w;
    cand_t *c;
    int n, cap;      /* asked */
    int next_tell;   /* the oldest candidate not yet told */
    double epochs_asked;
    store_nas_candidate_t *stored;
    int n_stored;
    nas_progress_t pr;
    double t0;
} ctl_t;

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

static int put(ctl_t *x, const store_nas_candidate_t *row, err_t *err)
{
    return store_nas_candidate_put(x->s->store, x->s->run_id, row, err);
}

static int budget_left(const ctl_t *x)
{
    const nas_config_t *cfg = x->s->cfg;
    /* ASHA's budget counts epochs consumed, in units of one full evaluation's epochs. */
    if (cfg->strategy.kind == NAS_STRATEGY_ASHA)
        return x->epochs_asked < cfg->budget * (cfg->epochs > 0 ? cfg->epochs : 1) - 1e-9;
    return x->n < cfg->budget;
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

/* Asks one proposal and records it; 1 when the strategy must be told something first. */
static int ask_one(ctl_t *x, err_t *err)
{
    nas_proposal_t p;
    int rc = nas_strategy_ask(x->st, &p, err);
    if (rc != 0)
        return rc;
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 64;
        cand_t *nc = realloc(x->c, (size_t)x->cap * sizeof *nc);
        FN_CHECK(nc);
        x->c = nc;
    }
    const nas_config_t *cfg = x->s->cfg;
    cand_t *c = &x->c[x->n];
    memset(c, 0, sizeof *c);
    c->p = p;
    c->waiting_on = -1;
    store_nas_candidate_t *r = &c->row;
    r->seq = x->n;
    r->cand_id = p.id;
    r->rung = p.rung;
    snprintf(r->hash, sizeof r->hash, "%s", p.hash);
    json_t *gj = NULL, *model = NULL;
    if ((rc = nas_genome_to_json(&cfg->space, &p.genome, &gj, err)) < 0 ||
        (rc = nas_genome_decode(&cfg->space, &p.genome, &model, err)) < 0) {
        json_decref(gj);
        return err_wrap(err, "candidate %d: ", x->n);
    }
    r->genome = json_dumps(gj, JSON_COMPACT);
    r->arch = json_dumps(model, JSON_COMPACT);
    json_decref(gj);
    json_decref(model);
    r->parent = p.parent_id;
    snprintf(r->mutation, sizeof r->mutation, "%s", p.mutation);
    r->budget = p.epochs;
    r->cached_from = r->tell_seq = -1;
    r->queued_at = fn_now();
    snprintf(r->status, sizeof r->status, "queued");
    x->n++;
    x->epochs_asked += p.epochs;
    if (r->seq < x->n_stored) {
        /* Replay: the strategy must ask exactly what it asked the first time. */
        store_nas_candidate_t *old = &x->stored[r->seq];
        if (strcmp(old->hash, r->hash) != 0 || old->budget != r->budget)
            return err_set(err, FN_ESTATE,
                           "resume: candidate %lld replays as %.12s... at %g epochs but the run recorded %.12s... at "
                           "%g epochs; the strategy, its seed or the workers setting changed",
                           (long long)r->seq, r->hash, r->budget, old->hash, old->budget);
        r->attempts = old->attempts;
        r->diverged = old->diverged;
        snprintf(r->reason, sizeof r->reason, "%s", old->reason);
        snprintf(r->worker, sizeof r->worker, "%s", old->worker);
        r->cached_from = old->cached_from;
        r->queued_at = old->queued_at;
        r->started_at = old->started_at;
        r->ended_at = old->ended_at;
        r->seconds = old->seconds;
        copy_metrics(r, old);
        int final_fail = strcmp(old->status, "failed") == 0 && old->attempts > cfg->retries;
        if (strcmp(old->status, "done") == 0 || final_fail) {
            snprintf(r->status, sizeof r->status, "%s", old->status);
            c->complete = 1;
            return 0; /* nothing changed: no write */
        }
        /* queued, running (the controller died meanwhile) or failed with retries left: again. */
    }
    /* The hash cache: an earlier evaluation of the same canonical genome at the same budget. */
    for (int j = r->seq - 1; j >= 0; j--) {
        cand_t *o = &x->c[j];
        if (strcmp(o->row.hash, r->hash) != 0 || o->row.budget != r->budget)
            continue;
        if (o->complete && strcmp(o->row.status, "done") == 0) {
            copy_metrics(r, &o->row);
            r->cached_from = o->row.cached_from >= 0 ? o->row.cached_from : o->row.seq;
            snprintf(r->status, sizeof r->status, "done");
            snprintf(r->worker, sizeof r->worker, "cache");
            r->started_at = r->ended_at = fn_now();
            c->complete = 1;
        } else if (!o->complete) {
            /* Wait on the evaluation itself: o may be a waiter, which no worker ever reports. */
            c->waiting_on = o->waiting_on >= 0 ? o->waiting_on : j;
        }
        if (c->complete || c->waiting_on >= 0)
            break;
    }
    return put(x, r, err);
}

static int dispatch(ctl_t *x, err_t *err)
{
    for (int i = x->next_tell; i < x->n && nas_workers_busy(x->w) < nas_workers_size(x->w); i++) {
        cand_t *c = &x->c[i];
        if (c->complete || c->in_flight || c->waiting_on >= 0)
            continue;
        nas_job_t job = {.id = c->row.seq,
                         .final = 0,
                         .epochs = c->row.budget,
                         .seed = nas_eval_seed(x->s->cfg->seed, c->row.hash, c->row.budget, c->row.diverged),
                         .arch = c->row.arch,
                         .genome = c->row.genome};
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

/* Tells the oldest candidate if it is complete; one at a time, so that the calls always go
 * ask x window, tell 0, ask, tell 1, ask, ... whatever finished first: the strategy's view of the
 * search (and so every later proposal) never depends on the workers' timing. */
static int tell_ready(ctl_t *x, int *told, err_t *err)
{
    *told = 0;
    if (x->next_tell < x->n && x->c[x->next_tell].complete) {
        cand_t *c = &x->c[x->next_tell];
        store_nas_candidate_t *r = &c->row;
        nas_result_t res = {.status = strcmp(r->status, "done") == 0 ? NAS_RESULT_OK : NAS_RESULT_FAILED,
                            .val_acc = r->val_accuracy,
                            .params = (double)r->params,
                            .flops = r->flops,
                            .latency_ms = r->latency_ms};
        int rc = nas_strategy_tell(x->st, &c->p, &res, err);
        if (rc < 0)
            return err_wrap(err, "telling candidate %lld: ", (long long)r->seq);
        int64_t ts = x->pr.told;
        if (r->tell_seq != ts) {
            r->tell_seq = ts;
            if ((rc = put(x, r, err)) < 0)
                return rc;
        }
        x->pr.told++;
        x->pr.progress += x->s->cfg->strategy.kind == NAS_STRATEGY_ASHA ? r->budget : 1;
        if (res.status == NAS_RESULT_OK && r->val_accuracy > x->pr.best) {
            x->pr.best = r->val_accuracy;
            x->pr.best_seq = r->seq;
        }
        if (res.status != NAS_RESULT_OK)
            x->pr.failed++;
        x->next_tell++;
        (*told)++;
        if (x->s->on_candidate)
            x->s->on_candidate(x->s->cb_ctx, r, &x->pr);
    }
    return 0;
}

static int on_result(ctl_t *x, nas_job_done_t *d, err_t *err)
{
    if (d->id < 0 || d->id >= x->n || !x->c[d->id].in_flight)
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
        c->complete = r->attempts > x->s->cfg->retries;
        if (!c->complete)
            log_info("candidate %lld failed (attempt %d of %d): %s; retrying", (long long)r->seq, r->attempts,
                     x->s->cfg->retries + 1, r->reason);
    }
    int rc = put(x, r, err);
    /* Identical candidates waiting on this one take its result, or run themselves if it failed. */
    for (int j = (int)d->id + 1; rc == 0 && c->complete && j < x->n; j++) {
        cand_t *o = &x->c[j];
        if (o->waiting_on != d->id)
            continue;
        o->waiting_on = -1;
        if (strcmp(r->status, "done") == 0) {
            copy_metrics(&o->row, r);
            o->row.cached_from = r->seq;
            snprintf(o->row.status, sizeof o->row.status, "done");
            snprintf(o->row.worker, sizeof o->row.worker, "cache");
            o->row.started_at = o->row.ended_at = fn_now();
            o->complete = 1;
            rc = put(x, &o->row, err);
        }
    }
    return rc;
}

static int in_flight(const ctl_t *x)
{
    int k = 0;
    for (int i = x->next_tell; i < x->n; i++)
        k += x->c[i].in_flight;
    return k;
}

static void tick(ctl_t *x)
{
    x->pr.running = in_flight(x);
    x->pr.elapsed = fn_mono() - x->t0;
    if (x->s->on_tick)
        x->s->on_tick(x->s->cb_ctx, &x->pr);
}

static int search_loop(ctl_t *x, err_t *err)
{
    /* Up to two asks per worker outstanding: a worker that finishes while the oldest candidate
     * is still training takes a queued one instead of idling until the oldest is told. The
     * window is fixed by nas.workers (stored with the run), so the call sequence still is. */
    const int W = 2 * x->s->cfg->workers;
    for (;;) {
        int stopping = x->s->stop && *x->s->stop;
        int rc = 0;
        while (!stopping && x->n - x->next_tell < W && budget_left(x)) {
            rc = ask_one(x, err);
            if (rc < 0)
                return rc;
            if (rc == NAS_ASK_WAIT)
                break;
        }
        if (rc == NAS_ASK_WAIT && x->next_tell == x->n)
            return err_set(err, FN_ESTATE, "the strategy asks to wait with nothing outstanding");
        if (!stopping && (rc = dispatch(x, err)) < 0)
            return rc;
        int told;
        if ((rc = tell_ready(x, &told, err)) < 0)
            return rc;
        if (told)
            continue;
        if (x->next_tell == x->n || (stopping && in_flight(x) == 0))
            return stopping ? FN_ESTATE : 0;
        if (stopping)
            return FN_ESTATE; /* in-flight evaluations are abandoned: resume re-runs them */
        /* Every candidate not told waits on an evaluation; with none in flight the search would
         * wait forever: fail loudly instead. */
        if (in_flight(x) == 0)
            return err_set(err, FN_ESTATE, "internal error: candidate %d waits with no evaluation in flight",
                           x->next_tell);
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

/* ---- the final retraining of the top k ---------------------------------------------------- */

static int cmp_best(const void *a, const void *b)
{
    const store_nas_candidate_t *x = *(store_nas_candidate_t *const *)a, *y = *(store_nas_candidate_t *const *)b;
    /* An architecture ranks by its longest evaluation (ASHA's highest rung, as the strategy's own
     * best), then by accuracy; without ASHA every budget is the same. */
    if (x->budget != y->budget)
        return x->budget > y->budget ? -1 : 1;
    if (x->val_accuracy != y->val_accuracy)
        return x->val_accuracy > y->val_accuracy ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

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

static int final_phase(ctl_t *x, err_t *err)
{
    const nas_config_t *cfg = x->s->cfg;
    int k = cfg->top_k;
    if (k <= 0)
        return 0;
    store_nas_candidate_t **best = FN_CALLOC((size_t)x->n + 1, sizeof *best);
    int nb = 0;
    for (int i = 0; i < x->n; i++)
        if (strcmp(x->c[i].row.status, "done") == 0 && x->c[i].row.cached_from < 0)
            best[nb++] = &x->c[i].row;
    qsort(best, (size_t)nb, sizeof *best, cmp_best);
    /* One per architecture: a genome evaluated at several budgets (ASHA) counts once. */
    int m = 0;
    for (int i = 0; i < nb; i++) {
        int dup = 0;
        for (int j = 0; j < m; j++)
            dup |= strcmp(best[j]->hash, best[i]->hash) == 0;
        if (!dup)
            best[m++] = best[i];
    }
    if (k > m)
        k = m;
    if (k > 63)
        k = 63;
    uint64_t have;
    int rc = store_nas_final_done(x->s->store, x->s->run_id, &have, err);
    char *recipe = recipe_json(x->s);
    int attempts[64] = {0}, busy[64] = {0}, finished[64] = {0};
    int left = 0;
    for (int r = 1; r <= k; r++)
        if (have & (1ULL << r))
            finished[r] = 1;
        else
            left++;
    while (rc == 0 && left > 0) {
        if (x->s->stop && *x->s->stop) {
            rc = FN_ESTATE;
            break;
        }
        for (int r = 1; r <= k && rc == 0 && nas_workers_busy(x->w) < nas_workers_size(x->w); r++) {
            if (finished[r] || busy[r])
                continue;
            nas_job_t job = {.id = r,
                             .final = 1,
                             .epochs = cfg->retrain_epochs,
                             .seed = nas_eval_seed(cfg->seed ^ 0x66696e616cULL, best[r - 1]->hash, cfg->retrain_epochs,
                                                   attempts[r]),
                             .arch = best[r - 1]->arch};
            rc = nas_workers_submit(x->w, &job, err);
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
        busy[r] = 0;
        attempts[r]++;
        if (d.r.ok) {
            store_nas_final_t f = {.rank = r,
                                   .seq = best[r - 1]->seq,
                                   .arch = best[r - 1]->arch,
                                   .recipe = recipe,
                                   .test_accuracy = d.r.accuracy,
                                   .test_loss = d.r.loss,
                                   .val_accuracy = best[r - 1]->val_accuracy,
                                   .flops = d.r.flops,
                                   .latency_ms = d.r.latency_ms,
                                   .seconds = d.r.train_seconds,
                                   .params = d.r.params,
                                   .weights = d.weights,
                                   .n_weights = d.n_weights};
            rc = store_nas_final_put(x->s->store, x->s->run_id, &f, err);
            finished[r] = 1;
            left--;
            if (rc == 0 && x->s->on_final)
                x->s->on_final(x->s->cb_ctx, &f, recipe);
        } else if (attempts[r] > cfg->retries) {
            log_warn("retraining rank %d (candidate %lld) failed for good: %s", r, (long long)best[r - 1]->seq,
                     d.r.reason);
            finished[r] = 1;
            left--;
        } else {
            log_info("retraining rank %d failed (attempt %d): %s; retrying", r, attempts[r], d.r.reason);
        }
        nas_job_done_free(&d);
    }
    free(recipe);
    free(best);
    return rc;
}

int nas_search_run(nas_search_t *s, err_t *err)
{
    const nas_config_t *cfg = s->cfg;
    int asha = cfg->strategy.kind == NAS_STRATEGY_ASHA;
    ctl_t x = {.s = s,
               .pr = {.budget = asha ? cfg->budget * (cfg->epochs > 0 ? cfg->epochs : 1) : cfg->budget,
                      .unit = asha ? "epochs" : "evaluations",
                      .best = -1,
                      .best_seq = -1},
               .t0 = fn_mono()};
    int rc = store_nas_candidates_load(s->store, s->run_id, &x.stored, &x.n_stored, err);
    for (int i = 0; rc == 0 && i < x.n_stored; i++)
        if (x.stored[i].seq != i)
            rc = err_set(err, FN_ESTATE, "resume: run %lld's candidates are not numbered 0..%d", (long long)s->run_id,
                         x.n_stored - 1);
    /* Workers fork before this process touches the engine, so none inherits a thread pool. */
    x.w = s->workers; /* caller-owned (MPI ranks), else our own */
    if (rc == 0 && !x.w && cfg->evaluation == NAS_EVAL_WEIGHT_SHARING) /* trains the supernet first */
        rc = nas_supernet_workers_start(cfg, s->data, &s->eval, s->threads * cfg->workers, &x.w, err);
    else if (rc == 0 && !x.w)
        rc = nas_workers_start_local(s->cfg->workers, s->threads, s->data, &s->eval, &x.w, err);
    if (rc == 0)
        rc = nas_strategy_create(s->cfg, s->cfg->seed, &x.st, err);
    if (rc == 0)
        rc = search_loop(&x, err);
    if (rc == 0)
        rc = final_phase(&x, err);
    if (rc == FN_ESTATE && s->stop && *s->stop)
        err_set(err, FN_ESTATE, "stopped; `fednas nas --resume %lld` continues the search", (long long)s->run_id);
    if (x.w != s->workers)
        nas_workers_close(x.w);
    nas_strategy_free(x.st);
    for (int i = 0; i < x.n; i++) {
        free(x.c[i].row.genome);
        free(x.c[i].row.arch);
    }
    free(x.c);
    store_nas_candidates_free(x.stored, x.n_stored);
    return rc;
}
