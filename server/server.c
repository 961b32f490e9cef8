#include "server/server.h"

#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/compress.h"
#include "common/features.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/dp.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "server/fedavg.h"
#include "server/secagg_round.h"
#include "server/sites.h"
#include "server/strategy.h"

/* Robust strategies keep each site's update, by the site's index in the registry. */
typedef struct kept_update {
    float *update;
    double weight;
} kept_update_t;

/* The model a round broadcasts: one copy shared by every "train" message, freed when ZeroMQ has
 * sent the last of them (the I/O thread drops references), so sending costs no copy per site. */
typedef struct broadcast {
    atomic_int refs;
    float data[];
} broadcast_t;

static void broadcast_release(void *data, void *hint)
{
    (void)data;
    broadcast_t *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

struct server {
    server_options_t opt;
    const config_t *cfg;
    sites_t *sites; /* the connected sites and the ROUTER socket they reach us on */
    engine_dataset_t test;       /* the IDX test split */
    engine_table_t test_table;   /* or a CSV one (tabular data) */
    engine_source_t test_src;    /* whichever it is; evaluated only when has_test */
    int has_test;
    int input_dim, classes;      /* the model's input size and class count */
    engine_model_t *model;
    float *params;
    size_t m;
    float *mean;
    broadcast_t *bcast; /* this round's model, while messages may still hold it */
    fedavg_t agg;
    strategy_config_t scfg;
    strategy_t *strategy;
    kept_update_t *kept; /* robust strategies: each site's update, by registry index */
    int nkept;
    /* Differential privacy (user-level DP-FedAvg, central noise). */
    double dp_z;          /* noise multiplier the run is accounted with */
    double dp_z_updates;  /* the one applied to the updates (lower when adaptive clipping spends some) */
    double dp_q;          /* sampling rate: expected cohort / clients */
    double dp_q_round;    /* this round's: higher when fewer sites are connected (round_sampling_rate) */
    double dp_expected;   /* expected cohort size, the fixed denominator */
    dp_accountant_t acct;
    dp_adaptive_clip_t clip;
    float *scratch;       /* a clipped copy of an incoming update */
    long long below;      /* updates whose norm was <= C this round (adaptive clipping) */
    int budget_reached;   /* the next round would exceed the privacy budget */
    /* With secure aggregation the noise is distributed (crypto/dp.h DDGauss): the sites add it
     * and the server none. The round's multiplier accounted, the participant count the noise
     * assumed, and the multiplier the committed sum actually carries. */
    double dp_z_round;
    uint32_t ddp_assumed;
    double ddp_z_summed;
    /* Distributed DP: this round's sums the server asked the sites to unmask (each is charged
     * to the accountant when asked for, recorded as the round's "dp_releases" metric, so a
     * retried, stopped or crashed round is never a free look at a noised sum). */
    int dp_releases, dp_releases_round;
    /* Secure aggregation: the round's driver, the attempt of this round (an aborted round is run
     * again with fresh keys), and what the last finished phases took. */
    secagg_round_t *sa;
    int sa_attempt;
    /* Random per server process, in every train message: a site that gets the same (instance,
     * run, round) twice (a copy re-sent after a reconnect) trains once, while a resumed server,
     * a new instance, gets fresh updates for the round it repeats. */
    int64_t instance;
    double sa_phase_s[4];
    uint32_t sa_summed;
    /* Seconds the current round spent collecting updates (training, or the secure-aggregation
     * phases), aggregating (and noising), and evaluating on the server's test set. */
    double phase_s[3];
    int round; /* last round completed (or, during a round, the current one) */
    int in_round;
    double train_loss_sum, train_acc_sum, train_weight;
    long long round_bytes_up, round_bytes_down;
    /* Compressed uplink: each update is decoded into `decoded` before the usual aggregation. */
    compress_spec_t cspec;
    float *decoded, *cscratch;
    /* Federated evaluation after the current round: answers summed, weighted by samples. */
    int in_eval;
    double ev_loss_sum, ev_acc_sum, ev_samples;
    int ev_answers;
};

/* Input shape and class count of each data set the experiment may name. */
/* How many of n connected sites a draw takes: per_round, or ceil(fraction x n); at most n and,
 * when any is connected, at least one. */
static int cohort_size(int per_round, double fraction, int n)
{
    int k = per_round ? per_round : (int)ceil(fraction * n);
    return k > n ? n : (k < 1 && n > 0) ? 1 : k;
}

static void dataset_dims(const config_t *cfg, int *input_dim, int *classes)
{
    if (cfg->data.csv) { /* tabular: the shape the experiment states for every site's table */
        *input_dim = cfg->data.features;
        *classes = cfg->data.classes;
        return;
    }
    *input_dim = 28 * 28; /* fashion-mnist and mnist: 28 x 28 grey images, 10 classes */
    *classes = 10;
}

/* The server's test set: the IDX test split, or for tabular data the optional data.test CSV
 * (checked against data.features and data.classes). Without one the server evaluates nothing
 * itself and relies on federated evaluation. */
static int load_test_set(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    dataset_dims(c, &s->input_dim, &s->classes);
    int rc;
    if (!c->data.csv) {
        if ((rc = engine_fmnist_load(c->data.path, "test", &s->test, err)) < 0)
            return rc;
        s->test_src = engine_source_from_dataset(&s->test);
        s->input_dim = s->test.rows * s->test.cols;
        s->classes = s->test.num_classes;
        s->has_test = 1;
        return 0;
    }
    if (!c->data.test) {
        log_info("no test set (data.test): the model is measured by federated evaluation only");
        return 0;
    }
    if ((rc = engine_csv_load(c->data.test, &s->test_table, err)) < 0)
        return config_error_at(c, "data.test", err, "%s", err->msg);
    if (s->test_table.dim != c->data.features)
        return config_error_at(c, "data.test", err,
                               "%s has %d feature columns (and the label), but data.features is %d",
                               c->data.test, s->test_table.dim, c->data.features);
    if (s->test_table.num_classes > c->data.classes)
        return config_error_at(c, "data.test", err, "%s has label %d, but data.classes is %d (labels 0..%d)",
                               c->data.test, s->test_table.num_classes - 1, c->data.classes, c->data.classes - 1);
    s->test_src = engine_source_from_table(&s->test_table);
    s->has_test = 1;
    return 0;
}

static int parse_strategy(const config_t *cfg, strategy_config_t *sc, err_t *err)
{
    char key[64], path[96];
    int rc = strategy_config_from_json(cfg->strategy, sc, key, sizeof key, err);
    if (rc < 0) {
        snprintf(path, sizeof path, "strategy.%s", key);
        return config_error_at(cfg, path, err, "%s", err->msg);
    }
    return 0;
}

/* DP with secure aggregation: the sites add distributed noise, and the ring must hold the
 * selected sites' updates plus that noise. Refused here, before any site starts. */
static int check_distributed_dp(const config_t *cfg, size_t m, err_t *err)
{
    int n = cohort_size(cfg->clients.per_round, cfg->clients.fraction, cfg->clients.count);
    double z = cfg->dp.noise_multiplier;
    if (z < 0 && dp_calibrate_sigma((double)n / cfg->clients.count, cfg->rounds, cfg->dp.delta,
                                    cfg->dp.target_epsilon, &z, err) < 0)
        return config_error_at(cfg, "dp.target_epsilon", err, "%s", err->msg);
    secagg_round_config_t rc = {.threshold = (uint32_t)cfg->secagg.threshold, .bits = (uint32_t)cfg->secagg.bits,
                                .clip = cfg->dp.clip, .dp = 1, .dp_sigma = z,
                                .dp_min_summed = (uint32_t)cfg->clients.min_fit};
    dp_ddp_plan_t plan;
    if (secagg_round_plan_dp(&rc, (uint32_t)n, (uint32_t)m, &plan, err) < 0)
        return config_error_at(cfg, "secure_aggregation", err, "%s", err->msg);
    return 0;
}

int server_check_config(const config_t *cfg, err_t *err)
{
    strategy_config_t sc;
    int rc = parse_strategy(cfg, &sc, err);
    if (rc < 0)
        return rc;
    if (sc.kind == STRATEGY_KRUM && cfg->clients.min_fit < sc.krum_f + 3)
        return config_error_at(cfg, "strategy.byzantine", err,
                               "krum tolerating %d clients needs at least %d updates a round (clients.min_fit is %d)",
                               sc.krum_f, sc.krum_f + 3, cfg->clients.min_fit);
    engine_train_config_t tc;
    if ((rc = engine_train_config_from_json(cfg->train_json, &tc, err)) < 0)
        return config_error_at(cfg, "train", err, "%s", err->msg);
    int input_dim, classes;
    dataset_dims(cfg, &input_dim, &classes);
    engine_model_t *m;
    if ((rc = engine_model_create(cfg->model, input_dim, classes, &m, err)) < 0)
        return config_error_at(cfg, "model", err, "%s", err->msg);
    size_t federated = engine_model_num_federated(m);
    /* The combinations the experiment file alone could not rule out: the strategy's kind, and
     * a model that federates buffers (batch-norm statistics). */
    features_t f;
    const char *path;
    features_from_config(cfg, &f);
    f.robust = strategy_needs_all_updates(sc.kind);
    f.strategy = strategy_name(sc.kind);
    f.batchnorm = federated > engine_model_num_params(m);
    engine_model_free(m);
    if ((rc = features_check(&f, &path, err)) < 0)
        return config_error_at(cfg, path, err, "%s", err->msg);
    if (cfg->dp.enabled && cfg->dp.target_epsilon > 0 && cfg->dp.noise_multiplier < 0) {
        double z, q = (double)cohort_size(cfg->clients.per_round, cfg->clients.fraction, cfg->clients.count) /
                      cfg->clients.count;
        if ((rc = dp_calibrate_sigma(q, cfg->rounds, cfg->dp.delta, cfg->dp.target_epsilon, &z, err)) < 0)
            return config_error_at(cfg, "dp.target_epsilon", err, "%s", err->msg);
    }
    if (cfg->dp.enabled && cfg->secagg.enabled)
        return check_distributed_dp(cfg, federated, err);
    return 0;
}

/* DP-FedAvg (McMahan et al. 2018): every update clipped to C, averaged over the expected cohort,
 * Gaussian noise of std z*C on the sum. The cohort is a fixed number of the clients, accounted
 * as Poisson sampling with q = cohort / clients (the usual approximation, stated in the logs). */
static int setup_dp(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    /* The cohort select_sites draws when every site is connected (fraction: rounded up). */
    s->dp_expected = cohort_size(c->clients.per_round, c->clients.fraction, c->clients.count);
    s->dp_q = s->dp_expected / c->clients.count;
    int rc;
    if (c->dp.noise_multiplier >= 0)
        s->dp_z = c->dp.noise_multiplier;
    else if ((rc = dp_calibrate_sigma(s->dp_q, c->rounds, c->dp.delta, c->dp.target_epsilon, &s->dp_z, err)) < 0)
        return rc;
    s->dp_z_updates = s->dp_z;
    if (c->dp.adaptive) {
        double sigma_b = c->dp.count_noise > 0 ? c->dp.count_noise : s->dp_expected / 20;
        if ((rc = dp_adaptive_clip_init(&s->clip, c->dp.clip, c->dp.quantile, c->dp.clip_lr, sigma_b, s->dp_expected,
                                        err)) < 0 ||
            (rc = dp_adaptive_noise_multiplier(s->dp_z, sigma_b, &s->dp_z_updates, err)) < 0)
            return config_error_at(c, "dp.adaptive", err, "%s", err->msg);
    } else {
        s->clip.clip = c->dp.clip;
    }
    dp_accountant_init(&s->acct);
    s->scratch = FN_MALLOC(s->m * sizeof *s->scratch);
    log_info("differential privacy: clip %g%s, noise multiplier %.4f, q = %d/%d = %.4f (a fixed cohort accounted as "
             "Poisson sampling), delta %g%s",
             c->dp.clip, c->dp.adaptive ? " (adaptive)" : "", s->dp_z, (int)s->dp_expected, c->clients.count, s->dp_q,
             c->dp.delta, c->dp.target_epsilon > 0 ? "" : ", no budget");
    if (c->secagg.enabled)
        log_info("differential privacy noise: distributed discrete Gaussian, each site adds its share before "
                 "masking (Kairouz et al. 2021), assuming the fewest inputs a round commits with; the server adds "
                 "no central noise");
    else
        log_info("differential privacy noise: central Gaussian of std %.4g on the sum, added by the server",
                 s->dp_z_updates * s->clip.clip);
    return 0;
}

/* Checkpoint layout: the parameters, then each optimizer state vector; meta says which. */
/* The accountant on resume: one step per committed round at the sampling rate that round
 * recorded ("sampling_rate"; the configured q for runs from before it was recorded) and the
 * configured multiplier. With distributed noise, a step per unmask request instead ("dp_releases":
 * the committed rounds' and any the killed server asked for after its last commit); the round
 * that runs next keeps counting its releases on top of those already stored for it. */
static int replay_accountant(server_t *s, int committed, err_t *err)
{
    json_t *q_rows = NULL, *rel_rows = NULL;
    int rc = store_metrics_json(s->opt.store, s->opt.run_id, "sampling_rate", 0, &q_rows, err);
    if (rc == 0 && s->cfg->secagg.enabled)
        rc = store_metrics_json(s->opt.store, s->opt.run_id, "dp_releases", 0, &rel_rows, err);
    int last = committed + 1;
    double *q = rc == 0 ? FN_MALLOC((size_t)(last + 1) * sizeof *q) : NULL;
    int *steps = rc == 0 ? FN_CALLOC((size_t)(last + 1), sizeof *steps) : NULL;
    size_t i;
    json_t *row;
    for (int r = 0; q && r <= last; r++) {
        q[r] = s->dp_q;
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
            s->dp_releases_round = (int)r;
            s->dp_releases = n;
            extra = n;
        }
    }
    if (s->cfg->secagg.enabled) /* runs from before releases were recorded: one per committed round */
        for (int r = 1; r <= committed; r++)
            if (steps[r] < 1)
                steps[r] = 1;
    if (extra > 0)
        log_warn("resuming: %lld secure-aggregation sum(s) were asked for after the last committed round; epsilon "
                 "counts them", extra);
    for (int r = 1; rc == 0 && r <= last; r++)
        if (steps[r] > 0)
            rc = dp_accountant_add(&s->acct, q[r], s->dp_z, steps[r], err);
    free(q);
    free(steps);
    json_decref(q_rows);
    json_decref(rel_rows);
    return rc;
}

static int load_checkpoint(server_t *s, err_t *err)
{
    store_checkpoint_t ck;
    int round, rc = store_checkpoint_load(s->opt.store, s->opt.run_id, &ck, &round, err);
    if (rc < 0)
        return rc;
    json_t *meta = json_loads(ck.meta, 0, NULL);
    const char *strategy = json_string_value(json_object_get(meta, "strategy"));
    int nstate = strategy_state_count(s->strategy);
    if (ck.params_len != s->m * sizeof(float) || ck.state_len != (size_t)nstate * s->m * sizeof(float) ||
        !strategy || strcmp(strategy, strategy_name(s->scfg.kind)) != 0) {
        rc = err_set(err, FN_EINVAL,
                     "the checkpoint of run %lld (round %d, %zu bytes, strategy %s) does not fit this experiment "
                     "(%zu parameters, strategy %s)",
                     (long long)s->opt.run_id, round, ck.params_len, strategy ? strategy : "?", s->m,
                     strategy_name(s->scfg.kind));
    } else {
        memcpy(s->params, ck.params, ck.params_len);
        for (int i = 0; i < nstate; i++)
            memcpy(strategy_state(s->strategy, i), (const float *)ck.state + (size_t)i * s->m, s->m * sizeof(float));
        strategy_set_steps(s->strategy, json_integer_value(json_object_get(meta, "steps")));
        s->round = round;
        if (s->cfg->dp.enabled) {
            /* Every round so far was one step at (q, z): replaying rebuilds the accountant. */
            json_t *clip = json_object_get(meta, "clip");
            if (json_is_number(clip))
                s->clip.clip = json_number_value(clip);
            rc = replay_accountant(s, round, err);
        }
        log_info("resuming run %lld after round %d", (long long)s->opt.run_id, round);
    }
    json_decref(meta);
    store_checkpoint_free(&ck);
    return rc;
}

static int on_message(void *owner, wire_msg_t *msg);
static void on_disconnect(void *owner, sites_site_t *site);

int server_create(const server_options_t *opt, server_t **out, err_t *err)
{
    *out = NULL;
    server_t *s = FN_CALLOC(1, sizeof *s);
    s->opt = *opt;
    s->cfg = opt->cfg;
    int rc;
    sites_options_t so = {.keys_dir = opt->keys_dir, .role = "server", .noun = "site",
                          .on_message = on_message, .on_disconnect = on_disconnect, .owner = s};
    if ((rc = sites_open(&so, &s->sites, err)) < 0)
        goto fail;
    if ((rc = parse_strategy(s->cfg, &s->scfg, err)) < 0)
        goto fail;

    if ((rc = load_test_set(s, err)) < 0)
        goto fail;
    if ((rc = engine_model_create(s->cfg->model, s->input_dim, s->classes, &s->model, err)) < 0) {
        config_error_at(s->cfg, "model", err, "%s", err->msg);
        goto fail;
    }
    engine_model_init(s->model, s->cfg->seed);
    s->params = engine_model_params(s->model);
    s->m = engine_model_num_federated(s->model); /* parameters, then batch-norm statistics */
    s->mean = FN_MALLOC(s->m * sizeof *s->mean);
    if (s->cfg->compression.enabled) {
        s->cspec = (compress_spec_t){.quantize = s->cfg->compression.quantize, .topk = s->cfg->compression.topk};
        s->decoded = FN_MALLOC(s->m * sizeof *s->decoded);
        s->cscratch = FN_MALLOC(s->m * sizeof *s->cscratch);
    }
    if ((rc = fedavg_init(&s->agg, s->m, err)) < 0 || (rc = strategy_create(&s->scfg, s->m, &s->strategy, err)) < 0)
        goto fail;
    strategy_set_trained(s->strategy, engine_model_num_params(s->model));
    uint32_t inst = 0;
    if (getrandom(&inst, sizeof inst, 0) != sizeof inst)
        inst = (uint32_t)getpid() ^ (uint32_t)(fn_now() * 1e6);
    s->instance = 1 + (int64_t)(inst & 0x3fffffff);
    if (s->cfg->dp.enabled && (rc = setup_dp(s, err)) < 0)
        goto fail;
    if (opt->resume && (rc = load_checkpoint(s, err)) < 0)
        goto fail;

    /* Larger than any legal message (the model plus headroom): a peer cannot make us buffer more.
     * Two I/O threads share CURVE encryption of the broadcast and decryption of the updates. */
    int64_t maxmsg = (int64_t)s->m * 4 + WIRE_MAX_HEADER + 4096;
    if ((rc = sites_listen(s->sites, opt->bind, s->cfg->server.heartbeat, maxmsg, 2, err)) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    server_free(s);
    return rc;
}

const char *server_endpoint(const server_t *s) { return sites_endpoint(s->sites); }

static long long send_to(server_t *s, sites_site_t *site, json_t *hdr, const wire_frame_t *frames, int n)
{
    return sites_send(s->sites, site, s->opt.run_id, hdr, frames, n);
}

/* What a site holds out of training for federated evaluation: a fraction, and a seed fixed for
 * the run and the site, so the split is the same every round (and after a resume). */
static json_t *holdout_info(const server_t *s, const sites_site_t *site)
{
    json_int_t seed = (json_int_t)(rng_derive(s->cfg->seed ^ 0x401d07ULL, (uint64_t)site->id) >> 1);
    return json_pack("{s:f, s:I}", "fraction", s->cfg->evaluate.holdout, "seed", seed);
}

static long long send_train(server_t *s, sites_site_t *site)
{
    atomic_fetch_add(&s->bcast->refs, 1);
    wire_frame_t frame = {"model", WIRE_F32, s->bcast->data, s->m, broadcast_release, s->bcast};
    /* Seeds derive from (seed, round, site): no generator state to save, and a resumed run
     * trains exactly as an uninterrupted one would. */
    json_int_t seed = (json_int_t)(rng_derive(s->cfg->seed, (uint64_t)s->round * 1000003u + (uint64_t)site->id) >> 1);
    json_t *hdr = json_pack("{s:s, s:i, s:i, s:i, s:f, s:I, s:O, s:i, s:i}", "type", "train", "round", s->round,
                            "epochs", s->cfg->train.epochs, "batch_size", s->cfg->train.batch_size, "lr",
                            s->cfg->train.lr, "seed", seed, "arch", s->cfg->model, "input_dim",
                            s->input_dim, "num_classes", s->classes);
    json_object_set(hdr, "train", (json_t *)s->cfg->train_json);
    json_object_set_new(hdr, "instance", json_integer(s->instance));
    /* A relay (server/relay.h) reads these: it refuses strategies that need every update and
     * finishes its own round within the server's deadline. */
    json_object_set_new(hdr, "strategy", json_string(strategy_name(s->scfg.kind)));
    json_object_set_new(hdr, "round_timeout", json_real(s->cfg->server.round_timeout));
    if (s->scfg.kind == STRATEGY_FEDPROX)
        json_object_set_new(hdr, "prox_mu", json_real(s->scfg.prox_mu));
    if (s->cfg->dp.enabled)
        json_object_set_new(hdr, "clip", json_real(s->clip.clip));
    if (s->sa)
        json_object_set_new(hdr, "secagg", secagg_round_info(s->sa, (uint32_t)site->id));
    if (s->cfg->evaluate.enabled)
        json_object_set_new(hdr, "holdout", holdout_info(s, site));
    if (s->cfg->compression.enabled) {
        json_t *c = json_object();
        if (s->cspec.quantize)
            json_object_set_new(c, "quantize", json_integer(s->cspec.quantize));
        if (s->cspec.topk > 0)
            json_object_set_new(c, "topk", json_real(s->cspec.topk));
        if (s->cfg->compression.error_feedback)
            json_object_set_new(c, "error_feedback", json_true());
        json_object_set_new(hdr, "compression", c);
    }
    site->sent_at = fn_mono();
    return send_to(s, site, hdr, &frame, 1);
}

static void on_hello(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = sites_hello(s->sites, msg);
    if (!site)
        return;
    err_t e;
    if (store_client_upsert(s->opt.store, s->opt.run_id, site->id, site->name, site->public_z85, site->samples,
                            "joined", &e) < 0)
        log_error("%s", e.msg);
    json_t *hdr = json_pack("{s:s, s:i, s:i}", "type", "welcome", "client_id", site->id, "rounds", s->cfg->rounds);
    send_to(s, site, hdr, NULL, 0);
    /* A selected site that lost its connection mid-round gets the round's model again. */
    if (s->in_round && site->selected && !site->reported &&
        (!s->sa || secagg_round_expects(s->sa, (uint32_t)site->id)) &&
        (!s->sa || secagg_round_phase(s->sa) == SECAGG_PHASE_ADVERT)) {
        site->lost = 0;
        long long sent = send_train(s, site);
        if (sent > 0)
            s->round_bytes_down += sent;
    }
}

/* The frames of a compressed update (common/compress.h), in the order the header's "frames"
 * names them: top-k sends "indices" (uint32) first; then "values" (float32), or "codes" (uint8)
 * and "scales" (float32) when quantized. The encoding must be the one the experiment asked for. */
/* A frame's data where 4-byte values may be read: ZeroMQ may pack small frames of one message
 * into a shared buffer at any offset (a "scales" frame after an odd count of uint8 codes), so a
 * misaligned one is copied into *owned (freed by the caller). */
static const void *aligned4(const void *p, size_t count, void **owned)
{
    if (!p || ((uintptr_t)p & 3) == 0)
        return p;
    *owned = FN_MALLOC(count ? 4 * count : 1);
    memcpy(*owned, p, 4 * count);
    return *owned;
}

static int decode_update(server_t *s, const wire_msg_t *msg, err_t *err)
{
    const uint32_t *idx = NULL;
    const float *values = NULL, *scales = NULL;
    const uint8_t *codes = NULL;
    size_t nidx = 0, nvalues = 0, ncodes = 0, nscales = 0;
    int f = 0, want = (s->cspec.topk > 0) + (s->cspec.quantize ? 2 : 1);
    if (msg->nframes != want)
        return err_set(err, FN_EPROTO, "%d frames (the experiment's compression needs %d)", msg->nframes, want);
    if (s->cspec.topk > 0 && !(idx = wire_frame_data(msg, f++, WIRE_U32, &nidx)))
        return err_set(err, FN_EPROTO, "frame 0 is not the uint32 indices");
    if (s->cspec.quantize) {
        codes = wire_frame_data(msg, f++, WIRE_U8, &ncodes);
        scales = wire_frame_data(msg, f++, WIRE_F32, &nscales);
        if (!codes || !scales)
            return err_set(err, FN_EPROTO, "expected uint8 codes and float32 scales");
    } else if (!(values = wire_frame_data(msg, f++, WIRE_F32, &nvalues))) {
        return err_set(err, FN_EPROTO, "expected float32 values");
    }
    void *own[3] = {NULL, NULL, NULL};
    idx = aligned4(idx, nidx, &own[0]);
    values = aligned4(values, nvalues, &own[1]);
    scales = aligned4(scales, nscales, &own[2]);
    int rc = compress_decode(&s->cspec, s->m, idx, nidx, values, nvalues, codes, ncodes, scales, nscales, s->cscratch,
                             s->decoded, err);
    for (int i = 0; i < 3; i++)
        free(own[i]);
    return rc;
}

static kept_update_t *kept_for(server_t *s, const sites_site_t *site)
{
    int i = sites_index(s->sites, site);
    if (i >= s->nkept) {
        int n = sites_count(s->sites);
        s->kept = realloc(s->kept, (size_t)n * sizeof *s->kept);
        FN_CHECK(s->kept);
        memset(s->kept + s->nkept, 0, (size_t)(n - s->nkept) * sizeof *s->kept);
        s->nkept = n;
    }
    return &s->kept[i];
}

static void on_update(server_t *s, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    sites_site_t *site = sites_find(s->sites, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    if (!site || run != s->opt.run_id || !s->in_round || round != s->round) {
        log_warn("site %s: update for run %lld round %lld ignored (now: run %lld round %d)", name, run, round,
                 (long long)s->opt.run_id, s->round);
        return;
    }
    site->fd = msg->srcfd;
    if (s->sa) { /* the server must never see an update in the clear when secure aggregation is on */
        log_warn("site %s: plain update for round %d refused: the round uses secure aggregation", name, s->round);
        return;
    }
    if (!site->selected || site->reported) {
        log_warn("site %s: %s update for round %d ignored", name, site->reported ? "duplicate" : "unrequested",
                 s->round);
        return;
    }
    size_t count = 0;
    const float *upd;
    err_t e;
    if (s->cfg->compression.enabled) {
        if (decode_update(s, msg, &e) < 0) {
            log_warn("site %s: compressed update rejected: %s", name, e.msg);
            return;
        }
        upd = s->decoded;
        count = s->m;
    } else {
        upd = wire_frame_data(msg, 0, WIRE_F32, &count);
        if (upd && ((uintptr_t)upd & 3) && count == s->m) { /* a small message packed at an odd offset */
            if (!s->decoded)
                s->decoded = FN_MALLOC(s->m * sizeof *s->decoded);
            memcpy(s->decoded, upd, count * sizeof *upd);
            upd = s->decoded;
        }
    }
    long long samples = wire_get_int(msg, "samples", -1);
    if (!upd || count != s->m || samples < 1 || samples > FN_MAX_SAMPLES) {
        log_warn("site %s: update rejected: expected %zu float32 values and a sample count, got %zu values and %lld "
                 "samples",
                 name, s->m, upd ? count : 0, samples);
        return;
    }
    if (strategy_needs_all_updates(s->scfg.kind)) {
        for (size_t i = 0; i < count; i++)
            if (!isfinite(upd[i])) {
                log_warn("site %s: update rejected: value %zu is not finite", name, i);
                return;
            }
        kept_update_t *k = kept_for(s, site);
        if (!k->update)
            k->update = FN_MALLOC(s->m * sizeof *k->update);
        memcpy(k->update, upd, s->m * sizeof *upd);
        k->weight = (double)samples;
        s->agg.count++; /* counts arrivals; the robust rule reads the copies */
    } else if (s->cfg->dp.enabled) {
        /* Clip here too: the guarantee must not depend on the client having clipped. Every
         * client weighs the same (1): sample-weighted means have unbounded sensitivity. */
        double norm;
        memcpy(s->scratch, upd, s->m * sizeof *upd);
        if (dp_clip_l2(s->scratch, s->m, s->clip.clip, &norm, &e) < 0 ||
            fedavg_add(&s->agg, s->scratch, s->m, 1.0, &e) < 0) {
            log_warn("site %s: update rejected: %s", name, e.msg);
            return;
        }
        s->below += norm <= s->clip.clip;
    } else if (fedavg_add(&s->agg, upd, count, (double)samples, &e) < 0) {
        log_warn("site %s: update rejected: %s", name, e.msg);
        return;
    }
    json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
    if (json_is_number(loss) && json_is_number(acc) && isfinite(json_number_value(loss))) {
        s->train_loss_sum += samples * json_number_value(loss);
        s->train_acc_sum += samples * json_number_value(acc);
        s->train_weight += samples;
    }
    site->reported = 1;
    s->round_bytes_up += (long long)msg->bytes;
    double latency = fn_mono() - site->sent_at;
    if (store_client_contributed(s->opt.store, s->opt.run_id, site->id, (long long)msg->bytes,
                                 (long long)(s->m * 4), latency, &e) < 0)
        log_error("%s", e.msg);
}

/* A site that cannot take part (a relay asked for a mode it cannot honour, or whose clients all
 * missed its deadline) says why: logged, and the round stops waiting for it. */
static void on_refuse(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = sites_find(s->sites, msg->user_id);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    if (!site || run != s->opt.run_id || round != s->round) {
        log_warn("site %s: refusal for run %lld round %lld ignored (now: run %lld round %d)", msg->user_id, run, round,
                 (long long)s->opt.run_id, s->round);
        return;
    }
    /* The reason is the peer's text: one line of printable ASCII in the log, at most 200 bytes. */
    char why[201] = "(no reason given)";
    const char *reason = wire_get_str(msg, "reason");
    if (reason) {
        size_t i = 0;
        for (; reason[i] && i < sizeof why - 1; i++)
            why[i] = reason[i] >= 0x20 && reason[i] < 0x7f ? reason[i] : '?';
        why[i] = '\0';
    }
    log_warn("site %s refused round %lld: %s", msg->user_id, round, why);
    site->fd = msg->srcfd;
    if (s->in_round && site->selected && !site->reported)
        site->lost = 1;
    else if (s->in_eval)
        site->eval_pending = 0;
}

/* A site's answer to "evaluate": its loss and accuracy on its held-out samples. */
static void on_eval_result(server_t *s, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    sites_site_t *site = sites_find(s->sites, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    long long samples = wire_get_int(msg, "samples", -1);
    json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
    if (!site || run != s->opt.run_id || !s->in_eval || round != s->round || !site->eval_pending) {
        log_warn("site %s: eval_result for run %lld round %lld ignored (not asked for)", name, run, round);
        return;
    }
    site->fd = msg->srcfd;
    if (samples < 0 || samples > FN_MAX_SAMPLES || !json_is_number(loss) || !json_is_number(acc) ||
        !isfinite(json_number_value(loss)) || !(json_number_value(acc) >= 0 && json_number_value(acc) <= 1)) {
        log_warn("site %s: malformed eval_result for round %d dropped", name, s->round);
        return;
    }
    site->eval_pending = 0;
    s->ev_answers++;
    s->ev_samples += (double)samples;
    s->ev_loss_sum += (double)samples * json_number_value(loss);
    s->ev_acc_sum += (double)samples * json_number_value(acc);
}

/* A secure-aggregation message: checked against the run, the round and its open phase, then
 * handed to the driver; anything wrong is dropped and logged. */
static void on_sa(server_t *s, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    sites_site_t *site = sites_find(s->sites, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    long long rid = wire_get_int(msg, "sa_round", -1);
    if (!site || run != s->opt.run_id || !s->in_round || !s->sa || round != s->round ||
        (uint64_t)rid != secagg_round_rid(s->sa)) {
        log_warn("site %s: %s for run %lld round %lld ignored (now: run %lld round %d%s)", name, msg->type, run, round,
                 (long long)s->opt.run_id, s->round, s->sa ? "" : ", no secure aggregation in progress");
        return;
    }
    site->fd = msg->srcfd;
    size_t len = 0;
    const uint8_t *data = wire_frame_data(msg, 0, WIRE_U8, &len);
    err_t e;
    if (!data) {
        log_warn("site %s: %s without its uint8 secagg frame dropped", name, msg->type);
        return;
    }
    if (secagg_round_add(s->sa, (uint32_t)site->id, msg->type, data, len, &e) < 0) {
        log_warn("site %s: %s dropped: %s", name, msg->type, e.msg);
        return;
    }
    s->round_bytes_up += (long long)msg->bytes;
    if (strcmp(msg->type, "sa_advert") == 0) {
        long long samples = wire_get_int(msg, "samples", -1);
        json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
        if (samples >= 1 && samples <= FN_MAX_SAMPLES && json_is_number(loss) && json_is_number(acc) &&
            isfinite(json_number_value(loss))) {
            s->train_loss_sum += samples * json_number_value(loss);
            s->train_acc_sum += samples * json_number_value(acc);
            s->train_weight += samples;
        }
    } else if (strcmp(msg->type, "sa_masked") == 0) {
        site->reported = 1;
        if (store_client_contributed(s->opt.store, s->opt.run_id, site->id, (long long)msg->bytes,
                                     (long long)(s->m * 4), fn_mono() - site->sent_at, &e) < 0)
            log_error("%s", e.msg);
    }
}

/* A connection closed or stopped answering heartbeats: the registry has marked it gone. */
static void on_disconnect(void *owner, sites_site_t *site)
{
    server_t *s = owner;
    if (s->in_round && site->selected && s->sa && site->reported) {
        site->lost = 1; /* its masked input is in; it cannot answer the unmasking request */
        log_warn("site %s disconnected during round %d after sending its masked input", site->name, s->round);
    } else if (s->in_round && site->selected && !site->reported) {
        site->lost = 1;
        log_warn("site %s disconnected during round %d; the round goes on without it", site->name, s->round);
    } else {
        log_info("site %s disconnected", site->name);
    }
    store_client_status(s->opt.store, s->opt.run_id, site->id, "disconnected", NULL);
}

static int on_message(void *owner, wire_msg_t *msg)
{
    server_t *s = owner;
    if (strcmp(msg->type, "hello") == 0)
        on_hello(s, msg);
    else if (strcmp(msg->type, "update") == 0)
        on_update(s, msg);
    else if (strcmp(msg->type, "eval_result") == 0)
        on_eval_result(s, msg);
    else if (strcmp(msg->type, "refuse") == 0)
        on_refuse(s, msg);
    else if (strncmp(msg->type, "sa_", 3) == 0)
        on_sa(s, msg);
    else
        return -1;
    return 0;
}

/* Receives and handles every message waiting, or waits up to timeout_ms for one. */
static void pump(server_t *s, int timeout_ms) { sites_pump(s->sites, timeout_ms); }

static int stopped(const server_t *s) { return s->opt.stop && *s->opt.stop; }

static int connected_count(const server_t *s) { return sites_connected(s->sites, NULL); }

/* Records what the server is doing now for the dashboard (runs.phase; web/ pushes a
 * round_phase event when it changes). A failed write is logged: the round goes on. */
static void set_phase(server_t *s, int round, const char *phase)
{
    err_t e;
    if (store_run_set_phase(s->opt.store, s->opt.run_id, round, phase, &e) < 0)
        log_warn("%s", e.msg);
}

/* Waits until `want` sites are connected (or the timeout passes with at least min_fit). */
static int wait_for_sites(server_t *s, int want, err_t *err)
{
    if (connected_count(s) >= want)
        return 0;
    double deadline = fn_mono() + s->cfg->server.register_timeout;
    set_phase(s, s->round + 1, "waiting");
    log_info("waiting for %d sites at %s (%d connected)", want, server_endpoint(s), connected_count(s));
    while (connected_count(s) < want && fn_mono() < deadline && !stopped(s))
        pump(s, 200);
    if (stopped(s))
        return err_set(err, FN_ESTATE, "stopped while waiting for sites");
    int n = connected_count(s);
    if (n < s->cfg->clients.min_fit)
        return err_set(err, FN_ETIMEOUT,
                       "only %d of %d sites connected within %.0f s (at least %d needed); check that the clients can "
                       "reach %s and that their keys are on the allow-list",
                       n, want, s->cfg->server.register_timeout, s->cfg->clients.min_fit, server_endpoint(s));
    if (n < want)
        log_warn("going on with %d of %d sites", n, want);
    return 0;
}

static int cmp_site_id(const void *a, const void *b)
{
    return (*(sites_site_t *const *)a)->id - (*(sites_site_t *const *)b)->id;
}

/* A reproducible draw among the connected sites: sorted by id, then a partial shuffle seeded by
 * (seed ^ salt, round), so the choice needs no saved generator state. Draws per_round sites, or
 * (per_round 0) ceil(fraction x connected), at least one when any is connected; they are the
 * first *k of the returned array (freed by the caller). */
static sites_site_t **draw_connected(server_t *s, int per_round, double fraction, uint64_t salt, int *k)
{
    int count = sites_count(s->sites), n = 0;
    sites_site_t **cand = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *cand);
    for (int i = 0; i < count; i++)
        if (sites_at(s->sites, i)->connected)
            cand[n++] = sites_at(s->sites, i);
    qsort(cand, (size_t)n, sizeof *cand, cmp_site_id);
    *k = cohort_size(per_round, fraction, n);
    rng_t r;
    rng_seed(&r, rng_derive(s->cfg->seed ^ salt, (uint64_t)s->round));
    for (int i = 0; i < *k; i++) { /* partial Fisher-Yates */
        int j = i + (int)rng_below(&r, (uint64_t)(n - i));
        sites_site_t *t = cand[i];
        cand[i] = cand[j];
        cand[j] = t;
    }
    return cand;
}

/* Picks this round's sites among the connected ones. */
static int select_sites(server_t *s)
{
    for (int i = 0; i < sites_count(s->sites); i++) {
        sites_site_t *site = sites_at(s->sites, i);
        site->selected = site->reported = site->lost = 0;
    }
    int k;
    sites_site_t **cand = draw_connected(s, s->cfg->clients.per_round, s->cfg->clients.fraction, 0x5e1ec7ULL, &k);
    for (int i = 0; i < k; i++)
        cand[i]->selected = 1;
    free(cand);
    return k;
}

static int aggregate(server_t *s, err_t *err)
{
    if (s->sa) {
        /* s->mean holds the decoded sum of the survivors' clipped updates: an unweighted mean
         * (the server cannot weigh what it cannot see), or DP-FedAvg's fixed denominator. Under
         * DP the sum already carries the sites' distributed noise: the server adds none. */
        double denom = s->cfg->dp.enabled ? s->dp_expected : (double)s->sa_summed;
        for (size_t i = 0; i < s->m; i++)
            s->mean[i] = (float)(s->mean[i] / denom);
        return strategy_apply_mean(s->strategy, s->params, s->mean, err);
    }
    if (s->cfg->dp.enabled) {
        int rc = fedavg_sum_over(&s->agg, s->dp_expected, s->mean, err);
        if (rc == 0)
            rc = dp_add_gaussian_noise(s->mean, s->m, s->dp_z_updates * s->clip.clip / s->dp_expected, err);
        return rc < 0 ? rc : strategy_apply_mean(s->strategy, s->params, s->mean, err);
    }
    if (!strategy_needs_all_updates(s->scfg.kind)) {
        int rc = fedavg_mean(&s->agg, s->mean, err);
        return rc < 0 ? rc : strategy_apply_mean(s->strategy, s->params, s->mean, err);
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
    int rc = strategy_apply_all(s->strategy, s->params, u, w, n, err);
    free(order);
    free(u);
    free(w);
    return rc;
}

static int commit_round(server_t *s, const store_round_t *rec, err_t *err)
{
    int nstate = strategy_state_count(s->strategy);
    float *state = NULL;
    if (nstate) {
        state = FN_MALLOC((size_t)nstate * s->m * sizeof *state);
        for (int i = 0; i < nstate; i++)
            memcpy(state + (size_t)i * s->m, strategy_state(s->strategy, i), s->m * sizeof *state);
    }
    json_t *names = json_array();
    for (int i = 0; i < nstate; i++)
        json_array_append_new(names, json_string(strategy_state_name(s->strategy, i)));
    json_t *meta = json_pack("{s:s, s:I, s:o, s:I}", "strategy", strategy_name(s->scfg.kind), "steps",
                             (json_int_t)strategy_steps(s->strategy), "vectors", names, "params", (json_int_t)s->m);
    if (s->cfg->dp.enabled)
        json_object_set_new(meta, "clip", json_real(s->clip.clip));
    char *text = json_dumps(meta, JSON_COMPACT);
    store_checkpoint_t ck = {s->params, s->m * sizeof(float), state, (size_t)nstate * s->m * sizeof(float), text};
    int rc = store_round_commit(s->opt.store, s->opt.run_id, rec, &ck, err);
    free(text);
    json_decref(meta);
    free(state);
    return rc;
}

/* run_round's answer when secure aggregation aborted the round: nothing was committed and the
 * round runs again (fresh keys, a new round id, the sites still connected), at most
 * SECAGG_MAX_ATTEMPTS times in a row. */
#define ROUND_RETRY 1
#define SECAGG_MAX_ATTEMPTS 8

static void sa_send(void *ctx, uint32_t id, const char *type, const uint8_t *data, size_t len)
{
    server_t *s = ctx;
    for (int i = 0; i < sites_count(s->sites); i++) {
        sites_site_t *site = sites_at(s->sites, i);
        if (site->id != (int)id)
            continue;
        if (!site->connected) /* gone: it has dropped out of the protocol */
            return;
        json_t *hdr = json_pack("{s:s, s:i, s:I}", "type", type, "round", s->round, "sa_round",
                                (json_int_t)secagg_round_rid(s->sa));
        wire_frame_t f = {.name = "secagg", .dtype = WIRE_U8, .data = data, .count = len};
        long long sent = send_to(s, site, hdr, &f, 1);
        if (sent >= 0)
            s->round_bytes_down += sent;
        return;
    }
}

/* Distributed DP: the sites were just asked to unmask this round's sum. It is charged now, at
 * the multiplier the plan guarantees, and the count of such requests is stored before anything
 * else happens, so a resumed run replays every sum that may have been revealed. */
static int charge_release(server_t *s, const dp_ddp_plan_t *plan, err_t *err)
{
    int rc = dp_accountant_add(&s->acct, s->dp_q_round, dp_ddp_noise_multiplier(plan, plan->assumed), 1, err);
    if (rc < 0 || (rc = store_metric_insert(s->opt.store, s->opt.run_id, s->round, "sampling_rate", s->dp_q_round,
                                            err)) < 0)
        return rc;
    if (s->dp_releases_round != s->round) {
        s->dp_releases_round = s->round;
        s->dp_releases = 0;
    }
    s->dp_releases++;
    return store_metric_insert(s->opt.store, s->opt.run_id, s->round, "dp_releases", s->dp_releases, err);
}

/* The four phases of a secure-aggregation round. Each waits for the sites still expected (those
 * not lost) until its deadline: round_timeout for the advert, which follows local training,
 * phase_timeout for the others. On success s->mean holds the decoded sum and s->sa_summed |U3|. */
static int secagg_phases(server_t *s, err_t *err)
{
    static const char *const names[] = {"advertise_keys", "share_keys", "masked_input", "unmasking"};
    for (int phase = SECAGG_PHASE_ADVERT; phase <= SECAGG_PHASE_UNMASK; phase++) {
        set_phase(s, s->round, names[phase]);
        double start = fn_mono();
        double deadline = start + (phase == SECAGG_PHASE_ADVERT ? s->cfg->server.round_timeout
                                                                : s->cfg->server.phase_timeout);
        for (;;) {
            int waiting = 0;
            for (int i = 0; i < sites_count(s->sites); i++) {
                const sites_site_t *site = sites_at(s->sites, i);
                waiting += site->selected && !site->lost && secagg_round_expects(s->sa, (uint32_t)site->id);
            }
            if (waiting == 0 || fn_mono() >= deadline || stopped(s))
                break;
            pump(s, 100);
        }
        if (stopped(s))
            return err_set(err, FN_ESTATE, "stopped");
        int rc = secagg_round_close(s->sa, sa_send, s, s->mean, &s->sa_summed, err);
        s->sa_phase_s[phase] = fn_mono() - start;
        if (rc < 0)
            return rc;
        const dp_ddp_plan_t *plan = secagg_round_dp_plan(s->sa);
        if (phase == SECAGG_PHASE_MASKED && plan && (rc = charge_release(s, plan, err)) < 0)
            return rc; /* the unmask requests are out: from here the sum may be revealed */
        if (phase < SECAGG_PHASE_UNMASK)
            log_debug("round %d: secure aggregation phase %d closed with %u sites in %.2f s", s->round, phase,
                      secagg_round_survivors(s->sa, phase + 1), s->sa_phase_s[phase]);
    }
    return 0;
}

static int secagg_begin(server_t *s, err_t *err)
{
    int count = sites_count(s->sites);
    uint32_t *ids = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *ids), n = 0;
    for (int i = 0; i < count; i++)
        if (sites_at(s->sites, i)->selected)
            ids[n++] = (uint32_t)sites_at(s->sites, i)->id;
    const config_t *c = s->cfg;
    secagg_round_config_t rc_cfg = {.plus = c->secagg.plus,
                                    .threshold = (uint32_t)c->secagg.threshold,
                                    .neighbours = (uint32_t)c->secagg.neighbours,
                                    .bits = (uint32_t)c->secagg.bits,
                                    /* under DP the clients clip to the DP bound, which the noise assumes */
                                    .clip = c->dp.enabled && s->clip.clip < c->secagg.clip ? s->clip.clip
                                                                                            : c->secagg.clip,
                                    .dp = c->dp.enabled,
                                    .dp_sigma = s->dp_z_updates,
                                    .dp_min_summed = (uint32_t)c->clients.min_fit};
    memset(s->sa_phase_s, 0, sizeof s->sa_phase_s);
    s->sa_summed = 0;
    int rc = secagg_round_new(&rc_cfg, secagg_round_id(s->opt.run_id, s->round, s->sa_attempt), c->seed, ids, n,
                              (uint32_t)s->m, &s->sa, err);
    free(ids);
    return rc < 0 ? err_set(err, FN_ESTATE, "%s", err->msg) : 0;
}

/* Federated evaluation after round s->round: a clients_fraction sample of the connected sites
 * (seeded by (seed, round), as select_sites) measures the new model on its held-out samples;
 * the answers that arrive within round_timeout are averaged, weighted by samples. Returns the
 * number of answers (0: nothing to record). */
static int fed_evaluate(server_t *s, double *loss, double *acc, double *samples, int *asked)
{
    for (int i = 0; i < sites_count(s->sites); i++)
        sites_at(s->sites, i)->eval_pending = 0;
    int k;
    sites_site_t **cand = draw_connected(s, 0, s->cfg->evaluate.clients_fraction, 0xe7a1ULL, &k);
    s->ev_loss_sum = s->ev_acc_sum = s->ev_samples = 0;
    s->ev_answers = 0;
    s->in_eval = 1;
    *asked = 0;
    for (int i = 0; i < k; i++) {
        json_t *hdr = json_pack("{s:s, s:i, s:O, s:i, s:i}", "type", "evaluate", "round", s->round, "arch",
                                s->cfg->model, "input_dim", s->input_dim, "num_classes", s->classes);
        json_object_set_new(hdr, "holdout", holdout_info(s, cand[i]));
        wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = s->params, .count = s->m};
        if (send_to(s, cand[i], hdr, &f, 1) >= 0) {
            cand[i]->eval_pending = 1;
            (*asked)++;
        }
    }
    free(cand);
    double deadline = fn_mono() + s->cfg->server.round_timeout;
    for (;;) {
        if (sites_awaiting_eval(s->sites) == 0 || fn_mono() >= deadline || stopped(s))
            break;
        pump(s, 100);
    }
    s->in_eval = 0;
    sites_close_eval(s->sites, s->round);
    if (s->ev_samples <= 0)
        return 0;
    *loss = s->ev_loss_sum / s->ev_samples;
    *acc = s->ev_acc_sum / s->ev_samples;
    *samples = s->ev_samples;
    return s->ev_answers;
}

/* The sampling rate this round is accounted at: the cohort over the sites connected now, never
 * below the configured q. A fixed cohort of k among the n sites online samples each online user
 * with probability k/n; with every site connected that is the configured per_round / count. */
static double round_sampling_rate(const server_t *s)
{
    int n = connected_count(s);
    if (n < 1)
        return s->dp_q;
    int k = cohort_size(s->cfg->clients.per_round, s->cfg->clients.fraction, n);
    double q = (double)k / n;
    if (q > s->dp_q * (1 + 1e-12)) {
        log_warn("round %d: %d of %d sites connected: privacy accounted at sampling rate %d/%d = %.4f (configured %.4f)",
                 s->round + 1, n, s->cfg->clients.count, k, n, q, s->dp_q);
        return q;
    }
    return s->dp_q;
}

static int run_round(server_t *s, store_round_t *rec, err_t *err)
{
    int want = s->cfg->clients.per_round ? s->cfg->clients.per_round : s->cfg->clients.min_fit;
    if (s->cfg->secagg.enabled && s->cfg->secagg.threshold > want) /* fewer cannot make a round */
        want = s->cfg->secagg.threshold;
    int rc = wait_for_sites(s, want, err);
    if (rc < 0)
        return rc;
    if (s->cfg->dp.enabled)
        s->dp_q_round = round_sampling_rate(s);
    if (s->cfg->dp.enabled && s->cfg->dp.target_epsilon > 0) {
        int exceed;
        double after;
        if ((rc = dp_accountant_would_exceed(&s->acct, s->dp_q_round, s->dp_z, s->cfg->dp.delta, s->cfg->dp.target_epsilon,
                                             &exceed, &after, err)) < 0)
            return rc;
        s->budget_reached = exceed;
        if (exceed)
            return err_set(err, FN_ESTATE, "privacy budget reached: round %d would take epsilon to %.4f, above the "
                           "target %g", s->round + 1, after, s->cfg->dp.target_epsilon);
    }
    s->round++;
    s->below = 0;
    memset(rec, 0, sizeof *rec);
    rec->round = s->round;
    rec->started_at = fn_now();
    double t0 = fn_mono();
    fedavg_reset(&s->agg);
    s->train_loss_sum = s->train_acc_sum = s->train_weight = 0;
    s->round_bytes_up = s->round_bytes_down = 0;
    s->in_round = 1;

    /* A snapshot: aggregation changes params while messages may still be queued. */
    if (s->bcast)
        broadcast_release(NULL, s->bcast);
    s->bcast = FN_MALLOC(sizeof *s->bcast + s->m * sizeof(float));
    atomic_init(&s->bcast->refs, 1);
    memcpy(s->bcast->data, s->params, s->m * sizeof(float));
    int selected = select_sites(s);
    secagg_round_free(s->sa);
    s->sa = NULL;
    int sa_rc = s->cfg->secagg.enabled ? secagg_begin(s, err) : 0;
    for (int i = 0; i < sites_count(s->sites) && sa_rc == 0; i++) {
        sites_site_t *site = sites_at(s->sites, i);
        if (!site->selected)
            continue;
        long long sent = send_train(s, site);
        if (sent >= 0)
            s->round_bytes_down += sent;
        else
            site->lost = 1;
    }
    double deadline = fn_mono() + s->cfg->server.round_timeout;
    if (!s->cfg->secagg.enabled)
        set_phase(s, s->round, "training");
    if (s->cfg->secagg.enabled && sa_rc == 0)
        sa_rc = secagg_phases(s, err);
    for (; !s->cfg->secagg.enabled;) {
        if (sites_awaiting_updates(s->sites) == 0 || fn_mono() >= deadline || stopped(s))
            break;
        pump(s, 100);
    }
    s->in_round = 0;
    if (stopped(s)) {
        s->round--;
        return err_set(err, FN_ESTATE, "stopped during round %d", s->round + 1);
    }
    if (s->cfg->secagg.enabled) {
        if (sa_rc == 0 && (int)s->sa_summed < s->cfg->clients.min_fit)
            sa_rc = err_set(err, FN_ESTATE, "only %u masked inputs were summed (at least %d needed)", s->sa_summed,
                            s->cfg->clients.min_fit);
        if (sa_rc < 0) {
            /* Nothing about any input was revealed (or the sum was not accepted): nothing is
             * committed and the round runs again with fresh keys. */
            log_warn("round %d (attempt %d): secure aggregation aborted: %s; the round starts again with fresh keys",
                     s->round, s->sa_attempt + 1, err->msg);
            secagg_round_free(s->sa);
            s->sa = NULL;
            s->round--;
            s->sa_attempt++;
            /* A moment for the disconnects of the sites that died to arrive before reselecting. */
            for (double until = fn_mono() + 1.0; fn_mono() < until && !stopped(s);)
                pump(s, 100);
            return ROUND_RETRY;
        }
        s->agg.count = (int)s->sa_summed;
    }
    int dropped = 0;
    for (int i = 0; i < sites_count(s->sites); i++) {
        const sites_site_t *site = sites_at(s->sites, i);
        if (site->selected && !site->reported) {
            dropped++;
            if (!site->lost)
                log_warn("site %s missed the deadline of round %d", site->name, s->round);
            store_client_status(s->opt.store, s->opt.run_id, site->id, "dropped", NULL);
        }
    }
    if (s->agg.count < s->cfg->clients.min_fit) {
        s->round--;
        return err_set(err, FN_ETIMEOUT, "round %d: only %d of %d updates arrived within %.0f s (at least %d needed)",
                       s->round + 1, s->agg.count, selected, s->cfg->server.round_timeout, s->cfg->clients.min_fit);
    }
    double t_agg = fn_mono();
    s->phase_s[0] = t_agg - t0;
    set_phase(s, s->round, "aggregating");
    if ((rc = aggregate(s, err)) < 0)
        return rc;
    double epsilon = NAN, clip_used = s->clip.clip;
    if (s->cfg->dp.enabled) {
        s->dp_z_round = s->dp_z;
        const dp_ddp_plan_t *plan = s->sa ? secagg_round_dp_plan(s->sa) : NULL;
        if (plan) { /* the multiplier the noise guarantees with the fewest inputs it assumed */
            s->dp_z_round = dp_ddp_noise_multiplier(plan, plan->assumed);
            s->ddp_assumed = plan->assumed;
            s->ddp_z_summed = dp_ddp_noise_multiplier(plan, s->sa_summed);
            log_info("round %d: distributed noise from the %u sites summed (it assumes %u): noise multiplier %.6f "
                     "accounted, %.6f carried; no central noise added",
                     s->round, s->sa_summed, plan->assumed, s->dp_z_round, s->ddp_z_summed);
        }
        /* Central noise is charged now; distributed noise was charged when the unmask was asked. */
        if ((!plan && (rc = dp_accountant_add(&s->acct, s->dp_q_round, s->dp_z_round, 1, err)) < 0) ||
            (rc = dp_accountant_epsilon(&s->acct, s->cfg->dp.delta, &epsilon, NULL, err)) < 0)
            return rc;
        if (s->cfg->dp.adaptive && (rc = dp_adaptive_clip_update(&s->clip, s->below, s->agg.count, NULL, err)) < 0)
            return rc;
    }
    /* The last round is always evaluated, so every run ends with a test accuracy. */
    double loss = NAN, acc = NAN;
    int every = s->cfg->server.evaluate_every;
    double t_eval = fn_mono();
    s->phase_s[1] = t_eval - t_agg;
    if ((every > 0 && s->round % every == 0) || s->round == s->cfg->rounds) {
        set_phase(s, s->round, "evaluating");
        if (s->has_test && (rc = engine_model_evaluate_source(s->model, &s->test_src, NULL, 0, &loss, &acc, err)) < 0)
            return rc;
    }
    s->phase_s[2] = fn_mono() - t_eval;
    rec->ended_at = fn_now();
    rec->selected = selected;
    rec->participants = s->agg.count;
    rec->dropped = dropped;
    rec->test_accuracy = acc;
    rec->test_loss = loss;
    rec->train_loss = s->train_weight > 0 ? s->train_loss_sum / s->train_weight : NAN;
    rec->train_accuracy = s->train_weight > 0 ? s->train_acc_sum / s->train_weight : NAN;
    rec->samples = (int64_t)s->train_weight;
    rec->bytes_down = s->round_bytes_down;
    rec->bytes_up = s->round_bytes_up;
    if ((rc = commit_round(s, rec, err)) < 0)
        return rc;
    {
        static const char *const names[] = {"phase_collect_s", "phase_aggregate_s", "phase_evaluate_s"};
        err_t e;
        for (int p = 0; p < 3; p++)
            if (store_metric_insert(s->opt.store, s->opt.run_id, s->round, names[p], s->phase_s[p], &e) < 0)
                log_error("%s", e.msg);
    }
    if (s->sa) {
        static const char *const names[] = {"phase_advert_s", "phase_shares_s", "phase_masked_s", "phase_unmask_s"};
        err_t e;
        int bad = 0;
        for (int p = 1; p <= 3; p++) {
            char name[32];
            snprintf(name, sizeof name, "secagg_u%d", p);
            bad |= store_metric_insert(s->opt.store, s->opt.run_id, s->round, name, secagg_round_survivors(s->sa, p),
                                       &e) < 0;
        }
        bad |= store_metric_insert(s->opt.store, s->opt.run_id, s->round, "secagg_summed", s->sa_summed, &e) < 0;
        bad |= store_metric_insert(s->opt.store, s->opt.run_id, s->round, "secagg_attempts", s->sa_attempt + 1, &e) < 0;
        for (int p = 0; p < 4; p++)
            bad |= store_metric_insert(s->opt.store, s->opt.run_id, s->round, names[p], s->sa_phase_s[p], &e) < 0;
        if (bad)
            log_error("%s", e.msg);
        secagg_round_free(s->sa);
        s->sa = NULL;
        s->sa_attempt = 0;
    }
    double fed_acc = NAN;
    if (s->cfg->evaluate.enabled && s->round % s->cfg->evaluate.every == 0 && !stopped(s)) {
        double fl = NAN, fa = NAN, fs = 0;
        set_phase(s, s->round, "federated_evaluation");
        int asked = 0, answers = fed_evaluate(s, &fl, &fa, &fs, &asked);
        err_t e;
        if (answers > 0) {
            fed_acc = fa;
            if (store_metric_insert(s->opt.store, s->opt.run_id, s->round, "fed_eval_accuracy", fa, &e) < 0 ||
                store_metric_insert(s->opt.store, s->opt.run_id, s->round, "fed_eval_loss", fl, &e) < 0 ||
                store_metric_insert(s->opt.store, s->opt.run_id, s->round, "fed_eval_samples", fs, &e) < 0)
                log_error("%s", e.msg);
        } else {
            log_warn("round %d: no held-out results arrived from the %d sites asked to evaluate", s->round, asked);
        }
    }
    if (s->cfg->dp.enabled) {
        err_t e;
        if (store_metric_insert(s->opt.store, s->opt.run_id, s->round, "epsilon", epsilon, &e) < 0 ||
            store_metric_insert(s->opt.store, s->opt.run_id, s->round, "clip", clip_used, &e) < 0 ||
            store_metric_insert(s->opt.store, s->opt.run_id, s->round, "noise_multiplier", s->dp_z_round, &e) < 0 ||
            /* distributed noise recorded its rate with the charge, at the unmask request */
            (!s->cfg->secagg.enabled &&
             store_metric_insert(s->opt.store, s->opt.run_id, s->round, "sampling_rate", s->dp_q_round, &e) < 0) ||
            (s->cfg->secagg.enabled &&
             (store_metric_insert(s->opt.store, s->opt.run_id, s->round, "ddp_assumed_clients", s->ddp_assumed, &e) <
                  0 ||
              store_metric_insert(s->opt.store, s->opt.run_id, s->round, "ddp_noise_multiplier_summed",
                                  s->ddp_z_summed, &e) < 0)))
            log_error("%s", e.msg);
    }
    if (!s->opt.quiet) {
        char eval[64] = "test acc       -  test loss      -";
        if (!isnan(acc))
            snprintf(eval, sizeof eval, "test acc %6.2f%%  test loss %.4f", 100 * acc, loss);
        char priv[48] = "", fed[40] = "";
        if (s->cfg->dp.enabled)
            snprintf(priv, sizeof priv, "  eps %.3f", epsilon);
        if (!isnan(fed_acc))
            snprintf(fed, sizeof fed, "  fed acc %6.2f%%", 100 * fed_acc);
        printf("round %3d/%-3d  %s%s  train loss %.4f  clients %d/%d%s  %.2f s\n", s->round, s->cfg->rounds, eval, fed,
               rec->train_loss, rec->participants, rec->selected, priv, fn_mono() - t0);
        fflush(stdout);
    }
    return 0;
}

int server_run(server_t *s, server_summary_t *sum, err_t *err)
{
    memset(sum, 0, sizeof *sum);
    sum->params = (int)s->m;
    sum->best_round = -1;
    sum->first_round = s->round + 1;
    double t0 = fn_mono(), round_seconds = 0;
    /* Everyone expected, before the first round; later rounds need only their own selection. */
    int rc = wait_for_sites(s, s->cfg->clients.count, err);
    while (rc == 0 && s->round < s->cfg->rounds) {
        store_round_t rec;
        rc = run_round(s, &rec, err);
        if (rc == ROUND_RETRY) {
            rc = 0;
            if (s->sa_attempt >= SECAGG_MAX_ATTEMPTS)
                rc = err_set(err, FN_ETIMEOUT, "round %d: secure aggregation aborted %d times in a row; giving up",
                             s->round + 1, s->sa_attempt);
            if (rc < 0)
                break;
            continue;
        }
        if (rc < 0)
            break;
        sum->rounds_done = s->round;
        if (!isnan(rec.test_accuracy) && (rec.test_accuracy > sum->best_accuracy || sum->best_round < 0)) {
            sum->best_accuracy = rec.test_accuracy;
            sum->best_round = rec.round;
        }
        sum->final_accuracy = rec.test_accuracy;
        sum->final_loss = rec.test_loss;
        sum->bytes_down += rec.bytes_down;
        sum->bytes_up += rec.bytes_up;
        sum->selections += rec.selected;
        round_seconds += rec.ended_at - rec.started_at;
    }
    sum->clients = sites_count(s->sites);
    if (s->cfg->dp.enabled) {
        sum->dp = 1;
        sum->delta = s->cfg->dp.delta;
        sum->noise_multiplier = s->dp_z;
        sum->clip = s->clip.clip;
        err_t e;
        if (dp_accountant_epsilon(&s->acct, s->cfg->dp.delta, &sum->epsilon, NULL, &e) < 0)
            sum->epsilon = NAN;
        if (s->budget_reached) {
            log_info("%s; ending the run", err->msg);
            snprintf(sum->note, sizeof sum->note, "%s", err->msg);
            sum->budget_reached = 1;
            rc = 0;
        }
    }
    int ran = sum->rounds_done - sum->first_round + 1;
    sum->total_seconds = fn_mono() - t0;
    sum->mean_round_seconds = ran > 0 ? round_seconds / ran : 0;
    sites_send_end(s->sites, s->opt.run_id, rc == 0 ? "done" : err->msg);
    for (int i = 0; i < sites_count(s->sites); i++)
        store_client_status(s->opt.store, s->opt.run_id, sites_at(s->sites, i)->id, "finished", NULL);
    return rc;
}

void server_free(server_t *s)
{
    if (!s)
        return;
    sites_free(s->sites);
    if (s->bcast)
        broadcast_release(NULL, s->bcast);
    secagg_round_free(s->sa);
    engine_model_free(s->model);
    engine_dataset_free(&s->test);
    engine_table_free(&s->test_table);
    fedavg_free(&s->agg);
    strategy_free(s->strategy);
    free(s->scratch);
    free(s->decoded);
    free(s->cscratch);
    for (int i = 0; i < s->nkept; i++)
        free(s->kept[i].update);
    free(s->kept);
    free(s->mean);
    free(s);
}
