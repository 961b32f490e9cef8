/* nas/controller.c's tell order, with a scripted strategy and a worker pool whose jobs finish
 * in an order the test chooses: the order is a virtual clock (the run's workers take the
 * candidates in ask order, an evaluation lasts its epochs), never the workers' timing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/store.h"
#include "common/store_nas.h"
#include "nas/controller.h"

#define MAXC 64

static char g_db[64];

/* The strategy: proposes script[0..n) (epochs each), records the tell order. */
typedef struct script {
    const double *epochs;
    int n, asked;
    int told[MAXC], ntold;
    int pool_told_when[MAXC]; /* how many jobs the pool had finished when each was told */
    struct pool *pool;
    int ran; /* jobs the pool ran */
} script_t;

/* The workers: `slots` slots; a finished job is picked by `pick` among those submitted. */
typedef struct pool {
    int slots;
    int64_t job[MAXC];
    int slot[MAXC], njobs;
    int finished;
    int (*pick)(const struct pool *p); /* index into job[] */
} pool_t;

static int sc_ask(void *impl, nas_ask_t *a, err_t *err)
{
    (void)err;
    script_t *s = impl;
    if (s->asked == s->n)
        return NAS_ASK_DONE;
    int i = s->asked++;
    a->row.cand_id = i;
    a->row.parent = -1;
    snprintf(a->row.hash, sizeof a->row.hash, "%064d", i);
    snprintf(a->row.mutation, sizeof a->row.mutation, "scripted");
    a->row.budget = s->epochs[i];
    a->progress = 1;
    a->row.genome = strdup("{}");
    a->row.arch = strdup("{}");
    a->proposal = malloc(sizeof(int));
    *(int *)a->proposal = i;
    return 0;
}

static int sc_tell(void *impl, const void *proposal, const store_nas_candidate_t *row, err_t *err)
{
    (void)err;
    script_t *s = impl;
    assert_string_equal(row->status, "done");
    s->pool_told_when[s->ntold] = s->pool->finished;
    s->told[s->ntold++] = *(const int *)proposal;
    return 0;
}

static int pool_submit(void *impl, int slot, const nas_job_t *job, err_t *err)
{
    (void)err;
    pool_t *p = impl;
    p->job[p->njobs] = job->id;
    p->slot[p->njobs++] = slot;
    return 0;
}

static int pool_wait(void *impl, double timeout_s, nas_job_done_t *out, err_t *err)
{
    (void)timeout_s;
    (void)err;
    pool_t *p = impl;
    if (p->njobs == 0)
        return 0;
    int k = p->pick(p);
    memset(out, 0, sizeof *out);
    out->id = p->job[k];
    out->slot = p->slot[k];
    out->r.ok = 1;
    out->r.accuracy = 0.5;
    snprintf(out->worker, sizeof out->worker, "test:%d", out->slot);
    p->job[k] = p->job[p->njobs - 1];
    p->slot[k] = p->slot[p->njobs - 1];
    p->njobs--;
    p->finished++;
    return 1;
}

static void pool_close(void *impl) { (void)impl; }

static const nas_worker_backend_t k_pool = {"test", pool_submit, pool_wait, pool_close};

static int pick_oldest(const pool_t *p)
{
    int k = 0;
    for (int i = 1; i < p->njobs; i++)
        k = p->job[i] < p->job[k] ? i : k;
    return k;
}

static int pick_newest(const pool_t *p)
{
    int k = 0;
    for (int i = 1; i < p->njobs; i++)
        k = p->job[i] > p->job[k] ? i : k;
    return k;
}

static const double *g_epochs;
/* The shortest evaluation first (as a real pool would finish them), then the oldest. */
static int pick_shortest(const pool_t *p)
{
    int k = 0;
    for (int i = 1; i < p->njobs; i++)
        if (g_epochs[p->job[i]] < g_epochs[p->job[k]] ||
            (g_epochs[p->job[i]] == g_epochs[p->job[k]] && p->job[i] < p->job[k]))
            k = i;
    return k;
}

/* A fresh store with one run; returns the run id. */
static int64_t new_run(const char *db, store_t **st)
{
    err_t e = {0};
    unlink(db);
    assert_int_equal(store_open(db, 0, st, &e), 0);
    int64_t exp, run;
    assert_int_equal(store_experiment_create(*st, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(*st, exp, 1, 1, 1, NULL, &run, &e), 0);
    store_nas_run_t nr = {.strategy = "random", .split_seed = 1, .budget = 1, .workers = 2, .threads = 1,
                          .device = "cpu"};
    assert_int_equal(store_nas_run_create(*st, run, &nr, &e), 0);
    return run;
}

/* Runs the script with `workers` (the run's) and a pool of as many slots; fills s. */
static void run_script(store_t *st, int64_t run, const double *epochs, int n, int workers,
                       int (*pick)(const pool_t *), script_t *s, int expect_rc)
{
    memset(s, 0, sizeof *s);
    s->epochs = epochs;
    s->n = n;
    pool_t p = {.slots = workers, .pick = pick};
    s->pool = &p;
    g_epochs = epochs;
    nas_workers_t *w = NULL;
    err_t e = {0};
    assert_int_equal(nas_workers_create(&k_pool, &p, workers, &w, &e), 0);
    nas_ctl_opts_t o = {.strategy = {.impl = s, .ask = sc_ask, .tell = sc_tell},
                        .pool = w,
                        .workers = workers,
                        .retries = 0,
                        .seed = 1,
                        .store = st,
                        .run_id = run,
                        .command = "test",
                        .unit = "evaluations"};
    int rc = nas_ctl_run(&o, &e);
    if (rc != expect_rc)
        fail_msg("nas_ctl_run: %d (%s), expected %d", rc, e.msg, expect_rc);
    nas_workers_close(w);
    s->ran = p.finished;
    s->pool = NULL;
}

/* Runs ep (n candidates) with `workers` under each order of finishing (the oldest job first, the
 * newest, the shortest: as real workers would); every run tells in want's order. *last: the
 * run where the shortest finished first. */
static void check_order(const double *ep, int n, int workers, const int *want, store_t **st, int64_t *run,
                        script_t *last)
{
    int (*picks[])(const pool_t *) = {pick_oldest, pick_newest, pick_shortest};
    for (int k = 0; k < 3; k++) {
        if (k)
            store_close(*st);
        *run = new_run(g_db, st);
        run_script(*st, *run, ep, n, workers, picks[k], last, 0);
        assert_int_equal(last->ntold, n);
        for (int i = 0; i < n; i++)
            if (last->told[i] != want[i])
                fail_msg("pick %d: tell %d is candidate %d, expected %d", k, i, last->told[i], want[i]);
    }
}

static void test_equal_budgets_ask_order(void **state)
{
    (void)state;
    static const double ep[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const int want[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    store_t *st;
    int64_t run;
    script_t s;
    check_order(ep, 10, 3, want, &st, &run, &s);
    store_close(st);
}

/* Two workers; candidate 0 lasts 9 epochs, the rest 1: on the clock, 1..9 end before 0
 * (worker 1 runs them back to back: ends 1, 2, ..., 9; a tie at 9 goes to the earlier ask, 0). */
static void test_long_evaluation_does_not_block(void **state)
{
    (void)state;
    static const double ep[12] = {9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const int want[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 10, 11};
    store_t *st;
    int64_t run;
    script_t s;
    check_order(ep, 12, 2, want, &st, &run, &s);
    /* finishing shortest first, the short ones are told as they come, while candidate 0 still
     * trains: no head-of-line blocking */
    assert_int_equal(s.pool_told_when[0], 1);
    assert_int_equal(s.pool_told_when[1], 2);
    /* the stored tell order is the same */
    store_nas_candidate_t *rows = NULL;
    int n = 0;
    err_t e = {0};
    assert_int_equal(store_nas_candidates_load(st, run, &rows, &n, &e), 0);
    assert_int_equal(n, 12);
    for (int i = 0; i < 12; i++)
        assert_int_equal(rows[want[i]].tell_seq, i);
    store_nas_candidates_free(rows, n);
    store_close(st);
}

/* Stores candidate i of the script as done (validation 0.25), told at tell_seq. */
static void put_done(store_t *st, int64_t run, int i, double epochs, int64_t tell_seq)
{
    store_nas_candidate_t r = {.seq = i, .cand_id = i, .parent = -1, .budget = epochs, .cached_from = -1,
                               .tell_seq = tell_seq, .attempts = 1, .has_metrics = 1, .val_accuracy = 0.25};
    snprintf(r.hash, sizeof r.hash, "%064d", i);
    snprintf(r.status, sizeof r.status, "done");
    r.genome = r.arch = "{}";
    err_t e = {0};
    assert_int_equal(store_nas_candidate_put(st, run, &r, &e), 0);
}

/* A stored run is replayed in its recorded tell order (here: the ask order, as a run of an
 * earlier fednas recorded it), and then goes on by the clock. */
static void test_resume_follows_the_record(void **state)
{
    (void)state;
    static const double ep[6] = {9, 1, 1, 1, 1, 1};
    store_t *st;
    int64_t run = new_run(g_db, &st);
    for (int i = 0; i < 3; i++)
        put_done(st, run, i, ep[i], i);
    script_t s;
    run_script(st, run, ep, 6, 2, pick_oldest, &s, 0);
    assert_int_equal(s.ntold, 6);
    static const int want[6] = {0, 1, 2, 3, 4, 5};
    for (int i = 0; i < 6; i++)
        assert_int_equal(s.told[i], want[i]);
    assert_int_equal(s.ran, 3); /* the replayed candidates were not evaluated again */
    store_close(st);
    /* a record that names a tell twice is refused */
    run = new_run(g_db, &st);
    for (int i = 0; i < 2; i++)
        put_done(st, run, i, ep[i], 1);
    run_script(st, run, ep, 6, 2, pick_oldest, &s, FN_ESTATE);
    store_close(st);
    unlink(g_db);
}

int main(void)
{
    snprintf(g_db, sizeof g_db, "/tmp/test_nas_tell_order-%ld.db", (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_budgets_ask_order),
        cmocka_unit_test(test_long_evaluation_does_not_block),
        cmocka_unit_test(test_resume_follows_the_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
