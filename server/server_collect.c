/* server_collect: a round's plain path from model to aggregate: the snapshot of the model every
 * "train" message shares, the reproducible draw of the round's sites, each update decoded and
 * checked (server/site_msg.h) and added (clipped under DP, kept whole for robust strategies),
 * and the aggregate the strategy applies to the model (also of a secure-aggregation sum). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "server/server_int.h"
#include "server/site_msg.h"

static void broadcast_release(void *data, void *hint)
{
    (void)data;
    broadcast_t *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

int collect_init(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    size_t m = s->mod.m;
    if (c->compression.enabled) {
        s->col.cspec = (compress_spec_t){.quantize = c->compression.quantize, .topk = c->compression.topk};
        s->col.decoded = FN_MALLOC(m * sizeof *s->col.decoded);
        s->col.cscratch = FN_MALLOC(m * sizeof *s->col.cscratch);
    }
    int rc = fedavg_init(&s->col.agg, m, err);
    if (rc == 0)
        rc = strategy_create(&s->col.scfg, m, &s->col.strategy, err);
    if (rc == 0)
        strategy_set_trained(s->col.strategy, engine_model_num_params(s->mod.model));
    return rc;
}

void collect_free(server_t *s)
{
    if (s->mod.bcast)
        broadcast_release(NULL, s->mod.bcast);
    fedavg_free(&s->col.agg);
    strategy_free(s->col.strategy);
    free(s->col.decoded);
    free(s->col.cscratch);
    for (int i = 0; i < s->col.nkept; i++)
        free(s->col.kept[i].update);
    free(s->col.kept);
}

/* A snapshot: aggregation changes params while messages may still be queued. */
void collect_snapshot(server_t *s)
{
    if (s->mod.bcast)
        broadcast_release(NULL, s->mod.bcast);
    s->mod.bcast = FN_MALLOC(sizeof *s->mod.bcast + s->mod.m * sizeof(float));
    atomic_init(&s->mod.bcast->refs, 1);
    memcpy(s->mod.bcast->data, s->mod.params, s->mod.m * sizeof(float));
}

long long collect_send_train(server_t *s, sites_site_t *site)
{
    /* A federated search sends each site its candidate's path and slice (server_nas.c). */
    const json_t *arch = s->cfg->model;
    broadcast_t *bc = s->mod.bcast;
    size_t m = s->mod.m;
    if (s->nas && server_nas_train_model(s, site, &arch, &bc, &m) < 0)
        return -1;
    atomic_fetch_add(&bc->refs, 1);
    wire_frame_t frame = {"model", WIRE_F32, bc->data, m, broadcast_release, bc};
    /* Seeds derive from (seed, round, site): no generator state to save, and a resumed run
     * trains exactly as an uninterrupted one would. */
    json_int_t seed = (json_int_t)(rng_derive(s->cfg->seed, (uint64_t)s->rnd.round * 1000003u + (uint64_t)site->id) >> 1);
    json_t *hdr = json_pack("{s:s, s:i, s:i, s:i, s:f, s:I, s:O, s:i, s:i}", "type", "train", "round", s->rnd.round,
                            "epochs", s->cfg->train.epochs, "batch_size", s->cfg->train.batch_size, "lr",
                            s->cfg->train.lr, "seed", seed, "arch", arch, "input_dim",
                            s->mod.input_dim, "num_classes", s->mod.classes);
    json_object_set(hdr, "train", (json_t *)s->cfg->train_json);
    json_object_set_new(hdr, "instance", json_integer(s->instance));
    /* A relay (server/relay.h) reads these: it refuses strategies that need every update and
     * finishes its own round within the server's deadline. */
    json_object_set_new(hdr, "strategy", json_string(strategy_name(s->col.scfg.kind)));
    json_object_set_new(hdr, "round_timeout", json_real(s->cfg->server.round_timeout));
    if (s->col.scfg.kind == STRATEGY_FEDPROX)
        json_object_set_new(hdr, "prox_mu", json_real(s->col.scfg.prox_mu));
    if (s->cfg->dp.enabled)
        json_object_set_new(hdr, "clip", json_real(s->dp.clip.clip));
    json_t *sa = sa_train_info(s, site);
    if (sa)
        json_object_set_new(hdr, "secagg", sa);
    json_t *scatter = s->nas && sa ? server_nas_scatter_info(s, site) : NULL;
    if (scatter)
        json_object_set_new(hdr, "scatter", scatter);
    if (s->cfg->evaluate.enabled)
        json_object_set_new(hdr, "holdout", eval_holdout_info(s, site));
    if (s->cfg->compression.enabled) {
        json_t *c = json_object();
        if (s->col.cspec.quantize)
            json_object_set_new(c, "quantize", json_integer(s->col.cspec.quantize));
        if (s->col.cspec.topk > 0)
            json_object_set_new(c, "topk", json_real(s->col.cspec.topk));
        if (s->cfg->compression.error_feedback)
            json_object_set_new(c, "error_feedback", json_true());
        json_object_set_new(hdr, "compression", c);
    }
    site->sent_at = fn_mono();
    return server_send(s, site, hdr, &frame, 1);
}


static int cmp_site_id(const void *a, const void *b)
{
    return (*(sites_site_t *const *)a)->id - (*(sites_site_t *const *)b)->id;
}

/* A reproducible draw among the connected sites: sorted by id, then a partial shuffle seeded by
 * (seed ^ salt, round), so the choice needs no saved generator state. Draws per_round sites, or
 * (per_round 0) ceil(fraction x connected), at least one when any is connected; they are the
 * first *k of the returned array (freed by the caller). */
sites_site_t **collect_draw_connected(server_t *s, int per_round, double fraction, uint64_t salt, int *k)
{
    int count = sites_count(s->sites), n = 0;
    sites_site_t **cand = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *cand);
    for (int i = 0; i < count; i++)
        if (sites_at(s->sites, i)->connected)
            cand[n++] = sites_at(s->sites, i);
    qsort(cand, (size_t)n, sizeof *cand, cmp_site_id);
    *k = server_cohort_size(per_round, fraction, n);
    rng_t r;
    rng_seed(&r, rng_derive(s->cfg->seed ^ salt, (uint64_t)s->rnd.round));
    for (int i = 0; i < *k; i++) { /* partial Fisher-Yates */
        int j = i + (int)rng_below(&r, (uint64_t)(n - i));
        sites_site_t *t = cand[i];
        cand[i] = cand[j];
        cand[j] = t;
    }
    return cand;
}

/* Picks this round's sites among the connected ones. */
int collect_draw(server_t *s)
{
    for (int i = 0; i < sites_count(s->sites); i++) {
        sites_site_t *site = sites_at(s->sites, i);
        site->selected = site->reported = site->lost = 0;
    }
    int k;
    sites_site_t **cand = collect_draw_connected(s, s->cfg->clients.per_round, s->cfg->clients.fraction, 0x5e1ec7ULL, &k);
    for (int i = 0; i < k; i++)
        cand[i]->selected = 1;
    free(cand);
    return k;
}

static kept_update_t *kept_for(server_t *s, const sites_site_t *site)
{
    int i = sites_index(s->sites, site);
    if (i >= s->col.nkept) {
        int n = sites_count(s->sites);
        s->col.kept = realloc(s->col.kept, (size_t)n * sizeof *s->col.kept);
        FN_CHECK(s->col.kept);
        memset(s->col.kept + s->col.nkept, 0, (size_t)(n - s->col.nkept) * sizeof *s->col.kept);
        s->col.nkept = n;
    }
    return &s->col.kept[i];
}

/* Adds one checked update to the round: kept whole for a robust rule, clipped under DP,
 * weighted by its samples otherwise. */
static int add_update(server_t *s, const sites_site_t *site, const site_update_t *u, err_t *err)
{
    if (s->nas)
        return server_nas_add(s, site, u, err);
    if (s->cfg->dp.enabled)
        return dp_clip_add(s, u->values, err);
    if (!strategy_needs_all_updates(s->col.scfg.kind))
        return fedavg_add(&s->col.agg, u->values, s->mod.m, (double)u->samples, err);
    for (size_t i = 0; i < s->mod.m; i++)
        if (!isfinite(u->values[i]))
            return err_set(err, FN_EINVAL, "value %zu is not finite", i);
    kept_update_t *k = kept_for(s, site);
    if (!k->update)
        k->update = FN_MALLOC(s->mod.m * sizeof *k->update);
    memcpy(k->update, u->values, s->mod.m * sizeof *k->update);
    k->weight = (double)u->samples;
    s->col.agg.count++; /* counts arrivals; the robust rule reads the copies */
    return 0;
}

void collect_on_update(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(s->sites, msg, s->opt.run_id, s->rnd.in_round, s->rnd.round);
    if (!site)
        return;
    if (s->sa.round) { /* the server must never see an update in the clear when secure aggregation is on */
        log_warn("site %s: plain update for round %d refused: the round uses secure aggregation", site->name,
                 s->rnd.round);
        return;
    }
    if (!site->selected || site->reported) {
        log_warn("site %s: %s update for round %d ignored", site->name, site->reported ? "duplicate" : "unrequested",
                 s->rnd.round);
        return;
    }
    site_update_t u;
    err_t e;
    size_t m = s->nas ? server_nas_site_m(s, site) : s->mod.m;
    int rc = site_msg_update(msg, m, s->cfg->compression.enabled ? &s->col.cspec : NULL, s->col.cscratch,
                             s->col.decoded, &u, &e);
    if (rc == 0) {
        site_update_bound(s->sites, site, &u);
        rc = add_update(s, site, &u, &e);
    }
    site_update_release(&u);
    if (rc < 0) {
        log_warn("site %s: update rejected: %s", site->name, e.msg);
        return;
    }
    server_add_train_stats(s, u.samples, u.loss, u.accuracy);
    site->reported = 1;
    s->rnd.bytes_up += (long long)msg->bytes;
    if (store_client_contributed(s->opt.store, s->opt.run_id, site->id, (long long)msg->bytes,
                                 (long long)(m * 4), fn_mono() - site->sent_at, &e) < 0)
        log_error("%s", e.msg);
}

int collect_aggregate(server_t *s, err_t *err)
{
    if (s->nas)
        return server_nas_aggregate(s, err);
    if (s->sa.round) {
        /* s->mod.mean holds the decoded sum of the survivors' clipped updates: an unweighted mean
         * (the server cannot weigh what it cannot see), or DP-FedAvg's fixed denominator. Under
         * DP the sum already carries the sites' distributed noise: the server adds none. */
        double denom = s->cfg->dp.enabled ? s->dp.expected : (double)s->sa.summed;
        for (size_t i = 0; i < s->mod.m; i++)
            s->mod.mean[i] = (float)(s->mod.mean[i] / denom);
        return strategy_apply_mean(s->col.strategy, s->mod.params, s->mod.mean, err);
    }
    if (s->cfg->dp.enabled) {
        int rc = dp_noise_mean(s, err);
        return rc < 0 ? rc : strategy_apply_mean(s->col.strategy, s->mod.params, s->mod.mean, err);
    }
    if (!strategy_needs_all_updates(s->col.scfg.kind)) {
        int rc = fedavg_mean(&s->col.agg, s->mod.mean, err);
        return rc < 0 ? rc : strategy_apply_mean(s->col.strategy, s->mod.params, s->mod.mean, err);
    }
    /* Robust rules: the updates in client-id order, so the result does not depend on arrival. */
    int count = sites_count(s->sites), n = 0;
    sites_site_t **order = FN_MALLOC((size_t)count * sizeof *order);
    const float **u = FN_MALLOC((size_t)count * sizeof *u);
    double *w = FN_MALLOC((size_t)count * sizeof *w);
    for (int i = 0; i < count; i++)
        if (sites_at(s->sites, i)->reported)
            order[n++] = sites_at(s->sites, i);
    qsort(order, (size_t)n, sizeof *order, cmp_site_id);
    for (int i = 0; i < n; i++) {
        const kept_update_t *k = kept_for(s, order[i]);
        u[i] = k->update;
        w[i] = k->weight;
    }
    int rc = strategy_apply_all(s->col.strategy, s->mod.params, u, w, n, err);
    free(order);
    free(u);
    free(w);
    return rc;
}

