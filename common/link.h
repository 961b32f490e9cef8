/* link: a site's connection to the server above it (a DEALER with CURVE, the server's key
 * pinned, transport heartbeats, reconnection with backoff, a monitor that turns a refused key
 * into FN_EAUTH, hello / welcome registration and rejoin after a drop). Client agents,
 * simulated sites and relays (for their link upward) all use it, so all three register,
 * rejoin and give up the same way. It knows the wire protocol's hello and welcome only. */
#ifndef FEDNAS_COMMON_LINK_H
#define FEDNAS_COMMON_LINK_H

#include <signal.h>
#include <stdint.h>

#include <jansson.h>
#include <zmq.h>

#include "common/err.h"
#include "common/wire.h"

typedef struct link_options {
    const char *endpoint;   /* tcp://HOST:PORT of the server */
    /* The key files: this site's site.key and the server's server.pub, pinned. The owner reads
     * them (crypto/keys.h) and hands link_open the keys; the link names the files in errors. */
    const char *key_path;
    const char *server_key;
    double connect_timeout; /* registration gives up after this long without a welcome (s) */
    double idle_timeout;    /* for the owner's loop: give up when a joined server is silent this long (s) */
    volatile sig_atomic_t *stop;
    /* Transport heartbeats: a ping every `heartbeat` s; the connection is dropped (and remade)
     * when `heartbeat_timeout` s pass without an answer. 0: 5 s and 15 s. */
    double heartbeat, heartbeat_timeout;
    /* A ZeroMQ context to open the socket in (a simulation worker shares one among its many
     * sites: one I/O thread, not one per site); NULL: the link makes and ends its own. */
    void *ctx;
    const char *name; /* prefix of the link's log lines (a simulated site's name); NULL: none */
} link_options_t;

/* The CURVE keys as Z85 text (40 characters), read only while link_open runs: the secret can
 * stay in the owner's wiped memory (sodium_malloc). */
typedef struct link_keys {
    const char *public_z85, *secret_z85; /* this site's pair */
    const char *server_z85;              /* the server's public key, pinned */
} link_keys_t;

typedef struct link link_t;

/* Starts connecting with keys (nothing is sent yet). The link keeps a pointer to opt, which
 * must outlive it. On an error *out may still be set: link_close it. FN_EINVAL for a bad
 * endpoint or a key that is not 40 characters of Z85. */
int link_open(const link_options_t *opt, const link_keys_t *keys, link_t **out, err_t *err);
/* The fields of every "hello" this link sends (e.g. {"samples": 600}); the link keeps hello.
 * It also starts registration: from now on link_service says hello once the CURVE handshake
 * is done, and again after each silent wait, the waits doubling from 1 s up to 30 s, until a
 * "welcome" arrives or connect_timeout passes. */
void link_set_hello(link_t *l, json_t *hello);
/* Blocks until registered (0), FN_ETIMEOUT after connect_timeout, FN_EAUTH for a refused key.
 * Messages other than a welcome meanwhile are logged and dropped. */
int link_register(link_t *l, err_t *err);
/* For the caller's own zmq_poll: items[0] is the socket, items[1] the monitor. */
void link_pollitems(link_t *l, zmq_pollitem_t items[2]);
/* Call after every poll (and at least every few hundred ms): reads the monitor (FN_EAUTH when
 * the server refused the key or its key does not match the pinned one), says hello when
 * registration or a rejoin after a drop asks for it, and FN_ETIMEOUT when registration has
 * waited connect_timeout without a welcome. */
int link_service(link_t *l, err_t *err);
/* One waiting message without blocking (FN_ETIMEOUT when none); a "welcome" registers the link
 * and updates the run id. A bad message is logged and skipped. */
int link_recv(link_t *l, wire_msg_t *msg, err_t *err);
/* Waits up to timeout_ms for a message, servicing the link meanwhile (FN_ETIMEOUT; FN_ESTATE
 * when opt->stop is raised). */
int link_receive(link_t *l, wire_msg_t *msg, int timeout_ms, err_t *err);
void *link_socket(link_t *l);
int64_t link_run(const link_t *l);    /* from the last welcome; -1 before */
int link_connected(const link_t *l);  /* the CURVE handshake succeeded and the link is up */
int link_registered(const link_t *l); /* welcomed at least once */
int link_hellos(const link_t *l);     /* hellos sent so far (first, retries and rejoins) */
void link_close(link_t *l);

#endif
