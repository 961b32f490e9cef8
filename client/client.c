#include "client/client.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/dp.h"
#include "crypto/keys.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "engine/partition.h"
#include "client/secagg_site.h"
#include "client/trainer.h"

typedef struct agent {
    const client_options_t *opt;
    void *ctx, *sock, *mon;
    engine_dataset_t data;
    int *idx;
    int n;
    trainer_t trainer;
    secagg_site_t *sa; /* this round's secure aggregation, when the server asks for it */
    trainer_feedback_t fb; /* error feedback of compressed updates, across rounds */
    trainer_holdout_t ho;  /* samples held out of training for federated evaluation */
    int64_t run;
    int connected;  /* the CURVE handshake has succeeded and the link is up */
    int registered; /* welcomed once: after a reconnect, say hello again to rejoin */
    int rejoin;
} agent_t;

static int load_data(agent_t *a, err_t *err)
{
    const client_options_t *o = a->opt;
    int rc = engine_fmnist_load(o->data_dir, "train", &a->data, err);
    if (rc < 0)
        return rc;
    int *assign = NULL;
    if ((rc = client_partition(o, &a->data, &assign, err)) < 0)
        return rc;
    if (!assign) { /* a real site: all of its own data */
        a->n = a->data.count;
        a->idx = FN_MALLOC((size_t)a->n * sizeof *a->idx);
        for (int i = 0; i < a->n; i++)
            a->idx[i] = i;
        return 0;
    }
    rc = engine_partition_indices(assign, a->data.count, o->shard, &a->idx, &a->n, err);
    free(assign);
    return rc;
}

static int open_socket(agent_t *a, err_t *err)
{
    const client_options_t *o = a->opt;
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
    a->ctx = zmq_ctx_new();
    a->sock = zmq_socket(a->ctx, ZMQ_DEALER);
    int one = 1, linger = 2000;
    zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(a->sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(a->sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(kp);
    /* Queue nothing while disconnected: a hello is only sent over a live, authenticated link. */
    zmq_setsockopt(a->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Transport heartbeats (answered by ZeroMQ's I/O thread even while training) reveal a dead
     * server; reconnection backs off from 0.1 s to 5 s. */
    int hb = 5000, hb_timeout = 15000, ivl_max = 5000;
    zmq_setsockopt(a->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(a->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    zmq_setsockopt(a->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    /* The monitor tells us when the server rejects our key during the CURVE handshake. */
    if (zmq_socket_monitor(a->sock, "inproc://fednas-client-monitor",
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0)
        return err_set(err, FN_EIO, "cannot monitor the connection: %s", zmq_strerror(zmq_errno()));
    a->mon = zmq_socket(a->ctx, ZMQ_PAIR);
    zmq_connect(a->mon, "inproc://fednas-client-monitor");
    if (zmq_connect(a->sock, o->endpoint) != 0)
        return err_set(err, FN_EINVAL, "cannot connect to %s: %s (expected tcp://HOST:PORT)", o->endpoint,
                       zmq_strerror(zmq_errno()));
    return 0;
}

/* Reads one monitor event; returns the event id and the value (the ZAP status for auth). */
static int monitor_event(void *mon, int *value)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    int ev = 0;
    if (zmq_msg_size(&m) >= 6) {
        const uint8_t *d = zmq_msg_data(&m);
        ev = d[0] | d[1] << 8;
        memcpy(value, d + 2, 4);
    }
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    if (more) { /* the endpoint address */
        zmq_msg_init(&m);
        zmq_msg_recv(&m, mon, 0);
        zmq_msg_close(&m);
    }
    return ev;
}

static int check_monitor(agent_t *a, err_t *err)
{
    int value = 0, ev;
    while ((ev = monitor_event(a->mon, &value)) != 0) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return err_set(err, FN_EAUTH,
                           "the server at %s refused this site's key (ZAP status %d): it is not on the server's "
                           "allow-list; ask the operator to add it (`fednas keys site NAME` makes an allowed key)",
                           a->opt->endpoint, value);
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            return err_set(err, FN_EAUTH,
                           "CURVE handshake with %s failed: the server's public key does not match %s; get the "
                           "right server.pub from the operator",
                           a->opt->endpoint, a->opt->server_key);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            log_debug("connected to %s", a->opt->endpoint);
            a->connected = 1;
        }
        if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (a->connected)
                log_warn("lost the connection to %s; reconnecting", a->opt->endpoint);
            a->connected = 0;
            a->rejoin = a->registered;
        }
    }
    return 0;
}

/* Waits for a message; FN_ETIMEOUT after timeout_ms. Monitor events are checked meanwhile. */
static int receive(agent_t *a, wire_msg_t *msg, int timeout_ms, err_t *err)
{
    double deadline = fn_mono() + timeout_ms / 1000.0;
    for (;;) {
        if (a->opt->stop && *a->opt->stop)
            return err_set(err, FN_ESTATE, "stopped by a signal");
        zmq_pollitem_t items[2] = {{a->sock, 0, ZMQ_POLLIN, 0}, {a->mon, 0, ZMQ_POLLIN, 0}};
        double left = deadline - fn_mono();
        if (left <= 0)
            return FN_ETIMEOUT;
        int wait = left > 0.2 ? 200 : (int)(left * 1000) + 1;
        if (zmq_poll(items, 2, wait) < 0 && zmq_errno() != EINTR)
            return err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
        int rc = check_monitor(a, err);
        if (rc < 0)
            return rc;
        if (a->rejoin && a->connected) {
            /* Back after a drop (or a restarted server): register again; the server resends
             * the current round's model if this site was chosen for it. */
            json_t *hdr = json_pack("{s:s, s:I}", "type", "hello", "samples", (json_int_t)a->n);
            err_t e;
            if (wire_send(a->sock, NULL, 0, hdr, NULL, 0, ZMQ_DONTWAIT, &e) >= 0) {
                a->rejoin = 0;
                log_info("reconnected to %s; rejoining", a->opt->endpoint);
            }
            json_decref(hdr);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            rc = wire_recv(a->sock, 0, msg, ZMQ_DONTWAIT, err);
            if (rc == 0)
                return 0;
            if (rc != FN_ETIMEOUT)
                log_warn("dropped a bad message from the server: %s", err->msg);
        }
    }
}

/* Registers with the server. The hello goes out as soon as the link is up, and again after each
 * wait without an answer; the waits double up to 30 s until connect_timeout has passed. */
static int hello(agent_t *a, err_t *err)
{
    double start = fn_mono(), backoff = 1.0;
    for (int attempt = 1;; attempt++) {
        double until = fn_mono() + backoff;
        int sent = 0;
        while (fn_mono() < until) {
            if (!sent && a->connected) {
                json_t *hdr = json_pack("{s:s, s:I}", "type", "hello", "samples", (json_int_t)a->n);
                err_t e;
                sent = wire_send(a->sock, NULL, 0, hdr, NULL, 0, ZMQ_DONTWAIT, &e) >= 0;
                json_decref(hdr);
            }
            wire_msg_t msg;
            double left = until - fn_mono();
            /* Short slices while not yet connected, so the hello leaves right after the handshake. */
            int rc = receive(a, &msg, sent ? (int)(left * 1000) + 1 : 50, err);
            if (rc == FN_ETIMEOUT)
                continue;
            if (rc < 0)
                return rc;
            if (strcmp(msg.type, "welcome") == 0) {
                a->run = wire_get_int(&msg, "run", -1);
                a->registered = 1;
                log_info("registered with the server as client %lld of run %lld (%d samples)",
                         wire_get_int(&msg, "client_id", -1), (long long)a->run, a->n);
                wire_msg_close(&msg);
                return 0;
            }
            log_warn("expected a welcome, got \"%s\"; ignored", msg.type);
            wire_msg_close(&msg);
        }
        double elapsed = fn_mono() - start;
        if (elapsed >= a->opt->connect_timeout)
            return err_set(err, FN_ETIMEOUT,
                           "server at %s unreachable: no answer in %.0f s (%d attempts); check the address, that the "
                           "server is running, and that a firewall lets the port through",
                           a->opt->endpoint, elapsed, attempt);
        backoff = backoff * 2 > 30 ? 30 : backoff * 2;
        log_warn("no answer from the server at %s (%s, attempt %d); retrying, next wait %.0f s", a->opt->endpoint,
                 a->connected ? "connected, no reply" : "not connected", attempt, backoff);
    }
}

int client_run(const client_options_t *opt, err_t *err)
{
    agent_t a = {.opt = opt};
    int rc = load_data(&a, err);
    if (rc == 0)
        rc = open_socket(&a, err);
    if (rc == 0)
        rc = hello(&a, err);
    while (rc == 0) {
        wire_msg_t msg;
        rc = receive(&a, &msg, (int)(opt->idle_timeout * 1000), err);
        if (rc == FN_ETIMEOUT) {
            rc = err_set(err, FN_ETIMEOUT, "the server at %s has been silent for %.0f s; giving up", opt->endpoint,
                         opt->idle_timeout);
            break;
        }
        if (rc < 0)
            break;
        if (strcmp(msg.type, "train") == 0 || strncmp(msg.type, "sa_", 3) == 0) {
            const int *tidx;
            int tn;
            rc = trainer_holdout_split(&a.ho, &msg, a.idx, a.n, &tidx, &tn, err);
            if (rc == 0)
                rc = secagg_site_on_message(&a.sa, &a.trainer, &a.data, tidx, tn, a.sock, a.run, &msg, err);
            if (rc == 0)
                rc = trainer_round(&a.trainer, &a.data, tidx, tn, a.sock, a.run, &msg, &a.fb, err);
            else if (rc > 0)
                rc = 0;
            if (rc == FN_EPROTO) {
                log_warn("%s; ignored", err->msg);
                rc = 0;
            }
        } else if (strcmp(msg.type, "evaluate") == 0) {
            rc = trainer_evaluate(&a.trainer, &a.data, &a.ho, a.idx, a.n, a.sock, a.run, &msg, err);
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
    if (a.sock) /* stop the monitor before closing its reading end (see server_free) */
        zmq_socket_monitor(a.sock, NULL, 0);
    if (a.mon) {
        int zero = 0;
        zmq_setsockopt(a.mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(a.mon);
    }
    if (a.sock)
        zmq_close(a.sock);
    if (a.ctx)
        zmq_ctx_term(a.ctx);
    secagg_site_free(a.sa);
    trainer_free(&a.trainer);
    trainer_feedback_free(&a.fb);
    trainer_holdout_free(&a.ho);
    engine_dataset_free(&a.data);
    free(a.idx);
    return rc;
}
