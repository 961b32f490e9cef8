/* relay.c: `fednas relay`, a site upward and a server downward. Map: the arithmetic (an
 * example-weighted running mean of updates and of evaluation answers) and the rules of what a
 * relay can forward (common/features.h); creation (the upward link, common/link.h, and the
 * downward registry, server/sites.h); the downward handlers, which share server/site_msg.h with
 * the server; the upward handlers (train: broadcast down and collect until the deadline, then
 * one mean up; evaluate: likewise); the loop polling both sides. */
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

#include "common/features.h"
#include "common/limits.h"
#include "common/link.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/update.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"
#include "server/site_msg.h"
#include "server/sites.h"
#include "server/strategy.h"

/* The largest message a client may send the relay. The model's size is known only from the
 * server's first train message, after the socket is bound, so this is a fixed bound: 2 GiB
 * (a 500M-parameter update), beyond which ZeroMQ drops the connection instead of buffering. */
#define RELAY_MAX_MESSAGE ((int64_t)1 << 31)

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
    if (samples < 1 || samples > FN_MAX_SAMPLES)
        return err_set(err, FN_EINVAL, "sample count %lld outside [1, %lld]", samples, FN_MAX_SAMPLES);
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
    int rc = site_eval_check(samples, loss, accuracy, err);
    if (rc < 0)
        return rc;
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
    /* The server's train message says which features the round uses: "secagg" its secure
     * aggregation, "clip" its differential privacy, "strategy" the rule the server applies. */
    const char *name = json_string_value(json_object_get(h, "strategy"));
    strategy_kind_t kind;
    features_t f = {.relay = 1,
                    .secagg = json_object_get(h, "secagg") != NULL,
                    .dp = json_object_get(h, "clip") != NULL,
                    .robust = name && strategy_parse_name(name, &kind) == 0 && strategy_needs_all_updates(kind),
                    .strategy = name};
    err_t e;
    if (features_check(&f, NULL, &e) < 0) {
        snprintf(why, cap, "%s", e.msg);
        return 0;
    }
    return 1;
}

/* ---- the relay ---- */

struct relay {
    relay_options_t opt;
    sites_t *sites; /* the side facing the region's clients */
    link_t *up;
    int64_t session; /* the "run" the region's clients are welcomed into */
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
    long long done_round; /* the round whose update was forwarded last (sent again on a repeat) */
    long long done_samples;
    double done_loss, done_acc, done_seconds;
    update_feedback_t fb; /* the relay's own error feedback when the server asks for compression */
    /* Federated evaluation in progress. */
    int in_eval;
    long long eval_round;
    double eval_deadline;
    relay_eval_t ev;
};

static int on_message(void *owner, wire_msg_t *msg);
static void on_disconnect(void *owner, sites_site_t *site);

/* The link upward with the relay's kit from the server (its site.key, the server's key pinned). */
static int open_up(relay_t *r, err_t *err)
{
    keys_pair_t *kp = keys_pair_new();
    char spk[KEYS_Z85_LEN + 1];
    int rc = kp ? keys_read_secret(r->opt.up.key_path, kp, err) : err_set(err, FN_ENOMEM, "out of secure memory");
    if (rc == 0 && (rc = keys_read_public(r->opt.up.server_key, spk, err)) == 0)
        rc = link_open(&r->opt.up, &(link_keys_t){kp->public_z85, kp->secret_z85, spk}, &r->up, err);
    keys_pair_free(kp);
    return rc;
}

int relay_create(const relay_options_t *opt, relay_t **out, err_t *err)
{
    *out = NULL;
    relay_t *r = FN_CALLOC(1, sizeof *r);
    r->opt = *opt;
    r->done_round = -1;
    int rc;
    /* The run id the region's clients see: a fresh one per relay process, so updates meant for
     * an earlier relay session are recognised as stale. */
    uint32_t sid = 0;
    if (getrandom(&sid, sizeof sid, 0) != sizeof sid)
        sid = (uint32_t)getpid() ^ (uint32_t)(fn_now() * 1000);
    r->session = 1 + (int64_t)(sid & 0x3fffffff);
    char hint[PATH_MAX + 96];
    snprintf(hint, sizeof hint, "the relay's own key pair (make it with `fednas keys init %s`): ", opt->keys_dir);
    sites_options_t so = {.keys_dir = opt->keys_dir, .role = "relay", .noun = "client", .key_hint = hint,
                          .on_message = on_message, .on_disconnect = on_disconnect, .owner = r};
    if ((rc = sites_open(&so, &r->sites, err)) < 0 ||
        (rc = sites_listen(r->sites, opt->bind, opt->heartbeat, RELAY_MAX_MESSAGE, 0, err)) < 0)
        goto fail;
    /* The link upward now, so a bad kit is an error before anyone waits; it says hello later. */
    if ((rc = open_up(r, err)) < 0) {
        err_wrap(err, "the relay's startup kit from the server: ");
        goto fail;
    }
    /* Sends upward wait at most 2 s for a dropped link: the relay keeps serving its clients,
     * and the server asks for the round again once the relay has rejoined. */
    int sndtimeo = 2000;
    zmq_setsockopt(link_socket(r->up), ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    *out = r;
    return 0;
fail:
    relay_free(r);
    return rc;
}

const char *relay_endpoint(const relay_t *r) { return sites_endpoint(r->sites); }

static int stopped(const relay_t *r) { return r->opt.stop && *r->opt.stop; }

static long long send_down(relay_t *r, sites_site_t *site, json_t *hdr, const wire_frame_t *frames, int n)
{
    return sites_send(r->sites, site, r->session, hdr, frames, n);
}

static int send_up(relay_t *r, json_t *hdr, err_t *err)
{
    json_object_set_new(hdr, "run", json_integer(link_run(r->up)));
    long long sent = wire_send(link_socket(r->up), NULL, 0, hdr, NULL, 0, 0, err);
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
static json_t *forward_header(relay_t *r, const wire_msg_t *msg, const sites_site_t *site)
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

static long long send_model(relay_t *r, sites_site_t *site, const wire_msg_t *msg)
{
    size_t count = 0;
    const float *model = wire_frame_data(msg, 0, WIRE_F32, &count);
    wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = model, .count = count};
    return send_down(r, site, forward_header(r, msg, site), &f, 1);
}

static void on_hello(relay_t *r, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_hello(r->sites, msg, r->session, NULL);
    /* A client of this round that lost its connection gets the round's model again. */
    if (site && r->in_round && site->selected && !site->reported) {
        site->lost = 0;
        send_model(r, site, &r->train);
    }
}

static void on_update(relay_t *r, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(r->sites, msg, r->session, r->in_round, r->round);
    if (!site)
        return;
    if (!site->selected || site->reported) {
        log_warn("client %s: %s update for round %lld ignored", site->name,
                 site->reported ? "duplicate" : "unrequested", r->round);
        return;
    }
    site_update_t u;
    err_t e;
    int rc = site_msg_update(msg, r->m, NULL, NULL, NULL, &u, &e);
    if (rc == 0) {
        site_update_bound(r->sites, site, &u);
        rc = relay_accum_add(&r->acc, u.values, r->m, u.samples, u.loss, u.accuracy, &e);
    }
    site_update_release(&u);
    if (rc < 0) {
        log_warn("client %s: update rejected: %s", site->name, e.msg);
        return;
    }
    site->reported = 1;
}

static void on_eval_result(relay_t *r, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(r->sites, msg, r->session, r->in_eval, r->eval_round);
    if (!site)
        return;
    site_eval_t ev;
    err_t e;
    if (!site->eval_pending) {
        log_warn("client %s: eval_result for round %lld ignored (not asked for)", site->name, r->eval_round);
        return;
    }
    if (site_msg_eval(msg, &ev, &e) < 0 || relay_eval_add(&r->ev, ev.samples, ev.loss, ev.accuracy, &e) < 0) {
        log_warn("client %s: malformed eval_result dropped: %s", site->name, e.msg);
        return;
    }
    site->eval_pending = 0;
}

static void on_disconnect(void *owner, sites_site_t *site)
{
    relay_t *r = owner;
    if (r->in_round && site->selected && !site->reported) {
        site->lost = 1;
        log_warn("client %s disconnected during round %lld; the round goes on without it", site->name, r->round);
    } else {
        log_info("client %s disconnected", site->name);
    }
}

static int on_message(void *owner, wire_msg_t *msg)
{
    relay_t *r = owner;
    if (strcmp(msg->type, "hello") == 0)
        on_hello(r, msg);
    else if (strcmp(msg->type, "update") == 0)
        on_update(r, msg);
    else if (strcmp(msg->type, "eval_result") == 0)
        on_eval_result(r, msg);
    else
        return -1;
    return 0;
}

/* Sends the round's aggregate upward as the client agents send theirs (compressed when the
 * server asked for it), from r->mean and the done_* fields. */
static int forward_update(relay_t *r, err_t *err)
{
    update_result_t res = {.round = r->done_round,
                           .samples = (int)r->done_samples,
                           .update = r->mean,
                           .m = r->m,
                           .loss = r->done_loss,
                           .accuracy = r->done_acc,
                           .seconds = r->done_seconds};
    uint64_t seed = (uint64_t)wire_get_int(&r->train, "seed", 0);
    /* The run of the train message this answers, not the link's latest welcome: a server that
     * restarted as a new run must never receive an old run's aggregate under its own id. */
    return update_send_compressed(&res, &r->train, seed, &r->fb, link_socket(r->up),
                                  wire_get_int(&r->train, "run", -1), err);
}

/* Closes the round: the mean of the updates that arrived goes upward, or a refusal when none did. */
static void finish_round(relay_t *r)
{
    r->in_round = 0;
    int selected = 0, lost = 0;
    for (int i = 0; i < sites_count(r->sites); i++) {
        sites_site_t *s = sites_at(r->sites, i);
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
    /* The same run's round again (after a rejoin): a train of another run is a new round. */
    int same_run = r->have_train && wire_get_int(msg, "run", -1) == wire_get_int(&r->train, "run", -2);
    if (same_run && r->in_round && round == r->round) { /* the round is under way */
        wire_msg_close(msg);
        return;
    }
    if (same_run && !r->in_round && round == r->done_round && count == r->m) {
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
        r->mean = FN_MALLOC(count * sizeof *r->mean);
    }
    relay_accum_reset(&r->acc);
    json_t *rt = json_object_get(msg->header, "round_timeout");
    if (json_is_number(rt) && json_number_value(rt) > 0)
        r->server_round_timeout = json_number_value(rt);
    r->round_timeout = r->opt.round_timeout > 0 ? r->opt.round_timeout
                       : r->server_round_timeout > 0 ? RELAY_DEADLINE_SHARE * r->server_round_timeout
                                                     : RELAY_DEFAULT_ROUND_TIMEOUT;
    /* A relay round longer than the server's would always answer too late: keep the share. */
    if (r->server_round_timeout > 0 && r->round_timeout > RELAY_DEADLINE_SHARE * r->server_round_timeout) {
        log_warn("round %lld: --round-timeout %.0f s exceeds the server's round_timeout of %.0f s; using %.0f s so the "
                 "aggregate arrives in time",
                 round, r->round_timeout, r->server_round_timeout, RELAY_DEADLINE_SHARE * r->server_round_timeout);
        r->round_timeout = RELAY_DEADLINE_SHARE * r->server_round_timeout;
    }
    r->round = round;
    r->in_round = 1;
    r->round_t0 = fn_mono();
    r->round_deadline = r->round_t0 + r->round_timeout;
    int sent = 0;
    for (int i = 0; i < sites_count(r->sites); i++) {
        sites_site_t *s = sites_at(r->sites, i);
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
    for (int i = 0; i < sites_count(r->sites); i++) {
        sites_site_t *s = sites_at(r->sites, i);
        s->eval_pending = 0;
        if (s->connected && send_model(r, s, msg) >= 0)
            s->eval_pending = 1;
    }
}

static void finish_eval(relay_t *r)
{
    r->in_eval = 0;
    sites_close_eval(r->sites, r->eval_round);
    long long samples;
    double loss, acc;
    relay_eval_result(&r->ev, &samples, &loss, &acc);
    err_t e;
    if (send_up(r, json_pack("{s:s, s:I, s:I, s:f, s:f}", "type", "eval_result", "round", (json_int_t)r->eval_round,
                             "samples", (json_int_t)samples, "loss", loss, "accuracy", acc),
                &e) < 0)
        log_warn("round %lld: cannot send the evaluation upward: %s", r->eval_round, e.msg);
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
    while (sites_connected(r->sites, NULL) > 0 && fn_mono() < until) {
        zmq_pollitem_t items[2];
        sites_pollitems(r->sites, items);
        if (zmq_poll(items, 2, 100) > 0)
            sites_service(r->sites, items);
    }
}

/* Waits for the region's clients (or the timeout, with at least one). */
static int wait_for_clients(relay_t *r, err_t *err)
{
    int want = r->opt.clients > 0 ? r->opt.clients : sites_allowed(r->sites);
    if (want < 1)
        return err_set(err, FN_EINVAL,
                       "the relay's allow-list %s/allowed_clients is empty; add its clients with `fednas keys site %s "
                       "NAME --connect %s`",
                       r->opt.keys_dir, r->opt.keys_dir, relay_endpoint(r));
    log_info("waiting for %d clients at %s", want, relay_endpoint(r));
    double deadline = fn_mono() + r->opt.register_timeout;
    while (sites_connected(r->sites, NULL) < want && fn_mono() < deadline && !stopped(r))
        sites_pump(r->sites, 200);
    if (stopped(r))
        return err_set(err, FN_ESTATE, "stopped while waiting for clients");
    int n = sites_connected(r->sites, NULL);
    if (n < 1)
        return err_set(err, FN_ETIMEOUT,
                       "no client connected to the relay at %s within %.0f s; check that the clients can reach it "
                       "and that their keys are on %s/allowed_clients",
                       relay_endpoint(r), r->opt.register_timeout, r->opt.keys_dir);
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
        zmq_pollitem_t items[4];
        sites_pollitems(r->sites, items);
        link_pollitems(r->up, items + 2);
        if (zmq_poll(items, 4, 100) < 0 && zmq_errno() != EINTR)
            return err_set(err, FN_EIO, "poll failed: %s", zmq_strerror(zmq_errno()));
        int rc = link_service(r->up, err);
        if (rc < 0)
            return rc;
        sites_service(r->sites, items);
        if (items[2].revents & ZMQ_POLLIN) {
            wire_msg_t msg;
            while ((rc = link_recv(r->up, &msg, err)) == 0) {
                r->last_up = fn_mono();
                if ((rc = on_upstream(r, &msg, err)) != 0)
                    return rc < 0 ? rc : 0;
            }
        }
        if (r->in_round) {
            if (sites_awaiting_updates(r->sites) == 0 || fn_mono() >= r->round_deadline)
                finish_round(r);
        }
        if (r->in_eval) {
            if (sites_awaiting_eval(r->sites) == 0 || fn_mono() >= r->eval_deadline)
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
        int n = sites_connected(r->sites, &samples);
        link_set_hello(r->up, json_pack("{s:I, s:b, s:i}", "samples", (json_int_t)samples, "relay", 1, "sites", n));
        log_info("joining the server at %s for %d clients (%lld samples)", r->opt.up.endpoint, n, samples);
        rc = link_register(r->up, err);
    }
    if (rc == 0)
        rc = relay_loop(r, err);
    sites_send_end(r->sites, r->session, rc == 0 ? "done" : err->msg);
    wait_hangups(r, 2.0);
    return rc;
}

void relay_free(relay_t *r)
{
    if (!r)
        return;
    link_close(r->up);
    sites_free(r->sites);
    if (r->have_train)
        wire_msg_close(&r->train);
    if (r->acc_ready)
        relay_accum_free(&r->acc);
    update_feedback_free(&r->fb);
    free(r->mean);
    free(r);
}
