/* server: the aggregation server. One thread runs the round state machine on a ZeroMQ ROUTER
 * socket (CURVE, allow-listed by the ZAP handler): wait for sites to register, then for each
 * round send the global model, collect updates until all arrive or the deadline passes,
 * aggregate (FedAvg), evaluate on the test set and commit the round to the run store.
 * With secure aggregation (server/secagg_round.h) the round collects masked inputs instead of
 * updates and aggregates their decoded sum: an unweighted mean; an aborted round is rerun.
 * Its concerns live in one file each; server/server_int.h is the map. */
#ifndef FEDNAS_SERVER_SERVER_H
#define FEDNAS_SERVER_SERVER_H

#include <signal.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/store.h"

typedef struct server server_t;

typedef struct server_options {
    const config_t *cfg;
    const char *bind;     /* e.g. "tcp://127.0.0.1:5555"; port "*" picks a free one */
    const char *keys_dir; /* server.key and allowed_clients, as `fednas keys init` makes them */
    store_t *store;       /* owned by the caller; the server writes rounds and clients */
    int64_t run_id;
    int resume;           /* continue run_id from its last committed round */
    volatile sig_atomic_t *stop; /* set (by a signal handler) to end the run early; may be NULL */
    int quiet;                   /* no progress lines on stdout */
} server_options_t;

typedef struct server_summary {
    int first_round;  /* 1, or the round a resumed run continued with */
    int rounds_done;
    int best_round;
    double best_accuracy;
    double final_accuracy, final_loss;
    double total_seconds, mean_round_seconds;
    long long bytes_down, bytes_up; /* all clients, all rounds */
    long long selections;           /* sites selected, summed over rounds */
    int clients;                    /* registered */
    int dp;                         /* differential privacy on: the fields below are set */
    double epsilon, delta, noise_multiplier, clip;
    int budget_reached;             /* the run ended before a round that would exceed the budget */
    char note[256];                 /* why a successful run ended early ("" when it ran every round) */
    int params;                     /* model size */
} server_summary_t;

/* Checks what the experiment asks of the server (the model for its data set, the strategy)
 * before anything is recorded; errors point into the experiment file. */
int server_check_config(const config_t *cfg, err_t *err);

/* Loads the test set and keys, creates the model (or loads the checkpoint when resuming),
 * binds. FN_EADDRINUSE when the port is taken. */
int server_create(const server_options_t *opt, server_t **out, err_t *err);
/* The endpoint clients connect to (the bound one, with the real port). */
const char *server_endpoint(const server_t *s);
/* Runs registration and every round. 0 when all rounds completed; FN_ESTATE when stopped early. */
int server_run(server_t *s, server_summary_t *summary, err_t *err);
void server_free(server_t *s);

#endif
