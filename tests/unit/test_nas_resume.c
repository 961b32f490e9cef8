/* nas/controller.c's resume: a search stopped after any number of finished evaluations (in-flight
 * ones abandoned, as a killed controller leaves them "running") and resumed with a fresh strategy
 * ends with the same rows, tell order, metrics and best as the uninterrupted search, never
 * evaluates a finished candidate again, and re-runs the abandoned ones. The strategy's budgets
 * depend on what it was told (as ASHA's promotions do), candidates repeat (the hash cache) and
 * some evaluations diverge once (retries), so the replay must reproduce the whole ask/tell
 * interleaving, not only the asks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/store.h"
#include "common/store_nas.h"
#include "nas/controller.h"

#define NCAND 24
#define MAXJ 256

static char g_db[64];

/* The strategy: candidate i's genome repeats every 5 asks; its budget depends on the tells so far. */
typedef struct strat {
    int asked, told[NCAND], ntold;
    long sum; /* of the told candidates' ids and accuracies: what the next budgets depend on */
} strat_t;

static int st_ask(void *impl, nas_ask_t *a, err_t *err)
{
    (void)err;
    strat_t *s = impl;
    if (s->asked == NCAND)
        return NAS_ASK_DONE;
    int i = s->asked++;
    a->row.cand_id = i;
    a->row.parent = -1;
    snprintf(a->row.hash, sizeof a->row.hash, "%064d", i % 5);
    snprintf(a->row.mutation, sizeof a->row.mutation, "scripted");
    a->row.budget = 1 + (double)(s->sum % 3);
    a->progress = 1;
    a->row.genome = strdup("{}");
    a->row.arch = strdup("{}");
    a->proposal = malloc(sizeof(int));
    *(int *)a->proposal = i;
    return 0;
}

static int st_tell(void *impl, const void *proposal, const store_nas_candidate_t *row, err_t *err)
{
    (void)err;
    strat_t *s = impl;
    int id = *(const int *)proposal;
    s->told[s->ntold++] = id;
    s->sum += id + (long)(row->val_accuracy * 1000) + (strcmp(row->status, "done") == 0);
    return 0;
}

/* The workers: results are a function of the job's seed alone; `pick` chooses which finishes. */
typedef struct pool {
    int64_t job[MAXJ];
    uint64_t seed[MAXJ];
    int slot[MAXJ], njobs;
    int finished, submitted;
    int newest; /* finish the newest job first (else the oldest) */
    int stop_after; /* > 0: set *stop after this many finished jobs */
    volatile sig_atomic_t *stop;
    const int *forbidden; /* seqs that must not be submitted (finished before the stop) */
} pool_t;

static int pool_submit(void *impl, int slot, const nas_job_t *job, err_t *err)
{
    (void)err;
    pool_t *p = impl;
    assert_true(p->njobs < MAXJ);
    if (p->forbidden && !job->final && p->forbidden[job->id])
        fail_msg("candidate %lld was finished before the stop and is evaluated again", (long long)job->id);
    p->job[p->njobs] = job->id;
    p->seed[p->njobs] = job->seed;
    p->slot[p->njobs++] = slot;
    p->submitted++;
    return 0;
}

static int pool_wait(void *impl, double timeout_s, nas_job_done_t *out, err_t *err)
{
    (void)timeout_s;
    (void)err;
    pool_t *p = impl;
    if (p->njobs == 0)
        return 0;
    int k = 0;
    for (int i = 1; i < p->njobs; i++)
        if (p->newest ? p->job[i] > p->job[k] : p->job[i] < p->job[k])
            k = i;
    memset(out, 0, sizeof *out);
    out->id = p->job[k];
    out->slot = p->slot[k];
    uint64_t s = p->seed[k];
    out->r.ok = s % 4 != 0;
    out->r.accuracy = (double)(s % 997) / 997.0;
    if (!out->r.ok)
        snprintf(out->r.reason, sizeof out->r.reason, "diverged: loss nan");
    snprintf(out->worker, sizeof out->worker, "test:%d", out->slot);
    p->job[k] = p->job[p->njobs - 1];
    p->seed[k] = p->seed[p->njobs - 1];
    p->slot[k] = p->slot[p->njobs - 1];
    p->njobs--;
    p->finished++;
    if (p->stop_after > 0 && p->finished == p->stop_after)
        *p->stop = 1;
    return 1;
}

static void pool_close(void *impl) { (void)impl; }

static const nas_worker_backend_t k_pool = {"test", pool_submit, pool_wait, pool_close};

static int64_t new_run(store_t **st)
{
    err_t e = {0};
    unlink(g_db);
    assert_int_equal(store_open(g_db, 0, st, &e), 0);
    int64_t exp, run;
    assert_int_equal(store_experiment_create(*st, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(*st, exp, 1, 1, 1, NULL, &run, &e), 0);
    store_nas_run_t nr = {.strategy = "random", .split_seed = 1, .budget = 1, .workers = 3, .threads = 1,
                          .device = "cpu"};
    assert_int_equal(store_nas_run_create(*st, run, &nr, &e), 0);
    return run;
}

static int run_once(store_t *st, int64_t run, pool_t *p, strat_t *s, volatile sig_atomic_t *stop, err_t *e)
{
    memset(s, 0, sizeof *s);
    nas_workers_t *w = NULL;
    assert_int_equal(nas_workers_create(&k_pool, p, 3, &w, e), 0);
    nas_ctl_opts_t o = {.strategy = {.impl = s, .ask = st_ask, .tell = st_tell},
                        .pool = w,
                        .workers = 3,
                        .retries = 1,
                        .seed = 7,
                        .store = st,
                        .run_id = run,
                        .command = "test",
                        .unit = "evaluations",
                        .stop = stop};
    int rc = nas_ctl_run(&o, e);
    nas_workers_close(w);
    return rc;
}

static void load_rows(store_t *st, int64_t run, store_nas_candidate_t **rows, int *n)
{
    err_t e = {0};
    assert_int_equal(store_nas_candidates_load(st, run, rows, n, &e), 0);
}

static void test_resume_after_stop_matches_uninterrupted(void **state)
{
    (void)state;
    for (int newest = 0; newest < 2; newest++) {
        store_t *st;
        err_t e = {0};
        int64_t run = new_run(&st);
        pool_t p = {.newest = newest};
        strat_t ref;
        assert_int_equal(run_once(st, run, &p, &ref, NULL, &e), 0);
        assert_int_equal(ref.ntold, NCAND);
        const int total = p.finished;
        store_nas_candidate_t *want = NULL;
        int nwant = 0;
        load_rows(st, run, &want, &nwant);
        assert_int_equal(nwant, NCAND);
        int cached = 0;
        for (int i = 0; i < nwant; i++)
            cached += want[i].cached_from >= 0;
        assert_true(cached > 0); /* the cache is exercised */
        store_close(st);
        for (int k = 1; k < total; k++) {
            run = new_run(&st);
            volatile sig_atomic_t stop = 0;
            pool_t p1 = {.newest = newest, .stop_after = k, .stop = &stop};
            strat_t s1, s2;
            int rc = run_once(st, run, &p1, &s1, &stop, &e);
            if (rc != FN_ESTATE)
                fail_msg("stop after %d: rc %d (%s)", k, rc, e.msg);
            /* what finished for good before the stop */
            store_nas_candidate_t *mid = NULL;
            int nmid = 0;
            load_rows(st, run, &mid, &nmid);
            int forbidden[NCAND] = {0};
            for (int i = 0; i < nmid; i++)
                forbidden[i] = strcmp(mid[i].status, "done") == 0 && mid[i].cached_from < 0;
            store_nas_candidates_free(mid, nmid);
            pool_t p2 = {.newest = newest, .forbidden = forbidden};
            if ((rc = run_once(st, run, &p2, &s2, NULL, &e)) != 0)
                fail_msg("resume after %d: rc %d (%s)", k, rc, e.msg);
            assert_int_equal(s2.ntold, NCAND);
            for (int i = 0; i < NCAND; i++)
                if (s2.told[i] != ref.told[i])
                    fail_msg("newest %d, stop after %d: tell %d is %d, uninterrupted %d", newest, k, i, s2.told[i],
                             ref.told[i]);
            store_nas_candidate_t *got = NULL;
            int ngot = 0;
            load_rows(st, run, &got, &ngot);
            assert_int_equal(ngot, nwant);
            for (int i = 0; i < ngot; i++) {
                const store_nas_candidate_t *a = &got[i], *b = &want[i];
                if (strcmp(a->hash, b->hash) || a->budget != b->budget || strcmp(a->status, b->status) ||
                    a->tell_seq != b->tell_seq || a->cached_from != b->cached_from || a->attempts != b->attempts ||
                    a->diverged != b->diverged || a->has_metrics != b->has_metrics ||
                    a->val_accuracy != b->val_accuracy)
                    fail_msg("newest %d, stop after %d: row %d is %s %g epochs %s tell %lld cached %lld attempts %d "
                             "acc %g; uninterrupted %s %g epochs %s tell %lld cached %lld attempts %d acc %g",
                             newest, k, i, a->hash + 60, a->budget, a->status, (long long)a->tell_seq,
                             (long long)a->cached_from, a->attempts, a->val_accuracy, b->hash + 60, b->budget,
                             b->status, (long long)b->tell_seq, (long long)b->cached_from, b->attempts,
                             b->val_accuracy);
            }
            store_nas_candidates_free(got, ngot);
            store_close(st);
        }
        store_nas_candidates_free(want, nwant);
    }
    unlink(g_db);
}

int main(void)
{
    snprintf(g_db, sizeof g_db, "/tmp/test_nas_resume-%ld.db", (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_after_stop_matches_uninterrupted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
