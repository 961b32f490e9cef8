/* client: the agent that runs at a partner site. It loads the site's data, connects to the
 * server over CURVE with the site's key pair and the pinned server key, registers, and for each
 * round trains the model it receives and sends back its update (the change to the weights). */
#ifndef FEDNAS_CLIENT_CLIENT_H
#define FEDNAS_CLIENT_CLIENT_H

#include <signal.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

typedef struct client_options {
    const char *endpoint;   /* tcp://HOST:PORT of the server */
    const char *key_path;   /* this site's secret key file (site.key) */
    const char *server_key; /* the server's public key file (server.pub), pinned */
    const char *data_dir;   /* directory of IDX files */
    /* Simulation: use shard `shard` (0-based) of `shards` parts of the training set.
     * shards == 0 uses the whole training set (a real site's own data). */
    int shard, shards;
    config_partition_t partition;
    double alpha;
    int min_size;
    uint64_t partition_seed;
    double connect_timeout; /* give up when the server has not answered for this long (s) */
    double idle_timeout;    /* give up when a registered client hears nothing for this long (s) */
    volatile sig_atomic_t *stop;
} client_options_t;

/* Returns 0 when the server ended the run; FN_EAUTH when the server refused this site's key;
 * FN_ETIMEOUT when the server could not be reached. */
int client_run(const client_options_t *opt, err_t *err);

/* A simulation worker: runs sites first+1 .. first+count (0-based shards first .. first+count-1 of
 * opt->shards), each with the startup kit kits_dir/site-K, over opt->endpoint, until the server
 * ends the run. Every site speaks the real protocol on its own connection. */
int client_simulate(const client_options_t *opt, const char *kits_dir, int first, int count, err_t *err);

#endif
