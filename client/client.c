#include "client/client.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "common/monitor.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/dp.h"
#include "crypto/keys.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "engine/partition.h"
#include "client/secagg_site.h"
#include "client/trainer.h"

/* ---- the link to the server ---- */

struct client_link {
    const client_options_t *opt;
    void *ctx, *sock, *mon;
    json_t *hello;  /* the fields every hello carries */
    int64_t run;
    int connected;  /* the CURVE handshake has succeeded and the link is up */
    int registered; /* welcomed once: after a reconnect, say hello again to rejoin */
    int rejoin;
};

int client_link_open(const client_options_t *o, client_link_t **out, err_t *err)
{
    *out = NULL;
    keys_pair_t *kp = keys_pair_new();
    char spk[KEYS_Z85_LEN + 1];
    if (!kp)
        return err_set(err, FN_ENOMEM, "out of secure memory");
    int rc = keys_read_secret(o->key_path, kp, err);
    if (rc == 0)
        rc = keys_read_public(o->server_key, spk, err);
    if (rc < 0) {
        keys_pair_free(kp);
        return rc;
    }
    client_link_t *l = FN_CALLOC(1, sizeof *l);
    l->opt = o;
    l->run = -1;
    l->hello = json_object();
    l->ctx = zmq_ctx_new();
    l->sock = zmq_socket(l->ctx, ZMQ_DEALER);
    int linger = 2000;
    zmq_setsockopt(l->sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(l->sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(l->sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(kp);
    /* No ZMQ_IMMEDIATE: with it, a dropped connection discards what the server sent that we
     * have not read yet (its "end", the last thing it sends before closing, was lost that way).
     * A hello still goes out only over a live, authenticated link: it waits for `connected`. */
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Transport heartbeats (answered by ZeroMQ's I/O thread even while training) reveal a dead
     * server; reconnection backs off from 0.1 s to 5 s. */
    int hb = 5000, hb_timeout = 15000, ivl_max = 5000;
    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    zmq_setsockopt(l->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    *out = l;
    /* The monitor tells us when the server rejects our key during the CURVE handshake. */
    if (monitor_open(l->ctx, l->sock, "inproc://fednas-client-monitor",
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED,
                     &l->mon) != 0)
        return err_set(err, FN_EIO, "cannot monitor the connection: %s", zmq_strerror(zmq_errno()));
    if (zmq_connect(l->sock, o->endpoint) != 0)
        return err_set(err, FN_EINVAL, "cannot connect to %s: %s (expected tcp://HOST:PORT)", o->endpoint,
                       zmq_strerror(zmq_errno()));
    return 0;
}

void client_link_set_hello(client_link_t *l, json_t *hello)
{
    json_decref(l->hello);
    l->hello = hello;
}

void *client_link_socket(client_link_t *l) { return l->sock; }
int64_t client_link_run(const client_link_t *l) { return l->run; }
int client_link_connected(const client_link_t *l) { return l->connected; }

void client_link_pollitems(client_link_t *l, zmq_pollitem_t items[2])
{
    items[0] = (zmq_pollitem_t){l->sock, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){l->mon, 0, ZMQ_POLLIN, 0};
}

void client_link_close(client_link_t *l)
{
    if (!l)
        return;
    monitor_close(l->sock, l->mon);
    if (l->sock)
        zmq_close(l->sock);
    if (l->ctx)
        zmq_ctx_term(l->ctx);
    json_decref(l->hello);
    free(l);
}

static int send_hello(client_link_t *l)
{
    json_t *hdr = json_deep_copy(l->hello);
    json_object_set_new(hdr, "type", json_string("hello"));
    err_t e;
    int ok = wire_send(l->sock, NULL, 0, hdr, NULL, 0, ZMQ_DONTWAIT, &e) >= 0;
    json_decref(hdr);
    return ok;
}

int client_link_service(client_link_t *l, err_t *err)
{
    int value = 0, ev;
    while ((ev = monitor_event(l->mon, &value)) != 0) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return err_set(err, FN_EAUTH,
                           "the server at %s refused this site's key (ZAP status %d): it is not on the server's "
                           "allow-list; ask the operator to add it (`fednas keys site NAME` makes an allowed key)",
                           l->opt->endpoint, value);
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            return err_set(err, FN_EAUTH,
                           "CURVE handshake with %s failed: the server's public key does not match %s; get the "
                           "right server.pub from the operator",
                           l->opt->endpoint, l->opt->server_key);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            log_debug("connected to %s", l->opt->endpoint);
            l->connected = 1;
        }
        if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (l->connected)
                log_warn("lost the connection to %s; reconnecting", l->opt->endpoint);
            l->connected = 0;
            l->rejoin = l->registered;
        }
    }
    /* Back after a drop (or a restarted server): register again; the server resends the
     * current round's model if this site was chosen for it. */
    if (l->rejoin && l->connected && send_hello(l)) {
        l->rejoin = 0;
        log_info("reconnected to %s; rejoining", l->opt->endpoint);
    }
    return 0;
}

int client_link_recv(client_link_t *l, wire_msg_t *msg, err_t *err)
{
    for (;;) {
        int rc = wire_recv(l->sock, 0, msg, ZMQ_DONTWAIT, err);
        if (rc == FN_ETIMEOUT)
            return rc;
        if (rc < 0) {
            log_warn("dropped a bad message from the server: %s", err->msg);
            continue;
        }
        if (strcmp(msg->type, "welcome") == 0) /* a rejoin's welcome may carry a new run */
            l->run = wire_get_int(msg, "run", -1);
        return 0;
    }
}

int client_link_receive(client_link_t *l, wire_msg_t *msg, int timeout_ms, err_t *err)
{
    double deadline = fn_mono() + timeout_ms / 1000.0;
    for (;;) {
        if (l->opt->stop && *l->opt->stop)
            return err_set(err, FN_ESTATE, "stopped by a signal");
        zmq_pollitem_t items[2];
        client_link_pollitems(l, items);
        double left = deadline - fn_mono();
        if (left <= 0)
            return FN_ETIMEOUT;
        int wait = left > 0.2 ? 200 : (int)(left * 1000) + 1;
        if (zmq_poll(items, 2, wait) < 0 && zmq_errno() != EINTR)
            return err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
        int rc = client_link_service(l, err);
        if (rc < 0)
            return rc;
        if (items[0].revents & ZMQ_POLLIN) {
            rc = client_link_recv(l, msg, err);
            if (rc != FN_ETIMEOUT)
                return rc;
        }
    }
}

int client_link_register(client_link_t *l, err_t *err)
{
    double start = fn_mono(), backoff = 1.0;
    for (int attempt = 1;; attempt++) {
        double until = fn_mono() + backoff;
        int sent = 0;
        while (fn_mono() < until) {
            if (!sent && l->connected)
                sent = send_hello(l);
            wire_msg_t msg;
            double left = until - fn_mono();
            /* Short slices while not yet connected, so the hello leaves right after the handshake. */
            int rc = client_link_receive(l, &msg, sent ? (int)(left * 1000) + 1 : 50, err);
            if (rc == FN_ETIMEOUT)
                continue;
            if (rc < 0)
                return rc;
            if (strcmp(msg.type, "welcome") == 0) {
                l->registered = 1;
                l->rejoin = 0;
                log_info("registered with the server at %s as client %lld of run %lld", l->opt->endpoint,
                         wire_get_int(&msg, "client_id", -1), (long long)l->run);
                wire_msg_close(&msg);
                return 0;
            }
            log_warn("expected a welcome, got \"%s\"; ignored", msg.type);
            wire_msg_close(&msg);
        }
        double elapsed = fn_mono() - start;
        if (elapsed >= l->opt->connect_timeout)
            return err_set(err, FN_ETIMEOUT,
                           "server at %s unreachable: no answer in %.0f s (%d attempts); check the address, that the "
                           "server is running, and that a firewall lets the port through",
                           l->opt->endpoint, elapsed, attempt);
        backoff = backoff * 2 > 30 ? 30 : backoff * 2;
        log_warn("no answer from the server at %s (%s, attempt %d); retrying, next wait %.0f s", l->opt->endpoint,
                 l->connected ? "connected, no reply" : "not connected", attempt, backoff);
    }
}

/* ---- the agent ---- */

typedef struct agent {
    const client_options_t *opt;
    client_link_t *link;
    trainer_data_t data;
    int *idx;
    int n;
    trainer_t trainer;
    secagg_site_t *sa;     /* this round's secure aggregation, when the server asks for it */
    trainer_feedback_t fb; /* error feedback of compressed updates, across rounds */
    trainer_holdout_t ho;  /* samples held out of training for federated evaluation */
} agent_t;

static int load_data(agent_t *a, err_t *err)
{
    const client_options_t *o = a->opt;
    int rc = trainer_data_load(&a->data, o->data_dir, err);
    if (rc < 0)
        return rc;
    int *assign = NULL;
    if ((rc = client_partition(o, &a->data.src, &assign, err)) < 0)
        return rc;
    if (!assign) { /* a real site: all of its own data */
        a->n = a->data.src.count;
        a->idx = FN_MALLOC((size_t)a->n * sizeof *a->idx);
        for (int i = 0; i < a->n; i++)
            a->idx[i] = i;
        return 0;
    }
    rc = engine_partition_indices(assign, a->data.src.count, o->shard, &a->idx, &a->n, err);
    free(assign);
    return rc;
}

int client_run(const client_options_t *opt, err_t *err)
{
    agent_t a = {.opt = opt};
    int rc = load_data(&a, err);
    a.trainer.data = &a.data;
    if (rc == 0)
        rc = client_link_open(opt, &a.link, err);
    if (rc == 0) {
        client_link_set_hello(a.link, json_pack("{s:I}", "samples", (json_int_t)a.n));
        rc = client_link_register(a.link, err);
    }
    if (rc == 0)
        log_info("training on %d samples of %s", a.n, opt->data_dir);
    while (rc == 0) {
        wire_msg_t msg;
        rc = client_link_receive(a.link, &msg, (int)(opt->idle_timeout * 1000), err);
        if (rc == FN_ETIMEOUT) {
            rc = err_set(err, FN_ETIMEOUT, "the server at %s has been silent for %.0f s; giving up", opt->endpoint,
                         opt->idle_timeout);
            break;
        }
        if (rc < 0)
            break;
        void *sock = client_link_socket(a.link);
        int64_t run = client_link_run(a.link);
        if (strcmp(msg.type, "train") == 0 || strncmp(msg.type, "sa_", 3) == 0) {
            const int *tidx;
            int tn;
            rc = trainer_holdout_split(&a.ho, &msg, a.idx, a.n, &tidx, &tn, err);
            if (rc == 0)
                rc = secagg_site_on_message(&a.sa, &a.trainer, &a.data.idx, tidx, tn, sock, run, &msg, err);
            if (rc == 0)
                rc = trainer_round(&a.trainer, &a.data.idx, tidx, tn, sock, run, &msg, &a.fb, err);
            else if (rc > 0)
                rc = 0;
            if (rc == FN_EPROTO) {
                log_warn("%s; ignored", err->msg);
                rc = 0;
            }
        } else if (strcmp(msg.type, "evaluate") == 0) {
            rc = trainer_evaluate(&a.trainer, &a.data.idx, &a.ho, a.idx, a.n, sock, run, &msg, err);
            if (rc == FN_EPROTO) {
                log_warn("%s; ignored", err->msg);
                rc = 0;
            }
        } else if (strcmp(msg.type, "end") == 0) {
            const char *reason = wire_get_str(&msg, "reason");
            log_info("the server ended the run: %s", reason ? reason : "done");
            wire_msg_close(&msg);
            break;
        } else if (strcmp(msg.type, "welcome") != 0) {
            log_warn("unexpected \"%s\" message ignored", msg.type);
        }
        wire_msg_close(&msg);
    }
    client_link_close(a.link);
    secagg_site_free(a.sa);
    trainer_free(&a.trainer);
    trainer_feedback_free(&a.fb);
    trainer_holdout_free(&a.ho);
    trainer_data_free(&a.data);
    free(a.idx);
    return rc;
}
