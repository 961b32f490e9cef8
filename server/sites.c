#include "server/sites.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/monitor.h"
#include "common/util.h"
#include "server/zap.h"

/* inproc names are per context, and every registry has its own context. */
#define SITES_MONITOR "inproc://fednas-sites-monitor"

struct sites {
    sites_options_t opt;
    char keys_dir[PATH_MAX];
    keys_pair_t *kp; /* from sites_open until the socket is bound */
    keys_allow_t allow;
    void *ctx, *sock, *mon;
    zap_t *zap;
    char endpoint[256];
    struct timespec allow_mtime; /* the allow-list file as last read, to notice edits */
    off_t allow_size;
    sites_site_t *site;
    int count, cap;
    zap_limit_t limit; /* on the log lines of messages from keys not on the allow-list */
};

static void limit_report(void *arg, const char *key, long count, long keys, double seconds)
{
    const sites_t *s = arg;
    if (key)
        log_warn("%s %s: %ld more messages dropped in the last %.0f s", s->opt.noun, key, count, seconds);
    else
        log_warn("%ld more messages dropped in the last %.0f s from %ld other names or keys not on the allow-list",
                 count, seconds, keys);
}

/* A refused message of name's with key, logged in full or counted (zap_limit_t). */
static int limit_note(sites_t *s, const char *name, const char *key)
{
    char id[64];
    snprintf(id, sizeof id, "%.16s (key %.40s)", name, key[0] ? key : "-");
    return zap_limit_note(&s->limit, id, fn_mono());
}

static void drop(sites_t *s, sites_site_t *site);

int sites_open(const sites_options_t *opt, sites_t **out, err_t *err)
{
    *out = NULL;
    sites_t *s = FN_CALLOC(1, sizeof *s);
    s->opt = *opt;
    zap_limit_init(&s->limit, 60, limit_report, s);
    snprintf(s->keys_dir, sizeof s->keys_dir, "%s", opt->keys_dir);
    s->opt.keys_dir = s->keys_dir;
    s->opt.key_hint = NULL; /* the caller's, needed only below */
    s->kp = keys_pair_new();
    if (!s->kp) {
        free(s);
        return err_set(err, FN_ENOMEM, "out of secure memory");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/server.key", s->keys_dir);
    int rc = keys_read_secret(path, s->kp, err);
    if (rc < 0 && opt->key_hint)
        err_wrap(err, "%s", opt->key_hint);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/allowed_clients", s->keys_dir);
        struct stat sb;
        if (stat(path, &sb) == 0) {
            s->allow_mtime = sb.st_mtim;
            s->allow_size = sb.st_size;
        }
        rc = keys_allow_load(path, &s->allow, err);
    }
    if (rc < 0) {
        sites_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int bind_error(const char *endpoint, err_t *err)
{
    int e = zmq_errno();
    if (e == EADDRINUSE)
        return err_set(err, FN_EADDRINUSE,
                       "cannot listen on %s: the port is already in use; stop the other process or choose another "
                       "port (--bind tcp://HOST:PORT, or port * to pick a free one)",
                       endpoint);
    return err_set(err, FN_EIO, "cannot listen on %s: %s (expected tcp://HOST:PORT)", endpoint, zmq_strerror(e));
}

int sites_listen(sites_t *s, const char *bind, double heartbeat, int64_t max_message, int io_threads, err_t *err)
{
    char path[PATH_MAX];
    int rc;
    s->ctx = zmq_ctx_new();
    if (io_threads > 0)
        zmq_ctx_set(s->ctx, ZMQ_IO_THREADS, io_threads);
    snprintf(path, sizeof path, "%s/allowed_clients", s->keys_dir);
    if ((rc = zap_start(s->ctx, path, &s->zap, err)) < 0)
        return rc;
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    int one = 1, linger = 2000;
    int hb = (int)(heartbeat * 1000), hb_timeout = 3 * hb;
    zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, s->kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(s->kp);
    s->kp = NULL;
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (max_message > 0)
        zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &max_message, sizeof max_message);
    /* ZMTP heartbeats run on ZeroMQ's I/O thread, so a site busy training still answers them;
     * a peer that stops answering is disconnected and reported by the monitor below. */
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    if (monitor_open(s->ctx, s->sock, SITES_MONITOR, ZMQ_EVENT_DISCONNECTED, &s->mon) != 0)
        return err_set(err, FN_EIO, "cannot monitor the %s socket: %s", s->opt.role, zmq_strerror(zmq_errno()));
    if (zmq_bind(s->sock, bind) != 0)
        return bind_error(bind, err);
    size_t len = sizeof s->endpoint;
    zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->endpoint, &len);
    return 0;
}

const char *sites_endpoint(const sites_t *s) { return s->endpoint; }

const char *sites_noun(const sites_t *s) { return s->opt.noun; }

int sites_allowed(const sites_t *s) { return s->allow.count; }

int sites_count(const sites_t *s) { return s->count; }

sites_site_t *sites_at(sites_t *s, int i) { return &s->site[i]; }

int sites_index(const sites_t *s, const sites_site_t *site) { return (int)(site - s->site); }

sites_site_t *sites_find(sites_t *s, const char *name)
{
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->site[i].name, name) == 0)
            return &s->site[i];
    return NULL;
}

int sites_connected(const sites_t *s, long long *samples)
{
    int n = 0;
    long long total = 0;
    for (int i = 0; i < s->count; i++)
        if (s->site[i].connected) {
            n++;
            total += s->site[i].samples;
        }
    if (samples)
        *samples = total;
    return n;
}

int sites_awaiting_updates(const sites_t *s)
{
    int n = 0;
    for (int i = 0; i < s->count; i++)
        n += s->site[i].selected && !s->site[i].reported && !s->site[i].lost;
    return n;
}

int sites_awaiting_eval(const sites_t *s)
{
    int n = 0;
    for (int i = 0; i < s->count; i++)
        n += s->site[i].eval_pending;
    return n;
}

void sites_close_eval(sites_t *s, long long round)
{
    for (int i = 0; i < s->count; i++)
        if (s->site[i].eval_pending) {
            log_warn("%s %s did not answer the evaluation of round %lld in time", s->opt.noun, s->site[i].name,
                     round);
            s->site[i].eval_pending = 0;
        }
}

static int same_route(const sites_site_t *site, const wire_msg_t *msg)
{
    return site->identity_len == msg->identity_len && memcmp(site->identity, msg->identity, msg->identity_len) == 0;
}

/* Whether name, with key (when the ZAP handler told it), is on the allow-list as last read. */
static int allowed(const sites_t *s, const char *name, const char *key)
{
    const keys_allow_entry_t *e = keys_allow_find_name(&s->allow, name);
    return e && (!key[0] || strcmp(e->public_z85, key) == 0);
}

/* A new site's id: its place on the list, unless a site registered earlier holds that number
 * (a list edited mid-run shifts places); then the next one no site can hold. Never 0. */
static int new_id(const sites_t *s, long place)
{
    int top = s->allow.count;
    int taken = 0;
    for (int i = 0; i < s->count; i++) {
        taken |= s->site[i].id == place;
        if (s->site[i].id > top)
            top = s->site[i].id;
    }
    return taken || place < 1 ? top + 1 : (int)place;
}

/* Re-reads the allow-list when its file changed (always when force). One that cannot be read
 * keeps the previous list. A connected site no longer on the new list with the key it joined
 * with is dropped: ZAP refuses only new connections, and ROUTER cannot close one peer's
 * connection, so from here on receive_all ignores its messages too. */
static void allow_refresh(sites_t *s, int force)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/allowed_clients", s->keys_dir);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return;
    int same = sb.st_mtim.tv_sec == s->allow_mtime.tv_sec && sb.st_mtim.tv_nsec == s->allow_mtime.tv_nsec &&
               sb.st_size == s->allow_size;
    if (same && !force)
        return;
    s->allow_mtime = sb.st_mtim;
    s->allow_size = sb.st_size;
    keys_allow_t fresh;
    err_t e;
    if (keys_allow_load(path, &fresh, &e) < 0) {
        if (!same)
            log_error("keeping the previous allow-list: %s", e.msg);
        return;
    }
    keys_allow_free(&s->allow);
    s->allow = fresh;
    for (int i = 0; i < s->count; i++) {
        sites_site_t *site = &s->site[i];
        if (!(site->connected || site->clogged) || allowed(s, site->name, site->public_z85))
            continue;
        log_warn("%s %s is no longer on the allow-list with the key it joined with: dropped, its messages ignored",
                 s->opt.noun, site->name);
        site->clogged = 0;
        if (site->connected)
            drop(s, site);
    }
}

sites_site_t *sites_hello(sites_t *s, const wire_msg_t *msg)
{
    const char *name = msg->user_id;
    sites_site_t *site = sites_find(s, name);
    /* A hello repeated on the route we already answered gets nothing: each answer is a welcome
     * (and mid-round the whole model), so answering a flood of them would fill that peer's pipe.
     * One dropped for a full queue rejoins over a new connection (a new route). */
    if (site && (site->connected || site->clogged) && same_route(site, msg)) {
        log_debug("%s %s: repeated hello on its route ignored", s->opt.noun, name);
        return NULL;
    }
    long long samples = wire_get_int(msg, "samples", -1);
    if (samples < 1 || samples > FN_MAX_SAMPLES) {
        log_warn("%s %s: hello without a valid sample count; ignored", s->opt.noun, name);
        return NULL;
    }
    if (!allowed(s, name, msg->peer_key)) {
        /* Admitted by the ZAP handler from a newer allow-list than ours, or taken off it since:
         * read it again. A list that cannot be read keeps the old one, and a name not on the
         * list is refused rather than registered without a place on it (id 0). */
        allow_refresh(s, 1);
        if (!allowed(s, name, msg->peer_key)) {
            if (limit_note(s, name, msg->peer_key))
                log_warn("%s %s: hello from a key not on the allow-list (as last read); ignored (more are counted, "
                         "and logged at most every minute)", s->opt.noun, name);
            return NULL;
        }
    }
    if (!site) {
        if (s->count == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->site = realloc(s->site, (size_t)s->cap * sizeof *s->site);
            FN_CHECK(s->site);
        }
        site = &s->site[s->count++];
        memset(site, 0, sizeof *site);
        snprintf(site->name, sizeof site->name, "%s", name);
        /* The id is the site's place on the allow-list, not its arrival order, so that the
         * per-site training seeds and therefore the run are the same every time. */
        site->id = new_id(s, keys_allow_find_name(&s->allow, name) - s->allow.entries + 1);
        log_info("%s %s joined (%lld samples)", s->opt.noun, name, samples);
    } else if (!site->connected) {
        log_info("%s %s rejoined", s->opt.noun, name);
    }
    /* A repeated hello (a retry, or a reconnect) refreshes the route, and the key (it may be a
     * replaced one, under the same name). */
    memcpy(site->public_z85, keys_allow_find_name(&s->allow, name)->public_z85, sizeof site->public_z85);
    memcpy(site->identity, msg->identity, msg->identity_len);
    site->identity_len = msg->identity_len;
    site->fd = msg->srcfd;
    site->connected = 1;
    site->clogged = 0;
    site->samples = samples;
    return site;
}

/* Marks a connected site gone and tells the owner (a closed connection, or a full queue). */
static void drop(sites_t *s, sites_site_t *site)
{
    site->connected = 0;
    site->eval_pending = 0; /* a dropout: the evaluation goes on without it */
    s->opt.on_disconnect(s->opt.owner, site);
}

long long sites_send(sites_t *s, sites_site_t *site, int64_t run, json_t *hdr, const wire_frame_t *frames, int n)
{
    err_t e;
    json_object_set_new(hdr, "run", json_integer(run));
    /* Never blocking: the round thread serves every site, so a peer that does not read must not
     * hold it. A full pipe (ROUTER_MANDATORY says EAGAIN) drops that peer instead. */
    long long sent = wire_send(s->sock, site->identity, site->identity_len, hdr, frames, n, ZMQ_DONTWAIT, &e);
    json_decref(hdr);
    if (sent == FN_ETIMEOUT && site->connected) {
        log_warn("%s %s does not read what it is sent (its queue is full); dropped until it reconnects", s->opt.noun,
                 site->name);
        site->clogged = 1;
        drop(s, site);
    } else if (sent < 0) {
        log_warn("cannot reach %s %s: %s", s->opt.noun, site->name, e.msg);
    }
    return sent;
}

void sites_send_end(sites_t *s, int64_t run, const char *reason)
{
    for (int i = 0; i < s->count; i++)
        if (s->site[i].connected)
            sites_send(s, &s->site[i], run, json_pack("{s:s, s:s}", "type", "end", "reason", reason), NULL, 0);
}

/* A connection closed or stopped answering heartbeats: its site is gone until it says hello. */
static void drain_monitor(sites_t *s)
{
    int ev, fd = -1;
    while ((ev = monitor_event(s->mon, &fd)) != 0) {
        if (ev != ZMQ_EVENT_DISCONNECTED)
            continue;
        for (int i = 0; i < s->count; i++) {
            sites_site_t *site = &s->site[i];
            if (site->fd != fd)
                continue;
            site->clogged = 0; /* its connection is gone: the next hello comes on a new route */
            if (site->connected)
                drop(s, site);
        }
    }
}

/* At most this many messages per call, so that a peer sending faster than we handle messages
 * cannot keep the round thread from its deadlines. */
#define SITES_RECEIVE_BATCH 256

static void receive_all(sites_t *s)
{
    allow_refresh(s, 0); /* a stat: an edited list takes effect before its next message */
    zap_limit_flush(&s->limit, fn_mono(), 0);
    int reread = 0;
    for (int i = 0; i < SITES_RECEIVE_BATCH; i++) {
        wire_msg_t msg;
        err_t e;
        int rc = wire_recv(s->sock, 1, &msg, ZMQ_DONTWAIT, &e);
        if (rc == FN_ETIMEOUT)
            return;
        if (rc < 0) {
            log_warn("dropped a bad message: %s", e.msg);
            continue;
        }
        if (!msg.user_id[0])
            log_warn("dropped a message from an unauthenticated peer");
        else if (!allowed(s, msg.user_id, msg.peer_key) && (reread++ || (allow_refresh(s, 1), 1)) &&
                 !allowed(s, msg.user_id, msg.peer_key)) {
            /* At most one forced re-read a batch (a site just added), so a flood from a
             * revoked key costs no more than one. */
            if (limit_note(s, msg.user_id, msg.peer_key))
                log_warn("%s %s: message from a key no longer on the allow-list dropped (more are counted, and "
                         "logged at most every minute)", s->opt.noun, msg.user_id);
        } else if (s->opt.on_message(s->opt.owner, &msg) < 0)
            log_warn("%s %s: unexpected \"%s\" message dropped", s->opt.noun, msg.user_id, msg.type);
        wire_msg_close(&msg);
    }
}

void sites_pollitems(sites_t *s, zmq_pollitem_t items[2])
{
    items[0] = (zmq_pollitem_t){s->sock, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){s->mon, 0, ZMQ_POLLIN, 0};
}

void sites_service(sites_t *s, const zmq_pollitem_t items[2])
{
    if (items[1].revents & ZMQ_POLLIN)
        drain_monitor(s);
    if (items[0].revents & ZMQ_POLLIN)
        receive_all(s);
}

void sites_pump(sites_t *s, int timeout_ms)
{
    zmq_pollitem_t items[2];
    sites_pollitems(s, items);
    if (zmq_poll(items, 2, timeout_ms) <= 0)
        return;
    if (items[1].revents & ZMQ_POLLIN)
        drain_monitor(s);
    receive_all(s); /* also when only the monitor woke us: a message may have come meanwhile */
}

void sites_free(sites_t *s)
{
    if (!s)
        return;
    zap_limit_flush(&s->limit, fn_mono(), 1);
    monitor_close(s->sock, s->mon);
    if (s->sock)
        zmq_close(s->sock);
    if (s->ctx) {
        zmq_ctx_shutdown(s->ctx); /* wakes the ZAP thread */
        zap_join(s->zap);
        zmq_ctx_term(s->ctx);
    }
    keys_pair_free(s->kp);
    keys_allow_free(&s->allow);
    free(s->site);
    free(s);
}
