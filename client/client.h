/* client: the agent that runs at a partner site. It loads the site's data, connects to the
 * server over CURVE with the site's key pair and the pinned server key, registers, and for each
 * round trains the model it receives and sends back its update (the change to the weights). */
#ifndef FEDNAS_CLIENT_CLIENT_H
#define FEDNAS_CLIENT_CLIENT_H

#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/link.h"

typedef struct client_options {
    /* The server (endpoint, key_path: this site's site.key, server_key: the server's server.pub,
     * pinned), connect_timeout (give up when the server has not answered for this long),
     * idle_timeout (give up when a registered site hears nothing for this long) and stop. */
    link_options_t link;
    const char *data_dir;   /* directory of IDX files, or a CSV file (features, label last) */
    /* Simulation: use shard `shard` (0-based) of `shards` parts of the training set.
     * shards == 0 uses the whole training set (a real site's own data). */
    int shard, shards;
    config_partition_t partition;
    double alpha;
    int min_size;
    uint64_t partition_seed;
} client_options_t;

/* Returns 0 when the server ended the run; FN_EAUTH when the server refused this site's key;
 * FN_ETIMEOUT when the server could not be reached. */
int client_run(const client_options_t *opt, err_t *err);

/* A simulation worker: runs sites first+1 .. first+count (0-based shards first .. first+count-1 of
 * opt->shards), each with the startup kit kits_dir/site-K, over opt->link.endpoint, until the server
 * ends the run (0). Every site runs the agent's site loop (client/site.h) on its own connection:
 * the same monitor, heartbeats, registration backoff and rejoin after a drop; errors as for
 * client_run. */
int client_simulate(const client_options_t *opt, const char *kits_dir, int first, int count, err_t *err);

#endif
