/* The tuning search: the NAS controller's loop (nas/controller.c) over recipes instead of
 * genomes. Proposals are asked in a window of 2 x workers, evaluated by the NAS workers (each
 * job carries its recipe's train block), stored as nas_candidates rows and told back in ask
 * order; a resumed search replays the stored rows through a fresh strategy and checks that
 * every replayed ask matches. Then the best recipe (and the experiment's own) is retrained on
 * all the training data and tested. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "nas/controller.h"
#include "nas/tune.h"
#include "nas/worker.h"

typedef struct cand {
    nas_tune_proposal_t p;
    store_nas_candidate_t row;
    char *train; /* the job's train block, as text */
    int complete, in_flight;
    int64_t waiting_on;
} cand_t;

typedef struct tctl {
    nas_tune_search_t *s;
    nas_tune_strategy_t *st;
    nas_workers_t *w;
    cand_t *c;
    int n, cap, next_tell, told;
    int done_asking;
    store_nas_candidate_t *stored;
    int n_stored;
    double best;
} tctl_t;

static int put(tctl_t *x, const store_nas_candidate_t *r, err_t *err)
{
    return store_nas_candidate_put(x->s->store, x->s->run_id, r, err);
}

static void copy_metrics(store_nas_candidate_t *d, const store_nas_candidate_t *s)
{
    d->has_metrics = s->has_metrics;
    d->val_accuracy = s->val_accuracy;
    d->val_loss = s->val_loss;
    d->train_loss = s->train_loss;
    d->params = s->params;
    d->flops = s->flops;
    d->latency_ms = s->latency_ms;
    d->threads = s->threads;
}

static int ask_one(tctl_t *x, err_t *err)
{
    nas_tune_proposal_t p;
    int rc = nas_tune_strategy_ask(x->st, &p, err);
    if (rc != 0) {
        if (rc == NAS_TUNE_ASK_DONE)
            x->done_asking = 1;
        return rc;
    }
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 64;
        cand_t *nc = realloc(x->c, (size_t)x->cap * sizeof *nc);
        FN_CHECK(nc);
        x->c = nc;
    }
    cand_t *c = &x->c[x->n];
    memset(c, 0, sizeof *c);
    c->p = p;
    c->waiting_on = -1;
    store_nas_candidate_t *r = &c->row;
    r->seq = x->n;
    r->cand_id = p.trial;
    r->rung = p.rung;
    snprintf(r->hash, sizeof r->hash, "%s", p.hash);
    json_t *g = nas_tune_recipe_json(&p.recipe);
    r->genome = json_dumps(g, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6));
    json_decref(g);
    r->arch = strdup(x->s->arch);
    json_t *tr = nas_tune_recipe_train(&p.recipe, x->s->base_train, x->s->cfg->max_epochs);
    c->train = json_dumps(tr, JSON_COMPACT | JSON_REAL_PRECISION(8));
    json_decref(tr);
    FN_CHECK(r->genome && r->arch && c->train);
    r->parent = p.parent;
    snprintf(r->mutation, sizeof r->mutation, "%s", p.mutation);
    r->budget = p.epochs;
    r->cached_from = r->tell_seq = -1;
    r->queued_at = fn_now();
    snprintf(r->status, sizeof r->status, "queued");
    x->n++;
    if (r->seq < x->n_stored) {
        store_nas_candidate_t *old = &x->stored[r->seq];
        if (strcmp(old->hash, r->hash) != 0 || old->budget != r->budget)
            return err_set(err, FN_ESTATE,
                           "resume: trial row %lld replays as %.12s... at %g epochs but the run recorded %.12s... at %g "
                           "epochs; the tune block, its seed or the workers changed",
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
        int final_fail = strcmp(old->status, "failed") == 0 && old->attempts > x->s->cfg->retries;
        if (strcmp(old->status, "done") == 0 || final_fail) {
            snprintf(r->status, sizeof r->status, "%s", old->status);
            c->complete = 1;
            return 0;
        }
    }
    /* the same recipe at the same budget (a repeated draw) is served by the earlier evaluation */
    for (int j = (int)r->seq - 1; j >= 0; j--) {
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
            c->waiting_on = o->waiting_on >= 0 ? o->waiting_on : j;
        }
        if (c->complete || c->waiting_on >= 0)
            break;
    }
    return put(x, r, err);
}

static int dispatch(tctl_t *x, err_t *err)
{
    for (int i = x->next_tell; i < x->n && nas_workers_busy(x->w) < nas_workers_size(x->w); i++) {
        cand_t *c = &x->c[i];
        if (c->complete || c->in_flight || c->waiting_on >= 0)
            continue;
        nas_job_t job = {.id = c->row.seq,
                         .epochs = c->row.budget,
                         .seed = nas_eval_seed(x->s->cfg->seed, c->row.hash, c->row.budget, c->row.diverged),
                         .arch = c->row.arch,
                         .recipe = c->train};
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

static int tell_ready(tctl_t *x, int *told, err_t *err)
{
    *told = 0;
    if (x->next_tell >= x->n || !x->c[x->next_tell].complete)
        return 0;
    cand_t *c = &x->c[x->next_tell];
    store_nas_candidate_t *r = &c->row;
    int ok = strcmp(r->status, "done") == 0;
    int rc = nas_tune_strategy_tell(x->st, &c->p, ok, r->val_accuracy, err);
    if (rc < 0)
        return err_wrap(err, "telling trial row %lld: ", (long long)r->seq);
    if (r->tell_seq != x->told) {
        r->tell_seq = x->told;
        if ((rc = put(x, r, err)) < 0)
            return rc;
    }
    x->told++;
    if (ok && r->val_accuracy > x->best)
        x->best = r->val_accuracy;
    x->next_tell++;
    *told = 1;
    if (x->s->on_trial)
        x->s->on_trial(x->s->cb_ctx, r, x->told, x->best);
    return 0;
}

static int on_result(tctl_t *x, nas_job_done_t *d, err_t *err)
{
    if (d->final || d->id < 0 || d->id >= x->n || !x->c[d->id].in_flight)
        return err_set(err, FN_ESTATE, "a worker returned trial row %lld, which is not being evaluated", (long long)d->id);
    cand_t *c = &x->c[d->id];
    store_nas_candidate_t *r = &c->row;
    c->in_flight = 0;
    r->attempts++;
    snprintf(r->worker, sizeof r->worker, "%s", d->worker);
    r->ended_at = fn_now();
    r->seconds = d->r.train_seconds > 0 ? d->r.train_seconds : r->ended_at - r->started_at;
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
    }
    int rc = put(x, r, err);
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

static int in_flight(const tctl_t *x)
{
    int k = 0;
    for (int i = x->next_tell; i < x->n; i++)
        k += x->c[i].in_flight;
    return k;
}

static int search_loop(tctl_t *x, err_t *err)
{
    const int W = 2 * x->s->cfg->workers;
    for (;;) {
        int stopping = x->s->stop && *x->s->stop;
        int rc = 0;
        while (!stopping && !x->done_asking && x->n - x->next_tell < W) {
            if ((rc = ask_one(x, err)) < 0)
                return rc;
            if (rc != 0)
                break;
        }
        if (!stopping && (rc = dispatch(x, err)) < 0)
            return rc;
        int told;
        if ((rc = tell_ready(x, &told, err)) < 0)
            return rc;
        if (told)
            continue;
        if (x->next_tell == x->n && !stopping) {
            if (x->done_asking)
                return 0;
            continue; /* every result is in: ask again (ASHA may promote now) */
        }
        if (stopping)
            return FN_ESTATE;
        if (in_flight(x) == 0)
            return err_set(err, FN_ESTATE, "internal error: trial row %d waits with no evaluation in flight", x->next_tell);
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

/* The best evaluation: the highest rung reached, then validation accuracy, then the earlier. */
static int best_row(const tctl_t *x)
{
    int b = -1;
    for (int i = 0; i < x->n; i++) {
        const store_nas_candidate_t *r = &x->c[i].row;
        if (strcmp(r->status, "done") != 0)
            continue;
        if (b < 0) {
            b = i;
            continue;
        }
        const store_nas_candidate_t *o = &x->c[b].row;
        if (r->budget > o->budget || (r->budget == o->budget && r->val_accuracy > o->val_accuracy))
            b = i;
    }
    return b;
}

static int final_phase(tctl_t *x, int best, err_t *err)
{
    const nas_tune_config_t *cfg = x->s->cfg;
    const int k = cfg->baseline ? 2 : 1;
    char *train[3] = {NULL, NULL, NULL};
    json_t *t1 = nas_tune_recipe_train(&x->c[best].p.recipe, x->s->base_train, cfg->max_epochs);
    train[1] = json_dumps(t1, JSON_COMPACT | JSON_REAL_PRECISION(8));
    json_decref(t1);
    if (k == 2) {
        json_t *t2 = json_deep_copy(x->s->base_train);
        train[2] = json_dumps(t2, JSON_COMPACT | JSON_REAL_PRECISION(8));
        json_decref(t2);
    }
    uint64_t have = 0;
    int rc = store_nas_final_done(x->s->store, x->s->run_id, &have, err);
    int busy[3] = {0}, finished[3] = {0}, attempts[3] = {0}, left = 0;
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
            /* one seed for both: the recipes are compared on the same initialisation */
            nas_job_t job = {.id = r,
                             .final = 1,
                             .epochs = cfg->max_epochs,
                             .seed = nas_eval_seed(cfg->seed ^ 0x66696e616cULL, "", cfg->max_epochs, attempts[r]),
                             .arch = x->s->arch,
                             .recipe = train[r]};
            rc = nas_workers_submit(x->w, &job, err);
            busy[r] = 1;
        }
        if (rc < 0)
            break;
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
                                   .seq = r == 1 ? x->c[best].row.seq : -1,
                                   .arch = x->s->arch,
                                   .recipe = train[r],
                                   .test_accuracy = d.r.accuracy,
                                   .test_loss = d.r.loss,
                                   .val_accuracy = r == 1 ? x->c[best].row.val_accuracy : -1,
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
                x->s->on_final(x->s->cb_ctx, r, &f);
        } else if (attempts[r] > cfg->retries) {
            log_warn("retraining %s failed for good: %s", r == 1 ? "the best recipe" : "the experiment's recipe",
                     d.r.reason);
            finished[r] = 1;
            left--;
        }
        nas_job_done_free(&d);
    }
    free(train[1]);
    free(train[2]);
    return rc;
}

int nas_tune_search_run(nas_tune_search_t *s, int64_t *best_seq, err_t *err)
{
    *best_seq = -1;
    tctl_t x = {.s = s, .best = -1};
    nas_tune_recipe_t base;
    nas_tune_recipe_from_train(s->base_train, &base);
    int rc = store_nas_candidates_load(s->store, s->run_id, &x.stored, &x.n_stored, err);
    for (int i = 0; rc == 0 && i < x.n_stored; i++)
        if (x.stored[i].seq != i)
            rc = err_set(err, FN_ESTATE, "resume: run %lld's trials are not numbered 0..%d", (long long)s->run_id,
                         x.n_stored - 1);
    if (rc == 0)
        rc = nas_workers_start_local(s->cfg->workers, s->threads, s->data, &s->eval, &x.w, err);
    if (rc == 0)
        rc = nas_tune_strategy_create(s->cfg, &base, &x.st, err);
    if (rc == 0)
        rc = search_loop(&x, err);
    int b = rc == 0 ? best_row(&x) : -1;
    if (rc == 0 && b < 0)
        rc = err_set(err, FN_EINVAL, "every trial failed (see the reasons with `fednas nas` on the dashboard or in "
                                     "nas_candidates): nothing to retrain");
    if (rc == 0) {
        *best_seq = x.c[b].row.seq;
        rc = final_phase(&x, b, err);
    }
    if (rc == FN_ESTATE && s->stop && *s->stop)
        err_set(err, FN_ESTATE, "stopped; `fednas tune --resume %lld` continues the search", (long long)s->run_id);
    nas_workers_close(x.w);
    nas_tune_strategy_free(x.st);
    for (int i = 0; i < x.n; i++) {
        free(x.c[i].row.genome);
        free(x.c[i].row.arch);
        free(x.c[i].train);
    }
    free(x.c);
    store_nas_candidates_free(x.stored, x.n_stored);
    return rc;
}
