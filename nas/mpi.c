#include "nas/mpi.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

int nas_mpi_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

#ifndef FEDNAS_HAVE_MPI

int nas_mpi_built(void)
{
    return 0;
}

static int not_built(err_t *err)
{
    return err_set(err, FN_ESTATE, "this fednas was built without MPI (install libopenmpi-dev and rebuild with "
                                   "-DFEDNAS_MPI=ON)");
}

int nas_mpi_init(int *rank, int *size, err_t *err)
{
    *rank = 0;
    *size = 1;
    return not_built(err);
}

int nas_mpi_send_setup(const void *blob, size_t n, err_t *err)
{
    return not_built(err);
}

int nas_mpi_recv_setup(char **blob, size_t *n, err_t *err)
{
    return not_built(err);
}

int nas_workers_start_mpi(nas_workers_t **out, err_t *err)
{
    *out = NULL;
    return not_built(err);
}

int nas_mpi_serve(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, err_t *err)
{
    return not_built(err);
}

int nas_mpi_supernet_train(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, int threads,
                           err_t *err)
{
    return not_built(err);
}

int nas_mpi_dp(nas_supernet_dp_t *dp, err_t *err)
{
    memset(dp, 0, sizeof *dp);
    return not_built(err);
}

int nas_mpi_same(uint64_t h, uint64_t *lo, uint64_t *hi, err_t *err)
{
    return not_built(err);
}

void nas_mpi_release(void)
{
}

void nas_mpi_end(int failed)
{
}

#else

#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>

#include "common/util.h"
#include "nas/supernet.h"

/* Messages are raw structs: every rank runs the same binary, so layout and byte order agree,
 * and a fixed struct needs no parsing. Every receive still checks the size it got. */
enum { TAG_SETUP = 1, TAG_JOB, TAG_STOP, TAG_RESULT, TAG_WEIGHTS, TAG_TRAIN };

typedef struct job_msg {
    int64_t id;
    int32_t final;
    uint32_t glen; /* bytes of genome JSON at the end (0: none) */
    double epochs;
    uint64_t seed;
    /* followed by the architecture JSON, then the genome JSON, without their NULs */
} job_msg_t;

typedef struct result_msg {
    int64_t id;
    int32_t final, pad;
    double started_at, ended_at;
    uint64_t n_weights; /* a TAG_WEIGHTS message of this many floats follows */
    nas_eval_result_t r;
} result_msg_t;

/* What rank 0 knows of each worker rank, for a clean end: a rank still waiting must be told to
 * stop, a busy one cannot be reached until its evaluation ends. */
enum { RANK_WAITING, RANK_BUSY, RANK_STOPPED, RANK_RELEASED };
static int g_rank = -1, g_size = 0;
static unsigned char *g_state;

int nas_mpi_built(void)
{
    return 1;
}

static int mpi_fail(err_t *err, int code, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return err_set(err, FN_EIO, "MPI: %s: %s", what, msg);
}

/* Polls instead of blocking in MPI_Probe: Open MPI's blocking calls spin a core, and on a node
 * where every core runs a worker rank the controller's spinning would slow them all. 2 ms is
 * nothing next to an evaluation. */
static int probe(int source, int tag, double timeout_s, MPI_Status *st, err_t *err)
{
    double t0 = fn_mono();
    for (;;) {
        int flag = 0, rc = MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, st);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, rc, "probe");
        if (flag)
            return 1;
        if (timeout_s >= 0 && fn_mono() - t0 >= timeout_s)
            return 0;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

int nas_mpi_init(int *rank, int *size, err_t *err)
{
    *rank = 0;
    *size = 1;
    /* A rank outlives nothing: if the launcher is killed, its ranks go too, so no orphaned
     * controller keeps writing the store while the search is resumed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int rc = MPI_Init(NULL, NULL);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, rc, "init");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    *rank = g_rank;
    *size = g_size;
    if (g_size == 1) {
        MPI_Finalize();
        /* Launched as several tasks that MPI does not see as one world (srun without an MPI
         * plugin: each task a world of one): every task would run the whole search. */
        static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", NULL};
        for (int i = 0; vars[i]; i++)
            if (getenv(vars[i]) && atoi(getenv(vars[i])) > 1)
                return err_set(err, FN_ESTATE, "launched as one of %s tasks (%s) but MPI sees a world of 1; under "
                                               "Slurm use `srun --mpi=pmix` (see `srun --mpi=list`)",
                               getenv(vars[i]), vars[i]);
        return 0;
    }
    g_state = FN_CALLOC((size_t)g_size, 1);
    return 0;
}

int nas_mpi_send_setup(const void *blob, size_t n, err_t *err)
{
    if (n > INT32_MAX)
        return err_set(err, FN_EINVAL, "MPI: setup of %zu bytes is too large", n);
    for (int r = 1; r < g_size; r++) {
        int rc = MPI_Send(blob, (int)n, MPI_BYTE, r, TAG_SETUP, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, rc, "sending the setup");
    }
    return 0;
}

/* Receives the message probe found as bytes, NUL-terminated. */
static int recv_bytes(MPI_Status *st, char **out, size_t *n, err_t *err)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    char *b = FN_MALLOC((size_t)count + 1);
    int rc = MPI_Recv(b, count, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        free(b);
        return mpi_fail(err, rc, "receive");
    }
    b[count] = 0;
    *out = b;
    *n = (size_t)count;
    return 0;
}

int nas_mpi_recv_setup(char **blob, size_t *n, err_t *err)
{
    MPI_Status st;
    int rc = probe(0, MPI_ANY_TAG, -1, &st, err);
    if (rc < 0)
        return rc;
    if ((rc = recv_bytes(&st, blob, n, err)) < 0)
        return rc;
    if (st.MPI_TAG == TAG_SETUP)
        return 1;
    free(*blob);
    *blob = NULL;
    return st.MPI_TAG == TAG_STOP ? 0 : err_set(err, FN_EPROTO, "MPI: expected the setup, got tag %d", st.MPI_TAG);
}

/* ---- rank 0: the pool --------------------------------------------------------------------- */

typedef struct mpi_pool {
    int n; /* worker ranks: slot i is rank i + 1 */
    int64_t *job_id;
    int *job_final;
} mpi_pool_t;

static int mpi_submit(void *impl, int slot, const nas_job_t *job, err_t *err)
{
    mpi_pool_t *p = impl;
    size_t alen = strlen(job->arch), glen = job->genome ? strlen(job->genome) : 0;
    if (alen + glen > (size_t)INT32_MAX - sizeof(job_msg_t))
        return err_set(err, FN_EINVAL, "MPI: job %lld is too large to send", (long long)job->id);
    char *buf = FN_MALLOC(sizeof(job_msg_t) + alen + glen);
    job_msg_t m = {.id = job->id, .final = job->final, .glen = (uint32_t)glen, .epochs = job->epochs,
                   .seed = job->seed};
    memcpy(buf, &m, sizeof m);
    memcpy(buf + sizeof m, job->arch, alen);
    if (glen)
        memcpy(buf + sizeof m + alen, job->genome, glen);
    int rc = MPI_Send(buf, (int)(sizeof m + alen + glen), MPI_BYTE, slot + 1, TAG_JOB, MPI_COMM_WORLD);
    free(buf);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, rc, "sending a job");
    p->job_id[slot] = job->id;
    p->job_final[slot] = job->final;
    g_state[slot + 1] = RANK_BUSY;
    return 0;
}

static int mpi_wait(void *impl, double timeout_s, nas_job_done_t *out, err_t *err)
{
    mpi_pool_t *p = impl;
    MPI_Status st;
    int rc = probe(MPI_ANY_SOURCE, TAG_RESULT, timeout_s, &st, err);
    if (rc <= 0)
        return rc;
    int src = st.MPI_SOURCE, count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    result_msg_t m;
    if (count != (int)sizeof m) {
        char *junk;
        size_t n;
        recv_bytes(&st, &junk, &n, err);
        free(junk);
        return err_set(err, FN_EPROTO, "MPI: rank %d sent a result of %d bytes, not %zu (another fednas build?)",
                       src, count, sizeof m);
    }
    if ((rc = MPI_Recv(&m, count, MPI_BYTE, src, TAG_RESULT, MPI_COMM_WORLD, MPI_STATUS_IGNORE)) != MPI_SUCCESS)
        return mpi_fail(err, rc, "receiving a result");
    int slot = src - 1;
    if (slot < 0 || slot >= p->n || g_state[src] != RANK_BUSY || m.id != p->job_id[slot])
        return err_set(err, FN_EPROTO, "MPI: rank %d returned job %lld, which it was not given", src,
                       (long long)m.id);
    memset(out, 0, sizeof *out);
    out->id = m.id;
    out->final = p->job_final[slot];
    out->slot = slot;
    out->r = m.r;
    out->r.reason[sizeof out->r.reason - 1] = 0;
    out->r.device[sizeof out->r.device - 1] = 0;
    out->started_at = m.started_at;
    out->ended_at = m.ended_at;
    snprintf(out->worker, sizeof out->worker, "mpi:%d", src);
    /* The rank stays busy until its weights are in: one that announced more than it can send
     * may be blocked in MPI_Send, and only nas_mpi_end's abort reaches it. */
    if (m.n_weights) {
        if (m.n_weights > (uint64_t)INT32_MAX)
            return err_set(err, FN_EPROTO, "MPI: rank %d announces %llu weights", src,
                           (unsigned long long)m.n_weights);
        out->weights = FN_MALLOC(m.n_weights * sizeof(float));
        out->n_weights = m.n_weights;
        MPI_Status ws;
        rc = MPI_Recv(out->weights, (int)m.n_weights, MPI_FLOAT, src, TAG_WEIGHTS, MPI_COMM_WORLD, &ws);
        int got = 0;
        if (rc == MPI_SUCCESS)
            MPI_Get_count(&ws, MPI_FLOAT, &got);
        if (rc != MPI_SUCCESS || (uint64_t)got != m.n_weights) {
            nas_job_done_free(out);
            return rc != MPI_SUCCESS ? mpi_fail(err, rc, "receiving weights")
                                     : err_set(err, FN_EPROTO, "MPI: rank %d sent %d weights of %llu", src, got,
                                               (unsigned long long)m.n_weights);
        }
    }
    g_state[src] = RANK_WAITING;
    return 1;
}

static void stop_waiting_ranks(void)
{
    for (int r = 1; r < g_size; r++)
        if (g_state[r] == RANK_WAITING) {
            MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
            g_state[r] = RANK_STOPPED;
        }
}

static void mpi_close(void *impl)
{
    mpi_pool_t *p = impl;
    /* Busy ranks stay busy: nas_mpi_end aborts the job for them. */
    stop_waiting_ranks();
    free(p->job_id);
    free(p->job_final);
    free(p);
}

static const nas_worker_backend_t k_mpi = {"mpi", mpi_submit, mpi_wait, mpi_close};

int nas_workers_start_mpi(nas_workers_t **out, err_t *err)
{
    *out = NULL;
    if (g_rank != 0 || g_size < 2)
        return err_set(err, FN_ESTATE, "MPI: the worker pool lives on rank 0 of a world of >= 2 ranks");
    mpi_pool_t *p = FN_CALLOC(1, sizeof *p);
    p->n = g_size - 1;
    p->job_id = FN_CALLOC((size_t)p->n, sizeof *p->job_id);
    p->job_final = FN_CALLOC((size_t)p->n, sizeof *p->job_final);
    int rc = nas_workers_create(&k_mpi, p, p->n, out, err);
    if (rc < 0)
        mpi_close(p);
    return rc;
}

/* ---- weight sharing: the supernet trained data-parallel (nas/supernet_dp.h) ---------------- */

static int mpi_sum(void *ctx, float *buf, size_t n, err_t *err)
{
    (void)ctx;
    if (n > (size_t)INT32_MAX)
        return err_set(err, FN_EINVAL, "MPI: a gradient of %zu floats is too large for one all-reduce", n);
    /* Non-blocking and polled, as probe() does: a rank that finishes its shard first sleeps
     * instead of spinning a core that the slower rank (or another job on the node) needs. */
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
    for (int done = 0; rc == MPI_SUCCESS && !done;) {
        rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (rc == MPI_SUCCESS && !done) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, rc, "all-reduce of the supernet's gradient");
}

int nas_mpi_dp(nas_supernet_dp_t *dp, err_t *err)
{
    memset(dp, 0, sizeof *dp);
    if (g_size < 2)
        return err_set(err, FN_ESTATE, "MPI: data-parallel training needs a world of >= 2 ranks");
    dp->shards = g_size;
    dp->first = g_rank;
    dp->count = 1;
    dp->allreduce = mpi_sum;
    return 0;
}

int nas_mpi_same(uint64_t h, uint64_t *lo, uint64_t *hi, err_t *err)
{
    uint64_t v[2] = {h, ~h}; /* min of ~h is ~(max of h): one call gives both ends */
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, rc, "all-reduce of the checksums");
    if (lo)
        *lo = v[0];
    if (hi)
        *hi = ~v[1];
    return v[0] == ~v[1];
}

/* Every rank: its replica, trained with the others and checked against them. *agreed as in
 * nas_supernet_dp_train (a replica mismatch is known to all, too). */
static int ws_train(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, nas_supernet_t **out,
                    int *agreed, err_t *err)
{
    *out = NULL;
    *agreed = 0;
    nas_supernet_opts_t o;
    nas_supernet_opts_for_search(cfg, base, &o);
    nas_supernet_dp_t dp;
    nas_supernet_t *sn = NULL;
    int rc = nas_mpi_dp(&dp, err);
    if (rc == 0)
        rc = nas_supernet_create(&cfg->space, &o, &sn, err);
    if (rc)
        return rc;
    double epochs = cfg->epochs > 0 ? cfg->epochs : 1;
    /* Every rank read the data itself: ranks with other files would train other step counts and
     * pair unrelated all-reduces (a hang), or sum gradients of other images. Compared first, by
     * every rank, so that a mismatch is known to all (agreed) and each stops here. */
    uint64_t fp = 0, fp_lo = 0, fp_hi = 0;
    if ((rc = nas_supernet_dp_fingerprint(sn, &d->train_src, d->train_idx, d->n_train, epochs, &fp, err)) < 0) {
        nas_supernet_free(sn);
        return rc;
    }
    int fp_same = nas_mpi_same(fp, &fp_lo, &fp_hi, err);
    if (fp_same <= 0) {
        nas_supernet_free(sn);
        if (fp_same < 0)
            return fp_same;
        *agreed = 1;
        return err_set(err, FN_ESTATE, "supernet: the %d ranks do not hold the same training data (rank %d: %d "
                       "images, fingerprint %016llx; the ranks' range from %016llx to %016llx): every rank reads "
                       "the experiment's data.path itself, so give each node the same files (an absolute path to "
                       "one copy)", g_size, g_rank, d->n_train, (unsigned long long)fp, (unsigned long long)fp_lo,
                       (unsigned long long)fp_hi);
    }
    int bs = o.batch_size < d->n_train ? o.batch_size : d->n_train;
    if (g_rank == 0)
        log_info("supernet: training %g epoch(s) on %d images data-parallel on %d ranks: one uniformly drawn path "
                 "per global batch of %d, a shard of %d-%d samples per rank", epochs, d->n_train, g_size, bs,
                 bs / g_size, (bs + g_size - 1) / g_size);
    nas_supernet_stats_t st;
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    rc = nas_supernet_dp_train(sn, &d->train_src, d->train_idx, d->n_train, epochs, &dp, &st, agreed, err);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    /* every rank's CPU seconds, summed on rank 0: the training's cost whatever else the node runs */
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9, cpu_all = 0;
    if (rc == 0 && (rc = MPI_Reduce(&cpu, &cpu_all, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD)) != MPI_SUCCESS)
        rc = mpi_fail(err, rc, "reducing the training's CPU time");
    if (rc == 0) {
        uint64_t lo = 0, hi = 0;
        int same = nas_mpi_same(nas_supernet_checksum(sn), &lo, &hi, err);
        if (same < 0) {
            rc = same;
        } else if (!same) {
            *agreed = 1;
            rc = err_set(err, FN_ESTATE, "supernet: the %d replicas differ after training (checksums %016llx to "
                         "%016llx): a rank applied another update", g_size, (unsigned long long)lo,
                         (unsigned long long)hi);
        } else if (g_rank == 0) {
            log_info("supernet: %ld steps over %d distinct paths in %.1fs on %d ranks (%.2f steps/s, %.1f CPU ms/step "
                     "over all ranks; last epoch loss %.3f, accuracy %.3f); replicas identical (checksum %016llx)",
                     st.steps, st.paths, st.seconds, g_size, st.seconds > 0 ? st.steps / st.seconds : 0,
                     st.steps > 0 ? 1e3 * cpu_all / st.steps : 0, st.loss, st.accuracy, (unsigned long long)lo);
        }
    }
    if (rc) {
        nas_supernet_free(sn);
        return rc;
    }
    *out = sn;
    return 0;
}

int nas_mpi_supernet_train(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, int threads,
                           err_t *err)
{
    if (g_rank != 0 || g_size < 2)
        return err_set(err, FN_ESTATE, "MPI: the supernet's training starts on rank 0 of a world of >= 2 ranks");
    char th[16];
    snprintf(th, sizeof th, "%d", threads > 0 ? threads : 1);
    setenv("FEDNAS_THREADS", th, 1); /* before the engine's pool starts: the run's thread count */
    for (int r = 1; r < g_size; r++) {
        if (g_state[r] != RANK_WAITING)
            return err_set(err, FN_ESTATE, "MPI: rank %d is not waiting for the supernet's training", r);
        int rc = MPI_Send(NULL, 0, MPI_BYTE, r, TAG_TRAIN, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, rc, "starting the supernet's training");
        g_state[r] = RANK_BUSY; /* in the collective: a failure here must end the job */
    }
    nas_supernet_t *sn = NULL;
    int agreed = 0, rc = ws_train(cfg, d, base, &sn, &agreed, err);
    if (rc == 0 || agreed) /* every rank left the training at the same step and now waits for jobs */
        for (int r = 1; r < g_size; r++)
            g_state[r] = RANK_WAITING;
    nas_supernet_free(sn); /* rank 0 scores nothing: the worker ranks use their replicas */
    return rc;
}

/* ---- ranks > 0: evaluate ------------------------------------------------------------------ */

/* A search job scored with the supernet replica: the controller's genome, not the architecture. */
static void score_ws(nas_supernet_t *sn, const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base,
                     const char *msg, size_t n, const job_msg_t *j, result_msg_t *res)
{
    if (j->glen == 0 || j->glen > n - sizeof *j) {
        snprintf(res->r.reason, sizeof res->r.reason, "worker: a weight-sharing job without its genome");
        return;
    }
    char *genome = FN_MALLOC((size_t)j->glen + 1);
    memcpy(genome, msg + (n - j->glen), j->glen);
    genome[j->glen] = 0;
    nas_supernet_score_job(sn, &cfg->space, d, base, genome, &res->r);
    free(genome);
}

int nas_mpi_serve(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, err_t *err)
{
    char tag[32];
    snprintf(tag, sizeof tag, "nas rank %d", g_rank);
    log_set_tag(tag);
    nas_supernet_t *sn = NULL;
    int rc = 0, ws = cfg && cfg->evaluation == NAS_EVAL_WEIGHT_SHARING;
    if (ws) {
        /* rank 0 starts the training once its data is loaded, or says stop if it failed first */
        MPI_Status st;
        char *msg = NULL;
        size_t n = 0;
        if ((rc = probe(0, MPI_ANY_TAG, -1, &st, err)) < 0 || (rc = recv_bytes(&st, &msg, &n, err)) < 0)
            return rc;
        free(msg);
        if (st.MPI_TAG == TAG_STOP)
            return 0;
        if (st.MPI_TAG != TAG_TRAIN)
            return err_set(err, FN_EPROTO, "MPI: rank 0 sent tag %d; expected the supernet's training", st.MPI_TAG);
        int agreed = 0;
        if ((rc = ws_train(cfg, d, base, &sn, &agreed, err)) < 0) {
            if (!agreed)
                return rc;
            log_error("%s", err->msg); /* rank 0 has it too, fails the run and stops this rank */
            rc = 0;
        }
    }
    for (;;) {
        MPI_Status st;
        rc = probe(0, MPI_ANY_TAG, -1, &st, err);
        char *msg = NULL;
        size_t n = 0;
        if (rc < 0 || (rc = recv_bytes(&st, &msg, &n, err)) < 0)
            break;
        if (st.MPI_TAG == TAG_STOP) {
            free(msg);
            rc = 0;
            break;
        }
        job_msg_t j;
        if (st.MPI_TAG != TAG_JOB || n < sizeof(job_msg_t)) {
            free(msg);
            rc = err_set(err, FN_EPROTO, "MPI: rank 0 sent tag %d with %zu bytes; expected a job", st.MPI_TAG, n);
            break;
        }
        memcpy(&j, msg, sizeof j);
        result_msg_t res;
        memset(&res, 0, sizeof res);
        res.id = j.id;
        res.final = j.final;
        res.started_at = fn_now();
        nas_eval_opts_t o = *base;
        o.epochs = j.epochs;
        o.seed = j.seed;
        o.final = j.final;
        json_error_t je;
        json_t *arch = NULL;
        engine_model_t *m = NULL;
        err_t e = {0};
        if (ws && !j.final) {
            if (sn)
                score_ws(sn, cfg, d, base, msg, n, &j, &res);
            else
                snprintf(res.r.reason, sizeof res.r.reason, "worker: the supernet's training failed");
        } else if (j.glen > n - sizeof j) {
            snprintf(res.r.reason, sizeof res.r.reason, "worker: a job with a genome of %u bytes in %zu", j.glen, n);
        } else if (!(arch = json_loadb(msg + sizeof j, n - sizeof j - j.glen, 0, &je))) {
            snprintf(res.r.reason, sizeof res.r.reason, "worker: unreadable architecture: %s", je.text);
        } else if (nas_eval_run(arch, d, &o, &res.r, o.final ? &m : NULL, &e) < 0) {
            res.r.ok = 0;
            snprintf(res.r.reason, sizeof res.r.reason, "%s", e.msg);
        }
        /* As the local worker sends it: a non-finite train loss travels as -1. */
        if (!isfinite(res.r.train_loss))
            res.r.train_loss = -1.0;
        res.n_weights = m ? engine_model_num_federated(m) : 0;
        res.ended_at = fn_now();
        rc = MPI_Send(&res, (int)sizeof res, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        if (rc == MPI_SUCCESS && res.n_weights)
            rc = MPI_Send(engine_model_params(m), (int)res.n_weights, MPI_FLOAT, 0, TAG_WEIGHTS, MPI_COMM_WORLD);
        json_decref(arch);
        engine_model_free(m);
        free(msg);
        if (rc != MPI_SUCCESS) {
            rc = mpi_fail(err, rc, "sending a result");
            break;
        }
    }
    nas_supernet_free(sn);
    return rc;
}

void nas_mpi_release(void)
{
    for (int r = 1; r < g_size; r++)
        g_state[r] = RANK_RELEASED;
}

void nas_mpi_end(int failed)
{
    if (g_size < 2)
        return;
    int abort_job = g_rank != 0 && failed;
    if (g_rank == 0) {
        stop_waiting_ranks();
        for (int r = 1; r < g_size; r++)
            abort_job |= g_state[r] == RANK_BUSY || (failed && g_state[r] == RANK_RELEASED);
    }
    if (abort_job) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    free(g_state);
    g_state = NULL;
    MPI_Finalize();
}

#endif
