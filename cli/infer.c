#include "cli/infer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/graph.h"
#include "engine/infer.h"
#include "engine/nn.h"
#include "engine/threadpool.h"

#define LAT_RING 4096 /* latencies kept for the percentiles: the last this many requests */
#define HIST_BUCKETS 12 /* batch sizes <= 1, 2, 4, ..., 1024, +Inf */
#define RATE_WINDOW_S 10.0
#define PART_MIN 8 /* images per thread's part of a pass, at least */

typedef struct req {
    const float *x;
    int n;
    float *probs;
    int batch, rc;
    char msg[160];
    double arrived;
    /* Its own wake-up, posted once its answer is in: a batch wakes its requests only, and after
     * the batcher has let go of mu, so a woken thread does not block again on the mutex (with a
     * condition variable it had to retake mu, still held while the rest were signalled: two
     * wake-ups a request). Posted last: the waiter may return and end r at once. */
    sem_t done_sem;
    struct req *next;
} req_t;

struct infer {
    engine_model_t *m;
    engine_graph_t *g;
    /* The model on the inference runtime (engine/infer.h), batch norm folded and ReLU and pools
     * fused, one plan per pool thread (each has its own scratch): a pass is split among them.
     * NULL when the runtime does not take the model's layers; then the engine runs it. */
    engine_infer_t **plans;
    int nplans;
    int int8; /* the plans run int8 (a quantized model file) */
    engine_threadpool_t *pool;
    int classes, max_batch, cap_images;
    double max_wait, batch_ema;
    float *xb, *lb; /* the batch's images and logits */
    double per_img[11]; /* seconds per image of a 2^k-image pass (moving average; 0: not measured) */
    unsigned long explore;
    int chunk; /* the pass size of the latest batch, for /metrics */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work;
    req_t *head, *tail;
    int queued, stop;
    int incoming; /* requests whose bodies are being read and parsed (infer_expect) */
    /* statistics, under mu */
    double started;
    unsigned long long by_status[6], images, batches, hist[HIST_BUCKETS];
    double batch_sum, lat_sum;
    unsigned long long lat_count;
    double lat[LAT_RING], lat_at[LAT_RING];
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void abs_deadline(double mono_deadline, struct timespec *out)
{
    /* cond waits use CLOCK_MONOTONIC (set on the condition variable at start). */
    double s = floor(mono_deadline);
    out->tv_sec = (time_t)s;
    out->tv_nsec = (long)((mono_deadline - s) * 1e9);
}

/* The pass size. A bigger pass reads the weights once for more images (linear layers gain
 * most), but a convolution's im2col columns outgrow the cache, and on this engine a conv net
 * can run faster per image in small passes. So the coalesced batch runs in chunks of 2^k
 * images, k the size with the lowest measured time per image: every size up to the batch is
 * tried once, then the best is used, with a neighbour re-measured every 16th batch to follow
 * the machine's load. Only the inference thread touches these. */
#define CHUNK_SIZES 11 /* 1 .. 1024 */

static int pick_chunk(infer_t *q, int imgs)
{
    int kmax = 0;
    while (kmax + 1 < CHUNK_SIZES && (1 << (kmax + 1)) <= imgs && (1 << (kmax + 1)) <= q->max_batch)
        kmax++;
    for (int k = 0; k <= kmax; k++)
        if (q->per_img[k] == 0)
            return k; /* never measured */
    int best = 0;
    for (int k = 1; k <= kmax; k++)
        if (q->per_img[k] < q->per_img[best])
            best = k;
    if (++q->explore % 16 == 0) {
        int k = best + ((q->explore / 16) % 2 ? 1 : -1);
        if (k >= 0 && k <= kmax)
            return k;
    }
    return best;
}

/* A pass on the runtime: the images split into one contiguous part per plan. */
typedef struct {
    infer_t *q;
    const float *x;
    float *logits;
    int n, parts, rc[8];
    char msg[160];
} pass_t;

static void pass_part(void *ctx, int64_t begin, int64_t end)
{
    pass_t *ps = ctx;
    for (int64_t i = begin; i < end; i++) {
        int a = (int)(i * ps->n / ps->parts), b = (int)((i + 1) * ps->n / ps->parts);
        err_t e = {0};
        ps->rc[i] = b > a ? engine_infer_forward(ps->q->plans[i], ps->x + (size_t)a * INFER_INPUT, b - a,
                                                 ps->logits + (size_t)a * ps->q->classes, ps->q->int8, &e)
                          : 0;
        if (ps->rc[i])
            snprintf(ps->msg, sizeof ps->msg, "%s", e.msg);
    }
}

static int forward(infer_t *q, const float *x, int n, float *logits, err_t *e)
{
    if (q->plans) {
        /* A part per PART_MIN images at least: each part reads every linear layer's weights (the
         * CNN's fc1, 6.4 MB, about 0.2 ms from L3), so a pass of a few images runs whole. Under
         * wrk (CNN, 2 cores, alternating runs at load 8-12) parts of 8 or more served 1.3x the
         * requests/s of unsplit passes at the same server CPU per request (0.20-0.21 ms). */
        int parts = n / PART_MIN;
        parts = parts < 1 ? 1 : parts > q->nplans ? q->nplans : parts;
        pass_t ps = {.q = q, .x = x, .logits = logits, .n = n, .parts = parts};
        engine_parallel_blas(q->pool, ps.parts, 1, pass_part, &ps);
        for (int i = 0; i < ps.parts; i++)
            if (ps.rc[i])
                return err_set(e, ps.rc[i], "%s", ps.msg);
        return 0;
    }
    int64_t shape[4] = {n, 1, 28, 28};
    engine_tensor_t *xt = engine_graph_view(q->g, (void *)x, NULL, ENGINE_F32, 4, shape);
    engine_tensor_t *y = engine_net_forward(engine_model_net(q->m), q->g, xt, 0);
    int rc = engine_graph_error(q->g, e);
    if (rc == 0 && (!y || engine_tensor_numel(y) != (int64_t)n * q->classes))
        rc = err_set(e, FN_EIO, "the model gave no [%d, %d] logits", n, q->classes);
    if (rc == 0)
        memcpy(logits, engine_tensor_f32(y), (size_t)n * q->classes * sizeof(float));
    engine_graph_reset(q->g);
    return rc;
}

/* One forward pass per chunk over requests [first, ... n_req of them), imgs images in all. */
static int run_batch(infer_t *q, req_t *first, int n_req, int imgs, char *msg, size_t cap)
{
    size_t off = 0;
    req_t *r = first;
    for (int i = 0; i < n_req; i++, r = r->next) {
        memcpy(q->xb + off, r->x, (size_t)r->n * INFER_INPUT * sizeof(float));
        off += (size_t)r->n * INFER_INPUT;
    }
    /* The runtime's cost per image falls with the pass size (its conv runs sample by sample,
     * and a linear layer's weights are read once per pass): one pass. The engine's may not. */
    int k = q->plans ? -1 : pick_chunk(q, imgs), c = q->plans ? imgs : 1 << k;
    q->chunk = c;
    err_t e = {0};
    int rc = 0;
    for (int at = 0; rc == 0 && at < imgs; at += c) {
        int n = imgs - at < c ? imgs - at : c;
        double t0 = mono();
        rc = forward(q, q->xb + (size_t)at * INFER_INPUT, n, q->lb + (size_t)at * q->classes, &e);
        if (rc == 0 && n == c && k >= 0) {
            double per = (mono() - t0) / c;
            q->per_img[k] = q->per_img[k] == 0 ? per : 0.7 * q->per_img[k] + 0.3 * per;
        }
    }
    if (rc) {
        snprintf(msg, cap, "%s", e.msg);
        return rc;
    }
    const float *L = q->lb;
    r = first;
    int row = 0;
    for (int i = 0; i < n_req; i++, r = r->next)
        for (int j = 0; j < r->n; j++, row++) {
            const float *l = L + (size_t)row * q->classes;
            float *p = r->probs + (size_t)j * q->classes;
            float mx = l[0];
            for (int cl = 1; cl < q->classes; cl++)
                mx = l[cl] > mx ? l[cl] : mx;
            double sum = 0;
            for (int cl = 0; cl < q->classes; cl++)
                sum += (p[cl] = expf(l[cl] - mx));
            for (int cl = 0; cl < q->classes; cl++)
                p[cl] = (float)(p[cl] / sum);
        }
    return 0;
}

static void *loop(void *arg)
{
    infer_t *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->work, &q->mu);
        if (q->stop)
            break;
        if (q->max_batch > 1 && q->queued < q->max_batch) {
            /* Wait for company only while some is on its way (a request being read and parsed
             * by an HTTP thread), and only as long as a batch takes (no longer than max_wait),
             * counted from the oldest request's arrival: a lone request goes at once, and
             * under load the queue refills while a batch runs and the next one starts at once.
             * (Waiting on nothing cost the CNN a third of its requests per second on a loaded
             * machine: the model sat idle while the HTTP threads had nothing to hand it.) */
            double wait = q->batch_ema < q->max_wait ? q->batch_ema : q->max_wait;
            double deadline = q->head->arrived + wait;
            struct timespec ts;
            abs_deadline(deadline, &ts);
            while (!q->stop && q->queued < q->max_batch && q->incoming > 0 && mono() < deadline)
                if (pthread_cond_timedwait(&q->work, &q->mu, &ts) == ETIMEDOUT)
                    break;
            if (q->stop)
                break;
        }
        /* Whole requests, oldest first; a request larger than max_batch runs alone. */
        req_t *first = q->head, *last = NULL;
        int imgs = 0, n_req = 0;
        while (q->head && (imgs == 0 || imgs + q->head->n <= q->max_batch)) {
            last = q->head;
            imgs += last->n;
            n_req++;
            q->head = last->next;
        }
        if (!q->head)
            q->tail = NULL;
        q->queued -= imgs;
        pthread_mutex_unlock(&q->mu);

        char msg[160] = "";
        double t0 = mono();
        int rc = run_batch(q, first, n_req, imgs, msg, sizeof msg);
        double dt = mono() - t0;

        /* the requests are the batcher's alone until posted: their answers need no lock */
        req_t *r = first;
        for (int i = 0; i < n_req; i++, r = r->next) {
            r->rc = rc;
            r->batch = imgs;
            if (rc)
                snprintf(r->msg, sizeof r->msg, "%s", msg);
        }
        pthread_mutex_lock(&q->mu);
        q->batch_ema = q->batches ? 0.8 * q->batch_ema + 0.2 * dt : dt;
        q->batches++;
        q->images += (unsigned long long)imgs;
        q->batch_sum += imgs;
        int b = 0;
        while (b < HIST_BUCKETS - 1 && imgs > (1 << b))
            b++;
        q->hist[b]++;
        pthread_mutex_unlock(&q->mu);
        r = first;
        for (int i = 0; i < n_req; i++) {
            req_t *next = r->next; /* r is the waiter's: not touched once posted */
            sem_post(&r->done_sem);
            r = next;
        }
        (void)last;
        pthread_mutex_lock(&q->mu);
    }
    /* Stopping: whoever still waits gets an error instead of hanging. */
    for (req_t *r = q->head, *next; r; r = next) {
        next = r->next;
        r->rc = FN_EIO;
        snprintf(r->msg, sizeof r->msg, "the server is shutting down");
        sem_post(&r->done_sem);
    }
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int infer_start(engine_model_t *m, int max_batch, double max_wait_s, const char *int8_path, infer_t **out, err_t *err)
{
    *out = NULL;
    int rc = 0;
    if (max_batch < 1 || max_batch > 1024)
        rc = err_set(err, FN_EINVAL, "max batch %d: expected 1..1024", max_batch);
    else if (!(max_wait_s >= 0 && max_wait_s <= 1))
        rc = err_set(err, FN_EINVAL, "max wait %g s: expected 0..1", max_wait_s);
    else if (engine_model_input_dim(m) != INFER_INPUT)
        rc = err_set(err, FN_EINVAL, "the model takes %d inputs; serve takes 1x28x28 images (%d)",
                     engine_model_input_dim(m), INFER_INPUT);
    infer_t *q = rc ? NULL : calloc(1, sizeof *q);
    if (!q) {
        engine_model_free(m);
        return rc ? rc : err_set(err, FN_ENOMEM, "out of memory");
    }
    q->m = m;
    q->classes = engine_model_num_classes(m);
    q->max_batch = max_batch;
    q->max_wait = max_wait_s;
    q->cap_images = max_batch > INFER_MAX_IMAGES ? max_batch : INFER_MAX_IMAGES;
    q->xb = malloc((size_t)q->cap_images * INFER_INPUT * sizeof(float));
    q->lb = malloc((size_t)q->cap_images * (size_t)q->classes * sizeof(float));
    q->g = engine_graph_create(1 << 20, 1);
    q->started = mono();
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->work, &ca);
    pthread_condattr_destroy(&ca);
    q->pool = engine_threadpool_default();
    /* each plan holds its own copy of the weights: at most 8, and no more than a pass can use */
    q->nplans = engine_threadpool_size(q->pool);
    if (q->nplans > 8)
        q->nplans = 8;
    if (q->nplans > max_batch)
        q->nplans = max_batch;
    if (q->nplans < 1)
        q->nplans = 1;
    q->plans = calloc((size_t)q->nplans, sizeof *q->plans);
    q->int8 = int8_path != NULL;
    for (int i = 0; q->plans && i < q->nplans; i++) {
        err_t pe = {0};
        int prc = int8_path ? engine_infer_load_int8(int8_path, &q->plans[i], &pe)
                            : engine_infer_create(engine_model_arch(m), engine_model_params(m),
                                                  engine_model_num_federated(m), 1, 28, 28, q->classes, &q->plans[i],
                                                  &pe);
        if (prc == 0 && !int8_path)
            prc = engine_infer_fold(q->plans[i], &pe);
        int c, h, w, classes;
        if (prc == 0 && int8_path) { /* the file may have changed since m was read from it */
            engine_infer_shape(q->plans[i], &c, &h, &w, &classes);
            if (c != 1 || h != 28 || w != 28 || classes != q->classes)
                prc = err_set(&pe, FN_EINVAL, "%s: a model for %dx%dx%d inputs and %d classes, not 1x28x28 and %d",
                              int8_path, c, h, w, classes, q->classes);
        }
        if (prc < 0) { /* not for the runtime: the engine serves it (an int8 file must load) */
            for (int j = 0; j < q->nplans; j++)
                engine_infer_free(q->plans[j]);
            free(q->plans);
            q->plans = NULL;
            if (int8_path) {
                infer_stop(q);
                return err_set(err, prc, "%s", pe.msg);
            }
        }
    }
    if (!q->xb || !q->lb || !q->g) {
        int cap = q->cap_images;
        infer_stop(q);
        return err_set(err, FN_ENOMEM, "out of memory for a batch of %d images", cap);
    }
    engine_graph_set_grad(q->g, 0);
    if (pthread_create(&q->thread, NULL, loop, q) != 0) {
        infer_stop(q);
        return err_set(err, FN_EIO, "cannot start the inference thread");
    }
    q->thread_started = 1;
    *out = q;
    return 0;
}

void infer_stop(infer_t *q)
{
    if (!q)
        return;
    if (q->thread_started) {
        pthread_mutex_lock(&q->mu);
        q->stop = 1;
        pthread_cond_broadcast(&q->work);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
    }
    pthread_cond_destroy(&q->work);
    for (int i = 0; q->plans && i < q->nplans; i++)
        engine_infer_free(q->plans[i]);
    free(q->plans);
    pthread_mutex_destroy(&q->mu);
    engine_graph_free(q->g);
    engine_model_free(q->m);
    free(q->xb);
    free(q->lb);
    free(q);
}

int infer_num_classes(const infer_t *q) { return q->classes; }

int infer_run(infer_t *q, const float *x, int n, float *probs, int *batch, err_t *err)
{
    if (n < 1 || n > INFER_MAX_IMAGES)
        return err_set(err, FN_EINVAL, "a request holds 1..%d images, not %d", INFER_MAX_IMAGES, n);
    req_t r = {.x = x, .n = n, .probs = probs, .arrived = mono()};
    if (sem_init(&r.done_sem, 0, 0) != 0)
        return err_set(err, FN_EIO, "cannot make a semaphore for the request: %s", strerror(errno));
    pthread_mutex_lock(&q->mu);
    if (q->stop) {
        pthread_mutex_unlock(&q->mu);
        sem_destroy(&r.done_sem);
        return err_set(err, FN_EIO, "the server is shutting down");
    }
    if (q->incoming > 0)
        q->incoming--; /* its infer_expect(+1) */
    if (q->tail)
        q->tail->next = &r;
    else
        q->head = &r;
    q->tail = &r;
    q->queued += n;
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->mu);
    while (sem_wait(&r.done_sem) != 0) /* EINTR: a signal, the answer is not in yet */
        ;
    sem_destroy(&r.done_sem);
    if (batch)
        *batch = r.batch;
    return r.rc ? err_set(err, r.rc, "%s", r.msg) : 0;
}

void infer_expect(infer_t *q, int delta)
{
    pthread_mutex_lock(&q->mu);
    q->incoming += delta;
    if (q->incoming < 0)
        q->incoming = 0;
    if (delta < 0)
        pthread_cond_signal(&q->work); /* a batcher waiting for it need not */
    pthread_mutex_unlock(&q->mu);
}

void infer_note_response(infer_t *q, int status, double seconds)
{
    int cls = status / 100;
    pthread_mutex_lock(&q->mu);
    q->by_status[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (cls == 2) {
        size_t i = (size_t)(q->lat_count % LAT_RING);
        q->lat[i] = seconds;
        q->lat_at[i] = mono();
        q->lat_count++;
        q->lat_sum += seconds;
    }
    pthread_mutex_unlock(&q->mu);
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A growing text buffer for the exposition. */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} buf_t;

__attribute__((format(printf, 2, 3))) static void put(buf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        char *s = realloc(b->s, b->cap * 2);
        if (!s || k < 0) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap *= 2;
    }
}

char *infer_metrics_text(infer_t *q)
{
    static double sorted[LAT_RING];
    static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER; /* one copy of the ring, not 32 KiB per stack */
    buf_t b = {.s = malloc(4096), .cap = 4096};
    if (!b.s)
        return NULL;
    pthread_mutex_lock(&sort_lock);
    pthread_mutex_lock(&q->mu);
    double now = mono();
    size_t n = q->lat_count < LAT_RING ? (size_t)q->lat_count : LAT_RING, recent = 0;
    for (size_t i = 0; i < n; i++) {
        sorted[i] = q->lat[i];
        recent += q->lat_at[i] >= now - RATE_WINDOW_S;
    }
    double window = now - q->started < RATE_WINDOW_S ? now - q->started : RATE_WINDOW_S;
    /* When the ring holds less than the window, the rate over what it holds undercounts. */
    if (n == LAT_RING && recent == n) {
        double oldest = now;
        for (size_t i = 0; i < n; i++)
            oldest = q->lat_at[i] < oldest ? q->lat_at[i] : oldest;
        window = now - oldest;
    }
    static const char *const cls[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    put(&b, "# HELP fednas_serve_requests_total Prediction requests answered, by status class.\n"
            "# TYPE fednas_serve_requests_total counter\n");
    for (int i = 0; i < 6; i++)
        put(&b, "fednas_serve_requests_total{code=\"%s\"} %llu\n", cls[i], q->by_status[i]);
    put(&b, "# HELP fednas_serve_images_total Images classified.\n# TYPE fednas_serve_images_total counter\n"
            "fednas_serve_images_total %llu\n", q->images);
    put(&b, "# HELP fednas_serve_batch_size Images per forward pass.\n# TYPE fednas_serve_batch_size histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        cum += q->hist[i];
        if (i < HIST_BUCKETS - 1)
            put(&b, "fednas_serve_batch_size_bucket{le=\"%d\"} %llu\n", 1 << i, cum);
        else
            put(&b, "fednas_serve_batch_size_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    put(&b, "fednas_serve_batch_size_sum %.0f\nfednas_serve_batch_size_count %llu\n", q->batch_sum, q->batches);
    put(&b, "# HELP fednas_serve_latency_seconds Time from a request's arrival to its answer (2xx), over the last "
            "%d requests.\n# TYPE fednas_serve_latency_seconds summary\n", LAT_RING);
    pthread_mutex_unlock(&q->mu);
    qsort(sorted, n, sizeof *sorted, dcmp);
    static const double qs[] = {0.5, 0.9, 0.99};
    for (int i = 0; i < 3; i++) {
        if (n)
            put(&b, "fednas_serve_latency_seconds{quantile=\"%g\"} %.6f\n", qs[i], sorted[(size_t)(qs[i] * (double)(n - 1))]);
        else
            put(&b, "fednas_serve_latency_seconds{quantile=\"%g\"} NaN\n", qs[i]);
    }
    pthread_mutex_unlock(&sort_lock);
    pthread_mutex_lock(&q->mu);
    put(&b, "fednas_serve_latency_seconds_sum %.6f\nfednas_serve_latency_seconds_count %llu\n", q->lat_sum, q->lat_count);
    put(&b, "# HELP fednas_serve_requests_per_second Answered requests per second over the last %.0f s.\n"
            "# TYPE fednas_serve_requests_per_second gauge\nfednas_serve_requests_per_second %.3f\n",
        RATE_WINDOW_S, window > 0 ? (double)recent / window : 0.0);
    put(&b, "# HELP fednas_serve_batch_seconds Average forward pass time (moving average).\n"
            "# TYPE fednas_serve_batch_seconds gauge\nfednas_serve_batch_seconds %.6f\n", q->batch_ema);
    put(&b, "# HELP fednas_serve_pass_images Images per forward pass chosen for the latest batch (the size "
            "with the lowest measured time per image).\n# TYPE fednas_serve_pass_images gauge\n"
            "fednas_serve_pass_images %d\n", q->chunk);
    put(&b, "# HELP fednas_serve_max_batch The batch limit.\n# TYPE fednas_serve_max_batch gauge\n"
            "fednas_serve_max_batch %d\n", q->max_batch);
    pthread_mutex_unlock(&q->mu);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
