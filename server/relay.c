#include "server/relay.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "client/trainer.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"
#include "server/strategy.h"
#include "server/zap.h"

#define RELAY_MONITOR "inproc://fednas-relay-monitor"
/* A relay round's default share of the server's round deadline: the rest is left for sending
 * the aggregate upward and for the server's own bookkeeping. */
#define RELAY_DEADLINE_SHARE 0.8
#define RELAY_DEFAULT_ROUND_TIMEOUT 60.0

/* ---- arithmetic ---- */

int relay_accum_init(relay_accum_t *a, size_t m, err_t *err)
{
    memset(a, 0, sizeof *a);
    return fedavg_init(&a->agg, m, err);
}

void relay_accum_reset(relay_accum_t *a)
{
    fedavg_reset(&a->agg);
    a->samples = a->stat_samples = 0;
    a->loss_sum = a->acc_sum = 0;
}

int relay_accum_add(relay_accum_t *a, const float *update, size_t m, long long samples, double loss, double accuracy,
                    err_t *err)
{
    if (samples < 1 || samples > 1000000000LL)
        return err_set(err, FN_EINVAL, "sample count %lld outside [1, 1e9]", samples);
    if (m != a->agg.m)
        return err_set(err, FN_EINVAL, "%zu values where the model has %zu", m, a->agg.m);
    int rc = fedavg_add(&a->agg, update, m, (double)samples, err);
    if (rc < 0)
        return rc;
    a->samples += samples;
    if (isfinite(loss) && isfinite(accuracy)) {
        a->loss_sum += (double)samples * loss;
        a->acc_sum += (double)samples * accuracy;
        a->stat_samples += samples;
    }
    return 0;
}

int relay_accum_result(const relay_accum_t *a, float *mean, long long *samples, double *loss, double *accuracy,
                       err_t *err)
{
    int rc = fedavg_mean(&a->agg, mean, err);
    if (rc < 0)
        return rc;
    *samples = a->samples;
    *loss = a->stat_samples > 0 ? a->loss_sum / (double)a->stat_samples : NAN;
    *accuracy = a->stat_samples > 0 ? a->acc_sum / (double)a->stat_samples : NAN;
    return 0;
}

int relay_accum_count(const relay_accum_t *a) { return a->agg.count; }

void relay_accum_free(relay_accum_t *a) { fedavg_free(&a->agg); }

int relay_eval_add(relay_eval_t *e, long long samples, double loss, double accuracy, err_t *err)
{
    if (samples < 0 || samples > 1000000000LL || !isfinite(loss) || !(accuracy >= 0 && accuracy <= 1))
        return err_set(err, FN_EINVAL, "eval_result with %lld samples, loss %g, accuracy %g", samples, loss, accuracy);
    e->samples += samples;
    e->loss_sum += (double)samples * loss;
    e->acc_sum += (double)samples * accuracy;
    e->answers++;
    return 0;
}

void relay_eval_result(const relay_eval_t *e, long long *samples, double *loss, double *accuracy)
{
    *samples = e->samples;
    *loss = e->samples > 0 ? e->loss_sum / (double)e->samples : 0;
    *accuracy = e->samples > 0 ? e->acc_sum / (double)e->samples : 0;
}

int relay_can_relay(const json_t *h, char *why, size_t cap)
{
    if (json_object_get(h, "secagg")) {
        snprintf(why, cap, "the experiment uses secure aggregation, which a relay cannot honour: the server must "
                           "receive every site's own masked input, and a relay would have to unmask its clients' "
                           "updates to average them; connect these sites to the server directly");
        return 0;
    }
    if (json_object_get(h, "clip")) {
        snprintf(why, cap, "the experiment uses differential privacy, whose clipping and accounting are per site: "
                           "a relay's aggregate would be clipped and counted as one site, so the stated guarantee "
                           "would not hold for the sites behind it; connect these sites to the server directly");
        return 0;
    }
    const char *name = json_string_value(json_object_get(h, "strategy"));
    strategy_kind_t kind;
    if (name && strategy_parse_name(name, &kind) == 0 && strategy_needs_all_updates(kind)) {
        snprintf(why, cap, "the experiment's strategy %s needs every client's own update, and a relay forwards only "
                           "their mean; use fedavg, fedavgm, fedprox, fedadam, fedyogi or fedadagrad, or connect "
                           "these sites to the server directly", name);
        return 0;
    }
    return 1;
}

/* ---- the relay ---- */

typedef struct rsite {
    char name[64];
    unsigned char identity[WIRE_MAX_IDENTITY]; /* latest routing id: changes when it reconnects */
    size_t identity_len;
    int id; /* 1-based place on the relay's allow-list: seeds derive from it */
    int fd;
    int connected;
    long long samples;
    int selected, reported, lost, eval_pending;
} rsite_t;

struct relay {
    relay_options_t opt;
    void *ctx, *sock, *mon; /* the side facing the region's clients */
    zap_t *zap;
    keys_allow_t allow;
    char endpoint[256];
    client_link_t *up;
    int64_t session; /* the "run" the region's clients are welcomed into */
    rsite_t *sites;
    int nsites, cap;
    double last_up;  /* when the server was last heard from */
    /* The current (or last) round: the server's train message, kept for its model and options. */
    wire_msg_t train;
    int have_train, in_round;
    long long round;
    double round_deadline, round_t0, round_timeout, server_round_timeout;
    size_t m;
    relay_accum_t acc;
    int acc_ready;
    float *mean;
    float *aligned; /* an update copied out of a frame packed at an odd offset */
    long long done_round; /* the round whose update was forwarded last (sent again on a repeat) */
    long long done_samples;
    double done_loss, done_acc, done_seconds;
    trainer_feedback_t fb; /* the relay's own error feedback when the server asks for compression */
    /* Federated evaluation in progress. */
    int in_eval;
    long long eval_round;
    double eval_deadline;
    relay_eval_t ev;
};

static rsite_t *find_site(relay_t *r, const char *name)
{
    for (int i = 0; i < r->nsites; i++)
        if (strcmp(r->sites[i].name, name) == 0)
            return &r->sites[i];
    return NULL;
}

static int connected_count(const relay_t *r, long long *samples)
{
    int n = 0;
    long long total = 0;
    for (int i = 0; i < r->nsites; i++)
        if (r->sites[i].connected) {
            n++;
            total += r->sites[i].samples;
        }
    if (samples)
        *samples = total;
    return n;
}

int relay_create(const relay_options_t *opt, relay_t **out, err_t *err)
{
    *out = NULL;
    relay_t *r = FN_CALLOC(1, sizeof *r);
    r->opt = *opt;
    r->done_round = -1;
    char path[PATH_MAX];
    int rc;
    keys_pair_t *kp = keys_pair_new();
    if (!kp) {
        free(r);
        return err_set(err, FN_ENOMEM, "out of secure memory");
    }
    /* The run id the region's clients see: a fresh one per relay process, so updates meant for
     * an earlier relay session are recognised as stale. */
    uint32_t sid = 0;
    if (getrandom(&sid, sizeof sid, 0) != sizeof sid)
        sid = (uint32_t)getpid() ^ (uint32_t)(fn_now() * 1000);
    r->session = 1 + (int64_t)(sid & 0x3fffffff);
    snprintf(path, sizeof path, "%s/server.key", opt->keys_dir);
    if ((rc = keys_read_secret(path, kp, err)) < 0) {
        err_wrap(err, "the relay's own key pair (make it with `fednas keys init %s`): ", opt->keys_dir);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/allowed_clients", opt->keys_dir);
    if ((rc = keys_allow_load(path, &r->allow, err)) < 0)
        goto fail;
    r->ctx = zmq_ctx_new();
    if ((rc = zap_start(r->ctx, path, &r->zap, err)) < 0)
        goto fail;
    r->sock = zmq_socket(r->ctx, ZMQ_ROUTER);
    int one = 1, linger = 2000;
    int hb = (int)(opt->heartbeat * 1000), hb_timeout = 3 * hb;
    zmq_setsockopt(r->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(r->sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(r->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(r->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Heartbeats on ZeroMQ's I/O thread notice a dead client even while it trains. */
    zmq_setsockopt(r->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(r->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    if (zmq_socket_monitor(r->sock, RELAY_MONITOR, ZMQ_EVENT_DISCONNECTED) != 0) {
        rc = err_set(err, FN_EIO, "cannot monitor the relay socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    r->mon = zmq_socket(r->ctx, ZMQ_PAIR);
    zmq_connect(r->mon, RELAY_MONITOR);
    if (zmq_bind(r->sock, opt->bind) != 0) {
        int e = zmq_errno();
        rc = e == EADDRINUSE
                 ? err_set(err, FN_EADDRINUSE,
                           "cannot listen on %s: the port is already in use; stop the other process or choose another "
                           "port (--bind tcp://HOST:PORT, or port * to pick a free one)",
                           opt->bind)
                 : err_set(err, FN_EIO, "cannot listen on %s: %s (expected tcp://HOST:PORT)", opt->bind,
                           zmq_strerror(e));
        goto fail;
    }
    size_t len = sizeof r->endpoint;
    zmq_getsockopt(r->sock, ZMQ_LAST_ENDPOINT, r->endpoint, &len);
    /* The link upward now, so a bad kit is an error before anyone waits; it says hello later. */
    if ((rc = client_link_open(&r->opt.up, &r->up, err)) < 0) {
        err_wrap(err, "the relay's startup kit from the server: ");
        goto fail;
    }
    /* Sends upward wait at most 2 s for a dropped link: the relay keeps serving its clients,
     * and the server asks for the round again once the relay has rejoined. */
    int sndtimeo = 2000;
    zmq_setsockopt(client_link_socket(r->up), ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    keys_pair_free(kp);
    *out = r;
    return 0;
fail:
    keys_pair_free(kp);
    relay_free(r);
    return rc;
}

const char *relay_endpoint(const relay_t *r) { return r->endpoint; }

static int stopped(const relay_t *r) { return r->opt.stop && *r->opt.stop; }

static long long send_down(relay_t *r, rsite_t *site, json_t *hdr, const wire_frame_t *frames, int n)
{
    err_t e;
    json_object_set_new(hdr, "run", json_integer(r->session));
    long long sent = wire_send(r->sock, site->identity, site->identity_len, hdr, frames, n, 0, &e);
    json_decref(hdr);
    if (sent < 0)
        log_warn("cannot reach client %s: %s", site->name, e.msg);
    return sent;
}

static int send_up(relay_t *r, json_t *hdr, err_t *err)
{
    json_object_set_new(hdr, "run", json_integer(client_link_run(r->up)));
    long long sent = wire_send(client_link_socket(r->up), NULL, 0, hdr, NULL, 0, 0, err);
    json_decref(hdr);
    return sent < 0 ? (int)sent : 0;
}

/* Tells the server this relay cannot take part in a round, and why: the server logs it and
 * stops waiting for the relay in that round. */
static void refuse_up(relay_t *r, long long round, const char *why)
{
    err_t e;
    if (send_up(r, json_pack("{s:s, s:I, s:s}", "type", "refuse", "round", (json_int_t)round, "reason", why), &e) < 0)
        log_warn("cannot tell the server: %s", e.msg);
}

/* A seed of the server's, spread over the relay's clients: each gets its own, derived from the
 * relay's seed and its place on the relay's allow-list, so a relayed run repeats exactly. */
static json_int_t derive_seed(json_int_t seed, int id) { return (json_int_t)(rng_derive((uint64_t)seed, (uint64_t)id) >> 1); }

/* The server's message as the relay passes it to one client: its own run, seeds and deadline. */
static json_t *forward_header(relay_t *r, const wire_msg_t *msg, const rsite_t *site)
{
    json_t *h = json_deep_copy(msg->header);
    json_object_del(h, "v");
    json_object_del(h, "frames");
    /* The relay's clients send it plain updates; the relay compresses the one it sends upward. */
    json_object_del(h, "compression");
    json_t *seed = json_object_get(h, "seed");
    if (json_is_integer(seed))
        json_object_set_new(h, "seed", json_integer(derive_seed(json_integer_value(seed), site->id)));
    json_t *ho = json_object_get(h, "holdout");
    json_t *hs = json_object_get(ho, "seed");
    if (json_is_integer(hs))
        json_object_set_new(ho, "seed", json_integer(derive_seed(json_integer_value(hs), site->id)));
    /* A relay below this one must finish within this relay's deadline. */
    if (json_object_get(h, "round_timeout"))
        json_object_set_new(h, "round_timeout", json_real(r->round_timeout));
    return h;
}

static long long send_model(relay_t *r, rsite_t *site, const wire_msg_t *msg)
{
    size_t count = 0;
    const float *model = wire_frame_data(msg, 0, WIRE_F32, &count);
    wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = model, .count = count};
    return send_down(r, site, forward_header(r, msg, site), &f, 1);
}

static void on_hello(relay_t *r, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    long long samples = wire_get_int(msg, "samples", -1);
    if (samples < 1 || samples > 1000000000LL) {
        log_warn("client %s: hello without a valid sample count; ignored", name);
        return;
    }
    rsite_t *site = find_site(r, name);
    if (!site && !keys_allow_find_name(&r->allow, name)) {
        /* Admitted by the ZAP handler from a newer allow-list than ours. */
        char path[PATH_MAX];
        keys_allow_t fresh;
        err_t e;
        snprintf(path, sizeof path, "%s/allowed_clients", r->opt.keys_dir);
        if (keys_allow_load(path, &fresh, &e) == 0) {
            keys_allow_free(&r->allow);
            r->allow = fresh;
        }
    }
    if (!site) {
        if (r->nsites == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 16;
            r->sites = realloc(r->sites, (size_t)r->cap * sizeof *r->sites);
            FN_CHECK(r->sites);
        }
        site = &r->sites[r->nsites++];
        memset(site, 0, sizeof *site);
        snprintf(site->name, sizeof site->name, "%s", name);
        for (int i = 0; i < r->allow.count; i++)
            if (strcmp(r->allow.entries[i].name, name) == 0)
                site->id = i + 1;
        log_info("client %s joined (%lld samples)", name, samples);
    } else if (!site->connected) {
        log_info("client %s rejoined", name);
    }
    memcpy(site->identity, msg->identity, msg->identity_len);
    site->identity_len = msg->identity_len;
    site->fd = msg->srcfd;
    site->connected = 1;
    site->samples = samples;
    send_down(r, site, json_pack("{s:s, s:i}", "type", "welcome", "client_id", site->id), NULL, 0);
    /* A client of this round that lost its connection gets the round's model again. */
    if (r->in_round && site->selected && !site->reported) {
        site->lost = 0;
        send_model(r, site, &r->train);
    }
}

static void on_update(relay_t *r, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    rsite_t *site = find_site(r, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    if (!site || run != r->session || !r->in_round || round != r->round) {
        log_warn("client %s: update for run %lld round %lld ignored (now: run %lld round %lld%s)", name, run, round,
                 (long long)r->session, r->round, r->in_round ? "" : ", no round open");
        return;
    }
    site->fd = msg->srcfd;
    if (!site->selected || site->reported) {
        log_warn("client %s: %s update for round %lld ignored", name, site->reported ? "duplicate" : "unrequested",
                 r->round);
        return;
    }
    size_t count = 0;
    const float *upd = wire_frame_data(msg, 0, WIRE_F32, &count);
    long long samples = wire_get_int(msg, "samples", -1);
    json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
    err_t e;
    if (!upd || msg->nframes != 1) {
        log_warn("client %s: update rejected: expected one float32 frame of %zu values", name, r->m);
        return;
    }
    if (((uintptr_t)upd & 3) && count == r->m) { /* ZeroMQ packs small messages at any offset */
        memcpy(r->aligned, upd, count * sizeof *upd);
        upd = r->aligned;
    }
    if (relay_accum_add(&r->acc, upd, count, samples, json_is_number(loss) ? json_number_value(loss) : NAN,
                        json_is_number(acc) ? json_number_value(acc) : NAN, &e) < 0) {
        log_warn("client %s: update rejected: %s", name, e.msg);
        return;
    }
    site->reported = 1;
}

static void on_eval_result(relay_t *r, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    rsite_t *site = find_site(r, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    if (!site || run != r->session || !r->in_eval || round != r->eval_round || !site->eval_pending) {
        log_warn("client %s: eval_result for run %lld round %lld ignored (not asked for)", name, run, round);
        return;
    }
    json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
    err_t e;
    if (relay_eval_add(&r->ev, wire_get_int(msg, "samples", -1), json_is_number(loss) ? json_number_value(loss) : NAN,
                       json_is_number(acc) ? json_number_value(acc) : NAN, &e) < 0) {
        log_warn("client %s: malformed eval_result dropped: %s", name, e.msg);
        return;
    }
    site->eval_pending = 0;
}

static void on_disconnect(relay_t *r, int fd)
{
    for (int i = 0; i < r->nsites; i++) {
        rsite_t *site = &r->sites[i];
        if (!site->connected || site->fd != fd)
            continue;
        site->connected = 0;
        site->eval_pending = 0;
        if (r->in_round && site->selected && !site->reported) {
            site->lost = 1;
            log_warn("client %s disconnected during round %lld; the round goes on without it", site->name, r->round);
        } else {
            log_info("client %s disconnected", site->name);
        }
    }
}

static void drain_monitor(relay_t *r)
{
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, r->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        int ev = 0, value = -1;
        if (zmq_msg_size(&m) >= 6) {
            const uint8_t *d = zmq_msg_data(&m);
            ev = d[0] | d[1] << 8;
            memcpy(&value, d + 2, 4);
        }
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (more) {
            zmq_msg_init(&m);
            zmq_msg_recv(&m, r->mon, 0);
            zmq_msg_close(&m);
        }
        if (ev == ZMQ_EVENT_DISCONNECTED)
            on_disconnect(r, value);
    }
}

static void pump_down(relay_t *r)
{
    for (;;) {
        wire_msg_t msg;
        err_t e;
        int rc = wire_recv(r->sock, 1, &msg, ZMQ_DONTWAIT, &e);
        if (rc == FN_ETIMEOUT)
            return;
        if (rc < 0) {
            log_warn("dropped a bad message: %s", e.msg);
            continue;
        }
        if (!msg.user_id[0])
            log_warn("dropped a message from an unauthenticated peer");
        else if (strcmp(msg.type, "hello") == 0)
            on_hello(r, &msg);
        else if (strcmp(msg.type, "update") == 0)
            on_update(r, &msg);
        else if (strcmp(msg.type, "eval_result") == 0)
            on_eval_result(r, &msg);
        else
            log_warn("client %s: unexpected \"%s\" message dropped", msg.user_id, msg.type);
        wire_msg_close(&msg);
    }
}

/* Sends the round's aggregate upward as the client agents send theirs (compressed when the
 * server asked for it), from r->mean and the done_* fields. */
static int forward_update(relay_t *r, err_t *err)
{
    trainer_result_t res = {.round = r->done_round,
                            .samples = (int)r->done_samples,
                            .update = r->mean,
                            .m = r->m,
                            .loss = r->done_loss,
                            .accuracy = r->done_acc,
                            .seconds = r->done_seconds};
    uint64_t seed = (uint64_t)wire_get_int(&r->train, "seed", 0);
    return trainer_send_compressed(&res, &r->train, seed, &r->fb, client_link_socket(r->up), client_link_run(r->up),
                                   err);
}

/* Closes the round: the mean of the updates that arrived goes upward, or a refusal when none did. */
static void finish_round(relay_t *r)
{
    r->in_round = 0;
    int selected = 0, lost = 0;
    for (int i = 0; i < r->nsites; i++) {
        rsite_t *s = &r->sites[i];
        selected += s->selected;
        if (s->selected && !s->reported) {
            lost++;
            if (!s->lost)
                log_warn("client %s missed the relay's deadline of round %lld", s->name, r->round);
        }
    }
    int n = relay_accum_count(&r->acc);
    if (n == 0) {
        char why[256];
        snprintf(why, sizeof why, "none of the relay's %d clients sent an update for round %lld within %.0f s",
                 selected, r->round, r->round_timeout);
        log_warn("%s; refusing the round", why);
        refuse_up(r, r->round, why);
        return;
    }
    err_t e;
    double loss, acc;
    long long samples;
    if (relay_accum_result(&r->acc, r->mean, &samples, &loss, &acc, &e) < 0) {
        log_error("round %lld: %s", r->round, e.msg);
        refuse_up(r, r->round, e.msg);
        return;
    }
    r->done_round = r->round;
    r->done_samples = samples;
    r->done_loss = loss;
    r->done_acc = acc;
    r->done_seconds = fn_mono() - r->round_t0;
    if (forward_update(r, &e) < 0) {
        /* Kept: the server sends the round again when the relay rejoins, and gets this update. */
        log_warn("round %lld: cannot send the update upward: %s", r->round, e.msg);
        return;
    }
    log_info("round %lld: forwarded the mean of %d of %d client updates (%lld samples, %d dropped) in %.2f s", r->round,
             n, selected, samples, lost, r->done_seconds);
}

static void on_train(relay_t *r, wire_msg_t *msg)
{
    long long round = wire_get_int(msg, "round", -1);
    size_t count = 0;
    const float *model = wire_frame_data(msg, 0, WIRE_F32, &count);
    if (round < 1 || !model || count == 0) {
        log_warn("malformed train message from the server (round %lld) ignored", round);
        wire_msg_close(msg);
        return;
    }
    if (r->in_round && round == r->round) { /* sent again after a rejoin: the round is under way */
        wire_msg_close(msg);
        return;
    }
    if (!r->in_round && round == r->done_round && count == r->m) {
        /* The server did not get this round's update (the link dropped): the same one again. */
        err_t e;
        if (forward_update(r, &e) < 0)
            log_warn("round %lld: cannot send the update upward: %s", round, e.msg);
        else
            log_info("round %lld: sent the update again", round);
        wire_msg_close(msg);
        return;
    }
    if (r->in_round)
        log_warn("round %lld abandoned: the server started round %lld", r->round, round);
    if (r->have_train)
        wire_msg_close(&r->train);
    r->train = *msg; /* owned now: its model is what the clients get */
    r->have_train = 1;
    err_t e;
    if (!r->acc_ready || count != r->m) {
        if (r->acc_ready)
            relay_accum_free(&r->acc);
        r->acc_ready = 0;
        if (relay_accum_init(&r->acc, count, &e) < 0) {
            log_error("%s", e.msg);
            refuse_up(r, round, e.msg);
            return;
        }
        r->acc_ready = 1;
        r->m = count;
        free(r->mean);
        free(r->aligned);
        r->mean = FN_MALLOC(count * sizeof *r->mean);
        r->aligned = FN_MALLOC(count * sizeof *r->aligned);
    }
    relay_accum_reset(&r->acc);
    json_t *rt = json_object_get(msg->header, "round_timeout");
    if (json_is_number(rt) && json_number_value(rt) > 0)
        r->server_round_timeout = json_number_value(rt);
    r->round_timeout = r->opt.round_timeout > 0 ? r->opt.round_timeout
                       : r->server_round_timeout > 0 ? RELAY_DEADLINE_SHARE * r->server_round_timeout
                                                     : RELAY_DEFAULT_ROUND_TIMEOUT;
    r->round = round;
    r->in_round = 1;
    r->round_t0 = fn_mono();
    r->round_deadline = r->round_t0 + r->round_timeout;
    int sent = 0;
    for (int i = 0; i < r->nsites; i++) {
        rsite_t *s = &r->sites[i];
        s->selected = s->connected;
        s->reported = s->lost = 0;
        if (!s->selected)
            continue;
        if (send_model(r, s, &r->train) >= 0)
            sent++;
        else
            s->lost = 1;
    }
    log_info("round %lld: model of %zu parameters sent to %d clients", round, count, sent);
}

static void on_evaluate(relay_t *r, wire_msg_t *msg)
{
    long long round = wire_get_int(msg, "round", -1);
    size_t count = 0;
    if (round < 1 || !wire_frame_data(msg, 0, WIRE_F32, &count)) {
        log_warn("malformed evaluate message from the server (round %lld) ignored", round);
        return;
    }
    memset(&r->ev, 0, sizeof r->ev);
    r->in_eval = 1;
    r->eval_round = round;
    double timeout = r->opt.round_timeout > 0 ? r->opt.round_timeout
                     : r->server_round_timeout > 0 ? RELAY_DEADLINE_SHARE * r->server_round_timeout
                                                   : RELAY_DEFAULT_ROUND_TIMEOUT;
    r->eval_deadline = fn_mono() + timeout;
    for (int i = 0; i < r->nsites; i++) {
        rsite_t *s = &r->sites[i];
        s->eval_pending = 0;
        if (s->connected && send_model(r, s, msg) >= 0)
            s->eval_pending = 1;
    }
}

static void finish_eval(relay_t *r)
{
    r->in_eval = 0;
    for (int i = 0; i < r->nsites; i++)
        if (r->sites[i].eval_pending) {
            log_warn("client %s did not answer the evaluation of round %lld in time", r->sites[i].name, r->eval_round);
            r->sites[i].eval_pending = 0;
        }
    long long samples;
    double loss, acc;
    relay_eval_result(&r->ev, &samples, &loss, &acc);
    err_t e;
    if (send_up(r, json_pack("{s:s, s:I, s:I, s:f, s:f}", "type", "eval_result", "round", (json_int_t)r->eval_round,
                             "samples", (json_int_t)samples, "loss", loss, "accuracy", acc),
                &e) < 0)
        log_warn("round %lld: cannot send the evaluation upward: %s", r->eval_round, e.msg);
}

static void send_end(relay_t *r, const char *reason)
{
    for (int i = 0; i < r->nsites; i++)
        if (r->sites[i].connected)
            send_down(r, &r->sites[i], json_pack("{s:s, s:s}", "type", "end", "reason", reason), NULL, 0);
}

/* One message from the server. Returns 1 when the server ended the run, < 0 on a refusal. */
static int on_upstream(relay_t *r, wire_msg_t *msg, err_t *err)
{
    if (strcmp(msg->type, "train") == 0) {
        char why[512];
        if (!relay_can_relay(msg->header, why, sizeof why)) {
            long long round = wire_get_int(msg, "round", -1);
            log_error("refusing round %lld: %s", round, why);
            refuse_up(r, round, why);
            wire_msg_close(msg);
            return err_set(err, FN_EINVAL, "%s", why);
        }
        on_train(r, msg); /* takes msg */
        return 0;
    }
    int rc = 0;
    if (strcmp(msg->type, "evaluate") == 0) {
        on_evaluate(r, msg);
    } else if (strncmp(msg->type, "sa_", 3) == 0) {
        char why[512];
        json_t *sa = json_pack("{s:b}", "secagg", 1);
        relay_can_relay(sa, why, sizeof why); /* the same words as for the round's train message */
        json_decref(sa);
        refuse_up(r, wire_get_int(msg, "round", -1), why);
        rc = err_set(err, FN_EINVAL, "%s", why);
    } else if (strcmp(msg->type, "end") == 0) {
        const char *reason = wire_get_str(msg, "reason");
        log_info("the server ended the run: %s", reason ? reason : "done");
        rc = 1;
    } else if (strcmp(msg->type, "welcome") != 0) {
        log_warn("unexpected \"%s\" message from the server ignored", msg->type);
    }
    wire_msg_close(msg);
    return rc;
}

/* After "end": the clients read it and hang up. Closing first could lose it: a client's link
 * (ZMQ_IMMEDIATE) drops what it has not read yet when the connection goes. */
static void wait_hangups(relay_t *r, double seconds)
{
    double until = fn_mono() + seconds;
    while (connected_count(r, NULL) > 0 && fn_mono() < until) {
        zmq_pollitem_t items[2] = {{r->sock, 0, ZMQ_POLLIN, 0}, {r->mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 100) > 0) {
            if (items[1].revents & ZMQ_POLLIN)
                drain_monitor(r);
            if (items[0].revents & ZMQ_POLLIN)
                pump_down(r);
        }
    }
}

/* Waits for the region's clients (or the timeout, with at least one). */
static int wait_for_clients(relay_t *r, err_t *err)
{
    int want = r->opt.clients > 0 ? r->opt.clients : r->allow.count;
    if (want < 1)
        return err_set(err, FN_EINVAL,
                       "the relay's allow-list %s/allowed_clients is empty; add its clients with `fednas keys site %s "
                       "NAME --connect %s`",
                       r->opt.keys_dir, r->opt.keys_dir, r->endpoint);
    log_info("waiting for %d clients at %s", want, r->endpoint);
    double deadline = fn_mono() + r->opt.register_timeout;
    while (connected_count(r, NULL) < want && fn_mono() < deadline && !stopped(r)) {
        zmq_pollitem_t items[2] = {{r->sock, 0, ZMQ_POLLIN, 0}, {r->mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 200) > 0) {
            if (items[1].revents & ZMQ_POLLIN)
                drain_monitor(r);
            pump_down(r);
        }
    }
    if (stopped(r))
        return err_set(err, FN_ESTATE, "stopped while waiting for clients");
    int n = connected_count(r, NULL);
    if (n < 1)
        return err_set(err, FN_ETIMEOUT,
                       "no client connected to the relay at %s within %.0f s; check that the clients can reach it "
                       "and that their keys are on %s/allowed_clients",
                       r->endpoint, r->opt.register_timeout, r->opt.keys_dir);
    if (n < want)
        log_warn("going on with %d of %d clients", n, want);
    return 0;
}

static int relay_loop(relay_t *r, err_t *err)
{
    r->last_up = fn_mono();
    for (;;) {
        if (stopped(r))
            return err_set(err, FN_ESTATE, "stopped by a signal");
        zmq_pollitem_t items[4] = {{r->sock, 0, ZMQ_POLLIN, 0}, {r->mon, 0, ZMQ_POLLIN, 0}};
        client_link_pollitems(r->up, items + 2);
        if (zmq_poll(items, 4, 100) < 0 && zmq_errno() != EINTR)
            return err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
        int rc = client_link_service(r->up, err);
        if (rc < 0)
            return rc;
        if (items[1].revents & ZMQ_POLLIN)
            drain_monitor(r);
        if (items[0].revents & ZMQ_POLLIN)
            pump_down(r);
        if (items[2].revents & ZMQ_POLLIN) {
            wire_msg_t msg;
            while ((rc = client_link_recv(r->up, &msg, err)) == 0) {
                r->last_up = fn_mono();
                if ((rc = on_upstream(r, &msg, err)) != 0)
                    return rc < 0 ? rc : 0;
            }
        }
        if (r->in_round) {
            int waiting = 0;
            for (int i = 0; i < r->nsites; i++)
                waiting += r->sites[i].selected && !r->sites[i].reported && !r->sites[i].lost;
            if (waiting == 0 || fn_mono() >= r->round_deadline)
                finish_round(r);
        }
        if (r->in_eval) {
            int waiting = 0;
            for (int i = 0; i < r->nsites; i++)
                waiting += r->sites[i].eval_pending;
            if (waiting == 0 || fn_mono() >= r->eval_deadline)
                finish_eval(r);
        }
        if (fn_mono() - r->last_up > r->opt.up.idle_timeout)
            return err_set(err, FN_ETIMEOUT, "the server at %s has been silent for %.0f s; giving up",
                           r->opt.up.endpoint, r->opt.up.idle_timeout);
    }
}

int relay_run(relay_t *r, err_t *err)
{
    int rc = wait_for_clients(r, err);
    if (rc == 0) {
        long long samples;
        int n = connected_count(r, &samples);
        client_link_set_hello(r->up, json_pack("{s:I, s:b, s:i}", "samples", (json_int_t)samples, "relay", 1, "sites", n));
        log_info("joining the server at %s for %d clients (%lld samples)", r->opt.up.endpoint, n, samples);
        rc = client_link_register(r->up, err);
    }
    if (rc == 0)
        rc = relay_loop(r, err);
    send_end(r, rc == 0 ? "done" : err->msg);
    wait_hangups(r, 2.0);
    return rc;
}

void relay_free(relay_t *r)
{
    if (!r)
        return;
    client_link_close(r->up);
    if (r->sock)
        zmq_socket_monitor(r->sock, NULL, 0);
    if (r->mon) {
        int zero = 0;
        zmq_setsockopt(r->mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(r->mon);
    }
    if (r->sock)
        zmq_close(r->sock);
    if (r->ctx) {
        zmq_ctx_shutdown(r->ctx); /* wakes the ZAP thread */
        zap_join(r->zap);
        zmq_ctx_term(r->ctx);
    }
    if (r->have_train)
        wire_msg_close(&r->train);
    if (r->acc_ready)
        relay_accum_free(&r->acc);
    trainer_feedback_free(&r->fb);
    keys_allow_free(&r->allow);
    free(r->mean);
    free(r->aligned);
    free(r->sites);
    free(r);
}
