/* features: the rules of common/features.h. One row per pair that cannot be combined: the
 * predicate, the experiment key an error points at, and the message, which says why and what
 * to use instead. Rows are checked in order; the first broken one is reported. */
#include "common/features.h"

#include <stddef.h>
#include <stdio.h>

/* The strategies whose sensitivity clipping bounds and which work on a sum of updates. */
#define SUM_STRATEGIES "fedavg, fedavgm, fedprox, fedadam, fedyogi or fedadagrad"

typedef struct rule {
    const char *path;
    int (*broken)(const features_t *f);
    void (*say)(const features_t *f, char *buf, size_t cap);
} rule_t;

static const char *strategy(const features_t *f) { return f->strategy ? f->strategy : "(robust)"; }

static int dp_robust(const features_t *f) { return f->dp && f->robust; }
static void say_dp_robust(const features_t *f, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "strategy %s cannot be combined with differential privacy (its sensitivity is not bounded by clipping); "
             "use " SUM_STRATEGIES,
             strategy(f));
}

static int secagg_robust(const features_t *f) { return f->secagg && f->robust; }
static void say_secagg_robust(const features_t *f, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "strategy %s cannot be combined with secure aggregation (it needs every update, the server sees only "
             "their sum); use " SUM_STRATEGIES,
             strategy(f));
}

static int secagg_compression(const features_t *f) { return f->secagg && f->compression; }
static void say_secagg_compression(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "cannot be combined with secure aggregation (masked inputs live in a ring where sparse or "
                       "quantized updates do not sum); remove one of the two blocks");
}

static int secagg_adaptive(const features_t *f) { return f->secagg && f->dp && f->dp_adaptive; }
static void say_secagg_adaptive(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "adaptive clipping cannot be combined with secure aggregation (it needs each update's norm); "
                       "give a fixed dp.clip");
}

/* Under DP an update is clipped once, to dp.clip: the bound both the noise and the ring
 * encoding assume, so a second, different bound would make one of them wrong. */
static int secagg_dp_clip(const features_t *f) { return f->secagg && f->dp && f->secagg_clip != f->dp_clip; }
static void say_secagg_dp_clip(const features_t *f, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "with a \"dp\" block each update is clipped once, to dp.clip (%g), the bound the distributed noise "
             "assumes; leave secure_aggregation.clip out or set it to %g (got %g)",
             f->dp_clip, f->dp_clip, f->secagg_clip);
}

/* Batch-norm running statistics travel in the federated vector (engine/model.h). Under one L2
 * clip they would take most of it (their change after an epoch is several times the weights'),
 * and noise on a running variance can push it below zero. */
static int batchnorm_dp(const features_t *f) { return f->batchnorm && f->dp; }
static void say_batchnorm_dp(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "a model with batch norm cannot be combined with differential privacy: its running statistics "
                       "would share the clip with the weights; use layer norm (\"layernorm\" layers) or a model "
                       "without normalization");
}

static int batchnorm_secagg(const features_t *f) { return f->batchnorm && f->secagg; }
static void say_batchnorm_secagg(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "a model with batch norm cannot be combined with secure aggregation: its running statistics "
                       "would share the clip with the weights; use layer norm (\"layernorm\" layers) or a model "
                       "without normalization");
}

static int relay_secagg(const features_t *f) { return f->relay && f->secagg; }
static void say_relay_secagg(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "the experiment uses secure aggregation, which a relay cannot honour: the server must receive "
                       "every site's own masked input, and a relay would have to unmask its clients' updates to "
                       "average them; connect these sites to the server directly");
}

static int relay_dp(const features_t *f) { return f->relay && f->dp; }
static void say_relay_dp(const features_t *f, char *buf, size_t cap)
{
    (void)f;
    snprintf(buf, cap, "the experiment uses differential privacy, whose clipping and accounting are per site: a "
                       "relay's aggregate would be clipped and counted as one site, so the stated guarantee would "
                       "not hold for the sites behind it; connect these sites to the server directly");
}

static int relay_robust(const features_t *f) { return f->relay && f->robust; }
static void say_relay_robust(const features_t *f, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "the experiment's strategy %s needs every client's own update, and a relay forwards only their mean; "
             "use " SUM_STRATEGIES ", or connect these sites to the server directly",
             strategy(f));
}

/* A relay's rules come first: what it cannot honour is what it must say, whatever else the
 * server has already accepted. */
static const rule_t k_rules[] = {
    {"secure_aggregation", relay_secagg, say_relay_secagg},
    {"dp", relay_dp, say_relay_dp},
    {"strategy.name", relay_robust, say_relay_robust},
    {"strategy.name", dp_robust, say_dp_robust},
    {"secure_aggregation", secagg_robust, say_secagg_robust},
    {"compression", secagg_compression, say_secagg_compression},
    {"dp.adaptive", secagg_adaptive, say_secagg_adaptive},
    {"secure_aggregation.clip", secagg_dp_clip, say_secagg_dp_clip},
    {"model", batchnorm_dp, say_batchnorm_dp},
    {"model", batchnorm_secagg, say_batchnorm_secagg},
};

void features_from_config(const config_t *cfg, features_t *f)
{
    *f = (features_t){.dp = cfg->dp.enabled,
                      .dp_adaptive = cfg->dp.adaptive,
                      .dp_clip = cfg->dp.clip,
                      .secagg = cfg->secagg.enabled,
                      .secagg_clip = cfg->secagg.clip,
                      .compression = cfg->compression.enabled};
}

int features_check(const features_t *f, const char **path, err_t *err)
{
    for (size_t i = 0; i < sizeof k_rules / sizeof k_rules[0]; i++)
        if (k_rules[i].broken(f)) {
            char msg[sizeof err->msg];
            k_rules[i].say(f, msg, sizeof msg);
            if (path)
                *path = k_rules[i].path;
            return err_set(err, FN_EINVAL, "%s", msg);
        }
    return 0;
}
