#include "nas/worker.h"

#include <errno.h>
#include <math.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

struct nas_workers {
    const nas_worker_backend_t *be;
    void *impl;
    int size;
    int *busy;
};

void nas_job_done_free(nas_job_done_t *d)
{
    if (d) {
        free(d->weights);
        d->weights = NULL;
        d->n_weights = 0;
    }
}

/* ---- the local backend: forked processes, one pipe each way ------------------------------- */
/* Controller -> worker: one JSON line per job. Worker -> controller: one JSON line per result,
 * followed for a final job by n_weights raw little-endian floats (the line says how many), so
 * results need no parsing beyond jansson and weights no encoding. */

typedef struct local_slot {
    pid_t pid;
    int to_fd, from_fd;
    int64_t job_id;
    int job_final, busy;
    double started_at;
    char *buf;
    size_t len, cap;
} local_slot_t;

typedef struct local_pool {
    int n, threads;
    pid_t parent;
    const nas_data_t *d;
    nas_eval_opts_t base;
    local_slot_t *s;
} local_pool_t;

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static json_t *result_json(const nas_eval_result_t *r, double t0, double t1, size_t n_weights)
{
    return json_pack("{s:b, s:s, s:f, s:f, s:f, s:f, s:I, s:f, s:f, s:i, s:s, s:f, s:I, s:f, s:f, s:I}", "ok", r->ok,
                     "reason", r->reason, "accuracy", r->accuracy, "loss", r->loss, "train_loss",
                     isfinite(r->train_loss) ? r->train_loss : -1.0, "train_accuracy", r->train_accuracy, "params",
                     (json_int_t)r->params, "flops", r->flops, "latency_ms", r->latency_ms, "threads", r->threads,
                     "device", r->device, "train_seconds", r->train_seconds, "samples", (json_int_t)r->samples,
                     "started_at", t0, "ended_at", t1, "n_weights", (json_int_t)n_weights);
}

/* The worker process: reads jobs until the controller closes the pipe. */
static void child_main(local_pool_t *p, int idx, int in_fd, int out_fd)
{
    /* A worker outlives nothing: when the controller is killed, its evaluations stop too. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->parent)
        _exit(0);
    signal(SIGINT, SIG_IGN); /* Ctrl-C goes to the controller, which decides */
    signal(SIGTERM, SIG_DFL);
    char th[16];
    snprintf(th, sizeof th, "%d", p->threads);
    setenv("FEDNAS_THREADS", th, 1);
    char tag[32];
    snprintf(tag, sizeof tag, "nas worker %d", idx);
    log_set_tag(tag);
    FILE *in = fdopen(in_fd, "r");
    char *line = NULL;
    size_t cap = 0;
    while (in && getline(&line, &cap, in) > 0) {
        json_error_t je;
        json_t *job = json_loads(line, 0, &je);
        nas_eval_result_t r = {0};
        engine_model_t *m = NULL;
        double t0 = fn_now();
        json_t *arch = job ? json_loads(json_string_value(json_object_get(job, "arch")), 0, &je) : NULL;
        nas_eval_opts_t o = p->base;
        o.epochs = job ? json_number_value(json_object_get(job, "epochs")) : 0;
        o.seed = job ? (uint64_t)json_integer_value(json_object_get(job, "seed")) : 0;
        o.final = job ? json_is_true(json_object_get(job, "final")) : 0;
        err_t err = {0};
        const char *rtext = job ? json_string_value(json_object_get(job, "recipe")) : NULL;
        json_t *recipe = rtext ? json_loads(rtext, 0, &je) : NULL;
        if (!arch)
            snprintf(r.reason, sizeof r.reason, "worker: unreadable job or architecture: %s", je.text);
        else if (rtext && (!recipe || engine_train_config_from_json(recipe, &o.train, &err) < 0))
            snprintf(r.reason, sizeof r.reason, "worker: bad recipe: %s", recipe ? err.msg : je.text);
        else if (nas_eval_run(arch, p->d, &o, &r, o.final ? &m : NULL, &err) < 0) {
            r.ok = 0;
            snprintf(r.reason, sizeof r.reason, "%s", err.msg);
        }
        size_t nw = m ? engine_model_num_federated(m) : 0;
        json_t *res = result_json(&r, t0, fn_now(), nw);
        char *text = json_dumps(res, JSON_COMPACT);
        int bad = !text || write_all(out_fd, text, strlen(text)) < 0 || write_all(out_fd, "\n", 1) < 0 ||
                  (nw && write_all(out_fd, engine_model_params(m), nw * sizeof(float)) < 0);
        free(text);
        json_decref(res);
        json_decref(arch);
        json_decref(recipe);
        json_decref(job);
        engine_model_free(m);
        if (bad)
            break;
    }
    free(line);
    _exit(0);
}

static int spawn(local_pool_t *p, int i, err_t *err)
{
    int down[2], up[2];
    if (pipe(down) < 0)
        return err_set(err, FN_EIO, "worker %d: pipe: %s", i, strerror(errno));
    if (pipe(up) < 0) {
        close(down[0]);
        close(down[1]);
        return err_set(err, FN_EIO, "worker %d: pipe: %s", i, strerror(errno));
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(down[0]), close(down[1]), close(up[0]), close(up[1]);
        return err_set(err, FN_EIO, "worker %d: fork: %s", i, strerror(errno));
    }
    if (pid == 0) {
        /* Holding another worker's pipe ends would hide that worker's death (no EOF). */
        for (int j = 0; j < p->n; j++)
            if (j != i && p->s[j].pid > 0) {
                close(p->s[j].to_fd);
                close(p->s[j].from_fd);
            }
        close(down[1]);
        close(up[0]);
        child_main(p, i, down[0], up[1]);
    }
    close(down[0]);
    close(up[1]);
    local_slot_t *s = &p->s[i];
    s->pid = pid;
    s->to_fd = down[1];
    s->from_fd = up[0];
    s->busy = 0;
    s->len = 0;
    return 0;
}

static void reap(local_slot_t *s, char *why, size_t n)
{
    int status = 0;
    close(s->to_fd);
    close(s->from_fd);
    if (waitpid(s->pid, &status, 0) == s->pid) {
        if (WIFSIGNALED(status))
            snprintf(why, n, "killed by signal %d", WTERMSIG(status));
        else
            snprintf(why, n, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(why, n, "lost");
    }
    s->pid = 0;
}

static int local_submit(void *impl, int slot, const nas_job_t *job, err_t *err)
{
    local_pool_t *p = impl;
    local_slot_t *s = &p->s[slot];
    json_t *j = json_pack("{s:I, s:b, s:f, s:I, s:s}", "id", (json_int_t)job->id, "final", job->final, "epochs",
                          job->epochs, "seed", (json_int_t)job->seed, "arch", job->arch);
    if (j && job->recipe)
        json_object_set_new(j, "recipe", json_string(job->recipe));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(err, FN_EINVAL, "worker %d: cannot encode job %lld", slot, (long long)job->id);
    int rc = write_all(s->to_fd, text, strlen(text)) < 0 || write_all(s->to_fd, "\n", 1) < 0;
    free(text);
    /* A worker that cannot take a job is dead: wait() reports it and the job comes back failed. */
    if (rc)
        log_warn("worker %d: cannot send job %lld: %s", slot, (long long)job->id, strerror(errno));
    s->busy = 1;
    s->job_id = job->id;
    s->job_final = job->final;
    s->started_at = fn_now();
    return 0;
}

/* A complete message in s->buf: 1 and *out filled, 0 when more bytes are needed. */
static int take_message(local_slot_t *s, int slot, nas_job_done_t *out)
{
    char *nl = memchr(s->buf, '\n', s->len);
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - s->buf);
    json_error_t je;
    json_t *j = json_loadb(s->buf, line, 0, &je);
    size_t nw = j ? (size_t)json_integer_value(json_object_get(j, "n_weights")) : 0;
    if (s->len < line + 1 + nw * sizeof(float)) {
        json_decref(j);
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->id = s->job_id;
    out->final = s->job_final;
    out->slot = slot;
    snprintf(out->worker, sizeof out->worker, "local:%d", slot);
    nas_eval_result_t *r = &out->r;
    if (!j) {
        snprintf(r->reason, sizeof r->reason, "worker %d sent an unreadable result: %s", slot, je.text);
    } else {
        r->ok = json_is_true(json_object_get(j, "ok"));
        snprintf(r->reason, sizeof r->reason, "%s", json_string_value(json_object_get(j, "reason")));
        r->accuracy = json_number_value(json_object_get(j, "accuracy"));
        r->loss = json_number_value(json_object_get(j, "loss"));
        r->train_loss = json_number_value(json_object_get(j, "train_loss"));
        r->train_accuracy = json_number_value(json_object_get(j, "train_accuracy"));
        r->params = json_integer_value(json_object_get(j, "params"));
        r->flops = json_number_value(json_object_get(j, "flops"));
        r->latency_ms = json_number_value(json_object_get(j, "latency_ms"));
        r->threads = (int)json_integer_value(json_object_get(j, "threads"));
        snprintf(r->device, sizeof r->device, "%s", json_string_value(json_object_get(j, "device")));
        r->train_seconds = json_number_value(json_object_get(j, "train_seconds"));
        r->samples = json_integer_value(json_object_get(j, "samples"));
        out->started_at = json_number_value(json_object_get(j, "started_at"));
        out->ended_at = json_number_value(json_object_get(j, "ended_at"));
        if (nw) {
            out->weights = FN_MALLOC(nw * sizeof(float));
            memcpy(out->weights, nl + 1, nw * sizeof(float));
            out->n_weights = nw;
        }
    }
    json_decref(j);
    size_t used = line + 1 + nw * sizeof(float);
    memmove(s->buf, s->buf + used, s->len - used);
    s->len -= used;
    s->busy = 0;
    return 1;
}

static int local_wait(void *impl, double timeout_s, nas_job_done_t *out, err_t *err)
{
    local_pool_t *p = impl;
    struct pollfd *fds = FN_CALLOC((size_t)p->n, sizeof *fds);
    for (int i = 0; i < p->n; i++) {
        fds[i].fd = p->s[i].pid > 0 ? p->s[i].from_fd : -1;
        fds[i].events = POLLIN;
    }
    int k = poll(fds, (nfds_t)p->n, (int)(timeout_s * 1000));
    if (k < 0) {
        free(fds);
        return errno == EINTR ? 0 : err_set(err, FN_EIO, "waiting for workers: %s", strerror(errno));
    }
    for (int i = 0; i < p->n && k > 0; i++) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        local_slot_t *s = &p->s[i];
        if (s->cap - s->len < 65536) {
            s->cap = s->cap ? 2 * s->cap + 65536 : 65536;
            s->buf = realloc(s->buf, s->cap);
            FN_CHECK(s->buf);
        }
        ssize_t got = read(s->from_fd, s->buf + s->len, s->cap - s->len);
        if (got > 0) {
            s->len += (size_t)got;
            if (take_message(s, i, out)) {
                free(fds);
                return 1;
            }
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        /* EOF: the worker died. Its job (if any) comes back failed, and a fresh worker takes
         * the slot so the search keeps its parallelism. */
        char why[64];
        long pid = s->pid;
        reap(s, why, sizeof why);
        int was_busy = s->busy;
        memset(out, 0, sizeof *out);
        out->id = s->job_id;
        out->final = s->job_final;
        out->worker_died = 1;
        out->slot = i;
        out->started_at = s->started_at;
        out->ended_at = fn_now();
        snprintf(out->worker, sizeof out->worker, "local:%d", i);
        snprintf(out->r.reason, sizeof out->r.reason, "worker local:%d (pid %ld) died: %s", i, pid, why);
        log_warn("%s", out->r.reason);
        s->busy = 0;
        s->len = 0;
        int rc = spawn(p, i, err);
        free(fds);
        if (rc < 0)
            return rc;
        if (was_busy)
            return 1;
        return 0;
    }
    free(fds);
    return 0;
}

static void local_close(void *impl)
{
    local_pool_t *p = impl;
    for (int i = 0; i < p->n; i++)
        if (p->s[i].pid > 0) {
            /* Closing the job pipe ends an idle worker; a busy one is mid-training and is not
             * worth waiting for. */
            if (p->s[i].busy)
                kill(p->s[i].pid, SIGKILL);
            char why[64];
            reap(&p->s[i], why, sizeof why);
        }
    for (int i = 0; i < p->n; i++)
        free(p->s[i].buf);
    free(p->s);
    free(p);
}

static const nas_worker_backend_t k_local = {"local", local_submit, local_wait, local_close};

int nas_workers_start_local(int n, int threads, const nas_data_t *d, const nas_eval_opts_t *base,
                            nas_workers_t **out, err_t *err)
{
    *out = NULL;
    if (n < 1 || threads < 1)
        return err_set(err, FN_EINVAL, "workers: need >= 1 worker with >= 1 thread (got %d x %d)", n, threads);
    local_pool_t *p = FN_CALLOC(1, sizeof *p);
    p->n = n;
    p->threads = threads;
    p->parent = getpid();
    p->d = d;
    p->base = *base;
    p->s = FN_CALLOC((size_t)n, sizeof *p->s);
    nas_workers_t *w = NULL;
    nas_workers_create(&k_local, p, n, &w, err);
    for (int i = 0; i < n; i++) {
        int rc = spawn(p, i, err);
        if (rc < 0) {
            nas_workers_close(w);
            return rc;
        }
    }
    *out = w;
    return 0;
}

int nas_workers_create(const nas_worker_backend_t *be, void *impl, int size, nas_workers_t **out, err_t *err)
{
    *out = NULL;
    if (size < 1)
        return err_set(err, FN_EINVAL, "workers: a pool needs >= 1 slot (got %d)", size);
    nas_workers_t *w = FN_CALLOC(1, sizeof *w);
    w->be = be;
    w->impl = impl;
    w->size = size;
    w->busy = FN_CALLOC((size_t)size, sizeof *w->busy);
    *out = w;
    return 0;
}

int nas_workers_size(const nas_workers_t *w)
{
    return w->size;
}

int nas_workers_busy(const nas_workers_t *w)
{
    int b = 0;
    for (int i = 0; i < w->size; i++)
        b += w->busy[i];
    return b;
}

long nas_workers_pid(const nas_workers_t *w, int slot)
{
    if (w->be != &k_local || slot < 0 || slot >= w->size)
        return 0;
    return ((local_pool_t *)w->impl)->s[slot].pid;
}

int nas_workers_submit(nas_workers_t *w, const nas_job_t *job, err_t *err)
{
    for (int i = 0; i < w->size; i++)
        if (!w->busy[i]) {
            int rc = w->be->submit(w->impl, i, job, err);
            if (rc == 0)
                w->busy[i] = 1;
            return rc;
        }
    return err_set(err, FN_ESTATE, "workers: all %d busy", w->size);
}

int nas_workers_wait(nas_workers_t *w, double timeout_s, nas_job_done_t *out, err_t *err)
{
    int rc = w->be->wait(w->impl, timeout_s, out, err);
    if (rc == 1 && out->slot >= 0 && out->slot < w->size)
        w->busy[out->slot] = 0;
    return rc;
}

void nas_workers_close(nas_workers_t *w)
{
    if (!w)
        return;
    w->be->close(w->impl);
    free(w->busy);
    free(w);
}
