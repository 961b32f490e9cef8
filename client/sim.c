#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "client/client.h"
#include "client/secagg_site.h"
#include "client/trainer.h"
#include "common/log.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"
#include "engine/partition.h"

/* One process, many sites: each virtual site has its own key pair, its own CURVE connection and
 * its own shard, so the server sees exactly what it would see from separate machines; the sites
 * share the data set in memory and one model, and train one after another. */
typedef struct vsite {
    void *sock;
    int *idx, n;
    int64_t run;
    int ended;
    secagg_site_t *sa; /* the site's secure aggregation state in the current round */
    trainer_feedback_t fb; /* error feedback of compressed updates */
    trainer_holdout_t ho;  /* samples held out of training for federated evaluation */
} vsite_t;

int client_simulate(const client_options_t *o, const char *kits_dir, int first, int count, err_t *err)
{
    if (o->shards < 1 || first < 0 || count < 1 || first + count > o->shards)
        return err_set(err, FN_EINVAL, "simulated sites %d..%d do not fit in %d shards", first, first + count - 1,
                       o->shards);
    trainer_data_t data;
    int *assign = NULL, rc;
    if ((rc = trainer_data_load(&data, o->data_dir, err)) < 0)
        return rc;
    if ((rc = client_partition(o, &data.src, &assign, err)) < 0) {
        trainer_data_free(&data);
        return rc;
    }
    void *ctx = zmq_ctx_new();
    vsite_t *v = FN_CALLOC((size_t)count, sizeof *v);
    zmq_pollitem_t *items = FN_CALLOC((size_t)count, sizeof *items);
    keys_pair_t *kp = keys_pair_new();
    char spk[KEYS_Z85_LEN + 1], path[PATH_MAX];
    trainer_t trainer = {.data = &data};
    int linger = 2000, ivl_max = 5000;
    for (int i = 0; rc == 0 && i < count; i++) {
        int k = first + i;
        if ((rc = engine_partition_indices(assign, data.src.count, k, &v[i].idx, &v[i].n, err)) < 0)
            break;
        snprintf(path, sizeof path, "%s/site-%d/site.key", kits_dir, k + 1);
        if ((rc = keys_read_secret(path, kp, err)) < 0)
            break;
        snprintf(path, sizeof path, "%s/site-%d/server.pub", kits_dir, k + 1);
        if ((rc = keys_read_public(path, spk, err)) < 0)
            break;
        v[i].sock = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(v[i].sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
        zmq_setsockopt(v[i].sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
        zmq_setsockopt(v[i].sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
        zmq_setsockopt(v[i].sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(v[i].sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        if (zmq_connect(v[i].sock, o->endpoint) != 0) {
            rc = err_set(err, FN_EINVAL, "cannot connect to %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
            break;
        }
        /* Queued until the handshake completes (no ZMQ_IMMEDIATE here): the run started us. */
        json_t *h = json_pack("{s:s, s:I}", "type", "hello", "samples", (json_int_t)v[i].n);
        long long sent = wire_send(v[i].sock, NULL, 0, h, NULL, 0, 0, err);
        json_decref(h);
        if (sent < 0)
            rc = (int)sent;
        items[i] = (zmq_pollitem_t){v[i].sock, 0, ZMQ_POLLIN, 0};
    }
    keys_pair_free(kp);
    free(assign);
    if (rc == 0)
        log_info("simulating sites %d..%d on %s", first + 1, first + count, o->endpoint);
    int ended = 0;
    double last = fn_mono();
    while (rc == 0 && ended < count) {
        if (o->stop && *o->stop) {
            rc = err_set(err, FN_ESTATE, "stopped by a signal");
            break;
        }
        int ready = zmq_poll(items, count, 200);
        if (ready < 0 && zmq_errno() != EINTR) {
            rc = err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (ready <= 0) {
            if (fn_mono() - last > o->idle_timeout)
                rc = err_set(err, FN_ETIMEOUT, "the server at %s has been silent for %.0f s; giving up", o->endpoint,
                             o->idle_timeout);
            continue;
        }
        last = fn_mono();
        for (int i = 0; rc == 0 && i < count; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            wire_msg_t msg;
            if (wire_recv(v[i].sock, 0, &msg, ZMQ_DONTWAIT, err) < 0)
                continue;
            if (strcmp(msg.type, "welcome") == 0) {
                v[i].run = wire_get_int(&msg, "run", -1);
            } else if (strcmp(msg.type, "train") == 0 || strncmp(msg.type, "sa_", 3) == 0) {
                const int *tidx;
                int tn;
                rc = trainer_holdout_split(&v[i].ho, &msg, v[i].idx, v[i].n, &tidx, &tn, err);
                if (rc == 0)
                    rc = secagg_site_on_message(&v[i].sa, &trainer, &data.idx, tidx, tn, v[i].sock, v[i].run, &msg, err);
                if (rc == 0)
                    rc = trainer_round(&trainer, &data.idx, tidx, tn, v[i].sock, v[i].run, &msg, &v[i].fb, err);
                else if (rc > 0)
                    rc = 0;
                if (rc == FN_EPROTO) {
                    log_warn("site-%d: %s; ignored", first + i + 1, err->msg);
                    rc = 0;
                }
            } else if (strcmp(msg.type, "evaluate") == 0) {
                rc = trainer_evaluate(&trainer, &data.idx, &v[i].ho, v[i].idx, v[i].n, v[i].sock, v[i].run, &msg, err);
                if (rc == FN_EPROTO) {
                    log_warn("site-%d: %s; ignored", first + i + 1, err->msg);
                    rc = 0;
                }
            } else if (strcmp(msg.type, "end") == 0 && !v[i].ended) {
                v[i].ended = 1;
                ended++;
            }
            wire_msg_close(&msg);
        }
    }
    for (int i = 0; i < count; i++) {
        if (v[i].sock)
            zmq_close(v[i].sock);
        secagg_site_free(v[i].sa);
        trainer_feedback_free(&v[i].fb);
        trainer_holdout_free(&v[i].ho);
        free(v[i].idx);
    }
    zmq_ctx_term(ctx);
    trainer_free(&trainer);
    trainer_data_free(&data);
    free(v);
    free(items);
    return rc;
}
