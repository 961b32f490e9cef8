/* events.c: live events for browsers over the WebSocket /ws.
 *
 * One background thread polls the run store through its own read-only handle: every 200 ms it
 * reads PRAGMA data_version, which changes only when another connection commits, and only then
 * queries what changed: rounds after the last rowid seen (round_finished), and the runs' and
 * clients' states against the previous snapshot (run_status, round_phase, budget_reached,
 * client_joined, client_left, client_dropped). Each event is one JSON text frame sent to every connected
 * socket. This works the same inside `fednas run` (the server writes the store in-process) and
 * in `fednas dashboard` (another process writes it), and web/ never calls into server/.
 *
 * A socket is accepted only with a valid session cookie or bearer token, and an Origin (when
 * sent) naming this server, so another site cannot open it with the user's cookie. Each socket
 * holds a civetweb worker, so at most WEB_WS_MAX are open at once. A socket opened with a
 * session lives only as long as the session: the poller closes it within a period after a
 * logout or the session's expiry; one opened with a bearer token at most a session's lifetime,
 * or until /api/logout is sent with that token.
 *
 * Sending never blocks the poller: each socket has its own writer thread and a queue of at
 * most WS_QUEUE messages or WS_QUEUE_BYTES bytes (shared, reference-counted texts); a socket
 * whose queue is full cannot keep up and is closed, so one slow or stalled browser delays
 * nobody else (the page reconnects and reloads what it missed through the REST API). */
#include <civetweb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/store.h"
#include "common/store_live.h"
#include "common/util.h"
#include "web/web_internal.h"

#define WEB_WS_MAX 8
#define POLL_MS 200
/* A SIGKILLed server commits nothing, so data_version cannot tell; run_status "interrupted"
 * comes from looking at the running runs' servers (common/store_live.h) this often. */
#define LIVE_CHECK_S 2.0
#define WS_QUEUE 1024               /* events waiting for one socket, at most */
#define WS_QUEUE_BYTES (1024 * 1024) /* and their bytes: a socket this far behind is not reading */

/* One event's text, shared by every socket's queue. */
typedef struct ws_msg {
    int refs; /* __atomic */
    size_t len;
    char text[];
} ws_msg_t;

static void msg_unref(ws_msg_t *m)
{
    if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(m);
}

/* One open socket (civetweb's connection data); the writer thread alone writes events to it. */
typedef struct ws_peer {
    struct mg_connection *conn;
    char sid[WEB_TOKEN_HEX + 1]; /* the session it was opened with, "" for a bearer token */
    web_bearer_t bearer;         /* a bearer token's socket: when it ends */
    pthread_t writer;
    int writer_started;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t wake;
    ws_msg_t *q[WS_QUEUE];
    size_t head, n, bytes;
    int closing; /* we end it: drop the queue, send a close frame, write nothing more */
    int gone;    /* civetweb ends it: write nothing more */
} ws_peer_t;

struct web_events {
    struct web *w;
    char *db_path;
    pthread_t thread;
    int started;
    pthread_mutex_t lock; /* conns, n, stop */
    pthread_cond_t wake;
    int stop;
    ws_peer_t *peers[WEB_WS_MAX];
    int n;
    /* poller state (its thread only) */
    int64_t data_version, last_rowid;
    double live_due; /* when to look again whether "running" runs still have a server */
    json_t *runs, *clients; /* previous snapshots: "id" -> state */
    int baseline;
    web_events_nas_t *nas; /* events_nas.c's state */
};

/* Asks the peer's writer to close it (a logout, an expiry, a full queue). Caller holds p->lock. */
static void peer_close_locked(ws_peer_t *p, const char *why)
{
    if (p->closing || p->gone)
        return;
    p->closing = 1;
    log_info("web: closing a WebSocket: %s", why);
    pthread_cond_signal(&p->wake);
}

static void broadcast(web_events_t *ev, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return;
    size_t len = strlen(text);
    ws_msg_t *m = malloc(sizeof *m + len + 1);
    if (m) {
        m->refs = 1; /* ours, until every queue has taken its own */
        m->len = len;
        memcpy(m->text, text, len + 1);
    }
    free(text);
    if (!m)
        return;
    pthread_mutex_lock(&ev->lock);
    for (int i = 0; i < ev->n; i++) {
        ws_peer_t *p = ev->peers[i];
        pthread_mutex_lock(&p->lock);
        if (p->n == WS_QUEUE || p->bytes + len > WS_QUEUE_BYTES)
            peer_close_locked(p, "it does not keep up with the events");
        else if (!p->closing && !p->gone) {
            __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
            p->q[(p->head + p->n++) % WS_QUEUE] = m;
            p->bytes += len;
            pthread_cond_signal(&p->wake);
        }
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&ev->lock);
    msg_unref(m);
}

/* The writer of one socket: a blocking write stalls this thread only. */
static void *peer_writer(void *arg)
{
    ws_peer_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->n == 0 && !p->closing && !p->gone)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->gone)
            break;
        if (p->closing) {
            pthread_mutex_unlock(&p->lock);
            static const char going_away[] = {0x03, (char)0xe9}; /* 1001: going away */
            mg_websocket_write(p->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, going_away, sizeof going_away);
            pthread_mutex_lock(&p->lock);
            break;
        }
        ws_msg_t *m = p->q[p->head];
        p->head = (p->head + 1) % WS_QUEUE;
        p->n--;
        p->bytes -= m->len;
        pthread_mutex_unlock(&p->lock);
        int rc = mg_websocket_write(p->conn, MG_WEBSOCKET_OPCODE_TEXT, m->text, m->len);
        msg_unref(m);
        pthread_mutex_lock(&p->lock);
        if (rc <= 0) {
            p->gone = 1; /* the connection failed: civetweb ends it */
            break;
        }
    }
    /* What is left is never sent. */
    for (; p->n > 0; p->n--, p->head = (p->head + 1) % WS_QUEUE)
        msg_unref(p->q[p->head]);
    p->bytes = 0;
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Closes the sockets whose session ended (logout, expiry). Runs on the poller, every period. */
static void close_ended_sessions(web_events_t *ev)
{
    web_auth_t *auth = web_auth_of(ev->w);
    pthread_mutex_lock(&ev->lock);
    for (int i = 0; i < ev->n; i++) {
        ws_peer_t *p = ev->peers[i];
        if (p->sid[0] ? !web_auth_session_alive(auth, p->sid) : !web_auth_bearer_alive(auth, &p->bearer)) {
            pthread_mutex_lock(&p->lock);
            peer_close_locked(p, p->sid[0] ? "its session ended (logout or expiry)"
                                           : "its bearer token's time is up or the token logged out");
            pthread_mutex_unlock(&p->lock);
        }
    }
    pthread_mutex_unlock(&ev->lock);
}

void web_events_wake(web_events_t *ev)
{
    if (!ev)
        return;
    pthread_mutex_lock(&ev->lock);
    pthread_cond_signal(&ev->wake);
    pthread_mutex_unlock(&ev->lock);
}

static const char *client_event(const char *status)
{
    if (strcmp(status, "dropped") == 0)
        return "client_dropped";
    if (strcmp(status, "disconnected") == 0 || strcmp(status, "finished") == 0 || strcmp(status, "left") == 0)
        return "client_left";
    return "client_joined";
}

/* Compares a snapshot with the previous one; emits events unless this is the baseline. */
static void diff_runs(web_events_t *ev, json_t *now)
{
    json_t *map = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(now, i, row) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(row, "id")));
        json_object_set(map, key, row);
        if (!ev->baseline)
            continue;
        json_t *old = json_object_get(ev->runs, key);
        const char *st = json_string_value(json_object_get(row, "status"));
        const char *ost = old ? json_string_value(json_object_get(old, "status")) : NULL;
        if (st && (!ost || strcmp(st, ost) != 0)) {
            const char *msg = json_string_value(json_object_get(row, "message"));
            broadcast(ev, json_pack("{s:s, s:O, s:s, s:s?, s:s?}", "type", "run_status", "run_id",
                                    json_object_get(row, "id"), "status", st, "previous", ost, "message", msg));
            if (msg && strstr(msg, "privacy budget"))
                broadcast(ev, json_pack("{s:s, s:O, s:s}", "type", "budget_reached", "run_id",
                                        json_object_get(row, "id"), "message", msg));
        }
        /* The phase the server is in (NULL once the run ended); polls are 200 ms apart, so a
         * shorter phase may be skipped: the event says where the round is, not every step. */
        const char *ph = json_string_value(json_object_get(row, "phase"));
        const char *oph = old ? json_string_value(json_object_get(old, "phase")) : NULL;
        json_int_t prd = json_integer_value(json_object_get(row, "phase_round"));
        json_int_t oprd = old ? json_integer_value(json_object_get(old, "phase_round")) : -1;
        if (ph && (!oph || strcmp(ph, oph) != 0 || prd != oprd))
            broadcast(ev, json_pack("{s:s, s:O, s:I, s:s}", "type", "round_phase", "run_id",
                                    json_object_get(row, "id"), "round", prd, "phase", ph));
    }
    json_decref(ev->runs);
    ev->runs = map;
}

static void diff_clients(web_events_t *ev, json_t *now)
{
    json_t *map = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(now, i, row) {
        char key[48];
        snprintf(key, sizeof key, "%lld/%lld", (long long)json_integer_value(json_object_get(row, "run_id")),
                 (long long)json_integer_value(json_object_get(row, "client_id")));
        json_object_set(map, key, row);
        if (!ev->baseline)
            continue;
        json_t *old = json_object_get(ev->clients, key);
        const char *st = json_string_value(json_object_get(row, "status"));
        const char *ost = old ? json_string_value(json_object_get(old, "status")) : NULL;
        if (st && (!ost || strcmp(st, ost) != 0))
            broadcast(ev, json_pack("{s:s, s:O, s:O, s:O, s:s}", "type", old ? client_event(st) : "client_joined",
                                    "run_id", json_object_get(row, "run_id"), "client_id",
                                    json_object_get(row, "client_id"), "name", json_object_get(row, "name"), "status",
                                    st));
    }
    json_decref(ev->clients);
    ev->clients = map;
}

static void poll_once(web_events_t *ev, store_t *s)
{
    err_t e = {0};
    int64_t v;
    if (store_data_version(s, &v, &e) < 0)
        return;
    int changed = !ev->baseline || v != ev->data_version;
    double now = fn_mono();
    if (!changed && now < ev->live_due)
        return;
    ev->live_due = now + LIVE_CHECK_S;
    ev->data_version = v;
    json_t *rounds = NULL, *runs = NULL, *clients = NULL;
    if (!ev->baseline)
        ev->last_rowid = 0;
    size_t got = changed ? 1000 : 0;
    /* Pages of 1000 rows (the query's limit) until the last one. */
    while (got == 1000 && store_rounds_after_json(s, ev->last_rowid, &rounds, &e) == 0) {
        size_t i;
        json_t *row;
        got = json_array_size(rounds);
        json_array_foreach(rounds, i, row) {
            ev->last_rowid = json_integer_value(json_object_get(row, "rowid"));
            if (ev->baseline) {
                json_t *msg = json_deep_copy(row);
                json_object_del(msg, "rowid");
                json_object_set_new(msg, "type", json_string("round_finished"));
                broadcast(ev, msg);
            }
        }
        json_decref(rounds);
    }
    if (changed)
        web_events_nas_poll(&ev->nas, s, ev->baseline, broadcast, ev); /* candidate_*, before run_status */
    if (store_run_states_json(s, &runs, &e) == 0) {
        store_live_mark_interrupted(s, ev->db_path, runs);
        diff_runs(ev, runs);
        json_decref(runs);
    }
    if (changed && store_client_states_json(s, &clients, &e) == 0) {
        diff_clients(ev, clients);
        json_decref(clients);
    }
    ev->baseline = 1;
}

static void *poller(void *arg)
{
    web_events_t *ev = arg;
    store_t *s = NULL;
    pthread_mutex_lock(&ev->lock);
    while (!ev->stop) {
        pthread_mutex_unlock(&ev->lock);
        close_ended_sessions(ev);
        err_t e = {0};
        if (!s && store_open(ev->db_path, 1, &s, &e) < 0)
            s = NULL; /* not there yet: the server may create it later */
        if (s) {
            /* Only while someone listens. The first poll after a quiet spell is a silent
             * baseline: a page loads history through the REST API (again on "hello") and gets
             * only what happens afterwards here. */
            pthread_mutex_lock(&ev->lock);
            int listeners = ev->n;
            pthread_mutex_unlock(&ev->lock);
            if (listeners == 0)
                ev->baseline = 0;
            else
                poll_once(ev, s);
        }
        pthread_mutex_lock(&ev->lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!ev->stop)
            pthread_cond_timedwait(&ev->wake, &ev->lock, &ts);
    }
    pthread_mutex_unlock(&ev->lock);
    store_close(s);
    return NULL;
}

/* ---- civetweb's WebSocket callbacks ------------------------------------------------------- */

static void peer_free(ws_peer_t *p)
{
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static int ws_connect(const struct mg_connection *conn, void *cbdata)
{
    web_events_t *ev = cbdata;
    char sid[WEB_TOKEN_HEX + 1];
    web_bearer_t bearer;
    if (!web_ws_authorized(ev->w, conn, sid, &bearer))
        return 1; /* civetweb closes it */
    pthread_mutex_lock(&ev->lock);
    int full = ev->n >= WEB_WS_MAX;
    pthread_mutex_unlock(&ev->lock);
    if (full) {
        log_warn("web: refusing a WebSocket: %d are open already", WEB_WS_MAX);
        return 1;
    }
    ws_peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return 1;
    memcpy(p->sid, sid, sizeof p->sid);
    p->bearer = bearer;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    mg_set_user_connection_data(conn, p);
    return 0;
}

static void ws_ready(struct mg_connection *conn, void *cbdata)
{
    web_events_t *ev = cbdata;
    ws_peer_t *p = mg_get_user_connection_data(conn);
    if (!p)
        return;
    p->conn = conn;
    static const char hello[] = "{\"type\":\"hello\"}";
    mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_TEXT, hello, sizeof hello - 1);
    p->writer_started = pthread_create(&p->writer, NULL, peer_writer, p) == 0;
    pthread_mutex_lock(&ev->lock);
    int listed = p->writer_started && ev->n < WEB_WS_MAX;
    if (listed)
        ev->peers[ev->n++] = p;
    pthread_mutex_unlock(&ev->lock);
    if (!listed) { /* no writer, or a race for the last place lost: no events for it */
        pthread_mutex_lock(&p->lock);
        peer_close_locked(p, "no room for another WebSocket");
        pthread_mutex_unlock(&p->lock);
    }
    /* Poll at once: the page's first event comes without waiting a period. */
    pthread_cond_signal(&ev->wake);
}

static int ws_data(struct mg_connection *conn, int bits, char *data, size_t len, void *cbdata)
{
    (void)cbdata;
    int op = bits & 0x0f;
    if (op == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE)
        return 0;
    ws_peer_t *p = mg_get_user_connection_data(conn);
    if (p) {
        pthread_mutex_lock(&p->lock);
        int closing = p->closing;
        pthread_mutex_unlock(&p->lock);
        if (closing)
            return 0; /* a socket we are closing: whatever it sends ends it */
    }
    if (op == MG_WEBSOCKET_OPCODE_PING)
        mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_PONG, data, len);
    return 1; /* the page sends nothing we act on */
}

static void ws_close(const struct mg_connection *conn, void *cbdata)
{
    web_events_t *ev = cbdata;
    ws_peer_t *p = mg_get_user_connection_data(conn);
    if (!p)
        return;
    pthread_mutex_lock(&ev->lock);
    for (int i = 0; i < ev->n; i++) {
        if (ev->peers[i] == p) {
            ev->peers[i] = ev->peers[--ev->n];
            break;
        }
    }
    pthread_mutex_unlock(&ev->lock);
    pthread_mutex_lock(&p->lock);
    p->gone = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    /* Nothing writes to the connection once this returns: civetweb frees it next. */
    if (p->writer_started)
        pthread_join(p->writer, NULL);
    mg_set_user_connection_data(conn, NULL);
    peer_free(p);
}

int web_events_start(struct web *w, struct mg_context *ctx, const char *db_path, web_events_t **out, err_t *err)
{
    web_events_t *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->db_path = strdup(db_path))) {
        free(ev);
        return err_set(err, FN_ENOMEM, "web: out of memory");
    }
    ev->w = w;
    pthread_mutex_init(&ev->lock, NULL);
    pthread_cond_init(&ev->wake, NULL);
    if (pthread_create(&ev->thread, NULL, poller, ev) != 0) {
        web_events_stop(ev);
        return err_set(err, FN_EIO, "web: cannot start the event thread");
    }
    ev->started = 1;
    mg_set_websocket_handler(ctx, "/ws", ws_connect, ws_ready, ws_data, ws_close, ev);
    *out = ev;
    return 0;
}

void web_events_stop(web_events_t *ev)
{
    if (!ev)
        return;
    if (ev->started) {
        pthread_mutex_lock(&ev->lock);
        ev->stop = 1;
        pthread_cond_signal(&ev->wake);
        pthread_mutex_unlock(&ev->lock);
        pthread_join(ev->thread, NULL);
    }
    json_decref(ev->runs);
    json_decref(ev->clients);
    web_events_nas_free(ev->nas);
    pthread_cond_destroy(&ev->wake);
    pthread_mutex_destroy(&ev->lock);
    free(ev->db_path);
    free(ev);
}
