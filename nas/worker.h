/* worker: the processes that evaluate candidates for the NAS controller, behind one interface
 * (submit a job to an idle slot, wait for the next finished job) so that local processes, GPU
 * workers and MPI ranks are interchangeable; workers never touch the run store. */
#ifndef FEDNAS_NAS_WORKER_H
#define FEDNAS_NAS_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "nas/eval.h"

/* One evaluation: a search candidate (scored on validation) or a final retraining (on all the
 * training data, scored on the test set, weights returned). */
typedef struct nas_job {
    int64_t id; /* the controller's key: candidate seq, or final rank */
    int final;
    double epochs;
    uint64_t seed;
    const char *arch; /* the layers JSON, as text */
    const char *genome; /* the genome JSON, as text (weight sharing scores the genome; may be NULL) */
    /* A "train" block (engine/model.h), as text, replacing the pool's base recipe for this job
     * (hyperparameter tuning: nas/tune.h); NULL: the base recipe. Local workers only. */
    const char *recipe;
} nas_job_t;

typedef struct nas_job_done {
    int64_t id;
    int final;
    /* r.ok 0 with r.reason: the candidate failed (diverged, did not build, or its worker died:
     * worker_died is then 1). The controller decides about retries. */
    nas_eval_result_t r;
    int worker_died;
    char worker[32]; /* "local:2", "mpi:3" */
    int slot;        /* the slot that is idle again (the backend fills it) */
    double started_at, ended_at;
    float *weights; /* final jobs: the federated vector, malloc'ed (nas_job_done_free) */
    size_t n_weights;
} nas_job_done_t;

void nas_job_done_free(nas_job_done_t *d);

typedef struct nas_workers nas_workers_t;

/* What a kind of worker implements; nas_workers_* dispatch through it. A GPU worker is a local
 * worker whose evaluation runs on a device; an MPI rank pool implements these over MPI. */
typedef struct nas_worker_backend {
    const char *name;
    /* Hands job to idle slot `slot` (0 <= slot < size). */
    int (*submit)(void *impl, int slot, const nas_job_t *job, err_t *err);
    /* Waits up to timeout_s for a finished job: 1 with *out filled (the slot is idle again),
     * 0 on timeout, negative on error. */
    int (*wait)(void *impl, double timeout_s, nas_job_done_t *out, err_t *err);
    void (*close)(void *impl);
} nas_worker_backend_t;

/* n local worker processes, forked now from this process (so they share the loaded data
 * copy-on-write), each running the engine with `threads` pool threads (FEDNAS_THREADS) and
 * base's recipe. A worker that dies is reported through wait (worker_died) and replaced by a
 * fresh fork. Forking without exec is why the calling process must not have started the
 * engine's thread pool with more than one thread (threads do not survive fork; the controller
 * never trains in-process): a worker would otherwise inherit a pool with no threads behind it. */
int nas_workers_start_local(int n, int threads, const nas_data_t *d, const nas_eval_opts_t *base,
                            nas_workers_t **out, err_t *err);
/* A pool of `size` slots behind any backend (impl is handed to its functions and closed by
 * nas_workers_close): the MPI ranks of nas/mpi.h and the weight-sharing evaluator of
 * nas/supernet.h are two. */
int nas_workers_create(const nas_worker_backend_t *be, void *impl, int size, nas_workers_t **out, err_t *err);
int nas_workers_size(const nas_workers_t *w);
/* Slots with a job in flight. */
int nas_workers_busy(const nas_workers_t *w);
/* Sends job to the lowest idle slot; FN_ESTATE when every slot is busy. */
int nas_workers_submit(nas_workers_t *w, const nas_job_t *job, err_t *err);
int nas_workers_wait(nas_workers_t *w, double timeout_s, nas_job_done_t *out, err_t *err);
/* The pid of the process behind slot (for tests and logs), or 0. */
long nas_workers_pid(const nas_workers_t *w, int slot);
/* Stops every worker (closing their pipes; they exit) and frees everything. Safe on NULL. */
void nas_workers_close(nas_workers_t *w);

#endif
