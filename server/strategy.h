/* strategy: how the server turns a round's client updates into the next global model.
 * FedAvg and its server-optimizer family (FedAvgM, FedAdam, FedYogi, FedAdagrad; Hsu et al. 2019,
 * Reddi et al. 2021) work on the weighted mean update; the robust rules (coordinate-wise median,
 * trimmed mean, (multi-)Krum) need every update and so cannot run under secure aggregation. */
#ifndef FEDNAS_SERVER_STRATEGY_H
#define FEDNAS_SERVER_STRATEGY_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"

typedef enum {
    STRATEGY_FEDAVG = 0,
    STRATEGY_FEDAVGM,
    STRATEGY_FEDPROX, /* FedAvg on the server; the proximal term lives in the clients' objective */
    STRATEGY_FEDADAM,
    STRATEGY_FEDYOGI,
    STRATEGY_FEDADAGRAD,
    STRATEGY_MEDIAN,
    STRATEGY_TRIMMED_MEAN,
    STRATEGY_KRUM,
} strategy_kind_t;

typedef struct strategy_config {
    strategy_kind_t kind;
    double server_lr;   /* eta: FedAvgM, FedAdam/Yogi/Adagrad */
    double momentum;    /* FedAvgM's beta */
    double beta1, beta2;/* FedAdam/Yogi first and second moment decay (Adagrad uses beta1 only) */
    double tau;         /* adaptivity: added to sqrt(v), and v starts at tau^2 */
    double prox_mu;     /* FedProx: sent to clients */
    double trim_ratio;  /* trimmed mean: fraction cut at each end, in [0, 0.5) */
    int krum_f;         /* Krum: Byzantine clients tolerated */
    int krum_m;         /* multi-Krum: how many of the best-scored updates to average (1 = Krum) */
} strategy_config_t;

/* Fills defaults for kind (Flower's and the papers' usual values). */
void strategy_defaults(strategy_kind_t kind, strategy_config_t *c);
/* The name used in experiment files ("fedavg", "fedadam", ...), and back. */
const char *strategy_name(strategy_kind_t kind);
int strategy_parse_name(const char *name, strategy_kind_t *kind);
/* True when the rule needs each client's update (robust rules), false for mean-based ones. */
int strategy_needs_all_updates(strategy_kind_t kind);

/* Reads {"name": "fedadam", "server_lr": 0.01, ...}; obj NULL means FedAvg. On error, key_out
 * names the offending key (for the caller to locate in the experiment file). */
int strategy_config_from_json(const json_t *obj, strategy_config_t *c, char *key_out, size_t key_cap, err_t *err);

typedef struct strategy strategy_t;

int strategy_create(const strategy_config_t *c, size_t m, strategy_t **out, err_t *err);
void strategy_free(strategy_t *s);
/* Only the first `trained` of the m values are weights (the rest are batch-norm running
 * statistics, engine_model_num_federated): the server optimizer (momentum, Adam, ...) steps the
 * weights, and the statistics simply take the mean (w += mean update), as no rule meant for
 * gradients makes sense for a running variance. Default: all m are weights. */
void strategy_set_trained(strategy_t *s, size_t trained);

/* Mean-based rules: params += step(mean_update), updating the optimizer state. */
int strategy_apply_mean(strategy_t *s, float *params, const float *mean_update, err_t *err);
/* Robust rules: params += rule(updates[0..n)). Updates are in a fixed order (by client id),
 * weights are the clients' sample counts (used by none of the robust rules today). */
int strategy_apply_all(strategy_t *s, float *params, const float *const *updates, const double *weights, int n,
                       err_t *err);

/* Optimizer state for checkpoints: named vectors of m floats (e.g. "momentum", "m", "v") and
 * the step count. state_count is 0 for stateless rules. */
int strategy_state_count(const strategy_t *s);
const char *strategy_state_name(const strategy_t *s, int i);
float *strategy_state(strategy_t *s, int i);
long long strategy_steps(const strategy_t *s);
void strategy_set_steps(strategy_t *s, long long steps);

#endif
