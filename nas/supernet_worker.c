/* The controller's worker backend for "evaluation": "weight_sharing" (nas/supernet.h): one
 * in-process slot that scores search candidates with a supernet trained when the backend starts,
 * and retrains final candidates from scratch like a local worker. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/threadpool.h"
#include "nas/supernet.h"

typedef struct {
    nas_space_t sp;
    const nas_data_t *d;
    nas_eval_opts_t base;
    nas_supernet_t *sn;
    nas_job_done_t done; /* the finished job wait hands out next */
    int have;
} sw_t;

void nas_supernet_score_job(nas_supernet_t *sn, const nas_space_t *sp, const nas_data_t *d,
                            const nas_eval_opts_t *base, const char *genome, nas_eval_result_t *r)
{
    err_t err = {0};
    json_error_t je;
    json_t *gj = genome ? json_loads(genome, 0, &je) : NULL;
    nas_genome_t g;
    nas_supernet_score_t s;
    engine_model_t *m = NULL;
    int rc = gj ? nas_genome_from_json(sp, gj, &g, &err) : err_set(&err, FN_EINVAL, "no genome in the job");
    if (rc == 0)
        rc = nas_supernet_score(sn, &g, d, &s, &err);
    /* latency of the candidate's own model (the supernet scores its batch-norm twin) */
    json_t *arch = NULL;
    if (rc == 0 && base->latency_reps > 0 && (rc = nas_genome_decode(sp, &g, &arch, &err)) == 0 &&
        (rc = engine_model_create_shape(arch, sp->in_c, sp->in_h, sp->in_w, sp->classes, &m, &err)) == 0)
        rc = nas_eval_latency(m, base->latency_reps, &r->latency_ms, &err);
    json_decref(arch);
    engine_model_free(m);
    json_decref(gj);
    snprintf(r->device, sizeof r->device, "cpu");
    r->threads = engine_threadpool_size(engine_threadpool_default());
    if (rc) {
        snprintf(r->reason, sizeof r->reason, "supernet: %s", err.msg);
        return;
    }
    r->accuracy = s.accuracy;
    r->loss = s.loss;
    r->params = s.params;
    r->flops = s.flops;
    r->train_seconds = s.seconds; /* its share of the work: recalibration and validation */
    r->train_loss = -1; /* no training of its own: the local workers' value for "none" */
    r->ok = isfinite(s.loss);
    if (!r->ok)
        snprintf(r->reason, sizeof r->reason, "diverged: validation loss %g with the supernet's weights", s.loss);
}

static int sw_submit(void *impl, int slot, const nas_job_t *job, err_t *err)
{
    sw_t *w = impl;
    if (w->have)
        return err_set(err, FN_ESTATE, "supernet worker: busy");
    nas_job_done_t *o = &w->done;
    memset(o, 0, sizeof *o);
    o->id = job->id;
    o->final = job->final;
    snprintf(o->worker, sizeof o->worker, "supernet:%d", slot);
    o->started_at = fn_now();
    if (job->final) {
        /* the top k are retrained from scratch (specs/nas.md), exactly as a local worker does */
        json_error_t je;
        json_t *arch = job->arch ? json_loads(job->arch, 0, &je) : NULL;
        nas_eval_opts_t eo = w->base;
        eo.epochs = job->epochs;
        eo.seed = job->seed;
        eo.final = 1;
        engine_model_t *m = NULL;
        err_t e2 = {0};
        if (!arch)
            snprintf(o->r.reason, sizeof o->r.reason, "supernet worker: unreadable architecture");
        else if (nas_eval_run(arch, w->d, &eo, &o->r, &m, &e2) < 0)
            snprintf(o->r.reason, sizeof o->r.reason, "%s", e2.msg);
        if (m) {
            o->n_weights = engine_model_num_federated(m);
            o->weights = malloc(o->n_weights * sizeof(float));
            if (o->weights)
                memcpy(o->weights, engine_model_params(m), o->n_weights * sizeof(float));
            else
                o->n_weights = 0;
        }
        engine_model_free(m);
        json_decref(arch);
    } else {
        nas_supernet_score_job(w->sn, &w->sp, w->d, &w->base, job->genome, &o->r);
    }
    o->ended_at = fn_now();
    w->have = 1;
    return 0;
}

static int sw_wait(void *impl, double timeout_s, nas_job_done_t *out, err_t *err)
{
    (void)timeout_s;
    (void)err;
    sw_t *w = impl;
    if (!w->have)
        return 0;
    *out = w->done;
    memset(&w->done, 0, sizeof w->done);
    w->have = 0;
    return 1;
}

static void sw_close(void *impl)
{
    sw_t *w = impl;
    if (!w)
        return;
    nas_job_done_free(&w->done);
    nas_supernet_free(w->sn);
    free(w);
}

void nas_supernet_opts_for_search(const nas_config_t *cfg, const nas_eval_opts_t *base, nas_supernet_opts_t *o)
{
    nas_supernet_opts_default(o);
    o->batch_size = cfg->batch_size > 0 ? cfg->batch_size : o->batch_size;
    o->lr = cfg->lr > 0 ? cfg->lr : o->lr;
    o->momentum = base->train.optim.momentum; /* the experiment's recipe, as standalone candidates get */
    o->seed = rng_derive(cfg->seed, 0x73757065726e6574ULL); /* "supernet" */
}

/* This process's CPU time (every thread's): the training's cost whatever else the machine runs. */
static double sw_cpu_seconds(void)
{
    struct timespec ts;
    return clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0 ? (double)ts.tv_sec + ts.tv_nsec * 1e-9 : 0;
}

static const nas_worker_backend_t k_supernet = {"supernet", sw_submit, sw_wait, sw_close};

int nas_supernet_workers_start(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, int threads,
                               nas_workers_t **out, err_t *err)
{
    *out = NULL;
    if (threads < 1)
        return err_set(err, FN_EINVAL, "supernet: needs >= 1 thread");
    char th[16];
    snprintf(th, sizeof th, "%d", threads);
    setenv("FEDNAS_THREADS", th, 1); /* the pool reads it when first used: the run's thread count */
    sw_t *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(err, FN_ENOMEM, "supernet: out of memory");
    w->sp = cfg->space;
    w->d = d;
    w->base = *base;
    nas_supernet_opts_t o;
    nas_supernet_opts_for_search(cfg, base, &o);
    int rc = nas_supernet_create(&cfg->space, &o, &w->sn, err);
    if (rc == 0) {
        double epochs = cfg->epochs > 0 ? cfg->epochs : 1;
        nas_supernet_stats_t st;
        log_info("supernet: training %g epoch(s) on %d images, one uniformly drawn path per batch of %d", epochs,
                 d->n_train, o.batch_size);
        double cpu = sw_cpu_seconds();
        rc = nas_supernet_train(w->sn, &d->train_src, d->train_idx, d->n_train, epochs, &st, err);
        cpu = sw_cpu_seconds() - cpu;
        if (rc == 0)
            log_info("supernet: %ld steps over %d distinct paths in %.1fs (%.2f steps/s, %.1f CPU ms/step; last epoch "
                     "loss %.3f, accuracy %.3f)", st.steps, st.paths, st.seconds,
                     st.seconds > 0 ? st.steps / st.seconds : 0, st.steps > 0 ? 1e3 * cpu / st.steps : 0, st.loss,
                     st.accuracy);
    }
    if (rc == 0)
        rc = nas_workers_create(&k_supernet, w, 1, out, err);
    if (rc) {
        sw_close(w);
        return rc;
    }
    return 0;
}
