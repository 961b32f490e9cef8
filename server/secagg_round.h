/* secagg_round: the server's side of one secure-aggregation round (crypto/secagg.h) on top of
 * the round loop in server.c. It owns the secagg server state, knows which phase is open and
 * which sites it still waits for, checks every incoming sa_* message, and at each close sends
 * the next phase's messages through a callback, so it needs no socket (tests drive it in memory).
 *
 * Wire (header {"type", "round", "sa_round"} plus one WIRE_U8 frame holding the library message):
 *   server -> site  "train" with a "secagg" object (secagg_round_info), "sa_keys" (ADVERT_LIST),
 *                   "sa_relay" (RELAY), "sa_unmask_req" (UNMASK_REQ)
 *   site -> server  "sa_advert", "sa_shares", "sa_masked", "sa_unmask"; or, instead of
 *                   "sa_masked", "sa_accuse" (ACCUSE) from a site that aborted because share
 *                   ciphertexts in its relay failed to authenticate
 * Phases: 0 advert (the deadline covers local training), 1 shares, 2 masked, 3 unmask. Each
 * closes when every site still expected has answered or at its deadline; a close with fewer
 * than t answers aborts the round (FN_ESTATE): nothing is committed and the caller starts the
 * round again with fresh keys and a new round id. The result is the SUM of the survivors'
 * clipped updates (decoded), and |U3|: the mean is unweighted.
 * With distributed DP (config dp = 1) the "secagg" object carries "dp": {"sigma", "assumed"} and
 * each site adds its share of discrete Gaussian noise before masking (crypto/dp.h, DDGauss); the
 * scale is the noise plan's, and the decoded sum carries that noise. The noise assumes the fewest
 * inputs a committed sum can hold, max(t, min_summed) (at most n), so dropouts never weaken it. */
#ifndef FEDNAS_SERVER_SECAGG_ROUND_H
#define FEDNAS_SERVER_SECAGG_ROUND_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/dp.h"
#include "crypto/secagg.h"

typedef struct secagg_round secagg_round_t;

typedef struct secagg_round_config {
    int plus;          /* SecAgg+ */
    uint32_t threshold;/* 0: library default for n */
    uint32_t neighbours;/* SecAgg+ k, 0: library default */
    uint32_t bits;     /* 8..32 */
    double clip;       /* L2 clip before encoding */
    int dp;            /* distributed discrete Gaussian noise, added by the sites */
    double dp_sigma;   /* its noise multiplier (>= 0) */
    uint32_t dp_min_summed; /* the fewest inputs the caller commits a sum with (clients.min_fit) */
    /* SecAgg+ without an explicit k: k and t_nb from these expected rates (secagg_plan_plus; the
     * experiment's secure_aggregation.dropout and .corruption, defaults 0.1 and 0.05). */
    double dropout, corruption;
} secagg_round_config_t;

enum { SECAGG_PHASE_ADVERT = 0, SECAGG_PHASE_SHARES, SECAGG_PHASE_MASKED, SECAGG_PHASE_UNMASK, SECAGG_PHASE_DONE };

/* Sends one message of the protocol to site id (type "sa_keys", "sa_relay" or "sa_unmask_req"). */
typedef void (*secagg_round_send_fn)(void *ctx, uint32_t id, const char *type, const uint8_t *data, size_t len);

/* The round id: unique per run and attempt, run_id * 2^32 + round * 16 + attempt (attempt < 16). */
uint64_t secagg_round_id(int64_t run_id, int round, int attempt);
/* The public SecAgg+ graph seed of a round id, derived from the experiment seed. */
void secagg_round_graph_seed(uint64_t exp_seed, uint64_t round_id, uint8_t out[32]);

/* ids: the n selected site ids (distinct, >= 1); m: model size. FN_EINVAL when the parameters
 * do not make a valid round (too few sites for t, ...). */
int secagg_round_new(const secagg_round_config_t *cfg, uint64_t round_id, uint64_t exp_seed, const uint32_t *ids,
                     uint32_t n, uint32_t m, secagg_round_t **out, err_t *err);
void secagg_round_free(secagg_round_t *r);
/* The noise plan (cfg->dp) of a round of n selected sites and m values: what secagg_round_new
 * uses, so a configuration can be checked before any round. FN_EINVAL with dp_ddp_plan's reason. */
int secagg_round_plan_dp(const secagg_round_config_t *cfg, uint32_t n, uint32_t m, dp_ddp_plan_t *plan, err_t *err);

/* The "secagg" object of site id's train message (a new reference): round id, ids, t, m,
 * bits, k, t_nb, graph seed (hex), clip, scale f, "self", and under DP "dp". */
json_t *secagg_round_info(const secagg_round_t *r, uint32_t self);
int secagg_round_phase(const secagg_round_t *r);
uint64_t secagg_round_rid(const secagg_round_t *r);
/* The message type the open phase takes from sites. */
const char *secagg_round_expected_type(const secagg_round_t *r);
/* 1 when site id is expected in the open phase and has not answered yet. */
int secagg_round_expects(const secagg_round_t *r, uint32_t id);
/* 1 when site id is (still) part of the open phase's set (it may have answered). */
int secagg_round_member(const secagg_round_t *r, uint32_t id);
/* One message from site id. FN_EPROTO (state unchanged; drop and log it) when the type is not
 * the open phase's, the site is not expected, it already answered, or the library rejects it. */
int secagg_round_add(secagg_round_t *r, uint32_t id, const char *type, const uint8_t *data, size_t len, err_t *err);
/* Closes the open phase and sends the next phase's messages. After the unmask phase it rebuilds
 * the sum: decoded (m floats, the sum of the clipped updates of U3) and *n_summed. FN_ESTATE when
 * the round must abort (below t, missing shares); FN_EPROTO when shares were tampered with. */
int secagg_round_close(secagg_round_t *r, secagg_round_send_fn send, void *ctx, float *decoded, uint32_t *n_summed,
                       err_t *err);
/* The accusations the masked phase took, in arrival order: pairs[2i] accused pairs[2i+1] of
 * sending a share ciphertext that failed to authenticate. Each is checked to be possible (the
 * accused's ciphertext was relayed to the accuser) but cannot be verified: the server cannot
 * read the ciphertexts, so it cannot tell a garbling sender from a lying accuser. An accuser
 * has aborted and is no longer waited for. Returns the count. */
uint32_t secagg_round_accusations(const secagg_round_t *r, const uint32_t **pairs);
/* The dispute-pair rule the server applies to them before the round's next attempt: in order,
 * an accusation between two sites neither of which is already in excluded[0..*n_excluded) adds
 * both to it; any other is moot. Each pair added holds at least one misbehaving site (the
 * accused sent garbage, or the accuser lied), so m misbehaving sites can exclude at most m
 * honest ones from a round, however many accusations they make, and a garbling site is out of
 * the round after the first attempt it garbles. excluded has room for cap ids; returns the
 * number of pairs added. */
uint32_t secagg_round_dispute_pairs(const uint32_t *pairs, uint32_t n_pairs, uint32_t *excluded,
                                    uint32_t *n_excluded, uint32_t cap);
/* The SecAgg+ plan this round runs with (k = 0: full SecAgg) and its failure bounds. */
const secagg_plus_plan_t *secagg_round_plus_plan(const secagg_round_t *r);
/* |U1|, |U2|, |U3| after their closes (0 before). */
uint32_t secagg_round_survivors(const secagg_round_t *r, int phase);
/* The documented bound on the decoding error per coordinate of the sum: n / f (without DP noise). */
double secagg_round_error_bound(const secagg_round_t *r);
/* The round's noise plan under distributed DP, NULL without. */
const dp_ddp_plan_t *secagg_round_dp_plan(const secagg_round_t *r);

#endif
