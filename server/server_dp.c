/* server_dp: the server's differential privacy (DP-FedAvg, McMahan et al. 2018): clipping each
 * update it sees, central noise or (with secure aggregation) the charge for distributed noise
 * the sites add, the RDP accountant with its budget, the round's sampling rate, and the replay
 * of the accountant when a run resumes. Every function is a no-op returning 0 without "dp". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"

/* DP-FedAvg (McMahan et al. 2018): every update clipped to C, averaged over the expected cohort,
 * Gaussian noise of std z*C on the sum. The cohort is a fixed number of the clients, accounted
 * as Poisson sampling with q = cohort / clients (the usual approximation, stated in the logs). */
int dp_setup(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    if (!c->dp.enabled)
        return 0;
    /* The cohort select_sites draws when every site is connected (fraction: rounded up). */
    s->dp.expected = server_cohort_size(c->clients.per_round, c->clients.fraction, c->clients.count);
    s->dp.q = s->dp.expected / c->clients.count;
    int rc;
    if (c->dp.noise_multiplier >= 0)
        s->dp.z = c->dp.noise_multiplier;
    else if ((rc = dp_calibrate_sigma(s->dp.q, c->rounds, c->dp.delta, c->dp.target_epsilon, &s->dp.z, err)) < 0)
        return rc;
    s->dp.z_updates = s->dp.z;
    if (c->dp.adaptive) {
        double sigma_b = c->dp.count_noise > 0 ? c->dp.count_noise : s->dp.expected / 20;
        if ((rc = dp_adaptive_clip_init(&s->dp.clip, c->dp.clip, c->dp.quantile, c->dp.clip_lr, sigma_b, s->dp.expected,
                                        err)) < 0 ||
            (rc = dp_adaptive_noise_multiplier(s->dp.z, sigma_b, &s->dp.z_updates, err)) < 0)
            return config_error_at(c, "dp.adaptive", err, "%s", err->msg);
    } else {
        s->dp.clip.clip = c->dp.clip;
    }
    dp_accountant_init(&s->dp.acct);
    s->dp.scratch = FN_MALLOC(s->mod.m * sizeof *s->dp.scratch);
    log_info("differential privacy: clip %g%s, noise multiplier %.4f, q = %d/%d = %.4f (a fixed cohort accounted as "
             "Poisson sampling), delta %g%s",
             c->dp.clip, c->dp.adaptive ? " (adaptive)" : "", s->dp.z, (int)s->dp.expected, c->clients.count, s->dp.q,
             c->dp.delta, c->dp.target_epsilon > 0 ? "" : ", no budget");
    if (c->secagg.enabled)
        log_info("differential privacy noise: distributed discrete Gaussian, each site adds its share before "
                 "masking (Kairouz et al. 2021), assuming the fewest inputs a round commits with; the server adds "
                 "no central noise");
    else
        log_info("differential privacy noise: central Gaussian of std %.4g on the sum, added by the server",
                 s->dp.z_updates * s->dp.clip.clip);
    return 0;
}


/* The accountant on resume: one step per committed round at the sampling rate that round
 * recorded ("sampling_rate"; the configured q for runs from before it was recorded), or as many
 * steps as the round stored releases ("dp_releases": unmask requests under distributed DP, noised
 * supernets sent out by a federated search), those of the uncommitted round after the last
 * committed one included; the round that runs next keeps counting its releases on top of those
 * already stored for it. */
int dp_replay(server_t *s, int committed, err_t *err)
{
    json_t *q_rows = NULL, *rel_rows = NULL;
    int rc = store_metrics_json(s->opt.store, s->opt.run_id, "sampling_rate", 0, &q_rows, err);
    if (rc == 0) /* distributed DP's unmask requests, or a federated search's noised supernets sent out */
        rc = store_metrics_json(s->opt.store, s->opt.run_id, "dp_releases", 0, &rel_rows, err);
    int last = committed + 1;
    double *q = rc == 0 ? FN_MALLOC((size_t)(last + 1) * sizeof *q) : NULL;
    int *steps = rc == 0 ? FN_CALLOC((size_t)(last + 1), sizeof *steps) : NULL;
    size_t i;
    json_t *row;
    for (int r = 0; q && r <= last; r++) {
        q[r] = s->dp.q;
        steps[r] = r >= 1 && r <= committed && !s->cfg->secagg.enabled;
    }
    json_array_foreach(q_rows, i, row) {
        json_int_t r = json_integer_value(json_object_get(row, "round"));
        double v = json_number_value(json_object_get(row, "value"));
        if (r >= 1 && r <= last && v > q[r])
            q[r] = v;
    }
    long long extra = 0;
    json_array_foreach(rel_rows, i, row) {
        json_int_t r = json_integer_value(json_object_get(row, "round"));
        int n = (int)json_number_value(json_object_get(row, "value"));
        if (r < 1 || r > last || n < 0)
            continue;
        steps[r] = n;
        if (r == last) { /* released, not committed: the round that runs next */
            s->dp.releases_round = (int)r;
            s->dp.releases = n;
            extra = n;
        }
    }
    if (s->cfg->secagg.enabled) /* runs from before releases were recorded: one per committed round */
        for (int r = 1; r <= committed; r++)
            if (steps[r] < 1)
                steps[r] = 1;
    if (extra > 0 && s->cfg->secagg.enabled)
        log_warn("resuming: %lld secure-aggregation sum(s) were asked for after the last committed round; epsilon "
                 "counts them", extra);
    else if (extra > 0)
        log_warn("resuming: %lld noised model(s) of the round after the last committed one were sent to sites to "
                 "be scored; epsilon counts them", extra);
    for (int r = 1; rc == 0 && r <= last; r++)
        if (steps[r] > 0)
            rc = dp_accountant_add(&s->dp.acct, q[r], s->dp.z, steps[r], err);
    free(q);
    free(steps);
    json_decref(q_rows);
    json_decref(rel_rows);
    return rc;
}

/* The sampling rate this round is accounted at: the cohort over the sites connected now, never
 * below the configured q. A fixed cohort of k among the n sites online samples each online user
 * with probability k/n; with every site connected that is the configured per_round / count. */
static double round_sampling_rate(const server_t *s)
{
    int n = sites_connected(s->sites, NULL);
    if (n < 1)
        return s->dp.q;
    int k = server_cohort_size(s->cfg->clients.per_round, s->cfg->clients.fraction, n);
    double q = (double)k / n;
    if (q > s->dp.q * (1 + 1e-12)) {
        log_warn("round %d: %d of %d sites connected: privacy accounted at sampling rate %d/%d = %.4f (configured %.4f)",
                 s->rnd.round + 1, n, s->cfg->clients.count, k, n, q, s->dp.q);
        return q;
    }
    return s->dp.q;
}

int dp_round_open(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    if (!c->dp.enabled)
        return 0;
    s->dp.q_round = round_sampling_rate(s);
    s->dp.below = 0;
    if (c->dp.target_epsilon <= 0)
        return 0;
    int exceed, rc;
    double after;
    if ((rc = dp_accountant_would_exceed(&s->dp.acct, s->dp.q_round, s->dp.z, c->dp.delta, c->dp.target_epsilon,
                                         &exceed, &after, err)) < 0)
        return rc;
    s->dp.budget_reached = exceed;
    if (exceed)
        return err_set(err, FN_ESTATE, "privacy budget reached: round %d would take epsilon to %.4f, above the target %g",
                       s->rnd.round + 1, after, c->dp.target_epsilon);
    return 0;
}

/* Clipped here too: the guarantee must not depend on the client having clipped. Every client
 * weighs the same (1): sample-weighted means have unbounded sensitivity. */
int dp_clip_add(server_t *s, const float *update, err_t *err)
{
    double norm;
    memcpy(s->dp.scratch, update, s->mod.m * sizeof *update);
    int rc = dp_clip_l2(s->dp.scratch, s->mod.m, s->dp.clip.clip, &norm, err);
    if (rc == 0)
        rc = fedavg_add(&s->col.agg, s->dp.scratch, s->mod.m, 1.0, err);
    if (rc == 0)
        s->dp.below += norm <= s->dp.clip.clip;
    return rc;
}

/* The sum over DP-FedAvg's fixed denominator (the expected cohort), with central noise. */
int dp_noise_mean(server_t *s, err_t *err)
{
    int rc = fedavg_sum_over(&s->col.agg, s->dp.expected, s->mod.mean, err);
    if (rc == 0)
        rc = dp_add_gaussian_noise(s->mod.mean, s->mod.m, s->dp.z_updates * s->dp.clip.clip / s->dp.expected, err);
    return rc;
}

/* Distributed DP: the sites were just asked to unmask this round's sum. It is charged now, at
 * the multiplier the plan guarantees, and the count of such requests is stored before anything
 * else happens, so a resumed run replays every sum that may have been revealed. */
int dp_charge_release(server_t *s, const dp_ddp_plan_t *plan, err_t *err)
{
    int rc = dp_accountant_add(&s->dp.acct, s->dp.q_round, dp_ddp_noise_multiplier(plan, plan->assumed), 1, err);
    if (rc < 0 || (rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "sampling_rate", s->dp.q_round,
                                            err)) < 0)
        return rc;
    if (s->dp.releases_round != s->rnd.round) {
        s->dp.releases_round = s->rnd.round;
        s->dp.releases = 0;
    }
    s->dp.releases++;
    return store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "dp_releases", s->dp.releases, err);
}

/* Central DP in a federated search: the round's noised supernet leaves the server (its paths go
 * to the sites to be scored) before the round is committed. That release is stored first, as
 * distributed DP's unmask requests are (dp_replay counts it), so a server killed while scoring
 * and resumed charges both the round it sent and the one it runs again. dp_round_close already
 * charged the accountant in memory. */
int dp_mark_release(server_t *s, err_t *err)
{
    if (!s->cfg->dp.enabled || s->cfg->secagg.enabled)
        return 0;
    if (s->dp.releases_round != s->rnd.round) {
        s->dp.releases_round = s->rnd.round;
        s->dp.releases = 0;
    }
    s->dp.releases++;
    int rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "sampling_rate", s->dp.q_round, err);
    return rc < 0 ? rc : store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "dp_releases", s->dp.releases, err);
}

int dp_round_close(server_t *s, err_t *err)
{
    if (!s->cfg->dp.enabled)
        return 0;
    s->dp.z_round = s->dp.z;
    s->dp.clip_used = s->dp.clip.clip;
    const dp_ddp_plan_t *plan = s->sa.round ? secagg_round_dp_plan(s->sa.round) : NULL;
    if (plan) { /* the multiplier the noise guarantees with the fewest inputs it assumed */
        s->dp.z_round = dp_ddp_noise_multiplier(plan, plan->assumed);
        s->dp.ddp_assumed = plan->assumed;
        s->dp.ddp_z_summed = dp_ddp_noise_multiplier(plan, s->sa.summed);
        log_info("round %d: distributed noise from the %u sites summed (it assumes %u): noise multiplier %.6f "
                 "accounted, %.6f carried; no central noise added",
                 s->rnd.round, s->sa.summed, plan->assumed, s->dp.z_round, s->dp.ddp_z_summed);
    }
    /* Central noise is charged now; distributed noise was charged when the unmask was asked. */
    int rc;
    if ((!plan && (rc = dp_accountant_add(&s->dp.acct, s->dp.q_round, s->dp.z_round, 1, err)) < 0) ||
        (rc = dp_accountant_epsilon(&s->dp.acct, s->cfg->dp.delta, &s->dp.epsilon, NULL, err)) < 0)
        return rc;
    if (s->cfg->dp.adaptive && (rc = dp_adaptive_clip_update(&s->dp.clip, s->dp.below, s->col.agg.count, NULL, err)) < 0)
        return rc;
    return 0;
}

void dp_record(server_t *s)
{
    if (!s->cfg->dp.enabled)
        return;
    err_t e;
    store_t *st = s->opt.store;
    int64_t run = s->opt.run_id;
    int r = s->rnd.round;
    int bad = store_metric_insert(st, run, r, "epsilon", s->dp.epsilon, &e) < 0 ||
              store_metric_insert(st, run, r, "clip", s->dp.clip_used, &e) < 0 ||
              store_metric_insert(st, run, r, "noise_multiplier", s->dp.z_round, &e) < 0;
    if (!s->cfg->secagg.enabled) /* distributed noise recorded its rate with the charge, at the unmask request */
        bad = bad || store_metric_insert(st, run, r, "sampling_rate", s->dp.q_round, &e) < 0;
    else
        bad = bad || store_metric_insert(st, run, r, "ddp_assumed_clients", s->dp.ddp_assumed, &e) < 0 ||
              store_metric_insert(st, run, r, "ddp_noise_multiplier_summed", s->dp.ddp_z_summed, &e) < 0;
    if (bad)
        log_error("%s", e.msg);
}

void dp_summary(server_t *s, server_summary_t *sum)
{
    if (!s->cfg->dp.enabled)
        return;
    sum->dp = 1;
    sum->delta = s->cfg->dp.delta;
    sum->noise_multiplier = s->dp.z;
    sum->clip = s->dp.clip.clip;
    err_t e;
    if (dp_accountant_epsilon(&s->dp.acct, s->cfg->dp.delta, &sum->epsilon, NULL, &e) < 0)
        sum->epsilon = NAN;
}

void dp_free(server_t *s) { free(s->dp.scratch); }
