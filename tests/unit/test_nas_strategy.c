/* nas/strategy: the ask/tell strategies. Replaying the same calls gives the same proposals;
 * regularized evolution removes the oldest, not the worst; NSGA-II waits for its generation
 * and keeps the (mu + lambda) best; ASHA promotes exactly the top 1/eta of a rung. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nas/strategy.h"

static nas_config_t config_from(const char *strategy)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"space\":{\"type\":\"cell\",\"widths\":[4,8],\"cells_per_stage\":[1,2]},\"strategy\":%s,"
             "\"epochs\":2}",
             strategy);
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    nas_config_t cfg;
    err_t e = {0};
    int rc = nas_config_parse(j, "t.json", text, "", 1, &cfg, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    json_decref(j);
    return cfg;
}

static nas_strategy_t *make(const nas_config_t *cfg, uint64_t seed)
{
    nas_strategy_t *s = NULL;
    err_t e = {0};
    assert_int_equal(nas_strategy_create(cfg, seed, &s, &e), 0);
    return s;
}

/* A stand-in evaluation: a deterministic accuracy from the genome's hash. */
static nas_result_t fake(const nas_proposal_t *p)
{
    nas_result_t r = {NAS_RESULT_OK, 0, 0, 0, 0};
    unsigned v = (unsigned)strtoul((char[9]){p->hash[0], p->hash[1], p->hash[2], p->hash[3], p->hash[4], p->hash[5],
                                             p->hash[6], p->hash[7], 0},
                                   NULL, 16);
    r.val_acc = (v % 1000) / 1000.0 + p->rung * 1e-4;
    r.params = 1000 + (v >> 10) % 5000;
    r.flops = 2 * r.params;
    r.latency_ms = 1;
    if (v % 17 == 0)
        r.status = NAS_RESULT_FAILED; /* some fail, as real evaluations do */
    return r;
}

/* Drives s with 3 workers, results told in a scrambled order; writes "id:hash:mutation" lines. */
static void drive(nas_strategy_t *s, int steps, uint64_t order_seed, char *log, size_t cap)
{
    nas_proposal_t pend[3];
    int npend = 0;
    rng_t r;
    rng_seed(&r, order_seed);
    size_t n = 0;
    log[0] = 0;
    err_t e = {0};
    for (int i = 0; i < steps; i++) {
        while (npend < 3) {
            nas_proposal_t p;
            int rc = nas_strategy_ask(s, &p, &e);
            assert_true(rc == 0 || rc == NAS_ASK_WAIT);
            if (rc == NAS_ASK_WAIT)
                break;
            pend[npend++] = p;
            n += (size_t)snprintf(log + n, cap - n, "%d:%d:%s:%s\n", p.id, p.rung, p.hash, p.mutation);
            assert_true(n < cap);
        }
        assert_true(npend > 0);
        int k = (int)rng_below(&r, (uint64_t)npend);
        nas_result_t res = fake(&pend[k]);
        assert_int_equal(nas_strategy_tell(s, &pend[k], &res, &e), 0);
        pend[k] = pend[--npend];
    }
}

static void test_replay(void **state)
{
    (void)state;
    const char *strategies[] = {"{\"name\":\"random\"}", "{\"name\":\"evolution\",\"population\":6,\"sample\":3}",
                                "{\"name\":\"nsga2\",\"mu\":5,\"lambda\":4,\"crossover\":0.5}",
                                "{\"name\":\"asha\",\"r\":1,\"eta\":2,\"max_epochs\":8}"};
    size_t cap = 1 << 20;
    char *a = malloc(cap), *b = malloc(cap), *c = malloc(cap);
    for (int k = 0; k < 4; k++) {
        nas_config_t cfg = config_from(strategies[k]);
        nas_strategy_t *s1 = make(&cfg, 42), *s2 = make(&cfg, 42), *s3 = make(&cfg, 43);
        drive(s1, 120, 5, a, cap);
        drive(s2, 120, 5, b, cap);
        drive(s3, 120, 5, c, cap);
        assert_string_equal(a, b);
        assert_true(strcmp(a, c) != 0);
        assert_int_equal(nas_strategy_told(s1), 120);
        nas_proposal_t best;
        nas_result_t br;
        err_t e = {0};
        assert_int_equal(nas_strategy_best(s1, &best, &br, &e), 0);
        print_message("%s: %d asked, best %.3f (id %d rung %d)\n", nas_strategy_name(cfg.strategy.kind),
                      nas_strategy_asked(s1), br.val_acc, best.id, best.rung);
        nas_strategy_free(s1);
        nas_strategy_free(s2);
        nas_strategy_free(s3);
    }
    free(a);
    free(b);
    free(c);
}

static nas_proposal_t ask(nas_strategy_t *s)
{
    nas_proposal_t p;
    err_t e = {0};
    int rc = nas_strategy_ask(s, &p, &e);
    if (rc)
        print_error("ask: %d %s\n", rc, e.msg);
    assert_int_equal(rc, 0);
    return p;
}

static void tell(nas_strategy_t *s, const nas_proposal_t *p, double acc, double params)
{
    nas_result_t r = {NAS_RESULT_OK, acc, params, params, 1};
    err_t e = {0};
    assert_int_equal(nas_strategy_tell(s, p, &r, &e), 0);
}

static void test_evolution_ages(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"evolution\",\"population\":4,\"sample\":4}");
    nas_strategy_t *s = make(&cfg, 1);
    nas_proposal_t p[8];
    for (int i = 0; i < 4; i++) {
        p[i] = ask(s);
        assert_string_equal(p[i].mutation, "random");
        assert_int_equal(p[i].parent_id, -1);
        assert_int_equal(p[i].epochs, 2);
        tell(s, &p[i], i == 0 ? 0.9 : 0.1 + 0.01 * i, 100);
    }
    /* S = P: the whole population is sampled, so the parent is its best: candidate 0 */
    p[4] = ask(s);
    assert_int_equal(p[4].parent_id, 0);
    assert_string_equal(p[4].parent, p[0].hash);
    assert_true(strcmp(p[4].hash, p[0].hash) != 0);
    tell(s, &p[4], 0.14, 100);
    /* candidate 0, the oldest, left though it is the best: now 4 (0.14) leads 1..3 */
    p[5] = ask(s);
    assert_int_equal(p[5].parent_id, 4);
    /* a failed child never joins: 1..4 stay, and 4 stays the parent */
    nas_result_t failed = {NAS_RESULT_FAILED, 0, 0, 0, 0};
    err_t e = {0};
    assert_int_equal(nas_strategy_tell(s, &p[5], &failed, &e), 0);
    p[6] = ask(s);
    assert_int_equal(p[6].parent_id, 4);
    /* bad tells */
    assert_int_equal(nas_strategy_tell(s, &p[5], &failed, &e), FN_ESTATE);
    nas_proposal_t ghost = p[6];
    ghost.id = 99;
    assert_int_equal(nas_strategy_tell(s, &ghost, &failed, &e), FN_ESTATE);
    nas_result_t bad = {NAS_RESULT_OK, 1.5, 1, 1, 1};
    assert_int_equal(nas_strategy_tell(s, &p[6], &bad, &e), FN_EINVAL);
    nas_strategy_free(s);
}

/* Every offspring of the second generation descends from the survivors of the first. */
static void nsga2_generations(int offspring_better)
{
    nas_config_t cfg = config_from("{\"name\":\"nsga2\",\"mu\":4,\"lambda\":4,\"objectives\":[\"val_acc\",\"params\"]}");
    nas_strategy_t *s = make(&cfg, 3);
    nas_proposal_t p[16];
    err_t e = {0};
    for (int i = 0; i < 4; i++)
        p[i] = ask(s);
    nas_proposal_t w;
    assert_int_equal(nas_strategy_ask(s, &w, &e), NAS_ASK_WAIT);
    /* a trade-off front: higher accuracy costs parameters */
    for (int i = 0; i < 4; i++)
        tell(s, &p[i], 0.5 + 0.05 * i, 1000 + 100 * i);
    for (int i = 4; i < 8; i++) {
        p[i] = ask(s);
        assert_true(p[i].parent_id >= 0 && p[i].parent_id < 4);
    }
    assert_int_equal(nas_strategy_ask(s, &w, &e), NAS_ASK_WAIT);
    for (int i = 4; i < 7; i++)
        tell(s, &p[i], offspring_better ? 0.9 + 0.01 * i : 0.1, offspring_better ? 500 - 10 * i : 5000);
    assert_int_equal(nas_strategy_ask(s, &w, &e), NAS_ASK_WAIT); /* one result still out */
    tell(s, &p[7], offspring_better ? 0.97 : 0.1, offspring_better ? 400 : 5000);
    for (int i = 8; i < 12; i++) {
        p[i] = ask(s);
        if (offspring_better)
            assert_true(p[i].parent_id >= 4 && p[i].parent_id < 8);
        else
            assert_true(p[i].parent_id >= 0 && p[i].parent_id < 4);
    }
    nas_strategy_free(s);
}

static void test_nsga2_survival(void **state)
{
    (void)state;
    nsga2_generations(1);
    nsga2_generations(0);
}

/* Real et al. 2019's tournament: S distinct members drawn uniformly, the best of them is the
 * parent. With P = 5 members of distinct accuracy and S = 2, the j-th best (j = 1..5) is the
 * parent when drawn with one of the 5 - j worse members: probability (5 - j) / C(5, 2), that is
 * 0.4, 0.3, 0.2, 0.1, and never the worst. A strategy that took the population's best, or drew with replacement (the worst
 * would then win 1/25 of the time), fails. */
static void test_evolution_tournament(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"evolution\",\"population\":5,\"sample\":2}");
    /* one child per search, over many seeds: a parent's neighbourhood is never spent (a spent
     * one gives a random child, which would hide the tournament's choice) */
    enum { N = 4000 };
    int count[5] = {0};
    for (int k = 0; k < N; k++) {
        nas_strategy_t *s = make(&cfg, 11 + (uint64_t)k);
        nas_proposal_t p[5];
        for (int i = 0; i < 5; i++) {
            p[i] = ask(s);
            tell(s, &p[i], 0.1 * (i + 1), 100); /* candidate i is the (5 - i)-th best */
        }
        nas_proposal_t c = ask(s);
        assert_true(c.parent_id >= 0 && c.parent_id < 5);
        assert_string_equal(c.parent, p[c.parent_id].hash);
        count[c.parent_id]++;
        nas_strategy_free(s);
    }
    assert_int_equal(count[0], 0);
    for (int i = 1; i < 5; i++) {
        double f = (double)count[i] / N, want = 0.1 * i;
        print_message("candidate %d (acc %.1f): parent of %.3f of the children (expected %.1f)\n", i, 0.1 * (i + 1), f,
                      want);
        assert_true(f > want - 0.04 && f < want + 0.04);
    }
}

/* NSGA-II's (mu + lambda) survival when one front holds more than mu: by crowding distance.
 * Parents and offspring form one trade-off front (more accuracy costs parameters); in (1 - acc,
 * params) the hand-computed distances are: ids 0 and 7 (the extremes) infinite, 1 and 2 0.675,
 * 3 0.575, 4, 5 and 6 0.5. So the survivors are 0, 7, 1 and 2. */
static void test_nsga2_crowding_truncation(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"nsga2\",\"mu\":4,\"lambda\":4,\"objectives\":[\"val_acc\",\"params\"]}");
    nas_strategy_t *s = make(&cfg, 5);
    static const double acc[8] = {0.50, 0.60, 0.70, 0.80, 0.52, 0.65, 0.78, 0.90};
    static const double params[8] = {1000, 2000, 3000, 4000, 1100, 2500, 3900, 5000};
    nas_proposal_t p[8];
    for (int i = 0; i < 4; i++)
        p[i] = ask(s);
    for (int i = 0; i < 4; i++)
        tell(s, &p[i], acc[i], params[i]);
    for (int i = 4; i < 8; i++) {
        p[i] = ask(s);
        assert_int_equal(p[i].id, i);
    }
    for (int i = 4; i < 8; i++)
        tell(s, &p[i], acc[i], params[i]);
    /* Later generations' offspring are dominated by every survivor, so the survivors stay and
     * 24 tournaments draw from them: 3, 4, 5 or 6 as a parent means survival got it wrong. */
    for (int g = 0; g < 6; g++) {
        nas_proposal_t c[4];
        for (int i = 0; i < 4; i++) {
            c[i] = ask(s);
            assert_true(c[i].parent_id == 0 || c[i].parent_id == 1 || c[i].parent_id == 2 || c[i].parent_id == 7);
        }
        for (int i = 0; i < 4; i++)
            tell(s, &c[i], 0.05, 1e6);
    }
    nas_strategy_free(s);
}

/* No strategy proposes a canonical genome it asked before while the space holds new ones (a
 * repeat spends an evaluation of the budget on a result the store already has): 150 asks each,
 * results told out of order. In a macro space of two genomes the third draw on is a repeat,
 * marked as one, and the search goes on. */
static void test_fresh_proposals(void **state)
{
    (void)state;
    const char *strategies[] = {"{\"name\":\"random\"}", "{\"name\":\"evolution\",\"population\":6,\"sample\":3}",
                                "{\"name\":\"nsga2\",\"mu\":5,\"lambda\":4,\"crossover\":0.5}"};
    size_t cap = 1 << 20;
    char *log = malloc(cap);
    assert_non_null(log);
    enum { N = 150 };
    static char hashes[2 * N][NAS_HASH_LEN];
    for (int k = 0; k < 3; k++) {
        nas_config_t cfg = config_from(strategies[k]);
        nas_strategy_t *s = make(&cfg, 7);
        drive(s, N, 3, log, cap);
        int n = 0, repeats = 0;
        for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
            int id, rung;
            char h[NAS_HASH_LEN];
            assert_int_equal(sscanf(line, "%d:%d:%64[0-9a-f]:", &id, &rung, h), 3);
            for (int i = 0; i < n; i++)
                if (strcmp(hashes[i], h) == 0) {
                    print_error("%s: candidate %d repeats an earlier genome: %s\n", nas_strategy_name(cfg.strategy.kind),
                                id, line);
                    repeats++;
                }
            assert_true(n < 2 * N);
            snprintf(hashes[n++], NAS_HASH_LEN, "%s", h);
        }
        assert_true(n >= N);
        assert_int_equal(repeats, 0);
        nas_strategy_free(s);
    }
    free(log);

    const char *tiny = "{\"space\":{\"type\":\"macro\",\"layers\":1,\"ops\":[\"conv3x3\",\"maxpool3x3\"],"
                       "\"widths\":[4],\"reductions\":0},\"strategy\":{\"name\":\"random\"},\"epochs\":1}";
    json_error_t je;
    json_t *j = json_loads(tiny, 0, &je);
    assert_non_null(j);
    nas_config_t cfg;
    err_t e = {0};
    assert_int_equal(nas_config_parse(j, "t.json", tiny, "", 1, &cfg, &e), 0);
    json_decref(j);
    nas_strategy_t *s = make(&cfg, 3);
    nas_proposal_t p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = ask(s);
        tell(s, &p[i], 0.5, 100);
    }
    assert_string_equal(p[0].mutation, "random");
    assert_string_equal(p[1].mutation, "random");
    assert_true(strcmp(p[0].hash, p[1].hash) != 0);
    for (int i = 2; i < 5; i++) {
        assert_string_equal(p[i].mutation, "random (repeat)");
        assert_true(strcmp(p[i].hash, p[0].hash) == 0 || strcmp(p[i].hash, p[1].hash) == 0);
    }
    nas_strategy_free(s);
}

static void test_asha_promotion(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"asha\",\"r\":1,\"eta\":3,\"max_epochs\":9}");
    nas_strategy_t *s = make(&cfg, 5);
    nas_proposal_t a = ask(s), b = ask(s), c = ask(s);
    assert_int_equal(a.rung, 0);
    assert_int_equal(a.epochs, 1);
    assert_int_equal(c.id, 2);
    tell(s, &a, 0.5, 1);
    tell(s, &b, 0.7, 1);
    /* 2 finished rung 0: top floor(2/3) = 0, nothing to promote */
    nas_proposal_t d = ask(s);
    assert_int_equal(d.promotion, 0);
    assert_int_equal(d.id, 3);
    tell(s, &c, 0.6, 1);
    /* 3 finished: the top one (b, 0.7) goes to rung 1 with 3 epochs */
    nas_proposal_t pb = ask(s);
    assert_int_equal(pb.promotion, 1);
    assert_int_equal(pb.id, b.id);
    assert_int_equal(pb.rung, 1);
    assert_int_equal(pb.epochs, 3);
    assert_string_equal(pb.hash, b.hash);
    /* b was promoted already: a new candidate */
    nas_proposal_t e1 = ask(s);
    assert_int_equal(e1.promotion, 0);
    assert_int_equal(e1.id, 4);
    tell(s, &d, 0.9, 1);
    tell(s, &pb, 0.8, 1);
    /* rung 0: a .5 b .7 c .6 d .9, top 1 = d */
    nas_proposal_t pd = ask(s);
    assert_int_equal(pd.id, d.id);
    assert_int_equal(pd.rung, 1);
    tell(s, &pd, 0.85, 1);
    tell(s, &e1, 0.65, 1);
    /* rung 1 has 2 results (top 0); rung 0 has 5 (top 1, d, promoted): a new candidate */
    nas_proposal_t f = ask(s);
    assert_int_equal(f.promotion, 0);
    nas_result_t failed = {NAS_RESULT_FAILED, 0, 0, 0, 0};
    err_t e = {0};
    assert_int_equal(nas_strategy_tell(s, &f, &failed, &e), 0);
    /* rung 0 has 6 results: top 2 = d (.9), b (.7), both promoted; the failed one counts in n */
    nas_proposal_t g = ask(s);
    assert_int_equal(g.promotion, 0);
    tell(s, &g, 0.95, 1);
    /* 7 results, top 2 = g (.95), d: g goes up */
    nas_proposal_t pg = ask(s);
    assert_int_equal(pg.id, g.id);
    assert_int_equal(pg.rung, 1);
    tell(s, &pg, 0.99, 1);
    /* rung 1: b .8, d .85, g .99: top 1 = g, promoted to rung 2 (9 epochs), checked before rung 0 */
    nas_proposal_t top = ask(s);
    assert_int_equal(top.id, g.id);
    assert_int_equal(top.rung, 2);
    assert_int_equal(top.epochs, 9);
    tell(s, &top, 0.5, 1);
    /* the best is judged at the highest rung reached, even with a lower accuracy there */
    nas_proposal_t best;
    assert_int_equal(nas_strategy_best(s, &best, NULL, &e), 0);
    assert_int_equal(best.id, g.id);
    assert_int_equal(best.rung, 2);
    nas_strategy_free(s);
}

static void test_random(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"random\"}");
    nas_strategy_t *s = make(&cfg, 8);
    err_t e = {0};
    nas_proposal_t best;
    assert_int_equal(nas_strategy_best(s, &best, NULL, &e), FN_ENOTFOUND);
    for (int i = 0; i < 50; i++) {
        nas_proposal_t p = ask(s);
        assert_int_equal(p.id, i);
        assert_string_equal(p.mutation, "random");
        assert_int_equal(nas_genome_validate(&cfg.space, &p.genome, &e), 0);
        char h[NAS_HASH_LEN];
        nas_genome_hash(&cfg.space, &p.genome, h);
        assert_string_equal(h, p.hash);
        tell(s, &p, i / 100.0, 1);
    }
    assert_int_equal(nas_strategy_best(s, &best, NULL, &e), 0);
    assert_int_equal(best.id, 49);
    nas_strategy_free(s);
}

/* Fractional budgets: rungs of 0.25, 0.75 and 2.25 epochs (r = 0.25, eta = 3), and a search
 * whose every candidate trains for half an epoch, ask exactly those budgets. */
static void test_fractional_budgets(void **state)
{
    (void)state;
    nas_config_t cfg = config_from("{\"name\":\"asha\",\"r\":0.25,\"eta\":3,\"max_epochs\":2.25}");
    assert_true(cfg.strategy.r == 0.25 && cfg.strategy.max_epochs == 2.25);
    nas_strategy_t *s = make(&cfg, 3);
    nas_proposal_t p[9];
    for (int i = 0; i < 9; i++) {
        p[i] = ask(s);
        assert_true(p[i].epochs == 0.25);
    }
    for (int i = 0; i < 9; i++)
        tell(s, &p[i], 0.1 * i, 1);
    /* 9 finished rung 0: the top 3 go to rung 1 at 0.75 epochs, best first */
    nas_proposal_t q[3];
    for (int i = 0; i < 3; i++) {
        q[i] = ask(s);
        assert_int_equal(q[i].promotion, 1);
        assert_int_equal(q[i].id, p[8 - i].id);
        assert_true(q[i].epochs == 0.75);
    }
    for (int i = 0; i < 3; i++)
        tell(s, &q[i], 0.9 - 0.1 * i, 1);
    nas_proposal_t top = ask(s);
    assert_int_equal(top.rung, 2);
    assert_int_equal(top.id, p[8].id);
    assert_true(top.epochs == 2.25);
    nas_strategy_free(s);

    cfg = config_from("{\"name\":\"random\"}");
    cfg.epochs = 0.5;
    s = make(&cfg, 3);
    nas_proposal_t a = ask(s);
    assert_true(a.epochs == 0.5);
    nas_strategy_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay),         cmocka_unit_test(test_evolution_ages),
        cmocka_unit_test(test_nsga2_survival), cmocka_unit_test(test_asha_promotion),
        cmocka_unit_test(test_fractional_budgets),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_evolution_tournament),
        cmocka_unit_test(test_nsga2_crowding_truncation),
        cmocka_unit_test(test_fresh_proposals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
