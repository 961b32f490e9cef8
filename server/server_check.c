/* server_check: what an experiment asks of the aggregation server (the strategy, the model for
 * its data set, privacy calibration, the combinations of features), checked before anything is
 * recorded, with errors that point into the experiment file. */
#include <math.h>
#include <stdio.h>

#include "common/features.h"
#include "server/server_int.h"

/* How many of n connected sites a draw takes: per_round, or ceil(fraction x n); at most n and,
 * when any is connected, at least one. */
int server_cohort_size(int per_round, double fraction, int n)
{
    int k = per_round ? per_round : (int)ceil(fraction * n);
    return k > n ? n : (k < 1 && n > 0) ? 1 : k;
}

/* Input shape and class count of the data set the experiment names. */
void server_dataset_dims(const config_t *cfg, int *input_dim, int *classes)
{
    if (cfg->data.csv) { /* tabular: the shape the experiment states for every site's table */
        *input_dim = cfg->data.features;
        *classes = cfg->data.classes;
        return;
    }
    *input_dim = 28 * 28; /* fashion-mnist and mnist: 28 x 28 grey images, 10 classes */
    *classes = 10;
}

int server_parse_strategy(const config_t *cfg, strategy_config_t *sc, err_t *err)
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
    int n = server_cohort_size(cfg->clients.per_round, cfg->clients.fraction, cfg->clients.count);
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
    int rc = server_parse_strategy(cfg, &sc, err);
    if (rc < 0)
        return rc;
    if (sc.kind == STRATEGY_KRUM && cfg->clients.min_fit < sc.krum_f + 3)
        return config_error_at(cfg, "strategy.byzantine", err,
                               "krum tolerating %d clients needs at least %d updates a round (clients.min_fit is %d)",
                               sc.krum_f, sc.krum_f + 3, cfg->clients.min_fit);
    engine_train_config_t tc;
    if ((rc = engine_train_config_from_json(cfg->train_json, &tc, err)) < 0)
        return config_error_at(cfg, "train", err, "%s", err->msg);
    if (cfg->nas) /* a federated search: its paths are the models (server_nas.c checks the rest) */
        return server_nas_check(cfg, err);
    int input_dim, classes;
    server_dataset_dims(cfg, &input_dim, &classes);
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
        double z, q = (double)server_cohort_size(cfg->clients.per_round, cfg->clients.fraction, cfg->clients.count) /
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
