/* client: the agent that runs at a partner site. It loads the site's data, connects to the
 * server over CURVE with the site's key pair and the pinned server key, registers, and for each
 * round trains the model it receives and sends back its update (the change to the weights). */
#ifndef FEDNAS_CLIENT_CLIENT_H
#define FEDNAS_CLIENT_CLIENT_H

#include <signal.h>
#include <stdint.h>

#include <jansson.h>
#include <zmq.h>

#include "common/config.h"
#include "common/err.h"
#include "common/wire.h"

typedef struct client_options {
    const char *endpoint;   /* tcp://HOST:PORT of the server */
    const char *key_path;   /* this site's secret key file (site.key) */
    const char *server_key; /* the server's public key file (server.pub), pinned */
    const char *data_dir;   /* directory of IDX files, or a CSV file (features, label last) */
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

/* client_link: a site's connection to the server above it (a DEALER with CURVE, the server's
 * key pinned, transport heartbeats, reconnection with backoff, a monitor that turns a refused
 * key into FN_EAUTH). The client agent uses it, and so does a relay (server/relay.h) for its
 * link upward, so both register, rejoin and give up the same way. Of opt it reads endpoint,
 * key_path, server_key, connect_timeout and stop. */
typedef struct client_link client_link_t;
int client_link_open(const client_options_t *opt, client_link_t **out, err_t *err);
/* The fields of every "hello" this link sends (e.g. {"samples": 600}); the link keeps hello. */
void client_link_set_hello(client_link_t *l, json_t *hello);
/* Sends hello until a "welcome" arrives: again after each silent wait, the waits doubling from
 * 1 s up to 30 s, until connect_timeout (FN_ETIMEOUT). */
int client_link_register(client_link_t *l, err_t *err);
/* For the caller's own zmq_poll: items[0] is the socket, items[1] the monitor. */
void client_link_pollitems(client_link_t *l, zmq_pollitem_t items[2]);
/* Call after every poll: reads the monitor (FN_EAUTH when the server refused the key or its
 * key does not match the pinned one) and, once the link is back after a drop, says hello again. */
int client_link_service(client_link_t *l, err_t *err);
/* One waiting message without blocking (FN_ETIMEOUT when none); a "welcome" also updates the
 * run id. A bad message is logged and skipped. */
int client_link_recv(client_link_t *l, wire_msg_t *msg, err_t *err);
/* Waits up to timeout_ms for a message, servicing the monitor meanwhile (FN_ETIMEOUT). */
int client_link_receive(client_link_t *l, wire_msg_t *msg, int timeout_ms, err_t *err);
void *client_link_socket(client_link_t *l);
int64_t client_link_run(const client_link_t *l); /* from the last welcome; -1 before */
int client_link_connected(const client_link_t *l);
void client_link_close(client_link_t *l);

/* A simulation worker: runs sites first+1 .. first+count (0-based shards first .. first+count-1 of
 * opt->shards), each with the startup kit kits_dir/site-K, over opt->endpoint, until the server
 * ends the run. Every site speaks the real protocol on its own connection. */
int client_simulate(const client_options_t *opt, const char *kits_dir, int first, int count, err_t *err);

#endif
