/* web: the NAS routes (api_nas.c) over real HTTPS against a temp store holding one hand-made
 * search, and the candidate events (events_nas.c) polled directly. The search's numbers are
 * chosen so that the fronts, the hypervolume and the lineage can be worked out by hand:
 *
 *   seq cand parent  acc   params  flops  latency  status
 *    0    0    -    0.80   20000   1.0e6   1.0     done
 *    1    1    0    0.85   50000   3.0e6   0.5     done
 *    2    2    1    0.82   60000   1.5e6   2.0     done   (dominated by 1 on params and latency)
 *    3    3    1    0.90   90000   5.0e6   3.0     done
 *    4    4    3    0.78   10000   0.8e6   0.4     done
 *    5    5    4     -       -       -      -      failed
 *    6    6    4     -       -       -      -      running
 *    7    7    -    0.85   50000   3.0e6   0.5     done   (hash-cache copy of 1: not a point)
 *
 * Fronts: params [4, 0, 1, 3]; flops [4, 0, 2, 1, 3]; latency [4, 1, 3].
 * Hypervolume over (1 - acc, params / 1e5), reference (1, 1), swept by error:
 *   3: 0.90 x (1 - 0.9) = 0.09; 1: 0.85 x (0.9 - 0.5) = 0.34; 2: skipped (0.6 > 0.5);
 *   0: 0.80 x (0.5 - 0.2) = 0.24; 4: 0.78 x (0.2 - 0.1) = 0.078; total 0.748. */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "web_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/store_nas.h"
#include "web/web_internal.h"

static int64_t g_nas_run;

static const struct {
    int parent;
    double acc;
    long params;
    double flops, lat;
    const char *status;
    int cached_from;
} k_c[] = {
    {-1, 0.80, 20000, 1.0e6, 1.0, "done", -1},   {0, 0.85, 50000, 3.0e6, 0.5, "done", -1},
    {1, 0.82, 60000, 1.5e6, 2.0, "done", -1},    {1, 0.90, 90000, 5.0e6, 3.0, "done", -1},
    {3, 0.78, 10000, 0.8e6, 0.4, "done", -1},    {4, 0, 0, 0, 0, "failed", -1},
    {4, 0, 0, 0, 0, "running", -1},              {-1, 0.85, 50000, 3.0e6, 0.5, "done", 1},
};
#define NC ((int)(sizeof k_c / sizeof k_c[0]))

static void put_candidate(store_t *w, int64_t run, int i, const char *status)
{
    store_nas_candidate_t c = {.seq = i, .cand_id = i, .parent = k_c[i].parent, .budget = 1,
                               .cached_from = k_c[i].cached_from, .tell_seq = -1, .queued_at = 1700000000.0 + i};
    snprintf(c.hash, sizeof c.hash, "%02x%062d", 0xa0 + (i == 7 ? 1 : i), 0);
    c.genome = "{\"space\":\"macro\",\"layers\":[{\"op\":\"conv3x3\",\"width\":8,\"bn\":true,\"reduce\":1}]}";
    c.arch = "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3}]}";
    snprintf(c.status, sizeof c.status, "%s", status);
    snprintf(c.mutation, sizeof c.mutation, "%s", k_c[i].parent >= 0 ? "layer 1 op conv3x3 -> conv5x5" : "");
    if (strcmp(status, "done") == 0) {
        c.has_metrics = 1;
        c.val_accuracy = k_c[i].acc;
        c.params = k_c[i].params;
        c.flops = k_c[i].flops;
        c.latency_ms = k_c[i].lat;
        c.ended_at = c.queued_at + 5;
        c.seconds = 4;
    }
    if (strcmp(status, "failed") == 0)
        snprintf(c.reason, sizeof c.reason, "diverged (loss is NaN)");
    err_t e = {0};
    if (store_nas_candidate_put(w, run, &c, &e) != 0)
        fail_msg("store_nas_candidate_put: %s", e.msg);
}

static int nas_up(void **state)
{
    if (fixture_up(state) != 0)
        return -1;
    fixture_t *f = *state;
    err_t e = {0};
    int64_t exp;
    store_nas_run_t nr = {.strategy = "evolution", .split_seed = 7, .budget = 8, .workers = 2, .threads = 1,
                          .device = "cpu"};
    if (store_experiment_create(f->writer, "nas-hand", "{\"name\":\"nas-hand\",\"nas\":{}}", &exp, &e) != 0 ||
        store_run_create(f->writer, exp, 8, 2, 7, NULL, &g_nas_run, &e) != 0 ||
        store_nas_run_create(f->writer, g_nas_run, &nr, &e) != 0) {
        fprintf(stderr, "nas fixture: %s\n", e.msg);
        return -1;
    }
    for (int i = 0; i < NC; i++)
        put_candidate(f->writer, g_nas_run, i, k_c[i].status);
    return 0;
}

static json_t *get_json(fixture_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *get_json(fixture_t *f, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    resp_t r;
    assert_int_equal(http_get(f->port, path, &r), 0);
    if (r.status != 200)
        fail_msg("GET %s: %d %s", path, r.status, r.body);
    json_t *j = body_json(&r);
    resp_free(&r);
    return j;
}

/* The "seq" of each element of arr (objects, or plain integers), as "0,1,2". */
static void seqs(json_t *arr, char *out, size_t cap)
{
    out[0] = '\0';
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        json_t *s = json_is_object(v) ? json_object_get(v, "seq") : v;
        snprintf(out + strlen(out), cap - strlen(out), "%s%lld", i ? "," : "", (long long)json_integer_value(s));
    }
}

static void expect_seqs(fixture_t *f, const char *query, const char *want, long long want_total)
{
    json_t *j = get_json(f, "/api/runs/%lld/nas/candidates%s", (long long)g_nas_run, query);
    char got[256];
    seqs(json_object_get(j, "candidates"), got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("candidates%s: seqs %s, expected %s", query, got, want);
    assert_int_equal(json_integer_value(json_object_get(j, "total")), want_total);
    json_decref(j);
}

static void test_front_and_hypervolume_by_hand(void **state)
{
    (void)state;
    double acc[] = {0.80, 0.85, 0.82, 0.90, 0.78, NAN, 0.99};
    double x[] = {20000, 50000, 60000, 90000, 10000, 5, NAN};
    int front[7];
    assert_int_equal(web_nas_front(acc, x, 7, front), 4);
    int want[] = {1, 1, 0, 1, 1, 0, 0};
    for (int i = 0; i < 7; i++)
        assert_int_equal(front[i], want[i]);
    assert_true(fabs(web_nas_hypervolume(acc, x, 5) - 0.748) < 1e-12);
    /* Outside the reference box (error >= 1 or params >= 100k) adds nothing; one point alone is
     * its rectangle. */
    double a2[] = {0.5, 0.95, 0.0}, p2[] = {50000, 100000, 1000};
    assert_true(fabs(web_nas_hypervolume(a2, p2, 3) - 0.25) < 1e-12);
    assert_true(web_nas_hypervolume(a2, p2, 0) == 0.0);
    /* Equal points do not dominate each other: both are on the front. */
    double a3[] = {0.9, 0.9}, x3[] = {3, 3};
    int f3[2];
    assert_int_equal(web_nas_front(a3, x3, 2, f3), 2);
}

static void test_candidates_sort_and_filter(void **state)
{
    fixture_t *f = *state;
    expect_seqs(f, "", "0,1,2,3,4,5,6,7", 8);
    /* Missing accuracies last either way; seq breaks the 0.85 tie. */
    expect_seqs(f, "?sort=val_accuracy&order=desc", "3,1,7,2,0,4,5,6", 8);
    expect_seqs(f, "?sort=val_accuracy&order=asc", "4,0,2,1,7,3,5,6", 8);
    expect_seqs(f, "?sort=params&order=desc&status=done", "3,2,1,7,0,4", 6);
    expect_seqs(f, "?status=done&max_params=50000", "0,1,4,7", 4);
    expect_seqs(f, "?status=failed,running", "5,6", 2);
    expect_seqs(f, "?min_accuracy=0.81&max_accuracy=0.86", "1,2,7", 3);
    expect_seqs(f, "?max_flops=1.5e6&max_latency_ms=1", "0,4", 2);
    expect_seqs(f, "?hash=a3", "3", 1);
    expect_seqs(f, "?since=4", "5,6,7", 3);
    expect_seqs(f, "?sort=seq&order=desc&limit=2&offset=1", "6,5", 8);
    json_t *j = get_json(f, "/api/runs/%lld/nas/candidates?limit=1", (long long)g_nas_run);
    json_t *c = json_array_get(json_object_get(j, "candidates"), 0);
    assert_true(json_is_object(json_object_get(c, "genome")));
    assert_string_equal(json_string_value(json_object_get(c, "status")), "done");
    assert_true(fabs(json_real_value(json_object_get(c, "val_accuracy")) - 0.80) < 1e-12);
    json_decref(j);
}

static void expect_400(fixture_t *f, const char *path_fmt, const char *needle)
{
    char path[256];
    snprintf(path, sizeof path, path_fmt, (long long)g_nas_run);
    resp_t r;
    assert_int_equal(http_get(f->port, path, &r), 0);
    json_t *j = r.status == 400 ? json_loads(r.body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "error"));
    if (!msg || !strstr(msg, needle))
        fail_msg("GET %s: %d %s (expected 400 mentioning \"%s\")", path, r.status, r.body, needle);
    json_decref(j);
    assert_json_error(&r, 400, needle);
    resp_free(&r);
}

static void test_bad_parameters_refused(void **state)
{
    fixture_t *f = *state;
    const char *base[] = {"/api/runs/%lld/nas/candidates", "/api/runs/%lld/nas/candidates.csv"};
    for (int b = 0; b < 2; b++) {
        char p[200];
#define BAD(q, needle)                                                                             \
    do {                                                                                           \
        snprintf(p, sizeof p, "%s%s", base[b], q);                                                 \
        expect_400(f, p, needle);                                                                  \
    } while (0)
        BAD("?sort=accuracy", "sort must be one of");
        BAD("?sort=seq;DROP%20TABLE%20runs", "sort must be one of");
        BAD("?order=up", "order must be asc or desc");
        BAD("?status=finished", "status must be queued, running, done or failed");
        BAD("?status=done,", "status must be");
        BAD("?min_accuracy=1.5", "min_accuracy must be a number from 0 to 1");
        BAD("?min_accuracy=nan", "min_accuracy must be");
        BAD("?min_accuracy=%20.5", "min_accuracy must be");
        BAD("?max_accuracy=-0.1", "max_accuracy must be");
        BAD("?min_accuracy=0.9&max_accuracy=0.8", "is above max_accuracy");
        BAD("?max_params=-1", "max_params must be a parameter count");
        BAD("?max_params=1e5", "max_params must be");
        BAD("?max_flops=abc", "max_flops must be");
        BAD("?max_latency_ms=inf", "max_latency_ms must be");
        BAD("?hash=XYZ", "hash must be 1 to 64 lowercase hex digits");
        BAD("?rung=1001", "rung must be");
        BAD("?since=-2", "since must be");
        BAD("?limit=0", "limit must be a row count from 1");
        BAD("?offset=x", "offset must be");
        BAD("?sort_by=params", "unknown query parameter \"sort_by\"");
#undef BAD
    }
    expect_400(f, "/api/runs/%lld/nas/pareto?x=time", "x must be params, flops or latency");
    expect_400(f, "/api/runs/%lld/nas/pareto?y=acc", "unknown query parameter");
    expect_400(f, "/api/runs/%lld/nas/candidate", "seq must be a candidate's seq");
    expect_400(f, "/api/runs/%lld/nas/candidate?seq=-1", "seq must be");
    expect_400(f, "/api/runs/%lld/nas/candidate?seq=1&x=2", "unknown query parameter");
    expect_400(f, "/api/nas/searches?all=1", "unknown query parameter");
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/abc/nas/pareto", &r), 0);
    assert_json_error(&r, 400, "is not a run number");
    resp_free(&r);
    /* A run that is not a search, and a candidate that does not exist: 404. */
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%lld/nas/candidates", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_json_error(&r, 404, "is not a NAS search");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/runs/%lld/nas/candidate?seq=99", (long long)g_nas_run);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_json_error(&r, 404, "has no candidate 99");
    resp_free(&r);
}

static void test_candidates_csv(void **state)
{
    fixture_t *f = *state;
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%lld/nas/candidates.csv?status=done&sort=val_accuracy&order=desc",
             (long long)g_nas_run);
    resp_t r;
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "text/csv"));
    assert_non_null(strstr(header(&r, "Content-Disposition"), "candidates.csv"));
    const char *want_head = "seq,cand_id,rung,hash,parent,mutation,budget,status,attempts,diverged,reason,worker,"
                            "cached_from,tell_seq,queued_at,started_at,ended_at,seconds,val_accuracy,val_loss,"
                            "train_loss,params,flops,latency_ms,threads,genome\r\n";
    assert_memory_equal(r.body, want_head, strlen(want_head));
    /* One line per done candidate, best first; the genome is one quoted JSON field. */
    int lines = 0;
    for (const char *p = r.body; (p = strstr(p, "\r\n")); p += 2)
        lines++;
    assert_int_equal(lines, 1 + 6);
    const char *row1 = r.body + strlen(want_head);
    assert_memory_equal(row1, "3,3,0,\"a3", 9);
    assert_non_null(strstr(row1, ",0.90000000000000002,"));
    assert_non_null(strstr(row1, ",90000,"));
    assert_non_null(strstr(row1, "\"{\"\"space\"\":\"\"macro\"\""));
    resp_free(&r);
}

static void expect_front(fixture_t *f, const char *x, const char *want)
{
    json_t *j = get_json(f, "/api/runs/%lld/nas/pareto%s%s", (long long)g_nas_run, x ? "?x=" : "", x ? x : "");
    char got[128];
    seqs(json_object_get(j, "front"), got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("pareto x=%s: front %s, expected %s", x ? x : "(default)", got, want);
    /* Points: done, not cache copies; each flagged as on the front or not. */
    char pts[128];
    seqs(json_object_get(j, "points"), pts, sizeof pts);
    assert_string_equal(pts, "0,1,2,3,4");
    size_t i;
    json_t *p;
    int on = 0;
    json_array_foreach(json_object_get(j, "points"), i, p) on += json_is_true(json_object_get(p, "front"));
    assert_int_equal(on, (int)json_array_size(json_object_get(j, "front")));
    assert_true(fabs(json_number_value(json_object_get(j, "hypervolume")) - 0.748) < 1e-9);
    assert_string_equal(json_string_value(json_object_get(j, "x")), x ? x : "params");
    json_decref(j);
}

static void test_pareto_fronts(void **state)
{
    fixture_t *f = *state;
    expect_front(f, NULL, "4,0,1,3");
    expect_front(f, "params", "4,0,1,3");
    expect_front(f, "flops", "4,0,2,1,3");
    expect_front(f, "latency", "4,1,3");
}

static void test_candidate_and_lineage(void **state)
{
    fixture_t *f = *state;
    json_t *j = get_json(f, "/api/runs/%lld/nas/candidate?seq=4", (long long)g_nas_run);
    json_t *c = json_object_get(j, "candidate");
    assert_int_equal(json_integer_value(json_object_get(c, "seq")), 4);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "arch"), "type")), "layers");
    assert_true(json_is_array(json_object_get(json_object_get(c, "genome"), "layers")));
    char got[64];
    seqs(json_object_get(j, "lineage"), got, sizeof got);
    assert_string_equal(got, "3,1,0");
    json_decref(j);
    j = get_json(f, "/api/runs/%lld/nas/candidate?seq=0", (long long)g_nas_run);
    assert_int_equal(json_array_size(json_object_get(j, "lineage")), 0);
    json_decref(j);
}

static void test_searches(void **state)
{
    fixture_t *f = *state;
    json_t *j = get_json(f, "/api/nas/searches");
    assert_int_equal(json_array_size(j), 1); /* the fixture's federated run is not a search */
    json_t *s = json_array_get(j, 0);
    assert_int_equal(json_integer_value(json_object_get(s, "run_id")), g_nas_run);
    assert_string_equal(json_string_value(json_object_get(s, "strategy")), "evolution");
    assert_string_equal(json_string_value(json_object_get(s, "experiment")), "nas-hand");
    assert_int_equal(json_integer_value(json_object_get(s, "candidates")), 8);
    assert_int_equal(json_integer_value(json_object_get(s, "done")), 6);
    assert_int_equal(json_integer_value(json_object_get(s, "failed")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "running")), 1);
    /* ASHA's progress: epochs of the 7 finished candidates (1 each), the running one not yet. */
    assert_true(fabs(json_number_value(json_object_get(s, "epochs_done")) - 7.0) < 1e-12);
    assert_true(fabs(json_number_value(json_object_get(s, "best_val_accuracy")) - 0.90) < 1e-12);
    assert_true(fabs(json_number_value(json_object_get(s, "hypervolume")) - 0.748) < 1e-9);
    json_decref(j);
}

/* openapi.json describes every NAS route, and each query parameter it documents for the
 * candidates is one the server takes (a documented name the handler refused would be a 400). */
static void test_openapi_describes_nas(void **state)
{
    fixture_t *f = *state;
    json_t *j = get_json(f, "/openapi.json");
    json_t *paths = json_object_get(j, "paths");
    static const char *const routes[] = {"/api/runs/{id}/nas", "/api/runs/{id}/nas/candidates",
                                         "/api/runs/{id}/nas/candidates.csv", "/api/runs/{id}/nas/candidate",
                                         "/api/runs/{id}/nas/pareto", "/api/nas/searches"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!json_object_get(paths, routes[i]))
            fail_msg("openapi.json does not describe %s", routes[i]);
    static const char *const sample[][2] = {
        {"sort", "params"},      {"order", "desc"},    {"status", "done"},       {"min_accuracy", "0.1"},
        {"max_accuracy", "0.9"}, {"max_params", "100000"}, {"max_flops", "1e9"}, {"max_latency_ms", "100"},
        {"hash", "a"},           {"rung", "0"},        {"since", "0"},           {"limit", "5"},
        {"offset", "0"}};
    json_t *params = json_object_get(json_object_get(json_object_get(paths, "/api/runs/{id}/nas/candidates"), "get"),
                                     "parameters");
    size_t i, documented = 0;
    json_t *p;
    json_array_foreach(params, i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        if (!name)
            continue; /* the run id ($ref) */
        const char *value = NULL;
        for (size_t k = 0; k < sizeof sample / sizeof sample[0]; k++)
            if (strcmp(sample[k][0], name) == 0)
                value = sample[k][1];
        if (!value)
            fail_msg("openapi.json documents candidates parameter %s, which this test has no value for", name);
        json_decref(get_json(f, "/api/runs/%lld/nas/candidates?%s=%s", (long long)g_nas_run, name, value));
        documented++;
    }
    assert_int_equal(documented, sizeof sample / sizeof sample[0]);
    json_decref(j);
}

/* ---- events_nas.c, polled directly with a capturing sender ---------------------------------- */

typedef struct capture {
    json_t *msgs;
} capture_t;

static void capture_send(web_events_t *ev, json_t *msg)
{
    json_array_append_new(((capture_t *)(void *)ev)->msgs, msg);
}

static void test_candidate_events(void **state)
{
    fixture_t *f = *state;
    store_t *rd = NULL;
    err_t e = {0};
    assert_int_equal(store_open(f->db, 1, &rd, &e), 0);
    capture_t cap = {json_array()};
    web_events_nas_t *st = NULL;
    web_events_t *ev = (web_events_t *)(void *)&cap;
    web_events_nas_poll(&st, rd, 0, capture_send, ev); /* baseline: silent */
    assert_int_equal(json_array_size(cap.msgs), 0);
    web_events_nas_poll(&st, rd, 1, capture_send, ev); /* nothing new */
    assert_int_equal(json_array_size(cap.msgs), 0);

    put_candidate(f->writer, g_nas_run, 6, "done"); /* the running one finishes */
    web_events_nas_poll(&st, rd, 1, capture_send, ev);
    assert_int_equal(json_array_size(cap.msgs), 1);
    json_t *m = json_array_get(cap.msgs, 0);
    assert_string_equal(json_string_value(json_object_get(m, "type")), "candidate_finished");
    assert_string_equal(json_string_value(json_object_get(m, "previous")), "running");
    assert_int_equal(json_integer_value(json_object_get(m, "run_id")), g_nas_run);
    json_t *c = json_object_get(m, "candidate");
    assert_int_equal(json_integer_value(json_object_get(c, "seq")), 6);
    assert_true(json_is_object(json_object_get(c, "genome")));
    assert_null(json_object_get(c, "row_id"));

    put_candidate(f->writer, g_nas_run, 6, "done"); /* rewritten, same status: nothing */
    web_events_nas_poll(&st, rd, 1, capture_send, ev);
    assert_int_equal(json_array_size(cap.msgs), 1);

    /* A new candidate asked, started, failed: three events in order. */
    store_nas_candidate_t n = {.seq = 8, .cand_id = 8, .parent = 3, .budget = 1, .cached_from = -1,
                               .tell_seq = -1, .queued_at = 1700000100.0, .status = "queued", .hash = "b0",
                               .genome = "{}", .arch = "{}"};
    assert_int_equal(store_nas_candidate_put(f->writer, g_nas_run, &n, &e), 0);
    web_events_nas_poll(&st, rd, 1, capture_send, ev);
    snprintf(n.status, sizeof n.status, "running");
    assert_int_equal(store_nas_candidate_put(f->writer, g_nas_run, &n, &e), 0);
    snprintf(n.status, sizeof n.status, "failed");
    assert_int_equal(store_nas_candidate_put(f->writer, g_nas_run, &n, &e), 0);
    web_events_nas_poll(&st, rd, 1, capture_send, ev);
    /* Two writes between polls: only the latest row is there to see, so the page learns
     * the candidate failed (what it draws) without the start it missed. */
    assert_int_equal(json_array_size(cap.msgs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(cap.msgs, 1), "type")), "candidate_added");
    assert_string_equal(json_string_value(json_object_get(json_array_get(cap.msgs, 2), "type")), "candidate_finished");
    assert_string_equal(json_string_value(json_object_get(json_array_get(cap.msgs, 2), "status")), "failed");

    web_events_nas_free(st);
    json_decref(cap.msgs);
    store_close(rd);
    /* Back as the other tests expect it. */
    put_candidate(f->writer, g_nas_run, 6, "running");
    sqlite3_exec(store_sqlite(f->writer), "DELETE FROM nas_candidates WHERE seq = 8", NULL, NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest pure[] = {cmocka_unit_test(test_front_and_hypervolume_by_hand)};
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_candidates_sort_and_filter), cmocka_unit_test(test_bad_parameters_refused),
        cmocka_unit_test(test_candidates_csv),             cmocka_unit_test(test_pareto_fronts),
        cmocka_unit_test(test_candidate_and_lineage),      cmocka_unit_test(test_searches),
        cmocka_unit_test(test_openapi_describes_nas),
        cmocka_unit_test(test_candidate_events),
    };
    int failed = cmocka_run_group_tests_name("test_web_nas pure", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("test_web_nas served", served, nas_up, fixture_down);
    return failed;
}
