/* relay: the middle tier of hierarchical federated aggregation (as NVIDIA FLARE's relays or
 * Flower's hierarchical set-ups). To the server above, a relay is one site: it connects with a
 * startup kit from `fednas keys site`, on the server's allow-list, the server's key pinned
 * (common/link.h, as a client agent's). To its region's clients it is a server: its own CURVE key
 * pair and allow-list (`fednas keys init` / `fednas keys site` on the relay's key folder), the
 * same ZAP enforcement (server/zap.h) and wire protocol, so an unchanged `fednas client --kit`
 * connects to it as to a server.
 *
 * Each round the server sends it, the relay forwards the model to its connected clients (each
 * with its own training seed and held-out split derived from the relay's), waits for their
 * updates until its deadline (a dead or late client is dropped, as the server drops them) and
 * sends one update upward: the example-weighted mean of its clients' updates, with the total
 * example count as its weight, so that the server's FedAvg over relays equals FedAvg over all
 * the clients (up to float rounding). Federated evaluation is summed the same way.
 *
 * What a relay cannot honour it refuses (a log line and a "refuse" message the server logs),
 * never forwarding a wrong aggregate: secure aggregation (the server must see masked inputs of
 * individual sites), differential privacy (its clipping and accounting are per site, and an
 * aggregate would be clipped and counted as one site), and the robust strategies (median,
 * trimmed mean, Krum), which need every client's own update.
 *
 * Layering: the relay's link upward and the update it sends are common/ modules (link.h,
 * update.h) that client agents use too; server/ depends on no client code. */
#ifndef FEDNAS_SERVER_RELAY_H
#define FEDNAS_SERVER_RELAY_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#include "common/err.h"
#include "common/link.h"
#include "server/fedavg.h"

typedef struct relay_options {
    /* The link upward: endpoint, key_path (the relay's site.key), server_key (the server's
     * server.pub), connect_timeout and idle_timeout, as for a client agent. */
    link_options_t up;
    const char *bind;       /* where the region's clients connect; port "*" picks a free one */
    const char *keys_dir;   /* the relay's server.key and allowed_clients (`fednas keys init`) */
    int clients;            /* region clients to wait for before joining upward (0: all allowed) */
    double register_timeout;/* seconds to wait for them (then go on with those connected, >= 1) */
    double round_timeout;   /* seconds a relay round waits for its clients (0: 0.8 x the server's) */
    double heartbeat;       /* seconds between transport heartbeats to the clients */
    volatile sig_atomic_t *stop;
} relay_options_t;

typedef struct relay relay_t;

/* Reads the relay's keys and binds. FN_EADDRINUSE when the port is taken. */
int relay_create(const relay_options_t *opt, relay_t **out, err_t *err);
/* The endpoint the region's clients connect to (with the real port). */
const char *relay_endpoint(const relay_t *r);
/* Waits for the region's clients, joins the server and relays rounds until the server ends the
 * run (0). FN_EINVAL when the experiment asks for a mode the relay cannot honour (it has told
 * the server); FN_EAUTH / FN_ETIMEOUT as for a client agent. */
int relay_run(relay_t *r, err_t *err);
void relay_free(relay_t *r);

/* ---- the arithmetic, exposed for tests ---- */

/* A round's accumulator: the example-weighted sum of the clients' updates (fedavg_t, exact in
 * any arrival order) and the example-weighted training loss and accuracy. */
typedef struct relay_accum {
    fedavg_t agg;
    long long samples;          /* total examples of the updates added */
    double loss_sum, acc_sum;   /* sums of samples * loss and samples * accuracy */
    long long stat_samples;     /* examples of the updates that reported loss and accuracy */
} relay_accum_t;

int relay_accum_init(relay_accum_t *a, size_t m, err_t *err);
void relay_accum_reset(relay_accum_t *a);
/* Adds one client's update of m values trained on `samples` examples (loss and accuracy may be
 * NaN when it did not report them). FN_EINVAL, adding nothing, for a bad count or a value that
 * is not finite. */
int relay_accum_add(relay_accum_t *a, const float *update, size_t m, long long samples, double loss, double accuracy,
                    err_t *err);
/* The update to forward: mean[0..m) = sum(n_i u_i) / sum(n_i), *samples = sum(n_i), and the
 * example-weighted loss and accuracy (NaN when none reported them). FN_ESTATE when empty. */
int relay_accum_result(const relay_accum_t *a, float *mean, long long *samples, double *loss, double *accuracy,
                       err_t *err);
int relay_accum_count(const relay_accum_t *a);
void relay_accum_free(relay_accum_t *a);

/* A federated evaluation's sums: held-out examples, and examples times loss and accuracy. */
typedef struct relay_eval {
    long long samples;
    double loss_sum, acc_sum;
    int answers;
} relay_eval_t;
/* FN_EINVAL for a negative count, a loss that is not finite or an accuracy outside [0, 1]. */
int relay_eval_add(relay_eval_t *e, long long samples, double loss, double accuracy, err_t *err);
/* The answer to forward: total samples and the example-weighted loss and accuracy (0 when no
 * sample was held out anywhere). */
void relay_eval_result(const relay_eval_t *e, long long *samples, double *loss, double *accuracy);

/* Whether the relay can honour a "train" message's header: 1 when it can; 0, with the reason in
 * why, when the round needs secure aggregation, differential privacy or a robust strategy (the
 * relay rules of common/features.h, the one table of which features combine). */
int relay_can_relay(const json_t *train_header, char *why, size_t cap);

#endif
