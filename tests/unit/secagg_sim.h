/* secagg_sim: the secure-aggregation tests' round simulator (secagg_sim.c): n clients and a
 * server driven through the message API, with dropouts from a plan, an independent check of
 * the threshold rules, and the plain sum to compare with. Tests only. */
#ifndef FEDNAS_TESTS_SECAGG_SIM_H
#define FEDNAS_TESTS_SECAGG_SIM_H

#include <stdint.h>

#include "common/rng.h"
#include "crypto/secagg.h"

#define SEED 5005ULL
#define MAXN 128

typedef struct plan {
    uint8_t drop[4][MAXN]; /* drop[p][i]: client i sends nothing from phase p on */
} plan_t;

typedef struct outcome {
    int rc;            /* 0, or the error of the step that ended the round */
    int phase;         /* where it ended: 0..3 close calls, 4 finish */
    uint32_t n_summed;
    int expect_ok;     /* what the independent check of the rules predicts */
} outcome_t;

typedef struct sim {
    secagg_params_t p;
    uint32_t ids[MAXN];
    uint32_t **x;           /* inputs */
    secagg_client_t *cl[MAXN];
    secagg_server_t *srv;
    secagg_buf_t masked[MAXN]; /* kept for the uniformity test */
    uint8_t alive[MAXN];       /* still taking part */
    uint8_t in2[MAXN], in3[MAXN], in4[MAXN];
    int keep_masked;
} sim_t;

/* The Shamir threshold that applies to a neighbourhood under p. */
uint32_t thr_of(const secagg_params_t *p);
/* Whether ids a and b are neighbours under p. */
int is_nb(const secagg_params_t *p, uint32_t a, uint32_t b);
/* Runs one round; the server's result goes to sum. */
outcome_t run_round(sim_t *s, const plan_t *pl, uint32_t *sum);
void sim_free(sim_t *s);
/* n clients with sparse, shuffled ids and random inputs in Z_2^bits; k > 0: SecAgg+. */
void sim_init(sim_t *s, rng_t *r, uint32_t n, uint32_t t, uint32_t m, uint32_t bits, uint32_t k);
/* Fails the test unless sum is the plain sum of the inputs of the clients in U3. */
void check_sum(const sim_t *s, const uint32_t *sum);
/* Random dropouts: in each phase, with probability 1/2, up to 30% of the clients. */
void random_plan(rng_t *r, plan_t *pl, uint32_t n);
/* v as 4 little-endian bytes (building messages by hand). */
void put32le(uint8_t *p, uint32_t v);

#endif
