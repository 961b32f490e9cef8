/* link: a site's CURVE connection to the server above it, with registration and rejoin
 * (common/link.h). Everything is driven from the owner's poll loop through link_service, so a
 * process can hold many links (a simulation worker) and never blocks on one of them. */
#include "common/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/log.h"
#include "common/monitor.h"
#include "common/util.h"

enum { LINK_Z85_LEN = 40 };

struct link {
    const link_options_t *opt;
    void *ctx, *sock, *mon;
    int own_ctx;
    char tag[64];   /* "site-3: " or "" */
    json_t *hello;  /* the fields every hello carries */
    int64_t run;
    int connected;  /* the CURVE handshake has succeeded and the link is up */
    int registered; /* welcomed once: after a reconnect, say hello again to rejoin */
    int rejoin;
    /* Registration in progress: hello once per window, the windows doubling. */
    int registering, sent, attempt, hellos;
    double reg_start, window_end, backoff;
};

/* ZeroMQ takes a CURVE key as 40 characters of Z85 (or 32 raw bytes): check before it does. */
static int z85_key(const char *s)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (!s || strlen(s) != LINK_Z85_LEN)
        return 0;
    return strspn(s, alphabet) == LINK_Z85_LEN;
}

int link_open(const link_options_t *o, const link_keys_t *k, link_t **out, err_t *err)
{
    *out = NULL;
    if (!z85_key(k->public_z85) || !z85_key(k->secret_z85) || !z85_key(k->server_z85))
        return err_set(err, FN_EINVAL, "a CURVE key for the link to %s is not 40 characters of Z85",
                       o->endpoint ? o->endpoint : "the server");
    link_t *l = FN_CALLOC(1, sizeof *l);
    l->opt = o;
    l->run = -1;
    l->hello = json_object();
    if (o->name)
        snprintf(l->tag, sizeof l->tag, "%s: ", o->name);
    l->own_ctx = !o->ctx;
    l->ctx = o->ctx ? o->ctx : zmq_ctx_new();
    l->sock = zmq_socket(l->ctx, ZMQ_DEALER);
    if (!l->sock) { /* EMFILE: the context's ZMQ_MAX_SOCKETS, or the process's open-file limit */
        int e = zmq_errno();
        link_close(l);
        return err_set(err, FN_EIO, "cannot make a socket for the link to %s: %s (raise `ulimit -n`, or spread the "
                       "sites over more processes)", o->endpoint ? o->endpoint : "the server", zmq_strerror(e));
    }
    int linger = 2000;
    zmq_setsockopt(l->sock, ZMQ_CURVE_SERVERKEY, k->server_z85, LINK_Z85_LEN + 1);
    zmq_setsockopt(l->sock, ZMQ_CURVE_PUBLICKEY, k->public_z85, LINK_Z85_LEN + 1);
    zmq_setsockopt(l->sock, ZMQ_CURVE_SECRETKEY, k->secret_z85, LINK_Z85_LEN + 1);
    /* No ZMQ_IMMEDIATE: with it, a dropped connection discards what the server sent that we
     * have not read yet (its "end", the last thing it sends before closing, was lost that way).
     * A hello still goes out only over a live, authenticated link: it waits for `connected`. */
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Transport heartbeats (answered by ZeroMQ's I/O thread even while training) reveal a dead
     * server; reconnection backs off from 0.1 s to 5 s. */
    int hb = o->heartbeat > 0 ? (int)(o->heartbeat * 1000) : 5000;
    int hb_timeout = o->heartbeat_timeout > 0 ? (int)(o->heartbeat_timeout * 1000) : 15000, ivl_max = 5000;
    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    zmq_setsockopt(l->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    *out = l;
    /* The monitor tells us when the server rejects our key during the CURVE handshake. Its
     * endpoint names this link: many links may share one context. */
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://fednas-link-monitor-%p", (void *)l);
    if (monitor_open(l->ctx, l->sock, endpoint,
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED,
                     &l->mon) != 0)
        return err_set(err, FN_EIO, "cannot monitor the connection: %s", zmq_strerror(zmq_errno()));
    if (zmq_connect(l->sock, o->endpoint) != 0)
        return err_set(err, FN_EINVAL, "cannot connect to %s: %s (expected tcp://HOST:PORT)", o->endpoint,
                       zmq_strerror(zmq_errno()));
    return 0;
}

void link_set_hello(link_t *l, json_t *hello)
{
    json_decref(l->hello);
    l->hello = hello;
    if (l->registered)
        return;
    l->registering = 1;
    l->sent = 0;
    l->attempt = 1;
    l->backoff = 1.0;
    l->reg_start = fn_mono();
    l->window_end = l->reg_start + l->backoff;
}

void *link_socket(link_t *l) { return l->sock; }
int64_t link_run(const link_t *l) { return l->run; }
int link_connected(const link_t *l) { return l->connected; }
int link_registered(const link_t *l) { return l->registered; }
int link_hellos(const link_t *l) { return l->hellos; }

void link_pollitems(link_t *l, zmq_pollitem_t items[2])
{
    items[0] = (zmq_pollitem_t){l->sock, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){l->mon, 0, ZMQ_POLLIN, 0};
}

void link_close(link_t *l)
{
    if (!l)
        return;
    monitor_close(l->sock, l->mon);
    if (l->sock)
        zmq_close(l->sock);
    if (l->own_ctx && l->ctx)
        zmq_ctx_term(l->ctx);
    json_decref(l->hello);
    free(l);
}

static int send_hello(link_t *l)
{
    json_t *hdr = json_deep_copy(l->hello);
    json_object_set_new(hdr, "type", json_string("hello"));
    err_t e;
    int ok = wire_send(l->sock, NULL, 0, hdr, NULL, 0, ZMQ_DONTWAIT, &e) >= 0;
    json_decref(hdr);
    l->hellos += ok;
    if (ok) /* it went over the current connection: the server there knows this site */
        l->rejoin = 0;
    return ok;
}

/* Registration's clock: a hello per window once connected; at a window's end either give up
 * (connect_timeout) or open a window twice as long (at most 30 s). */
static int service_registration(link_t *l, err_t *err)
{
    double now = fn_mono();
    if (now >= l->window_end) {
        double elapsed = now - l->reg_start;
        if (elapsed >= l->opt->connect_timeout)
            return err_set(err, FN_ETIMEOUT,
                           "%sserver at %s unreachable: no answer in %.0f s (%d attempts); check the address, that "
                           "the server is running, and that a firewall lets the port through",
                           l->tag, l->opt->endpoint, elapsed, l->attempt);
        l->backoff = l->backoff * 2 > 30 ? 30 : l->backoff * 2;
        log_warn("%sno answer from the server at %s (%s, attempt %d); retrying, next wait %.0f s", l->tag,
                 l->opt->endpoint, l->connected ? "connected, no reply" : "not connected", l->attempt, l->backoff);
        l->attempt++;
        l->window_end = now + l->backoff;
        l->sent = 0;
    }
    if (!l->sent && l->connected)
        l->sent = send_hello(l);
    return 0;
}

int link_service(link_t *l, err_t *err)
{
    int value = 0, ev;
    while ((ev = monitor_event(l->mon, &value)) != 0) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return err_set(err, FN_EAUTH,
                           "%sthe server at %s refused this site's key (ZAP status %d): it is not on the server's "
                           "allow-list; ask the operator to add it (`fednas keys site NAME` makes an allowed key)",
                           l->tag, l->opt->endpoint, value);
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            return err_set(err, FN_EAUTH,
                           "%sCURVE handshake with %s failed: the server's public key does not match %s; get the "
                           "right server.pub from the operator",
                           l->tag, l->opt->endpoint, l->opt->server_key);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            log_debug("%sconnected to %s", l->tag, l->opt->endpoint);
            l->connected = 1;
        }
        if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (l->connected)
                log_warn("%slost the connection to %s; reconnecting", l->tag, l->opt->endpoint);
            l->connected = 0;
            /* Say hello again on the next connection: also when registration is still under
             * way, for a welcome read after this drop came from the old connection (a server
             * that restarted meanwhile does not know this site). */
            l->rejoin = l->registered || l->registering;
            l->sent = 0;
        }
    }
    if (l->registering)
        return service_registration(l, err);
    /* Back after a drop (or a restarted server): register again; the server resends the
     * current round's model if this site was chosen for it. */
    if (l->rejoin && l->connected && send_hello(l)) {
        log_info("%sreconnected to %s; rejoining", l->tag, l->opt->endpoint);
    }
    return 0;
}

int link_recv(link_t *l, wire_msg_t *msg, err_t *err)
{
    for (;;) {
        int rc = wire_recv(l->sock, 0, msg, ZMQ_DONTWAIT, err);
        if (rc == FN_ETIMEOUT)
            return rc;
        if (rc < 0) {
            log_warn("%sdropped a bad message from the server: %s", l->tag, err->msg);
            continue;
        }
        if (strcmp(msg->type, "welcome") == 0) { /* a rejoin's welcome may carry a new run */
            l->run = wire_get_int(msg, "run", -1);
            if (l->registering)
                log_info("%sregistered with the server at %s as client %lld of run %lld", l->tag, l->opt->endpoint,
                         wire_get_int(msg, "client_id", -1), (long long)l->run);
            l->registered = 1;
            l->registering = 0;
        }
        return 0;
    }
}

int link_receive(link_t *l, wire_msg_t *msg, int timeout_ms, err_t *err)
{
    double deadline = fn_mono() + timeout_ms / 1000.0;
    for (;;) {
        if (l->opt->stop && *l->opt->stop)
            return err_set(err, FN_ESTATE, "stopped by a signal");
        zmq_pollitem_t items[2];
        link_pollitems(l, items);
        double left = deadline - fn_mono();
        if (left <= 0)
            return FN_ETIMEOUT;
        int wait = left > 0.2 ? 200 : (int)(left * 1000) + 1;
        if (zmq_poll(items, 2, wait) < 0 && zmq_errno() != EINTR)
            return err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
        int rc = link_service(l, err);
        if (rc < 0)
            return rc;
        if (items[0].revents & ZMQ_POLLIN) {
            rc = link_recv(l, msg, err);
            if (rc != FN_ETIMEOUT)
                return rc;
        }
    }
}

int link_register(link_t *l, err_t *err)
{
    if (!l->registering && !l->registered)
        link_set_hello(l, json_object());
    for (;;) {
        wire_msg_t msg;
        int rc = link_receive(l, &msg, 1000, err);
        if (rc == FN_ETIMEOUT)
            continue;
        if (rc < 0)
            return rc;
        int welcome = strcmp(msg.type, "welcome") == 0;
        if (!welcome)
            log_warn("%sexpected a welcome, got \"%s\"; ignored", l->tag, msg.type);
        wire_msg_close(&msg);
        if (welcome)
            return 0;
    }
}
