#include "engine/profile.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EV_OP = 0, EV_SPAN, EV_MEM };
#define MAX_DEPTH 8

typedef struct event {
    uint8_t kind, backward;
    int16_t op;
    int64_t t0, t1; /* ns since the profiler was made; t1 unused for EV_MEM */
    double flops, bytes;
    size_t used, reserved;
    char name[40]; /* a span's name, or an op's output shape */
} event_t;

struct engine_profiler {
    event_t *ev;
    size_t n, cap, dropped;
    int64_t origin, last;
    size_t open[MAX_DEPTH]; /* indices of the open spans */
    int depth;
    engine_graph_t *g;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static event_t *push(engine_profiler_t *p)
{
    if (p->n == p->cap) {
        p->dropped++;
        return NULL;
    }
    event_t *e = &p->ev[p->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static void mem_event(engine_profiler_t *p, int64_t t)
{
    if (!p->g)
        return;
    event_t *e = push(p);
    if (!e)
        return;
    const engine_arena_t *a = engine_graph_arena(p->g);
    e->kind = EV_MEM;
    e->t0 = t;
    e->used = a->used;
    e->reserved = a->reserved;
}

/* Bytes an op moves: its inputs read and its output written; backward reads the output's
 * gradient and the inputs and writes their gradients, about twice that. An estimate of memory
 * traffic for roofline-style reading, not a cache simulation. */
static double op_bytes(const engine_tensor_t *t)
{
    double b = (double)engine_tensor_bytes(t);
    for (int i = 0; i < ENGINE_MAX_SRC; i++)
        if (t->src[i])
            b += (double)engine_tensor_bytes(t->src[i]);
    return b;
}

/* Backward of linear and conv is two products of the forward's size (input and weight
 * gradients), as engine_op_flops documents; elementwise ops about the forward's count. */
static double op_flops(const engine_tensor_t *t, int backward)
{
    double f = engine_op_flops(t);
    if (backward && (t->op == ENGINE_OP_LINEAR || t->op == ENGINE_OP_CONV2D))
        f *= 2.0;
    return f;
}

static void on_op(void *ctx, const engine_tensor_t *t, int backward)
{
    engine_profiler_t *p = ctx;
    int64_t end = now_ns() - p->origin;
    event_t *e = push(p);
    if (e) {
        e->kind = EV_OP;
        e->backward = (uint8_t)(backward != 0);
        e->op = (int16_t)t->op;
        e->t0 = p->last;
        e->t1 = end;
        e->flops = op_flops(t, backward);
        e->bytes = op_bytes(t) * (backward ? 2.0 : 1.0);
        engine_tensor_shape_str(t, e->name, sizeof e->name);
    }
    mem_event(p, end);
    /* The bookkeeping above is not charged to the next op. */
    p->last = now_ns() - p->origin;
}

int engine_profiler_create(size_t max_events, engine_profiler_t **out, err_t *err)
{
    *out = NULL;
    if (max_events < 16 || max_events > ((size_t)1 << 26))
        return err_set(err, FN_EINVAL, "profile: max_events must be in 16..2^26, not %zu", max_events);
    engine_profiler_t *p = calloc(1, sizeof *p);
    if (!p || !(p->ev = malloc(max_events * sizeof *p->ev))) {
        free(p);
        return err_set(err, FN_ENOMEM, "profile: out of memory for %zu events", max_events);
    }
    p->cap = max_events;
    p->origin = now_ns();
    *out = p;
    return 0;
}

void engine_profiler_free(engine_profiler_t *p)
{
    if (!p)
        return;
    if (p->g)
        engine_graph_set_trace(p->g, NULL, NULL);
    free(p->ev);
    free(p);
}

void engine_profiler_attach(engine_profiler_t *p, engine_graph_t *g)
{
    if (p->g)
        engine_graph_set_trace(p->g, NULL, NULL);
    p->g = g;
    if (g)
        engine_graph_set_trace(g, on_op, p);
}

int engine_profiler_begin(engine_profiler_t *p, const char *name)
{
    if (p->depth == MAX_DEPTH)
        return -1;
    event_t *e = push(p);
    int64_t t = now_ns() - p->origin;
    if (e) {
        e->kind = EV_SPAN;
        e->t0 = t;
        e->t1 = -1; /* open */
        snprintf(e->name, sizeof e->name, "%s", name);
        p->open[p->depth] = (size_t)(e - p->ev);
    } else {
        p->open[p->depth] = SIZE_MAX;
    }
    p->depth++;
    p->last = t;
    return 0;
}

int engine_profiler_end(engine_profiler_t *p)
{
    if (p->depth == 0)
        return -1;
    size_t i = p->open[--p->depth];
    int64_t t = now_ns() - p->origin;
    if (i != SIZE_MAX)
        p->ev[i].t1 = t;
    p->last = t;
    return 0;
}

void engine_profiler_sample_memory(engine_profiler_t *p) { mem_event(p, now_ns() - p->origin); }

size_t engine_profiler_dropped(const engine_profiler_t *p) { return p->dropped; }

static int row_cmp(const void *a, const void *b)
{
    double x = ((const engine_profile_row_t *)a)->seconds, y = ((const engine_profile_row_t *)b)->seconds;
    return (x < y) - (x > y);
}

int engine_profiler_rows(const engine_profiler_t *p, engine_profile_row_t *rows)
{
    engine_profile_row_t acc[2 * ENGINE_OP_COUNT];
    memset(acc, 0, sizeof acc);
    for (size_t i = 0; i < p->n; i++) {
        const event_t *e = &p->ev[i];
        if (e->kind != EV_OP || e->op < 0 || e->op >= ENGINE_OP_COUNT)
            continue;
        engine_profile_row_t *r = &acc[2 * e->op + e->backward];
        r->op = (engine_op_t)e->op;
        r->backward = e->backward;
        r->calls++;
        r->seconds += 1e-9 * (double)(e->t1 - e->t0);
        r->flops += e->flops;
        r->bytes += e->bytes;
    }
    int n = 0;
    for (int i = 0; i < 2 * ENGINE_OP_COUNT; i++)
        if (acc[i].calls)
            rows[n++] = acc[i];
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    return n;
}

double engine_profiler_total(const engine_profiler_t *p, int backward, double *flops, double *bytes)
{
    double s = 0, f = 0, b = 0;
    for (size_t i = 0; i < p->n; i++) {
        const event_t *e = &p->ev[i];
        if (e->kind == EV_OP && e->backward == (backward != 0)) {
            s += 1e-9 * (double)(e->t1 - e->t0);
            f += e->flops;
            b += e->bytes;
        }
    }
    if (flops)
        *flops = f;
    if (bytes)
        *bytes = b;
    return s;
}

static json_t *us(int64_t ns) { return json_real((double)ns / 1000.0); }

int engine_profiler_write_trace(const engine_profiler_t *p, const char *path, const json_t *meta, err_t *err)
{
    json_t *evs = json_array();
    json_t *root = json_pack("{s:o, s:s}", "traceEvents", evs, "displayTimeUnit", "ms");
    if (!root)
        return err_set(err, FN_ENOMEM, "profile: out of memory building the trace");
    int pid = (int)getpid();
    json_array_append_new(evs, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "process_name", "ph", "M", "pid",
                                         pid, "tid", 1, "args", "name", "fednas profile"));
    json_array_append_new(evs, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "thread_name", "ph", "M", "pid", pid,
                                         "tid", 1, "args", "name", "engine"));
    for (size_t i = 0; i < p->n; i++) {
        const event_t *e = &p->ev[i];
        json_t *j = NULL;
        if (e->kind == EV_SPAN) {
            if (e->t1 < 0)
                continue; /* never closed: a failed step; its ops still show */
            j = json_pack("{s:s, s:s, s:s, s:o, s:o, s:i, s:i}", "name", e->name, "cat", "span", "ph", "X", "ts",
                          us(e->t0), "dur", us(e->t1 - e->t0), "pid", pid, "tid", 1);
        } else if (e->kind == EV_OP) {
            char name[48];
            snprintf(name, sizeof name, "%s%s", engine_op_name((engine_op_t)e->op), e->backward ? " (backward)" : "");
            j = json_pack("{s:s, s:s, s:s, s:o, s:o, s:i, s:i, s:{s:s, s:s, s:s, s:f, s:f}}", "name", name, "cat", "op",
                          "ph", "X", "ts", us(e->t0), "dur", us(e->t1 - e->t0), "pid", pid, "tid", 1, "args", "op",
                          engine_op_name((engine_op_t)e->op), "pass", e->backward ? "backward" : "forward", "shape",
                          e->name, "flops", e->flops, "bytes", e->bytes);
        } else {
            j = json_pack("{s:s, s:s, s:o, s:i, s:i, s:{s:I, s:I}}", "name", "arena", "ph", "C", "ts", us(e->t0), "pid",
                          pid, "tid", 1, "args", "used", (json_int_t)e->used, "reserved", (json_int_t)e->reserved);
        }
        if (!j || json_array_append_new(evs, j)) {
            json_decref(root);
            return err_set(err, FN_ENOMEM, "profile: out of memory building the trace");
        }
    }
    if (meta)
        json_object_set_new(root, "otherData", json_deep_copy(meta));
    int rc = json_dump_file(root, path, JSON_COMPACT);
    json_decref(root);
    if (rc)
        return err_set(err, FN_EIO, "profile: cannot write %s: %s", path, strerror(errno));
    return 0;
}

void engine_profiler_print(const engine_profiler_t *p, FILE *f)
{
    engine_profile_row_t rows[2 * ENGINE_OP_COUNT];
    int n = engine_profiler_rows(p, rows);
    double total = engine_profiler_total(p, 0, NULL, NULL) + engine_profiler_total(p, 1, NULL, NULL);
    fprintf(f, "%-18s %-8s %6s %10s %6s %10s %9s %10s\n", "op", "pass", "calls", "ms", "%", "GFLOP", "GFLOP/s", "MB");
    for (int i = 0; i < n; i++) {
        const engine_profile_row_t *r = &rows[i];
        fprintf(f, "%-18s %-8s %6ld %10.3f %6.1f %10.4f %9.2f %10.2f\n", engine_op_name(r->op),
                r->backward ? "backward" : "forward", r->calls, 1e3 * r->seconds,
                total > 0 ? 100.0 * r->seconds / total : 0.0, 1e-9 * r->flops,
                r->seconds > 0 ? 1e-9 * r->flops / r->seconds : 0.0, 1e-6 * r->bytes);
    }
    if (p->dropped)
        fprintf(f, "(%zu events past the limit were not recorded)\n", p->dropped);
}
