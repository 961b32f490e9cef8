/* profile: a per-op profiler for training steps. Attached to a graph (engine_graph_set_trace),
 * it timestamps every recorded op's forward and every backward kernel, with its FLOPs, the
 * bytes it touched and the arena's use right after it, inside named spans (a step, its forward,
 * its backward), and writes them as a Chrome trace (Perfetto, chrome://tracing) plus a summary
 * table sorted by time. Detached, the engine pays one pointer test per op. */
#ifndef FEDNAS_ENGINE_PROFILE_H
#define FEDNAS_ENGINE_PROFILE_H

#include <jansson.h>
#include <stdio.h>

#include "common/err.h"
#include "engine/graph.h"
#include "engine/ops.h"

typedef struct engine_profiler engine_profiler_t;

/* max_events bounds the memory used (events past it are counted as dropped, not stored). */
int engine_profiler_create(size_t max_events, engine_profiler_t **out, err_t *err);
void engine_profiler_free(engine_profiler_t *p);
/* Installs the hook on g (and reads g's arena for the memory counters); NULL detaches. */
void engine_profiler_attach(engine_profiler_t *p, engine_graph_t *g);

/* Opens a span (nesting up to 8 deep) and restarts the op clock: an op's event runs from the
 * previous op's end (or the latest span start) to its own end, so it includes the small
 * front-end work (shape checks, the arena allocation) between kernels. */
int engine_profiler_begin(engine_profiler_t *p, const char *name);
int engine_profiler_end(engine_profiler_t *p);
/* A memory sample outside any op (after an arena reset, say). */
void engine_profiler_sample_memory(engine_profiler_t *p);

/* One row of the summary: an op kind in one direction. */
typedef struct engine_profile_row {
    engine_op_t op;
    int backward;
    long calls;
    double seconds, flops, bytes;
} engine_profile_row_t;
/* Rows sorted by seconds, largest first; returns how many (at most 2 * ENGINE_OP_COUNT). */
int engine_profiler_rows(const engine_profiler_t *p, engine_profile_row_t *rows);
/* Totals over all op events of one direction (backward 0 or 1). */
double engine_profiler_total(const engine_profiler_t *p, int backward, double *flops, double *bytes);
size_t engine_profiler_dropped(const engine_profiler_t *p);

/* The trace as {"traceEvents":[...], "displayTimeUnit":"ms", "otherData":meta}: "X" events
 * (name, cat "op"|"span", ph, ts and dur in microseconds, pid, tid, args with shape, flops,
 * bytes), "C" counter events "arena" (args used, reserved bytes) after every op, and "M"
 * metadata naming the process and thread. meta (may be NULL) is copied in. */
int engine_profiler_write_trace(const engine_profiler_t *p, const char *path, const json_t *meta, err_t *err);
/* The table: op, direction, calls, ms, share of time, GFLOP, GFLOP/s, MB. */
void engine_profiler_print(const engine_profiler_t *p, FILE *f);

#endif
