#include "server/secagg_round.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "crypto/secagg.h"

static const char *const k_in_types[] = {"sa_advert", "sa_shares", "sa_masked", "sa_unmask"};

struct secagg_round {
    secagg_params_t p;
    uint32_t *ids; /* sorted */
    uint32_t n, m;
    double clip, f;
    int dp;
    dp_ddp_plan_t plan; /* when dp */
    secagg_server_t *srv;
    int phase;
    uint8_t *member;   /* in the open phase's set */
    uint8_t *answered; /* answered in the open phase */
    uint32_t surv[4];  /* [1..3]: |U1|, |U2|, |U3| */
    secagg_plus_plan_t plus;
    uint32_t *acc, n_acc, cap_acc; /* accusation pairs (accuser, accused) */
};

uint64_t secagg_round_id(int64_t run_id, int round, int attempt)
{
    return ((uint64_t)run_id << 32) + ((uint64_t)(uint32_t)round << 4) + (uint64_t)(attempt & 15);
}

void secagg_round_graph_seed(uint64_t exp_seed, uint64_t round_id, uint8_t out[32])
{
    for (int i = 0; i < 4; i++) {
        uint64_t w = rng_derive(exp_seed ^ 0x5ec466ULL, round_id * 4 + (uint64_t)i);
        for (int b = 0; b < 8; b++)
            out[i * 8 + b] = (uint8_t)(w >> (8 * b));
    }
}

static int index_of(const secagg_round_t *r, uint32_t id)
{
    const uint32_t *p = bsearch(&id, r->ids, r->n, sizeof *r->ids, fn_cmp_u32);
    return p ? (int)(p - r->ids) : -1;
}

int secagg_round_plan_dp(const secagg_round_config_t *cfg, uint32_t n, uint32_t m, dp_ddp_plan_t *plan, err_t *err)
{
    uint32_t t = cfg->threshold ? cfg->threshold : secagg_default_t(n);
    /* The fewest inputs a sum may hold: t, or dp_min_summed (min_fit) when larger. The round
     * raises the protocol threshold to this count (secagg_round_new), so the sites refuse to
     * unmask any sum of fewer inputs: no sum with less noise than planned is ever revealed. */
    uint32_t assumed = t > cfg->dp_min_summed ? t : cfg->dp_min_summed;
    if (assumed > n)
        return err_set(err, FN_EINVAL,
                       "distributed DP: only %u clients selected, but a sum must hold at least %u inputs (threshold %u, "
                       "min_fit %u) to carry the planned noise; select more clients or lower min_fit",
                       n, assumed, t, cfg->dp_min_summed);
    return dp_ddp_plan(cfg->dp_sigma, cfg->clip, n, assumed, m, cfg->bits ? cfg->bits : 32, plan, err);
}

int secagg_round_new(const secagg_round_config_t *cfg, uint64_t round_id, uint64_t exp_seed, const uint32_t *ids,
                     uint32_t n, uint32_t m, secagg_round_t **out, err_t *err)
{
    *out = NULL;
    if (n < 2 || !(cfg->clip > 0))
        return err_set(err, FN_EINVAL, "secure aggregation needs at least 2 clients in a round (%u selected)", n);
    secagg_round_t *r = FN_CALLOC(1, sizeof *r);
    r->ids = FN_MALLOC((size_t)n * sizeof *r->ids);
    memcpy(r->ids, ids, (size_t)n * sizeof *ids);
    qsort(r->ids, n, sizeof *r->ids, fn_cmp_u32);
    r->n = n;
    r->m = m;
    r->clip = cfg->clip;
    r->p.round_id = round_id;
    r->p.n = n;
    r->p.ids = r->ids;
    r->p.t = cfg->threshold;
    r->p.m = m;
    r->p.bits = cfg->bits ? cfg->bits : 32;
    if (r->p.t == 0)
        r->p.t = secagg_default_t(n);
    /* SecAgg+: k and t_nb from the expected dropout and corruption rates unless k is given; a
     * k reaching n - 1 is the complete graph, plain SecAgg (plan k = 0) */
    int rc = secagg_plan_plus(n, cfg->plus ? cfg->neighbours : n, cfg->dropout, cfg->corruption, &r->plus, err);
    r->p.k = r->plus.k;
    r->p.t_nb = r->plus.t_nb;
    secagg_round_graph_seed(exp_seed, round_id, r->p.graph_seed);
    r->dp = cfg->dp;
    if (rc < 0) {
        secagg_round_free(r);
        return rc;
    }
    if (r->p.t > n) {
        rc = err_set(err, FN_EINVAL, "secure aggregation threshold %u is above the %u clients selected", r->p.t, n);
    } else if (r->dp) {
        rc = secagg_round_plan_dp(cfg, n, m, &r->plan, err);
        r->f = r->plan.scale;
        if (rc == 0 && r->plan.assumed > r->p.t) /* never unmask a sum with fewer noise shares */
            r->p.t = r->plan.assumed;
    } else {
        r->f = secagg_choose_scale(n, cfg->clip, r->p.bits);
        if (!(r->f > 0))
            rc = err_set(err, FN_EINVAL, "no fixed-point scale fits %u clients clipped to %g in %u bits", n,
                         cfg->clip, r->p.bits);
    }
    if (rc == 0 && !r->p.k) { /* full SecAgg: the bounds at the threshold actually used */
        r->plus.log2_abort = secagg_log2_binom_below(n, r->p.t, 1 - cfg->dropout);
        r->plus.log2_privacy = secagg_log2_binom_at_least(n, r->p.t, cfg->corruption);
    }
    if (rc == 0)
        rc = secagg_server_new(&r->p, &r->srv, err);
    if (rc < 0) {
        secagg_round_free(r);
        return rc;
    }
    r->p.ids = r->ids; /* params keep pointing at our copy */
    r->member = FN_MALLOC(n);
    r->answered = FN_CALLOC(n, 1);
    memset(r->member, 1, n);
    *out = r;
    return 0;
}

void secagg_round_free(secagg_round_t *r)
{
    if (!r)
        return;
    secagg_server_free(r->srv);
    free(r->ids);
    free(r->member);
    free(r->answered);
    free(r->acc);
    free(r);
}

json_t *secagg_round_info(const secagg_round_t *r, uint32_t self)
{
    json_t *ids = json_array();
    for (uint32_t i = 0; i < r->n; i++)
        json_array_append_new(ids, json_integer(r->ids[i]));
    char seed[65];
    for (int i = 0; i < 32; i++)
        snprintf(seed + 2 * i, 3, "%02x", r->p.graph_seed[i]);
    json_t *info = json_pack("{s:I, s:o, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:f, s:i}", "round_id",
                             (json_int_t)r->p.round_id, "ids", ids, "t", (int)r->p.t, "m", (int)r->m, "bits",
                             (int)r->p.bits, "k", (int)r->p.k, "t_nb", (int)r->p.t_nb, "graph_seed", seed, "clip",
                             r->clip, "scale", r->f, "self", (int)self);
    if (r->dp)
        json_object_set_new(info, "dp",
                            json_pack("{s:f, s:i}", "sigma", r->plan.sigma, "assumed", (int)r->plan.assumed));
    return info;
}

int secagg_round_phase(const secagg_round_t *r) { return r->phase; }
uint64_t secagg_round_rid(const secagg_round_t *r) { return r->p.round_id; }

const char *secagg_round_expected_type(const secagg_round_t *r)
{
    return r->phase < SECAGG_PHASE_DONE ? k_in_types[r->phase] : "";
}

int secagg_round_member(const secagg_round_t *r, uint32_t id)
{
    int i = index_of(r, id);
    return r->phase < SECAGG_PHASE_DONE && i >= 0 && r->member[i];
}

int secagg_round_expects(const secagg_round_t *r, uint32_t id)
{
    int i = index_of(r, id);
    return r->phase < SECAGG_PHASE_DONE && i >= 0 && r->member[i] && !r->answered[i];
}

/* An ACCUSE from site i (index), in the masked phase instead of its masked input. */
static int add_accusation(secagg_round_t *r, int i, uint32_t id, const uint8_t *data, size_t len, err_t *err)
{
    uint32_t sender, count, *ids = FN_MALLOC((size_t)r->n * sizeof *ids);
    int rc = secagg_accusation_read(data, len, r->p.round_id, &sender, ids, r->n, &count, err);
    if (rc == 0 && sender != id)
        rc = err_set(err, FN_EPROTO, "sa_accuse claims to come from client %u", sender);
    for (uint32_t j = 0; rc == 0 && j < count; j++)
        if (!secagg_server_relayed(r->srv, ids[j], id)) /* it never got a ciphertext from that one */
            rc = err_set(err, FN_EPROTO, "sa_accuse names client %u, whose shares were not relayed to it", ids[j]);
    if (rc < 0) {
        free(ids);
        return err_set(err, FN_EPROTO, "%s", err->msg);
    }
    if (r->n_acc + count > r->cap_acc) {
        r->cap_acc = 2 * (r->n_acc + count);
        r->acc = realloc(r->acc, (size_t)r->cap_acc * 2 * sizeof *r->acc);
        FN_CHECK(r->acc);
    }
    for (uint32_t j = 0; j < count; j++) {
        r->acc[2 * r->n_acc] = id;
        r->acc[2 * r->n_acc + 1] = ids[j];
        r->n_acc++;
    }
    free(ids);
    r->answered[i] = 1; /* it aborted: nothing more will come from it this attempt */
    return 0;
}

int secagg_round_add(secagg_round_t *r, uint32_t id, const char *type, const uint8_t *data, size_t len, err_t *err)
{
    int accuse = r->phase == SECAGG_PHASE_MASKED && strcmp(type, "sa_accuse") == 0;
    if (!accuse && (r->phase >= SECAGG_PHASE_DONE || strcmp(type, k_in_types[r->phase]) != 0))
        return err_set(err, FN_EPROTO, "%s outside its phase (now expecting %s)", type, secagg_round_expected_type(r));
    int i = index_of(r, id);
    if (i < 0 || !r->member[i])
        return err_set(err, FN_EPROTO, "%s from a site %s", type,
                       i < 0 ? "not selected for this round" : "that dropped in an earlier phase");
    if (r->answered[i])
        return err_set(err, FN_EPROTO, "a second %s", type);
    /* The library checks the type and round id; the sender id must be the authenticated site. */
    if (!data || len < SECAGG_HEADER_LEN)
        return err_set(err, FN_EPROTO, "%s of %zu bytes, shorter than the header", type, len);
    uint32_t sender = (uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 | (uint32_t)data[7] << 24;
    if (sender != id)
        return err_set(err, FN_EPROTO, "%s claims to come from client %u", type, sender);
    if (accuse)
        return add_accusation(r, i, id, data, len, err);
    int rc;
    switch (r->phase) {
    case SECAGG_PHASE_ADVERT: rc = secagg_server_add_advert(r->srv, data, len, err); break;
    case SECAGG_PHASE_SHARES: rc = secagg_server_add_shares(r->srv, data, len, err); break;
    case SECAGG_PHASE_MASKED: rc = secagg_server_add_masked(r->srv, data, len, err); break;
    default: rc = secagg_server_add_unmask(r->srv, data, len, err); break;
    }
    if (rc < 0)
        return err_set(err, FN_EPROTO, "%s", err->msg);
    r->answered[i] = 1;
    return 0;
}

/* The next phase's set: the survivors of the one just closed. */
static void next_phase(secagg_round_t *r, int closed)
{
    const uint32_t *ids;
    uint32_t n = secagg_server_survivors(r->srv, closed + 1, &ids);
    r->surv[closed + 1] = n;
    memset(r->member, 0, r->n);
    memset(r->answered, 0, r->n);
    for (uint32_t j = 0; j < n; j++) {
        int i = index_of(r, ids[j]);
        if (i >= 0)
            r->member[i] = 1;
    }
    r->phase = closed + 1;
}

int secagg_round_close(secagg_round_t *r, secagg_round_send_fn send, void *ctx, float *decoded, uint32_t *n_summed,
                       err_t *err)
{
    secagg_buf_t b = {0};
    int rc = 0;
    const uint32_t *ids;
    uint32_t n;
    switch (r->phase) {
    case SECAGG_PHASE_ADVERT:
        if ((rc = secagg_server_close_adverts(r->srv, &b, err)) < 0)
            break;
        next_phase(r, 0);
        n = secagg_server_survivors(r->srv, 1, &ids);
        for (uint32_t j = 0; j < n && rc == 0; j++) {
            if (!r->p.k) {
                send(ctx, ids[j], "sa_keys", b.data, b.len);
                continue;
            }
            secagg_buf_t one = {0};
            if ((rc = secagg_server_advert_list_for(r->srv, ids[j], &one, err)) == 0)
                send(ctx, ids[j], "sa_keys", one.data, one.len);
            secagg_buf_free(&one);
        }
        break;
    case SECAGG_PHASE_SHARES:
        if ((rc = secagg_server_close_shares(r->srv, err)) < 0)
            break;
        next_phase(r, 1);
        n = secagg_server_survivors(r->srv, 2, &ids);
        for (uint32_t j = 0; j < n && rc == 0; j++) {
            secagg_buf_t one = {0};
            if ((rc = secagg_server_relay(r->srv, ids[j], &one, err)) == 0)
                send(ctx, ids[j], "sa_relay", one.data, one.len);
            secagg_buf_free(&one);
        }
        break;
    case SECAGG_PHASE_MASKED:
        if ((rc = secagg_server_close_masked(r->srv, &b, err)) < 0)
            break;
        next_phase(r, 2);
        n = secagg_server_survivors(r->srv, 3, &ids);
        for (uint32_t j = 0; j < n; j++)
            send(ctx, ids[j], "sa_unmask_req", b.data, b.len);
        break;
    case SECAGG_PHASE_UNMASK: {
        uint32_t *sum = FN_MALLOC((size_t)r->m * sizeof *sum);
        uint32_t got = 0;
        if ((rc = secagg_server_finish(r->srv, sum, &got, err)) == 0) {
            secagg_decode(sum, r->m, r->f, r->p.bits, decoded);
            *n_summed = got;
            r->phase = SECAGG_PHASE_DONE;
        }
        free(sum);
        break;
    }
    default:
        rc = err_set(err, FN_ESTATE, "secure aggregation round already finished");
    }
    secagg_buf_free(&b);
    if (rc < 0)
        r->phase = SECAGG_PHASE_DONE; /* an aborted round takes nothing more */
    return rc;
}

uint32_t secagg_round_survivors(const secagg_round_t *r, int phase)
{
    return phase >= 1 && phase <= 3 ? r->surv[phase] : 0;
}

double secagg_round_error_bound(const secagg_round_t *r) { return (double)r->n / r->f; }

const dp_ddp_plan_t *secagg_round_dp_plan(const secagg_round_t *r) { return r->dp ? &r->plan : NULL; }

uint32_t secagg_round_accusations(const secagg_round_t *r, const uint32_t **pairs)
{
    *pairs = r->acc;
    return r->n_acc;
}

static int listed(const uint32_t *ids, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

uint32_t secagg_round_dispute_pairs(const uint32_t *pairs, uint32_t n_pairs, uint32_t *excluded,
                                    uint32_t *n_excluded, uint32_t cap)
{
    uint32_t added = 0;
    for (uint32_t i = 0; i < n_pairs && *n_excluded + 2 <= cap; i++) {
        uint32_t u = pairs[2 * i], v = pairs[2 * i + 1];
        if (u == v || listed(excluded, *n_excluded, u) || listed(excluded, *n_excluded, v))
            continue;
        excluded[(*n_excluded)++] = u;
        excluded[(*n_excluded)++] = v;
        added++;
    }
    return added;
}

const secagg_plus_plan_t *secagg_round_plus_plan(const secagg_round_t *r) { return &r->plus; }
