/* site: the site loop shared by the client agent and the simulation worker (client/site.h). */
#include "client/site.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/log.h"
#include "common/util.h"
#include "crypto/keys.h"
#include "engine/partition.h"

int site_samples(site_t *s, const int *assign, int total, int shard, err_t *err)
{
    if (assign)
        return engine_partition_indices(assign, total, shard, &s->idx, &s->n, err);
    s->n = total;
    s->idx = FN_MALLOC((size_t)(total > 0 ? total : 1) * sizeof *s->idx);
    for (int i = 0; i < total; i++)
        s->idx[i] = i;
    return 0;
}

int site_open(site_t *s, err_t *err)
{
    snprintf(s->tag, sizeof s->tag, "%s%s", s->lo.name ? s->lo.name : "", s->lo.name ? ": " : "");
    /* The keys stay in wiped memory; the link copies them into its socket. */
    keys_pair_t *kp = keys_pair_new();
    char spk[KEYS_Z85_LEN + 1];
    if (!kp)
        return err_set(err, FN_ENOMEM, "out of secure memory");
    int rc = keys_read_secret(s->lo.key_path, kp, err);
    if (rc == 0)
        rc = keys_read_public(s->lo.server_key, spk, err);
    if (rc == 0) {
        link_keys_t k = {.public_z85 = kp->public_z85, .secret_z85 = kp->secret_z85, .server_z85 = spk};
        rc = link_open(&s->lo, &k, &s->link, err);
    }
    keys_pair_free(kp);
    if (rc == 0)
        link_set_hello(s->link, json_pack("{s:I}", "samples", (json_int_t)s->n));
    return rc;
}

void site_close(site_t *s)
{
    link_close(s->link);
    s->link = NULL;
    secagg_site_free(s->sa);
    s->sa = NULL;
    trainer_feedback_free(&s->fb);
    trainer_holdout_free(&s->ho);
    free(s->idx);
    s->idx = NULL;
}

/* One message from the server. 1 when it ended the run for this site. */
static int dispatch(site_t *s, trainer_t *t, const trainer_data_t *data, wire_msg_t *msg, err_t *err)
{
    void *sock = link_socket(s->link);
    int64_t run = link_run(s->link);
    int rc = 0;
    if (strcmp(msg->type, "train") == 0 || strncmp(msg->type, "sa_", 3) == 0) {
        const int *tidx;
        int tn;
        rc = trainer_holdout_split(&s->ho, msg, s->idx, s->n, &tidx, &tn, err);
        if (rc == 0)
            rc = secagg_site_on_message(&s->sa, t, &data->idx, tidx, tn, sock, run, msg, err);
        if (rc == 0)
            rc = trainer_round(t, &data->idx, tidx, tn, sock, run, msg, &s->fb, err);
        else if (rc > 0) /* secure aggregation took the message */
            rc = 0;
    } else if (strcmp(msg->type, "evaluate") == 0) {
        rc = trainer_evaluate(t, &data->idx, &s->ho, s->idx, s->n, sock, run, msg, err);
    } else if (strcmp(msg->type, "end") == 0) {
        const char *reason = wire_get_str(msg, "reason");
        log_info("%sthe server ended the run: %s", s->tag, reason ? reason : "done");
        return 1;
    } else if (strcmp(msg->type, "welcome") != 0) {
        log_warn("%sunexpected \"%s\" message ignored", s->tag, msg->type);
    }
    if (rc == FN_EPROTO) { /* the server's mistake, not the site's: the site goes on */
        log_warn("%s%s; ignored", s->tag, err->msg);
        rc = 0;
    }
    return rc;
}

/* Services one site after a poll and handles what it received. 1 when the run ended for it. */
static int step(site_t *s, int readable, trainer_t *t, const trainer_data_t *data, err_t *err)
{
    int rc = link_service(s->link, err);
    if (rc < 0)
        return rc;
    wire_msg_t msg;
    while (readable && (rc = link_recv(s->link, &msg, err)) == 0) {
        rc = dispatch(s, t, data, &msg, err);
        wire_msg_close(&msg);
        s->last_heard = fn_mono(); /* after training: the silence counts from when it could answer */
        if (rc != 0)
            return rc;
        /* Training took a while: read the monitor before the next message, as a lone agent would. */
        if ((rc = link_service(s->link, err)) < 0)
            return rc;
    }
    return 0;
}

int site_loop(site_t *sites, int count, trainer_t *t, const trainer_data_t *data, err_t *err)
{
    zmq_pollitem_t *items = FN_CALLOC((size_t)count * 2, sizeof *items);
    int *which = FN_CALLOC((size_t)count, sizeof *which);
    double start = fn_mono();
    for (int i = 0; i < count; i++)
        sites[i].last_heard = start;
    int rc = 0;
    for (;;) {
        int open = 0;
        for (int i = 0; i < count; i++)
            if (sites[i].link) {
                link_pollitems(sites[i].link, items + 2 * open);
                which[open++] = i;
            }
        if (open == 0)
            break;
        volatile sig_atomic_t *stop = sites[0].lo.stop;
        if (stop && *stop) {
            rc = err_set(err, FN_ESTATE, "stopped by a signal");
            break;
        }
        if (zmq_poll(items, 2 * open, 200) < 0 && zmq_errno() != EINTR) {
            rc = err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        double heard = 0;
        int registered = 0;
        for (int j = 0; rc == 0 && j < open; j++) {
            site_t *s = &sites[which[j]];
            rc = step(s, items[2 * j].revents & ZMQ_POLLIN, t, data, err);
            registered |= link_registered(s->link);
            heard = s->last_heard > heard ? s->last_heard : heard;
            if (rc == 1) { /* ended: hang up, as the server expects after its "end" */
                link_close(s->link);
                s->link = NULL;
                rc = 0;
            }
        }
        if (rc < 0)
            break;
        /* The idle timeout is the server's silence towards this process: a simulated site the
         * server leaves out of many rounds in a row is not a sign of a dead server, as long as
         * its neighbours hear from it (a dead connection shows through heartbeats anyway). */
        const link_options_t *lo = &sites[which[0]].lo;
        if (registered && fn_mono() - heard > lo->idle_timeout) {
            rc = err_set(err, FN_ETIMEOUT, "the server at %s has been silent for %.0f s; giving up", lo->endpoint,
                         lo->idle_timeout);
            break;
        }
    }
    free(items);
    free(which);
    return rc;
}
