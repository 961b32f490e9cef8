/* server_secagg: the server's side of secure aggregation (server/secagg_round.h drives the
 * protocol): a round's driver over the selected sites, its four phases with their deadlines, the
 * sites' sa_* messages, an aborted round's retry with fresh keys, and the round's metrics. The
 * round state machine sees only the functions in server_int.h; on success s->mod.mean holds the
 * decoded sum of the survivors' clipped updates. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"
#include "server/site_msg.h"

static void sa_send(void *ctx, uint32_t id, const char *type, const uint8_t *data, size_t len)
{
    server_t *s = ctx;
    /* Distributed DP: a sum is charged before the first request to unmask it leaves, so no kill
     * between the two can reveal a sum the accountant never saw. */
    if (strcmp(type, "sa_unmask_req") == 0 && s->sa.charge <= 0) {
        const dp_ddp_plan_t *plan = secagg_round_dp_plan(s->sa.round);
        if (s->sa.charge < 0 || (plan && dp_charge_release(s, plan, &s->sa.charge_err) < 0)) {
            s->sa.charge = -1;
            return;
        }
        s->sa.charge = 1;
    }
    for (int i = 0; i < sites_count(s->sites); i++) {
        sites_site_t *site = sites_at(s->sites, i);
        if (site->id != (int)id)
            continue;
        if (!site->connected) /* gone: it has dropped out of the protocol */
            return;
        json_t *hdr = json_pack("{s:s, s:i, s:I}", "type", type, "round", s->rnd.round, "sa_round",
                                (json_int_t)secagg_round_rid(s->sa.round));
        wire_frame_t f = {.name = "secagg", .dtype = WIRE_U8, .data = data, .count = len};
        long long sent = server_send(s, site, hdr, &f, 1);
        if (sent >= 0)
            s->rnd.bytes_down += sent;
        return;
    }
}

/* The four phases of a secure-aggregation round. Each waits for the sites still expected (those
 * not lost) until its deadline: round_timeout for the advert, which follows local training,
 * phase_timeout for the others. On success s->mod.mean holds the decoded sum and s->sa.summed |U3|. */
int sa_round_phases(server_t *s, err_t *err)
{
    static const char *const names[] = {"advertise_keys", "share_keys", "masked_input", "unmasking"};
    for (int phase = SECAGG_PHASE_ADVERT; phase <= SECAGG_PHASE_UNMASK; phase++) {
        server_set_phase(s, s->rnd.round, names[phase]);
        double start = fn_mono();
        double deadline = start + (phase == SECAGG_PHASE_ADVERT ? s->cfg->server.round_timeout
                                                                : s->cfg->server.phase_timeout);
        for (;;) {
            int waiting = 0;
            for (int i = 0; i < sites_count(s->sites); i++) {
                const sites_site_t *site = sites_at(s->sites, i);
                waiting += site->selected && !site->lost && secagg_round_expects(s->sa.round, (uint32_t)site->id);
            }
            if (waiting == 0 || fn_mono() >= deadline || server_stopped(s))
                break;
            server_pump(s, 100);
        }
        if (server_stopped(s))
            return err_set(err, FN_ESTATE, "stopped");
        s->sa.charge = 0;
        int rc = secagg_round_close(s->sa.round, sa_send, s, s->mod.mean, &s->sa.summed, err);
        s->sa.phase_s[phase] = fn_mono() - start;
        if (s->sa.charge < 0) { /* nothing was asked for: the sum stays masked */
            if (err)
                *err = s->sa.charge_err;
            return s->sa.charge_err.code < 0 ? s->sa.charge_err.code : FN_EIO;
        }
        if (rc < 0)
            return rc;
        if (phase < SECAGG_PHASE_UNMASK)
            log_debug("round %d: secure aggregation phase %d closed with %u sites in %.2f s", s->rnd.round, phase,
                      secagg_round_survivors(s->sa.round, phase + 1), s->sa.phase_s[phase]);
    }
    return 0;
}

static int is_excluded(const server_t *s, int id)
{
    for (uint32_t i = 0; i < s->sa.n_excluded; i++)
        if (s->sa.excluded[i] == (uint32_t)id)
            return 1;
    return 0;
}

int sa_round_begin(server_t *s, err_t *err)
{
    int count = sites_count(s->sites);
    uint32_t *ids = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *ids), n = 0;
    for (int i = 0; i < count; i++) {
        sites_site_t *site = sites_at(s->sites, i);
        if (site->selected && is_excluded(s, site->id)) { /* a dispute pair of an earlier attempt */
            site->selected = 0;
            s->rnd.selected--;
        }
        if (site->selected)
            ids[n++] = (uint32_t)site->id;
    }
    const config_t *c = s->cfg;
    secagg_round_config_t rc_cfg = {.plus = c->secagg.plus,
                                    .threshold = (uint32_t)c->secagg.threshold,
                                    .neighbours = (uint32_t)c->secagg.neighbours,
                                    .bits = (uint32_t)c->secagg.bits,
                                    /* under DP the clients clip to the DP bound, which the noise assumes */
                                    .clip = c->dp.enabled && s->dp.clip.clip < c->secagg.clip ? s->dp.clip.clip
                                                                                            : c->secagg.clip,
                                    .dp = c->dp.enabled,
                                    .dp_sigma = s->dp.z_updates,
                                    .dp_min_summed = (uint32_t)c->clients.min_fit,
                                    .dropout = c->secagg.dropout,
                                    .corruption = c->secagg.corruption};
    memset(s->sa.phase_s, 0, sizeof s->sa.phase_s);
    s->sa.summed = 0;
    s->sa.clip = rc_cfg.clip;
    int rc = secagg_round_new(&rc_cfg, secagg_round_id(s->opt.run_id, s->rnd.round, s->sa.attempt), c->seed, ids, n,
                              (uint32_t)s->mod.m, &s->sa.round, err);
    free(ids);
    if (rc == 0 && n != s->sa.logged_n) { /* the parameters and their failure bounds, per cohort size */
        const secagg_plus_plan_t *pl = secagg_round_plus_plan(s->sa.round);
        char what[96];
        if (pl->k)
            snprintf(what, sizeof what, "SecAgg+ with k = %u neighbours, threshold %u per neighbourhood", pl->k,
                     pl->t_nb);
        else
            snprintf(what, sizeof what, "full SecAgg (threshold %u)", n ? secagg_default_t(n) : 0);
        log_info("secure aggregation over %u sites: %s; at dropout %g and corruption %g, P(abort) <= 2^%.1f, "
                 "P(privacy failure) <= 2^%.1f (corrupted neighbours) and 2^%.1f (graph split)",
                 n, what, c->secagg.dropout, c->secagg.corruption, pl->log2_abort, pl->log2_privacy, pl->log2_split);
        s->sa.logged_n = n;
    }
    return rc < 0 ? err_set(err, FN_ESTATE, "%s", err->msg) : 0;
}

/* Before the next attempt of an aborted round: the accusations of this attempt, by the
 * dispute-pair rule, leave sites out of the round's later attempts; logged and recorded. */
static void apply_accusations(server_t *s)
{
    const uint32_t *pairs;
    uint32_t np = secagg_round_accusations(s->sa.round, &pairs);
    if (!np)
        return;
    uint32_t before = s->sa.n_excluded, need = before + 2 * np;
    if (need > s->sa.cap_excluded) {
        s->sa.cap_excluded = need;
        s->sa.excluded = realloc(s->sa.excluded, (size_t)need * sizeof *s->sa.excluded);
        FN_CHECK(s->sa.excluded);
    }
    secagg_round_dispute_pairs(pairs, np, s->sa.excluded, &s->sa.n_excluded, s->sa.cap_excluded);
    err_t e;
    for (uint32_t i = before; i + 1 < s->sa.n_excluded; i += 2) {
        uint32_t u = s->sa.excluded[i], v = s->sa.excluded[i + 1];
        const sites_site_t *su = NULL, *sv = NULL;
        for (int j = 0; j < sites_count(s->sites); j++) {
            const sites_site_t *x = sites_at(s->sites, j);
            su = x->id == (int)u ? x : su;
            sv = x->id == (int)v ? x : sv;
        }
        /* only ids and the allow-list's names: an accusation carries no text of the peer's */
        log_warn("round %d (attempt %d): site %s (id %u) reports that the share ciphertext of site %s (id %u) did "
                 "not authenticate; the server cannot tell which of the two misbehaved, so both sit out the rest of "
                 "this round",
                 s->rnd.round, s->sa.attempt + 1, su ? su->name : "?", u, sv ? sv->name : "?", v);
        char name[48];
        snprintf(name, sizeof name, "secagg_accused_%u", v); /* value: its accuser */
        if (store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, name, u, &e) < 0)
            log_error("%s", e.msg);
    }
    if (s->sa.n_excluded > before &&
        store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "secagg_excluded", s->sa.n_excluded, &e) < 0)
        log_error("%s", e.msg);
    if (np > (s->sa.n_excluded - before) / 2)
        log_info("round %d: %u accusation%s moot (a party to each already sits out)", s->rnd.round,
                 np - (s->sa.n_excluded - before) / 2, np - (s->sa.n_excluded - before) / 2 > 1 ? "s" : "");
}

/* Each honest input is clipped to C, so encoding error aside (at most n/f per coordinate of the
 * sum) the sum of k of them is no longer than k C. Under distributed DP each input is bounded by
 * the plan's sens/f instead, and the sum carries noise of sqrt(k s2)/f per coordinate: its norm
 * exceeds that times sqrt(m) + 8 with probability below e^-32. */
double sa_sum_bound(uint32_t summed, size_t m, double clip, double coord_error, const dp_ddp_plan_t *plan)
{
    double per_input = clip, noise = 0;
    if (plan && plan->scale > 0) {
        if (plan->sens / plan->scale > per_input)
            per_input = plan->sens / plan->scale;
        if (plan->var_den > 0)
            noise = sqrt((double)summed * (double)plan->var_num / (double)plan->var_den) / plan->scale;
    }
    return summed * per_input + sqrt((double)m) * coord_error + noise * (sqrt((double)m) + 8);
}

int sa_project_sum(float *sum, size_t m, double bound, double *norm)
{
    double sq = 0;
    for (size_t i = 0; i < m; i++)
        sq += (double)sum[i] * sum[i];
    *norm = sqrt(sq);
    if (!(*norm > bound)) /* also when the norm is not a number: nothing to scale by */
        return 0;
    double k = bound / *norm;
    for (size_t i = 0; i < m; i++)
        sum[i] = (float)(sum[i] * k);
    return 1;
}

/* The server cannot check that a site clipped its masked input, but it can check their sum: one
 * longer than the bound holds an unclipped input (any ring value decodes to a legal-looking
 * number), and is scaled back onto the bound so no site moves the model further than clipping
 * allows. */
static void bound_sum(server_t *s)
{
    double norm, bound = sa_sum_bound(s->sa.summed, s->mod.m, s->sa.clip, secagg_round_error_bound(s->sa.round),
                                      secagg_round_dp_plan(s->sa.round));
    if (sa_project_sum(s->mod.mean, s->mod.m, bound, &norm))
        log_warn("round %d: the decoded sum of %u masked inputs has norm %.6g, above the %.6g their clipping allows "
                 "(a site did not clip its input); scaled down to it",
                 s->rnd.round, s->sa.summed, norm, bound);
}

/* After the phases (rc their result): a sum of at least min_fit inputs is the round's; otherwise
 * nothing about any input was revealed (or the sum is not accepted), nothing is committed and the
 * round runs again with fresh keys: ROUND_RETRY. */
int sa_round_finish(server_t *s, int rc, err_t *err)
{
    if (rc == 0 && (int)s->sa.summed < s->cfg->clients.min_fit)
        rc = err_set(err, FN_ESTATE, "only %u masked inputs were summed (at least %d needed)", s->sa.summed,
                     s->cfg->clients.min_fit);
    if (rc == 0) {
        bound_sum(s);
        s->col.agg.count = (int)s->sa.summed;
        return 0;
    }
    log_warn("round %d (attempt %d): secure aggregation aborted: %s; the round starts again with fresh keys",
             s->rnd.round, s->sa.attempt + 1, err->msg);
    if (s->sa.round)
        apply_accusations(s);
    secagg_round_free(s->sa.round);
    s->sa.round = NULL;
    s->rnd.round--;
    s->sa.attempt++;
    /* A moment for the disconnects of the sites that died to arrive before reselecting. */
    for (double until = fn_mono() + 1.0; fn_mono() < until && !server_stopped(s);)
        server_pump(s, 100);
    return ROUND_RETRY;
}

/* A secure-aggregation message: checked against the run, the round and its open phase, then
 * handed to the driver; anything wrong is dropped and logged. */
void sa_on_message(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(s->sites, msg, s->opt.run_id, s->rnd.in_round && s->sa.round,
                                           s->rnd.round);
    if (!site)
        return;
    long long rid = wire_get_int(msg, "sa_round", -1);
    if ((uint64_t)rid != secagg_round_rid(s->sa.round)) {
        log_warn("site %s: %s for secure-aggregation round %lld ignored (now: %llu)", site->name, msg->type, rid,
                 (unsigned long long)secagg_round_rid(s->sa.round));
        return;
    }
    size_t len = 0;
    const uint8_t *data = wire_frame_data(msg, 0, WIRE_U8, &len);
    err_t e;
    if (!data) {
        log_warn("site %s: %s without its uint8 secagg frame dropped", site->name, msg->type);
        return;
    }
    if (secagg_round_add(s->sa.round, (uint32_t)site->id, msg->type, data, len, &e) < 0) {
        log_warn("site %s: %s dropped: %s", site->name, msg->type, e.msg);
        return;
    }
    s->rnd.bytes_up += (long long)msg->bytes;
    if (strcmp(msg->type, "sa_advert") == 0) {
        json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
        long long samples = wire_get_int(msg, "samples", -1); /* no more than it registered with */
        server_add_train_stats(s, samples < site->samples ? samples : site->samples,
                               json_is_number(loss) ? json_number_value(loss) : NAN,
                               json_is_number(acc) ? json_number_value(acc) : NAN);
    } else if (strcmp(msg->type, "sa_accuse") == 0) { /* secagg_round checked it; acted on if the attempt aborts */
        log_warn("round %d: site %s reports share ciphertexts that did not authenticate; it has aborted this attempt",
                 s->rnd.round, site->name);
    } else if (strcmp(msg->type, "sa_masked") == 0) {
        site->reported = 1;
        if (store_client_contributed(s->opt.store, s->opt.run_id, site->id, (long long)msg->bytes,
                                     (long long)(s->mod.m * 4), fn_mono() - site->sent_at, &e) < 0)
            log_error("%s", e.msg);
    }
}

json_t *sa_train_info(const server_t *s, const sites_site_t *site)
{
    return s->sa.round ? secagg_round_info(s->sa.round, (uint32_t)site->id) : NULL;
}

int sa_expects_model(const server_t *s, const sites_site_t *site)
{
    return !s->sa.round ||
           (secagg_round_expects(s->sa.round, (uint32_t)site->id) && secagg_round_phase(s->sa.round) == SECAGG_PHASE_ADVERT);
}

int sa_selected_lost_after_masking(const server_t *s, const sites_site_t *site)
{
    return s->rnd.in_round && site->selected && s->sa.round && site->reported;
}

void sa_record(server_t *s)
{
    if (!s->sa.round)
        return;
    static const char *const names[] = {"phase_advert_s", "phase_shares_s", "phase_masked_s", "phase_unmask_s"};
    store_t *st = s->opt.store;
    int64_t run = s->opt.run_id;
    int r = s->rnd.round, bad = 0;
    err_t e;
    for (int p = 1; p <= 3; p++) {
        char name[32];
        snprintf(name, sizeof name, "secagg_u%d", p);
        bad |= store_metric_insert(st, run, r, name, secagg_round_survivors(s->sa.round, p), &e) < 0;
    }
    bad |= store_metric_insert(st, run, r, "secagg_summed", s->sa.summed, &e) < 0;
    bad |= store_metric_insert(st, run, r, "secagg_attempts", s->sa.attempt + 1, &e) < 0;
    for (int p = 0; p < 4; p++)
        bad |= store_metric_insert(st, run, r, names[p], s->sa.phase_s[p], &e) < 0;
    if (bad)
        log_error("%s", e.msg);
}

void sa_round_end(server_t *s)
{
    secagg_round_free(s->sa.round);
    s->sa.round = NULL;
    s->sa.attempt = 0;
    s->sa.n_excluded = 0; /* exclusions last one round: the next draws from every site again */
}
