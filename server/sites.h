/* sites: the sites connected to a server-side ROUTER socket, for the aggregation server and for
 * a relay facing its region's clients. It owns the socket (CURVE with the tier's key pair, the
 * allow-list enforced by the ZAP handler, transport heartbeats, a monitor that turns a dead
 * connection into a disconnect) and the registry: each site's authenticated name, allow-list
 * id, current route and connection state, and the per-round flags both tiers keep. What a
 * message or a disconnect means for a round stays with the owner, through two callbacks.
 * No peer can hold the owner's thread: sends never block (a peer whose queue is full is dropped
 * until it reconnects), a hello repeated on a connected route gets no answer, and one pump
 * handles a bounded number of messages. */
#ifndef FEDNAS_SERVER_SITES_H
#define FEDNAS_SERVER_SITES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/err.h"
#include "common/wire.h"
#include "crypto/keys.h"

typedef struct sites_site {
    char name[64];                             /* the authenticated name, as on the allow-list */
    char public_z85[KEYS_Z85_LEN + 1];
    unsigned char identity[WIRE_MAX_IDENTITY]; /* latest routing id: changes when it reconnects */
    size_t identity_len;
    int id;        /* 1-based place on the allow-list: per-site seeds derive from it */
    int fd;        /* the connection its last message came on, to match disconnect events */
    int connected;
    int clogged;   /* dropped because its queue was full: hellos on the same route are ignored */
    long long samples;
    /* The current round and evaluation, kept by the owner. */
    int selected;     /* in the current round */
    int reported;     /* sent its update for the current round */
    int lost;         /* disconnected (or refused) during the current round before reporting */
    int eval_pending; /* asked to evaluate the model and not yet answered */
    double sent_at;   /* when the current round's model went to it */
} sites_site_t;

typedef struct sites_options {
    const char *keys_dir; /* the tier's server.key and allowed_clients (`fednas keys init`) */
    const char *role;     /* "server" or "relay": names the socket in errors */
    const char *noun;     /* "site" or "client": what log lines call a peer */
    const char *key_hint; /* put before an error reading server.key; NULL for none */
    /* Called for each message from an authenticated peer (msg is closed afterwards); returns 0
     * when it knew the message's type, -1 to have it logged and dropped as unexpected. */
    int (*on_message)(void *owner, wire_msg_t *msg);
    /* Called when a connected site's connection closes or stops answering heartbeats, after it
     * is marked disconnected and its evaluation cancelled. */
    void (*on_disconnect)(void *owner, sites_site_t *site);
    void *owner;
} sites_options_t;

typedef struct sites sites_t;

/* Reads the key pair and the allow-list. keys_dir is copied and key_hint used only here; role,
 * noun and the callbacks are kept. */
int sites_open(const sites_options_t *opt, sites_t **out, err_t *err);
/* Starts the ZAP handler and binds the ROUTER, then wipes the secret key. heartbeat in seconds
 * (3 missed: gone); max_message bytes a peer may send in one message (0: no limit); io_threads
 * for ZeroMQ's context (0: its default). FN_EADDRINUSE when the port is taken. */
int sites_listen(sites_t *s, const char *bind, double heartbeat, int64_t max_message, int io_threads,
                 err_t *err);
/* The bound endpoint, with the real port. */
const char *sites_endpoint(const sites_t *s);
/* What log lines call a peer ("site" or "client"). */
const char *sites_noun(const sites_t *s);
/* Sites on the allow-list, as last read. */
int sites_allowed(const sites_t *s);

/* Every site that ever said hello, in arrival order; a site keeps its index for good, but a
 * pointer lasts only until the next message is handled (a hello may grow the array). */
int sites_count(const sites_t *s);
sites_site_t *sites_at(sites_t *s, int i);
int sites_index(const sites_t *s, const sites_site_t *site);
sites_site_t *sites_find(sites_t *s, const char *name);
/* Sites connected now, and (when samples is not NULL) their examples in total. */
int sites_connected(const sites_t *s, long long *samples);
/* Sites selected for the round that have neither reported nor been lost. */
int sites_awaiting_updates(const sites_t *s);
/* Sites asked to evaluate that have not answered. */
int sites_awaiting_eval(const sites_t *s);
/* Ends an evaluation: every site that has not answered is logged and no longer waited for. */
void sites_close_eval(sites_t *s, long long round);

/* A hello from msg->user_id: registers the site (its id from the allow-list, read again when
 * the ZAP handler admitted a site from a newer one) or refreshes its route, and logs the join.
 * NULL, logged, when the hello carries no valid sample count; NULL too for a hello repeated on
 * the route of a connected site (or of one dropped for a full queue): nothing to answer. */
sites_site_t *sites_hello(sites_t *s, const wire_msg_t *msg);

/* Sends a message to one site without blocking (hdr is consumed; "run" is set to run). Returns
 * the bytes sent, or < 0 with a warning logged when the site cannot be reached; a site whose
 * queue is full (FN_ETIMEOUT) is dropped: marked disconnected, on_disconnect called. */
long long sites_send(sites_t *s, sites_site_t *site, int64_t run, json_t *hdr, const wire_frame_t *frames, int n);
/* Tells every connected site the run is over. */
void sites_send_end(sites_t *s, int64_t run, const char *reason);

/* For the owner's own zmq_poll: items[0] is the socket, items[1] the monitor. */
void sites_pollitems(sites_t *s, zmq_pollitem_t items[2]);
/* After that poll: handles disconnects (when the monitor is readable) and every waiting message
 * (when the socket is). */
void sites_service(sites_t *s, const zmq_pollitem_t items[2]);
/* Waits up to timeout_ms for activity, then handles disconnects and every waiting message. */
void sites_pump(sites_t *s, int timeout_ms);

void sites_free(sites_t *s);

#endif
