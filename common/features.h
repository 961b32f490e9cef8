/* features: which of an experiment's features may be combined (secure aggregation, differential
 * privacy, compression, robust strategies, batch norm, relays), decided in one table of rules,
 * each with its one message. The experiment loader, the server's check and the relay all ask it,
 * each with what it knows (the loader knows neither the strategy's kind nor the model). */
#ifndef FEDNAS_COMMON_FEATURES_H
#define FEDNAS_COMMON_FEATURES_H

#include "common/config.h"
#include "common/err.h"

typedef struct features {
    int dp;              /* differential privacy */
    int dp_adaptive;     /* with adaptive clipping */
    double dp_clip;
    int secagg;          /* secure aggregation */
    double secagg_clip;  /* its clip (under DP, dp_clip when the experiment gave none) */
    int compression;     /* a compressed uplink */
    int robust;          /* the strategy needs every update (median, trimmed mean, Krum) */
    const char *strategy; /* the strategy's name, for the messages (may be NULL when !robust) */
    int batchnorm;       /* the model federates buffers (batch-norm running statistics) */
    int relay;           /* asked by a relay, which forwards one mean for all its clients */
} features_t;

/* What the experiment file alone says (robust, strategy, batchnorm and relay left 0). */
void features_from_config(const config_t *cfg, features_t *f);

/* 0 when every rule holds; else FN_EINVAL with the first broken rule's message in err and, when
 * path is not NULL, the experiment key it is about in *path (e.g. "secure_aggregation"). */
int features_check(const features_t *f, const char **path, err_t *err);

#endif
