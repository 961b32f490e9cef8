/* web: the dashboard while a run writes its store: new rounds show up, WebSocket events reach a
 * subscriber, and readers fetching the API while a writer thread commits rounds always get
 * whole, consistent bodies. */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include "web_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/util.h"
#include "crypto/tls.h"
#include "web/web_internal.h"

static void test_new_rounds_show_up(void **state)
{
    fixture_t *f = *state;
    /* A second run, written while the server runs: readers see each commit. */
    err_t e = {0};
    int64_t run2;
    assert_int_equal(store_run_create(f->writer, f->exp_id, 2, 2, 7, NULL, &run2, &e), 0);
    char path[96];
    snprintf(path, sizeof path, "/api/runs/%lld/rounds?since=0", (long long)run2);
    resp_t r;
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_array_size(j), 0);
    json_decref(j);
    resp_free(&r);

    add_round(f, run2, 1, 0.25, 2.0);
    assert_int_equal(http_get(f->port, path, &r), 0);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);
    resp_free(&r);

    /* Newest first. */
    assert_int_equal(http_get(f->port, "/api/runs", &r), 0);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "id")), run2);
    json_decref(j);
    resp_free(&r);
}

typedef struct ws {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char buf[65536];
    size_t len;
} ws_t;

static void ws_close_conn(ws_t *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* When > 0, the receive buffer of the next sockets ws_open makes (a client that reads slowly). */
static int g_ws_rcvbuf;

/* Opens /ws with extra header lines; returns the handshake's HTTP status (101 on success), or
 * -1 when the connection failed or was closed without an answer. */
static int ws_open(int port, const char *extra, ws_t *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (g_ws_rcvbuf > 0) /* before connect: the window it advertises stays small */
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &g_ws_rcvbuf, sizeof g_ws_rcvbuf);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1)
        return -1;
    char req[2048];
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             port, extra ? extra : "");
    if (io_write(c->ssl, c->fd, req, strlen(req)) != 0)
        return -1;
    /* Read the handshake answer up to its blank line; frames may follow in the same read. */
    for (;;) {
        int got = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - 1 - c->len));
        if (got <= 0)
            return -1;
        c->len += (size_t)got;
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end) {
            int status = 0;
            sscanf(c->buf, "HTTP/1.1 %d", &status);
            size_t hl = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            return status;
        }
    }
}

/* Reads text frames until one contains needle; returns the milliseconds it took, or -1. */
static int ws_wait_for(ws_t *c, const char *needle, int timeout_ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        /* Whole frames in the buffer (server frames are unmasked). */
        while (c->len >= 2) {
            unsigned char *b = (unsigned char *)c->buf;
            size_t hl = 2, pl = b[1] & 0x7f;
            if (pl == 126) {
                if (c->len < 4)
                    break;
                pl = ((size_t)b[2] << 8) | b[3];
                hl = 4;
            } else if (pl == 127) {
                fail_msg("frame too large");
            }
            if (c->len < hl + pl)
                break;
            int found = (b[0] & 0x0f) == 1 && memmem(b + hl, pl, needle, strlen(needle)) != NULL;
            memmove(c->buf, c->buf + hl + pl, c->len - hl - pl);
            c->len -= hl + pl;
            if (found) {
                clock_gettime(CLOCK_MONOTONIC, &t1);
                return (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            return -1;
        int got = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len));
        if (got <= 0)
            return -1;
        c->len += (size_t)got;
    }
}

/* Reads until the server closes the socket (a close frame or the end of the stream); returns
 * the milliseconds it took, or -1 when it is still open after timeout_ms. */
static int ws_wait_closed(ws_t *c, int timeout_ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        while (c->len >= 2) {
            unsigned char *b = (unsigned char *)c->buf;
            size_t hl = 2, pl = b[1] & 0x7f;
            if (pl == 126) {
                if (c->len < 4)
                    break;
                pl = ((size_t)b[2] << 8) | b[3];
                hl = 4;
            }
            if (c->len < hl + pl)
                break;
            int close_frame = (b[0] & 0x0f) == 8;
            memmove(c->buf, c->buf + hl + pl, c->len - hl - pl);
            c->len -= hl + pl;
            if (close_frame)
                goto closed;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            return -1;
        int got = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len));
        if (got <= 0) {
            int err = SSL_get_error(c->ssl, got);
            ERR_clear_error();
            if (err == SSL_ERROR_WANT_READ || (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)))
                continue; /* the 200 ms read timeout: still open */
            goto closed;
        }
        c->len += (size_t)got;
    }
closed:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
}

/* Events reach a socket within a second of the commit; sockets without a session or from
 * another origin are refused. */
static void test_websocket_events(void **state)
{
    fixture_t *f = *state;
    ws_t c;
    assert_int_not_equal(ws_open(f->port, NULL, &c), 101);
    ws_close_conn(&c);
    char extra[512];
    snprintf(extra, sizeof extra, "%sOrigin: https://evil.example\r\n", g_auth);
    assert_int_not_equal(ws_open(f->port, extra, &c), 101);
    ws_close_conn(&c);

    snprintf(extra, sizeof extra, "%sOrigin: https://127.0.0.1:%d\r\n", g_auth, f->port);
    assert_int_equal(ws_open(f->port, extra, &c), 101);
    assert_true(ws_wait_for(&c, "\"hello\"", 2000) >= 0);
    usleep(300000); /* the poller's silent baseline */
    err_t e = {0};
    int64_t run3;
    assert_int_equal(store_run_create(f->writer, f->exp_id, 2, 2, 7, NULL, &run3, &e), 0);
    add_round(f, run3, 1, 0.33, 1.5);
    int ms = ws_wait_for(&c, "\"round_finished\"", 3000);
    if (ms < 0 || ms > 1000)
        fail_msg("round_finished took %d ms (want <= 1000)", ms);
    assert_int_equal(store_client_upsert(f->writer, run3, 5, "site-5", NULL, 10, "joined", &e), 0);
    assert_true(ws_wait_for(&c, "\"client_joined\"", 1500) >= 0);
    assert_int_equal(store_client_status(f->writer, run3, 5, "dropped", &e), 0);
    assert_true(ws_wait_for(&c, "\"client_dropped\"", 1500) >= 0);
    assert_int_equal(store_run_finish(f->writer, run3, "stopped", "privacy budget reached at round 1", &e), 0);
    assert_true(ws_wait_for(&c, "\"run_status\"", 1500) >= 0);
    assert_true(ws_wait_for(&c, "\"budget_reached\"", 1500) >= 0);
    ws_close_conn(&c);
}

/* ---- tests with their own setup ------------------------------------------------------------ */

/* ---- reading while rounds commit ---------------------------------------------------------
 * A writer thread commits rounds of a new run into the store (as the server does) while reader
 * threads fetch the API. Every body must parse and be consistent: the rounds of the run are
 * always a prefix 1..n with the values the writer wrote, n never shrinks for one reader, the
 * run's rounds_done agrees, and the embedded script is byte-identical every time. Reads must
 * overlap the commits (some reader sees 0 < n < all), or the test proves nothing. Threads
 * record the first inconsistency; the main thread asserts (cmocka may not fail off its thread). */
#define CC_ROUNDS 40

#define CC_READERS 4

typedef struct cc_shared {
    int port;
    int64_t run;
    store_t *writer;
    int started;          /* readers that made their first request; __atomic */
    int done;             /* the writer committed every round; __atomic */
    const char *app_js;   /* /app.js as the main thread read it */
    size_t app_js_len;
    char writer_err[256];
} cc_shared_t;

typedef struct cc_reader {
    cc_shared_t *sh;
    int requests, partial; /* answered requests; rounds bodies with 0 < n < CC_ROUNDS */
    int last_n;            /* rounds seen in the last rounds body */
    char err[512];         /* the first inconsistency, "" when none */
} cc_reader_t;

static double cc_acc(int round)
{
    return round / 128.0; /* exact in binary: compared with == */
}

static void *cc_writer(void *arg)
{
    cc_shared_t *sh = arg;
    while (__atomic_load_n(&sh->started, __ATOMIC_ACQUIRE) < CC_READERS)
        usleep(1000);
    for (int round = 1; round <= CC_ROUNDS; round++) {
        err_t e = {0};
        double t0 = 1700000000.0 + round;
        store_round_t r = {.round = round, .started_at = t0, .ended_at = t0 + 1.0, .selected = 4,
                           .participants = 3, .test_accuracy = cc_acc(round), .test_loss = 1.0 / round,
                           .samples = 100 * round};
        if (store_round_insert(sh->writer, sh->run, &r, &e) != 0) {
            snprintf(sh->writer_err, sizeof sh->writer_err, "round %d: %s", round, e.msg);
            break;
        }
        usleep(15000);
    }
    __atomic_store_n(&sh->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Checks one rounds body; returns 0 or writes why not to rd->err. */
static int cc_check_rounds(cc_reader_t *rd, const resp_t *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    int bad = 0;
    if (!j || !json_is_array(j)) {
        snprintf(rd->err, sizeof rd->err, "rounds body is not a JSON array (%s): %.200s", j ? "not an array" : je.text,
                 r->body);
        bad = 1;
    }
    size_t n = bad ? 0 : json_array_size(j);
    for (size_t k = 0; !bad && k < n; k++) {
        json_t *o = json_array_get(j, k);
        json_int_t round = json_integer_value(json_object_get(o, "round"));
        double acc = json_real_value(json_object_get(o, "test_accuracy"));
        if (round != (json_int_t)k + 1 || acc != cc_acc((int)k + 1) ||
            json_integer_value(json_object_get(o, "participants")) != 3) {
            snprintf(rd->err, sizeof rd->err, "rounds body entry %zu is round %lld, accuracy %g: not the prefix the "
                     "writer committed", k, (long long)round, acc);
            bad = 1;
        }
    }
    if (!bad && (int)n < rd->last_n) {
        snprintf(rd->err, sizeof rd->err, "rounds went back from %d to %zu", rd->last_n, n);
        bad = 1;
    }
    if (!bad) {
        rd->last_n = (int)n;
        rd->partial += n > 0 && n < CC_ROUNDS;
    }
    json_decref(j);
    return bad ? -1 : 0;
}

static int cc_check_other(cc_reader_t *rd, int which, const resp_t *r)
{
    cc_shared_t *sh = rd->sh;
    if (which == 3) {
        if (r->body_len != sh->app_js_len || memcmp(r->body, sh->app_js, r->body_len) != 0) {
            snprintf(rd->err, sizeof rd->err, "/app.js came back with %zu bytes that differ from the %zu read first",
                     r->body_len, sh->app_js_len);
            return -1;
        }
        return 0;
    }
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    int bad = 0;
    if (!j) {
        snprintf(rd->err, sizeof rd->err, "body is not JSON (%s): %.200s", je.text, r->body);
        return -1;
    }
    json_t *run = NULL;
    if (which == 1) {
        run = j;
    } else {
        for (size_t k = 0; k < json_array_size(j); k++)
            if (json_integer_value(json_object_get(json_array_get(j, k), "id")) == sh->run)
                run = json_array_get(j, k);
    }
    json_t *done = run ? json_object_get(run, "rounds_done") : NULL;
    if (!done || !json_is_integer(done)) {
        snprintf(rd->err, sizeof rd->err, "%s has no run %lld with rounds_done: %.200s",
                 which == 1 ? "/api/runs/ID" : "/api/runs", (long long)sh->run, r->body);
        bad = 1;
    } else if (json_integer_value(done) < rd->last_n || json_integer_value(done) > CC_ROUNDS) {
        snprintf(rd->err, sizeof rd->err, "rounds_done %lld is outside [%d, %d]", (long long)json_integer_value(done),
                 rd->last_n, CC_ROUNDS);
        bad = 1;
    } else {
        rd->last_n = (int)json_integer_value(done);
    }
    json_decref(j);
    return bad ? -1 : 0;
}

static void *cc_reader(void *arg)
{
    cc_reader_t *rd = arg;
    cc_shared_t *sh = rd->sh;
    char paths[4][96];
    snprintf(paths[0], sizeof paths[0], "/api/runs/%lld/rounds", (long long)sh->run);
    snprintf(paths[1], sizeof paths[1], "/api/runs/%lld", (long long)sh->run);
    snprintf(paths[2], sizeof paths[2], "/api/runs");
    snprintf(paths[3], sizeof paths[3], "/app.js");
    int last = 0;
    for (int i = 0; !rd->err[0]; i++) {
        /* After the writer is done, one more rounds read must see every round. */
        int finished = __atomic_load_n(&sh->done, __ATOMIC_ACQUIRE);
        int which = finished ? 0 : i % 4;
        resp_t r;
        if (http_get(sh->port, paths[which], &r) != 0 || r.status != 200) {
            snprintf(rd->err, sizeof rd->err, "GET %s: status %d", paths[which], r.status);
            resp_free(&r);
            break;
        }
        if (i == 0)
            __atomic_add_fetch(&sh->started, 1, __ATOMIC_RELEASE);
        rd->requests++;
        if (which == 0)
            cc_check_rounds(rd, &r);
        else
            cc_check_other(rd, which, &r);
        resp_free(&r);
        if (finished) {
            last = rd->last_n;
            break;
        }
    }
    if (!rd->err[0] && last != CC_ROUNDS)
        snprintf(rd->err, sizeof rd->err, "after the last commit a reader saw %d rounds, not %d", last, CC_ROUNDS);
    if (rd->err[0] && rd->requests == 0) /* never counted as started: let the writer go on */
        __atomic_add_fetch(&sh->started, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    fixture_t *f = *state;
    cc_shared_t sh = {.port = f->port, .writer = f->writer};
    err_t e = {0};
    assert_int_equal(store_run_create(f->writer, f->exp_id, CC_ROUNDS, 4, 11, NULL, &sh.run, &e), 0);
    resp_t js;
    assert_int_equal(http_get(f->port, "/app.js", &js), 0);
    assert_int_equal(js.status, 200);
    assert_true(js.body_len > 0);
    sh.app_js = js.body;
    sh.app_js_len = js.body_len;

    pthread_t rt[CC_READERS], wt;
    cc_reader_t rd[CC_READERS];
    for (int i = 0; i < CC_READERS; i++) {
        rd[i] = (cc_reader_t){.sh = &sh};
        assert_int_equal(pthread_create(&rt[i], NULL, cc_reader, &rd[i]), 0);
    }
    assert_int_equal(pthread_create(&wt, NULL, cc_writer, &sh), 0);
    pthread_join(wt, NULL);
    int partial = 0;
    for (int i = 0; i < CC_READERS; i++) {
        pthread_join(rt[i], NULL);
        if (rd[i].err[0])
            fail_msg("reader %d after %d requests: %s", i, rd[i].requests, rd[i].err);
        partial += rd[i].partial;
    }
    resp_free(&js);
    if (sh.writer_err[0])
        fail_msg("writer: %s", sh.writer_err);
    /* The reads overlapped the commits: some reader saw a run part-way. */
    assert_true(partial > 0);
}

/* Issue 12: one socket that does not read (a small receive window, never drained) must not
 * stall the broadcast: a reading socket gets every batch of events within a couple of seconds,
 * and the stalled socket is closed once its queue is full. */
static void test_slow_socket_does_not_stall(void **state)
{
    fixture_t *f = *state;
    char extra[512];
    snprintf(extra, sizeof extra, "%sOrigin: https://127.0.0.1:%d\r\n", g_auth, f->port);
    ws_t slow, fast;
    g_ws_rcvbuf = 2048;
    assert_int_equal(ws_open(f->port, extra, &slow), 101);
    g_ws_rcvbuf = 0;
    assert_int_equal(ws_open(f->port, extra, &fast), 101);
    assert_true(ws_wait_for(&fast, "\"hello\"", 2000) >= 0);
    usleep(300000); /* the poller's silent baseline */
    err_t e = {0};
    int64_t run;
    assert_int_equal(store_run_create(f->writer, f->exp_id, 1, 400, 7, NULL, &run, &e), 0);
    /* Big events (client_joined carries the client's name: 12 KB here), so the stalled socket's
     * kernel buffers (about 2 MB on loopback) fill within the test. */
    static char name[12 * 1024];
    int worst = 0, client = 0;
    for (int batch = 0; batch < 24; batch++) {
        for (int i = 0; i < 16; i++) {
            client++;
            int n = snprintf(name, sizeof name, "site-%d-", client);
            memset(name + n, 'x', sizeof name - 1 - (size_t)n);
            name[sizeof name - 1] = '\0';
            assert_int_equal(store_client_upsert(f->writer, run, client, name, NULL, 10, "joined", &e), 0);
        }
        char needle[48];
        snprintf(needle, sizeof needle, "\"site-%d-", client);
        int ms = ws_wait_for(&fast, needle, 15000);
        if (ms < 0)
            fail_msg("batch %d: client %d never reached the reading socket", batch, client);
        worst = ms > worst ? ms : worst;
    }    if (worst > 2000)
        fail_msg("the reading socket waited %d ms for a batch (want <= 2000): the stalled one blocks it", worst);
    /* The stalled socket: what it had buffered, then a close frame. */
    assert_true(ws_wait_closed(&slow, 10000) >= 0);
    ws_close_conn(&slow);
    ws_close_conn(&fast);
}

/* ---- sockets and the login rules (their own dashboard) ----------------------------------- */

static web_t *own_dashboard(char *dir, store_t **writer)
{
    assert_non_null(mkdtemp(dir));
    char db[160];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    err_t e = {0};
    assert_int_equal(store_open(db, 0, writer, &e), 0);
    web_t *w = NULL;
    web_options_t opt = {.db_path = db, .state_dir = dir, .admin_token = ADMIN_TOKEN, .viewer_token = VIEWER_TOKEN};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    return w;
}

/* Issue 12: a socket opened with a session closes when the session ends: at logout, and when
 * it expires. */
static void test_socket_ends_with_session(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-wsend-XXXXXX";
    store_t *writer = NULL;
    web_t *w = own_dashboard(dir, &writer);
    int port = web_port(w);
    char cookie[256], csrf[80], extra[512];
    login(port, ADMIN_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    snprintf(extra, sizeof extra, "%sOrigin: https://127.0.0.1:%d\r\n", cookie, port);
    ws_t c;
    assert_int_equal(ws_open(port, extra, &c), 101);
    assert_true(ws_wait_for(&c, "\"hello\"", 2000) >= 0);
    char lextra[512];
    snprintf(lextra, sizeof lextra, "%sX-CSRF-Token: %s\r\nContent-Length: 0\r\n", cookie, csrf);
    resp_t r;
    assert_int_equal(http_anon(port, "POST", "/api/logout", lextra, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    int ms = ws_wait_closed(&c, 2000);
    if (ms < 0)
        fail_msg("the socket of a logged-out session is still open after 2 s");
    ws_close_conn(&c);

    /* Expiry: sessions opened from now on last five seconds (long enough for the login and the
     * socket's opening on a loaded 2-core machine: with one second, a slow login ran past it). */
    web_auth_session_ttl(web_auth_of(w), 5);
    login(port, VIEWER_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    snprintf(extra, sizeof extra, "%sOrigin: https://127.0.0.1:%d\r\n", cookie, port);
    assert_int_equal(ws_open(port, extra, &c), 101);
    assert_true(ws_wait_for(&c, "\"hello\"", 2000) >= 0);
    ms = ws_wait_closed(&c, 15000);
    if (ms < 0)
        fail_msg("the socket of an expired session is still open 15 s after opening (ttl 5 s)");
    ws_close_conn(&c);
    web_stop(w);
    store_close(writer);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Issue 12: a socket opened with a bearer token has no session, but ends as one does: when
 * /api/logout is sent with its token (sockets of the other token stay), and a session's lifetime
 * after it opened. */
static void test_socket_bearer_ends(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-wsbe-XXXXXX";
    store_t *writer = NULL;
    web_t *w = own_dashboard(dir, &writer);
    int port = web_port(w);
    ws_t admin, viewer;
    assert_int_equal(ws_open(port, "Authorization: Bearer " ADMIN_TOKEN "\r\n", &admin), 101);
    assert_true(ws_wait_for(&admin, "\"hello\"", 2000) >= 0);
    assert_int_equal(ws_open(port, "Authorization: Bearer " VIEWER_TOKEN "\r\n", &viewer), 101);
    assert_true(ws_wait_for(&viewer, "\"hello\"", 2000) >= 0);
    resp_t r;
    assert_int_equal(http_anon(port, "POST", "/api/logout", "Authorization: Bearer " ADMIN_TOKEN "\r\nContent-Length: 0\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    if (ws_wait_closed(&admin, 2000) < 0)
        fail_msg("a socket opened with the admin token is still open 2 s after a logout with that token");
    ws_close_conn(&admin);
    /* The viewer token's socket is not that token's: it stays (a closed one would be closed by now). */
    if (ws_wait_closed(&viewer, 600) >= 0)
        fail_msg("a logout with the admin token closed a socket opened with the viewer token");
    ws_close_conn(&viewer);
    /* A socket opened after the logout is a new login: it works. */
    assert_int_equal(ws_open(port, "Authorization: Bearer " ADMIN_TOKEN "\r\n", &admin), 101);
    assert_true(ws_wait_for(&admin, "\"hello\"", 2000) >= 0);
    ws_close_conn(&admin);

    /* Expiry: sockets opened from now on last five seconds, as sessions would (one second was
     * shorter than an opening on a loaded machine). */
    web_auth_session_ttl(web_auth_of(w), 5);
    assert_int_equal(ws_open(port, "Authorization: Bearer " VIEWER_TOKEN "\r\n", &viewer), 101);
    assert_true(ws_wait_for(&viewer, "\"hello\"", 2000) >= 0);
    if (ws_wait_closed(&viewer, 15000) < 0)
        fail_msg("a bearer token's socket is still open 15 s after opening (lifetime 5 s)");
    ws_close_conn(&viewer);
    web_stop(w);
    store_close(writer);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Issue 12: a run whose server is SIGKILLed commits nothing, yet its sockets learn of it: a
 * run_status "interrupted" event within a few polls (common/store_live.h). The "server" is a
 * child process holding the store open, as a real one does. */
static void test_killed_server_event(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-wskill-XXXXXX";
    store_t *writer = NULL;
    web_t *w = own_dashboard(dir, &writer);
    int port = web_port(w);
    char db[160];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) { /* async-signal-safe calls only: the parent has threads */
        int fd = open(db, O_RDONLY);
        if (write(ready[1], "x", 1) != 1 || fd < 0)
            _exit(1);
        for (;;)
            pause();
    }
    char x;
    assert_int_equal(read(ready[0], &x, 1), 1); /* it holds the store open from here on */
    close(ready[0]);
    close(ready[1]);
    err_t e = {0};
    int64_t exp_id, run;
    assert_int_equal(store_experiment_create(writer, "killed", "{\"name\":\"killed\"}", &exp_id, &e), 0);
    assert_int_equal(store_run_create(writer, exp_id, 3, 2, 7, NULL, &run, &e), 0);
    assert_int_equal(store_run_set_pid(writer, run, child, &e), 0);
    /* Running while the child holds the store. The poller's first look after a socket opens is
     * a silent baseline: a phase change that arrives as an event proves it has been taken. */
    ws_t c;
    assert_int_equal(ws_open(port, "Authorization: Bearer " ADMIN_TOKEN "\r\n", &c), 101);
    assert_true(ws_wait_for(&c, "\"hello\"", 2000) >= 0);
    int seen = 0;
    for (int i = 1; i <= 20 && !seen; i++) {
        assert_int_equal(store_run_set_phase(writer, run, i, "training", &e), 0);
        seen = ws_wait_for(&c, "\"round_phase\"", 500) >= 0;
    }
    assert_true(seen);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    if (ws_wait_for(&c, "\"interrupted\"", 10000) < 0)
        fail_msg("no run_status event says interrupted 10 s after the run's server was killed");
    ws_close_conn(&c);
    web_stop(w);
    store_close(writer);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Issue 12: a WebSocket with a bearer token is a login like ?token=: wrong tokens count
 * against the address's limit, which then refuses the right token everywhere. */
static void test_socket_bearer_limited(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-wsrl-XXXXXX";
    store_t *writer = NULL;
    web_t *w = own_dashboard(dir, &writer);
    int port = web_port(w);
    ws_t c;
    for (int i = 0; i < WEB_AUTH_MAX_FAILS; i++) {
        assert_int_not_equal(ws_open(port, "Authorization: Bearer wrong-0123456789abcdef\r\n", &c), 101);
        ws_close_conn(&c);
    }
    resp_t r;
    assert_int_equal(http_anon(port, "GET", "/?token=" ADMIN_TOKEN, NULL, &r), 0);
    assert_int_equal(r.status, 429);
    resp_free(&r);
    assert_int_not_equal(ws_open(port, "Authorization: Bearer " ADMIN_TOKEN "\r\n", &c), 101);
    ws_close_conn(&c);
    web_stop(w);
    store_close(writer);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_new_rounds_show_up),
        cmocka_unit_test(test_websocket_events),
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_slow_socket_does_not_stall),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_socket_ends_with_session),
        cmocka_unit_test(test_socket_bearer_ends),
        cmocka_unit_test(test_killed_server_event),
        cmocka_unit_test(test_socket_bearer_limited),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("test_web_live served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("test_web_live alone", alone, NULL, NULL);
    return failed;
}
