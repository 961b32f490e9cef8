/* web: the dashboard over real HTTPS on 127.0.0.1 (an OpenSSL client; the server's civetweb
 * goes through the libssl shim): the self-signed certificate, login, sessions, CSRF and the
 * failed-login limit, the REST API against a temp run store, reads while rounds commit, bad
 * input, the embedded assets and their headers, methods, a taken port, civetweb's thread
 * stacks, and the admin actions (a viewer's launch, stop and resume refused). */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "common/store.h"
#include "common/util.h"
#include "crypto/tls.h"
#include "web/web.h"
#include "web/web_internal.h" /* web_civetweb_min_stack, web_stack_raise */

/* ---- a tiny HTTP/1.1 client ---------------------------------------------------------- */

typedef struct resp {
    int status;
    char *raw;     /* whole response, NUL-terminated */
    char *headers; /* points into raw: the header block, NUL-terminated */
    char *body;    /* points into raw */
    size_t body_len;
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* How requests travel: TLS by default; g_plain for a server started with insecure_http.
 * g_verify_ca: when set, the server's certificate must chain to this file and name 127.0.0.1
 * (otherwise the test client, like a browser told to go ahead, accepts it unverified). */
static int g_plain;
static const char *g_verify_ca;
/* Header lines http_request adds to every request (the session cookie), "" for none. */
static char g_auth[512];
static char g_csrf[80];

#define ADMIN_TOKEN "admin-0123456789abcdef0123456789abcdef"
#define VIEWER_TOKEN "viewer-0123456789abcdef0123456789abcdef"

static int io_write(SSL *ssl, int fd, const char *p, size_t n)
{
    while (n > 0) {
        int w = ssl ? SSL_write(ssl, p, (int)n) : (int)write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends a raw request and reads the response until the server closes. Returns 0, or -1 when
 * no valid response came back (no connection, a failed handshake or verification, ...). */
static int http_raw(int port, const char *req, resp_t *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    if (!g_plain) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        if (g_verify_ca) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
            /* A self-signed leaf is its own trust anchor. */
            if (SSL_CTX_load_verify_locations(ctx, g_verify_ca, NULL) != 1)
                fail_msg("cannot load %s", g_verify_ca);
            X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
            X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
            X509_VERIFY_PARAM_set1_ip_asc(vp, "127.0.0.1");
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        }
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) {
            ERR_clear_error();
            SSL_free(ssl);
            SSL_CTX_free(ctx);
            close(fd);
            return -1;
        }
    }
    size_t n = strlen(req);
    if (io_write(ssl, fd, req, n) != 0) {
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        return -1;
    }
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        int got = ssl ? SSL_read(ssl, buf + len, (int)(cap - len - 1)) : (int)read(fd, buf + len, cap - len - 1);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    ERR_clear_error();
    if (ssl)
        SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    *sep = '\0';
    r->raw = buf;
    r->headers = buf;
    r->body = sep + 4;
    r->body_len = len - (size_t)(r->body - buf);
    return 0;
}

/* method path with a Host header, the session (g_auth) and extra header lines (each ending in
 * \r\n; may be NULL). */
static int http_request(int port, const char *method, const char *path, const char *extra, resp_t *r)
{
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s\r\n", method, path,
             port, g_auth, extra ? extra : "");
    return http_raw(port, req, r);
}

/* Without the session. */
static int http_anon(int port, const char *method, const char *path, const char *extra, resp_t *r)
{
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n", method, path,
             port, extra ? extra : "");
    return http_raw(port, req, r);
}

static int http_get(int port, const char *path, resp_t *r)
{
    return http_request(port, "GET", path, NULL, r);
}

/* The value of a response header (copied into a static buffer), or NULL. */
static const char *header(const resp_t *r, const char *name)
{
    static char value[1024];
    size_t nl = strlen(name);
    for (const char *line = strstr(r->headers, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r\n");
            if (vl >= sizeof value)
                vl = sizeof value - 1;
            memcpy(value, v, vl);
            value[vl] = '\0';
            return value;
        }
    }
    return NULL;
}

/* Parses the body as JSON; fails the test if it is not JSON. */
static json_t *body_json(const resp_t *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    if (!j)
        fail_msg("response body is not JSON (%s): %.200s", je.text, r->body);
    return j;
}

/* Asserts status, a JSON content type and an {"error": "..."} body; returns the message. */
static void assert_json_error(const resp_t *r, int status, const char *needle)
{
    assert_int_equal(r->status, status);
    const char *ct = header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    json_t *j = body_json(r);
    const char *msg = json_string_value(json_object_get(j, "error"));
    assert_non_null(msg);
    assert_true(strlen(msg) > 0);
    if (needle && !strstr(msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", msg, needle);
    json_decref(j);
}

/* Logs in with token: GET /?token=T&x=1 must answer 303 to /?x=1 with a session cookie that
 * is HttpOnly, SameSite=Strict and (over HTTPS) Secure. Writes "Cookie: name=value\r\n" to
 * cookie_line and the session's CSRF token (GET /api/session) to csrf. */
static void login(int port, const char *token, char *cookie_line, size_t cap, char *csrf, size_t csrf_cap)
{
    char path[256];
    snprintf(path, sizeof path, "/?token=%s&x=1", token);
    resp_t r;
    assert_int_equal(http_anon(port, "GET", path, NULL, &r), 0);
    if (r.status != 303)
        fail_msg("login: status %d, expected 303: %s", r.status, r.body);
    assert_string_equal(header(&r, "Location"), "/?x=1");
    const char *sc = header(&r, "Set-Cookie");
    assert_non_null(sc);
    char name[64];
    snprintf(name, sizeof name, "fednas_session_%d=", port);
    assert_true(strncmp(sc, name, strlen(name)) == 0);
    assert_non_null(strstr(sc, "HttpOnly"));
    assert_non_null(strstr(sc, "SameSite=Strict"));
    if (!g_plain)
        assert_non_null(strstr(sc, "Secure"));
    assert_null(strstr(sc, token)); /* the cookie is a session id, not the token */
    snprintf(cookie_line, cap, "Cookie: %.*s\r\n", (int)strcspn(sc, ";"), sc);
    resp_free(&r);

    char req[1024];
    snprintf(req, sizeof req, "GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
             cookie_line);
    assert_int_equal(http_raw(port, req, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    const char *c = json_string_value(json_object_get(j, "csrf"));
    assert_non_null(c);
    assert_int_equal(strlen(c), 64);
    snprintf(csrf, csrf_cap, "%s", c);
    json_decref(j);
    resp_free(&r);
}

/* ---- fixture: a temp store with one experiment, one run, three rounds, two clients ------ */

typedef struct fixture {
    char dir[64];
    char db[128];
    store_t *writer; /* stays open, as the server's would */
    int64_t exp_id, run_id;
    web_t *web;
    int port;
} fixture_t;

static const double k_acc[3] = {0.50, 0.90, 0.70}; /* best is not the last */
static const double k_loss[3] = {1.25, 0.40, 0.60};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void add_round(fixture_t *f, int64_t run, int round, double acc, double loss)
{
    err_t e = {0};
    double t0 = 1700000000.0 + round * 10.0;
    store_round_t r = {.round = round,
                       .started_at = t0,
                       .ended_at = t0 + 2.5,
                       .selected = 4,
                       .participants = 3,
                       .dropped = 1,
                       .test_accuracy = acc,
                       .test_loss = loss,
                       .train_loss = loss * 1.1,
                       .train_accuracy = acc * 0.98,
                       .samples = 1000,
                       .bytes_down = 4000,
                       .bytes_up = 3000};
    if (store_round_insert(f->writer, run, &r, &e) != 0)
        fail_msg("store_round_insert: %s", e.msg);
}

static int fixture_up(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/fednas-test-web-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db, sizeof f->db, "%s/runs.db", f->dir);
    err_t e = {0};
    if (store_open(f->db, 0, &f->writer, &e) != 0 ||
        store_experiment_create(f->writer, "mnist-fedavg", "{\"name\":\"mnist-fedavg\",\"rounds\":5,\"dp\":{\"enabled\":true,\"target_epsilon\":3.0,\"delta\":1e-5}}", &f->exp_id,
                                &e) != 0 ||
        store_run_create(f->writer, f->exp_id, 5, 4, 42, f->dir, &f->run_id, &e) != 0 ||
        store_client_upsert(f->writer, f->run_id, 0, "site-0", NULL, 600, "active", &e) != 0 ||
        store_client_upsert(f->writer, f->run_id, 1, "site-1", NULL, 400, "active", &e) != 0) {
        fprintf(stderr, "fixture: %s\n", e.msg);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        add_round(f, f->run_id, i + 1, k_acc[i], k_loss[i]);
        if (store_metric_insert(f->writer, f->run_id, i + 1, "epsilon", 0.5 * (i + 1), &e) != 0 ||
            store_metric_insert(f->writer, f->run_id, i + 1, "time_train", 1.0, &e) != 0)
            return -1;
    }
    web_options_t opt = {.db_path = f->db, .port = 0, .admin_token = ADMIN_TOKEN, .viewer_token = VIEWER_TOKEN,
                         .fednas_bin = FEDNAS_BIN};
    if (web_start(&opt, &f->web, &e) != 0) {
        fprintf(stderr, "web_start: %s\n", e.msg);
        return -1;
    }
    f->port = web_port(f->web);
    login(f->port, ADMIN_TOKEN, g_auth, sizeof g_auth, g_csrf, sizeof g_csrf);
    *state = f;
    return 0;
}

static int fixture_down(void **state)
{
    fixture_t *f = *state;
    web_stop(f->web);
    g_auth[0] = '\0';
    store_close(f->writer);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_port_zero_picks_a_port(void **state)
{
    fixture_t *f = *state;
    assert_true(f->port > 0 && f->port < 65536);
    resp_t r;
    assert_int_equal(http_get(f->port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    resp_free(&r);
}

static void test_runs_list(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "application/json"));
    assert_string_equal(header(&r, "X-Content-Type-Options"), "nosniff");
    json_t *j = body_json(&r);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 1);
    json_t *run = json_array_get(j, 0);
    assert_int_equal(json_integer_value(json_object_get(run, "id")), f->run_id);
    assert_string_equal(json_string_value(json_object_get(run, "experiment")), "mnist-fedavg");
    assert_string_equal(json_string_value(json_object_get(run, "status")), "running");
    assert_int_equal(json_integer_value(json_object_get(run, "rounds_done")), 3);
    assert_int_equal(json_integer_value(json_object_get(run, "rounds_planned")), 5);
    assert_true(json_is_real(json_object_get(run, "best_accuracy")));
    assert_float_equal(json_real_value(json_object_get(run, "best_accuracy")), 0.90, 1e-12);
    json_decref(j);
    resp_free(&r);
}

static void test_run_one(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    char path[64];
    snprintf(path, sizeof path, "/api/runs/%lld", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), f->run_id);
    /* The config is served as JSON, not as a string holding JSON. */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "config"), "rounds")), 5);
    json_decref(j);
    resp_free(&r);

    assert_int_equal(http_get(f->port, "/api/runs/999", &r), 0);
    assert_json_error(&r, 404, "999");
    resp_free(&r);
    /* A trailing slash names the same resource. */
    snprintf(path, sizeof path, "/api/runs/%lld/", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_rounds_in_order(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/1/rounds", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "application/json"));
    json_t *j = body_json(&r);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 3);
    for (int i = 0; i < 3; i++) {
        json_t *round = json_array_get(j, (size_t)i);
        assert_int_equal(json_integer_value(json_object_get(round, "round")), i + 1);
        assert_float_equal(json_real_value(json_object_get(round, "test_accuracy")), k_acc[i], 1e-12);
        assert_float_equal(json_real_value(json_object_get(round, "test_loss")), k_loss[i], 1e-12);
        assert_int_equal(json_integer_value(json_object_get(round, "participants")), 3);
        assert_float_equal(json_real_value(json_object_get(round, "duration")), 2.5, 1e-9);
    }
    json_decref(j);
    resp_free(&r);
}

static void test_rounds_since(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/1/rounds?since=2", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_array_size(j), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "round")), 3);
    json_decref(j);
    resp_free(&r);

    assert_int_equal(http_get(f->port, "/api/runs/1/rounds?since=3", &r), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 0);
    json_decref(j);
    resp_free(&r);

    /* since=0 and other query parameters: everything. */
    assert_int_equal(http_get(f->port, "/api/runs/1/rounds?x=1&since=0", &r), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 3);
    json_decref(j);
    resp_free(&r);
}

static void test_rounds_of_absent_run(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/999/rounds", &r), 0);
    assert_json_error(&r, 404, "999");
    resp_free(&r);
    assert_int_equal(http_get(f->port, "/api/runs/0/rounds?since=1", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
}

static void test_bad_numbers_are_400(void **state)
{
    fixture_t *f = *state;
    static const char *const paths[] = {
        "/api/runs/abc/rounds",
        "/api/runs/-1/rounds",
        "/api/runs/+1/rounds",
        "/api/runs/1x/rounds",
        "/api/runs/%201/rounds",
        "/api/runs/99999999999999999999/rounds",
        "/api/runs/9223372036854775808",
        "/api/runs/abc",
        "/api/runs/1.5/clients",
        "/api/runs/1/rounds?since=-1",
        "/api/runs/1/rounds?since=abc",
        "/api/runs/1/rounds?since=",
        "/api/runs/1/rounds?since=2147483648",
        "/api/runs/1/rounds?since=99999999999999999999999999999999",
        "/api/runs/1/rounds?since=1e3",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp_t r;
        assert_int_equal(http_get(f->port, paths[i], &r), 0);
        if (r.status != 400)
            fail_msg("%s: status %d, expected 400", paths[i], r.status);
        assert_json_error(&r, 400, NULL);
        resp_free(&r);
    }
    /* The largest id is a number, just not a run. */
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/9223372036854775807", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
}

static void test_clients(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/runs/1/clients", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_array_size(j), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "name")), "site-1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "samples")), 600);
    json_decref(j);
    resp_free(&r);
    assert_int_equal(http_get(f->port, "/api/runs/999/clients", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
}

static void test_unknown_paths_are_404(void **state)
{
    fixture_t *f = *state;
    static const char *const paths[] = {"/api/nope", "/api/runs/1/nope", "/api/runs/1/rounds/2", "/api",
                                        "/nope.html", "/index.html/x", "/static/app.js"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp_t r;
        assert_int_equal(http_get(f->port, paths[i], &r), 0);
        if (r.status != 404)
            fail_msg("%s: status %d, expected 404", paths[i], r.status);
        assert_json_error(&r, 404, NULL);
        resp_free(&r);
    }
}

static void test_index_page_and_headers(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "text/html"));
    const char *csp = header(&r, "Content-Security-Policy");
    assert_non_null(csp);
    assert_non_null(strstr(csp, "default-src 'self'"));
    assert_null(strstr(csp, "unsafe-inline"));
    assert_string_equal(header(&r, "X-Content-Type-Options"), "nosniff");
    assert_non_null(strstr(r.body, "<!doctype html>"));
    assert_non_null(strstr(r.body, "<script src=\"app.js\""));
    /* CSP forbids inline code, so the page must not have any: every <script> has a src and an
     * empty body, and no element has an on* handler. */
    for (const char *s = r.body; (s = strstr(s, "<script")) != NULL; s++) {
        const char *gt = strchr(s, '>');
        assert_non_null(gt);
        assert_true(memmem(s, (size_t)(gt - s), "src=", 4) != NULL);
        assert_true(strncmp(gt + 1, "</script>", 9) == 0);
    }
    assert_null(strstr(r.body, " onclick="));
    assert_null(strstr(r.body, " onload="));
    assert_null(strstr(r.body, "javascript:"));
    /* Content-Length matches the body. */
    assert_int_equal(atol(header(&r, "Content-Length")), (long)r.body_len);
    resp_free(&r);

    assert_int_equal(http_get(f->port, "/index.html", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* Compares an embedded asset byte for byte with its source in web/static/. */
static void check_asset(int port, const char *name, const char *ctype)
{
    char path[128];
    snprintf(path, sizeof path, "/%s", name);
    resp_t r;
    assert_int_equal(http_get(port, path, &r), 0);
    assert_int_equal(r.status, 200);
    const char *ct = header(&r, "Content-Type");
    assert_non_null(ct);
    if (strncmp(ct, ctype, strlen(ctype)) != 0)
        fail_msg("%s: Content-Type %s, expected %s", name, ct, ctype);
    assert_string_equal(header(&r, "X-Content-Type-Options"), "nosniff");
    const char *src = getenv("FEDNAS_SOURCE_DIR");
    if (src) {
        char file[1024];
        snprintf(file, sizeof file, "%s/web/static/%s", src, name);
        char *data;
        size_t len;
        err_t e = {0};
        if (fn_read_file(file, &data, &len, &e) != 0)
            fail_msg("%s", e.msg);
        assert_int_equal(r.body_len, len);
        assert_memory_equal(r.body, data, len);
        free(data);
    } else {
        assert_true(r.body_len > 100);
    }
    resp_free(&r);
}

static void test_static_assets(void **state)
{
    fixture_t *f = *state;
    check_asset(f->port, "app.js", "text/javascript");
    check_asset(f->port, "style.css", "text/css");
    check_asset(f->port, "index.html", "text/html");
    check_asset(f->port, "page-run.js", "text/javascript");
    check_asset(f->port, "vendor/uPlot.iife.min.js", "text/javascript");
    check_asset(f->port, "vendor/uPlot.min.css", "text/css");
    check_asset(f->port, "openapi.json", "application/json");

    /* Revalidation: the ETag answers 304 with no body. */
    resp_t r;
    assert_int_equal(http_get(f->port, "/app.js", &r), 0);
    char etag[128], cond[192];
    snprintf(etag, sizeof etag, "%s", header(&r, "ETag"));
    resp_free(&r);
    assert_true(strlen(etag) > 2 && etag[0] == '"');
    snprintf(cond, sizeof cond, "If-None-Match: %s\r\n", etag);
    assert_int_equal(http_request(f->port, "GET", "/app.js", cond, &r), 0);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
    assert_int_equal(http_request(f->port, "GET", "/app.js", "If-None-Match: \"other\"\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_path_traversal(void **state)
{
    fixture_t *f = *state;
    static const char *const paths[] = {"/../etc/passwd", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                                        "/app.js/../../etc/passwd", "/..%2f..%2fetc%2fpasswd", "/..",
                                        "/etc/passwd", "/api/runs/../../etc/passwd"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp_t r;
        assert_int_equal(http_get(f->port, paths[i], &r), 0);
        if (r.status < 400 || r.status > 499)
            fail_msg("%s: status %d, expected 4xx", paths[i], r.status);
        assert_null(strstr(r.body, "root:"));
        resp_free(&r);
    }
}

static void test_methods(void **state)
{
    fixture_t *f = *state;
    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    char extra[256];
    snprintf(extra, sizeof extra, "Content-Length: 0\r\nX-CSRF-Token: %s\r\n", g_csrf);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        resp_t r;
        assert_int_equal(http_request(f->port, methods[i], "/api/runs/1", extra, &r), 0);
        if (r.status != 405)
            fail_msg("%s: status %d, expected 405", methods[i], r.status);
        assert_json_error(&r, 405, NULL);
        assert_non_null(header(&r, "Allow"));
        resp_free(&r);
    }
    resp_t r;
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 5\r\n\r\nhello", g_csrf);
    assert_int_equal(http_request(f->port, "POST", "/", extra, &r), 0);
    assert_int_equal(r.status, 405);
    resp_free(&r);

    /* HEAD: the headers of a GET, no body. */
    assert_int_equal(http_request(f->port, "HEAD", "/app.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_true(atol(header(&r, "Content-Length")) > 100);
    resp_free(&r);
}

static void test_dns_rebinding_guard(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(
        http_raw(f->port, "GET /api/runs HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", &r), 0);
    assert_json_error(&r, 403, "Host");
    assert_null(strstr(r.body, "mnist-fedavg"));
    resp_free(&r);
    static const char *const fine[] = {"localhost:9", "LOCALHOST", "127.0.0.1", "[::1]:8080", "app.localhost"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        char req[1024];
        snprintf(req, sizeof req, "GET /api/runs HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n", fine[i],
                 g_auth);
        assert_int_equal(http_raw(f->port, req, &r), 0);
        if (r.status != 200)
            fail_msg("Host: %s: status %d", fine[i], r.status);
        resp_free(&r);
    }
    /* HTTP/1.0 without Host (curl-like tools, scripts) still works. */
    assert_int_equal(http_raw(f->port, "GET /healthz HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_malformed_requests(void **state)
{
    fixture_t *f = *state;
    /* Whatever civetweb makes of these (400, or closing the connection), the server survives. */
    static const char *const reqs[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET /api/runs HTTP/9.9\r\n\r\n",
        "GET api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /api/runs/%zz/rounds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET /api/runs/1/rounds?since=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET /%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        resp_t r;
        if (http_raw(f->port, reqs[i], &r) == 0) {
            if (r.status < 400 || r.status > 499)
                fail_msg("request %zu: status %d, expected 4xx", i, r.status);
            resp_free(&r);
        }
    }
    /* A path longer than civetweb's request buffer. */
    size_t n = 20000;
    char *big = malloc(n + 64);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', n);
    strcpy(big + 5 + n, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    resp_t r;
    if (http_raw(f->port, big, &r) == 0) {
        assert_true(r.status >= 400 && r.status <= 499);
        resp_free(&r);
    }
    free(big);
    assert_int_equal(http_get(f->port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

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

/* Debian's civetweb asks for 100 KiB stacks, too small next to OpenBLAS's TLS: its threads get
 * WEB_MIN_STACK instead (thread_stack.c), and only they: pthread_attr_setstacksize elsewhere in
 * the process gives what is asked, unless the calling thread is inside mg_start2. */
static void test_civetweb_stacks(void **state)
{
    fixture_t *f = *state;
    size_t min = web_civetweb_min_stack(f->web); /* every civetweb thread reports at its start */
    if (min < WEB_MIN_STACK)
        fail_msg("a civetweb thread has a %zu-byte stack, less than %d", min, WEB_MIN_STACK);
    pthread_attr_t a;
    size_t got = 0;
    assert_int_equal(pthread_attr_init(&a), 0);
    assert_int_equal(pthread_attr_setstacksize(&a, 128 * 1024), 0);
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, 128 * 1024);
    web_stack_raise(1); /* as web_start does around mg_start2 */
    assert_int_equal(pthread_attr_setstacksize(&a, 128 * 1024), 0);
    web_stack_raise(0);
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, WEB_MIN_STACK);
    assert_int_equal(pthread_attr_setstacksize(&a, 4 * WEB_MIN_STACK), 0); /* larger asks are kept */
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, 4 * WEB_MIN_STACK);
    pthread_attr_destroy(&a);
}

static void test_port_in_use(void **state)
{
    fixture_t *f = *state;
    web_options_t opt = {.db_path = f->db, .host = "127.0.0.1", .port = f->port};
    web_t *w2 = (web_t *)0x1;
    err_t e = {0};
    assert_int_equal(web_start(&opt, &w2, &e), FN_EADDRINUSE);
    assert_null(w2);
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    if (!strstr(e.msg, port) || !strstr(e.msg, "already in use") || !strstr(e.msg, "--http"))
        fail_msg("unexpected message: %s", e.msg);
    /* The first server is unharmed. */
    resp_t r;
    assert_int_equal(http_get(f->port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* Without a session only /healthz answers; the API says 401 in JSON, pages show the login
 * form (and never the app). */
static void test_no_session_is_refused(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    static const char *const api[] = {"/api/runs", "/api/runs/1", "/api/runs/1/rounds", "/api/session", "/api/nope"};
    for (size_t i = 0; i < sizeof api / sizeof api[0]; i++) {
        assert_int_equal(http_anon(f->port, "GET", api[i], NULL, &r), 0);
        assert_json_error(&r, 401, "token");
        assert_null(strstr(r.body, "mnist-fedavg"));
        resp_free(&r);
    }
    static const char *const pages[] = {"/", "/index.html", "/app.js", "/style.css"};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        assert_int_equal(http_anon(f->port, "GET", pages[i], NULL, &r), 0);
        assert_int_equal(r.status, 401);
        assert_non_null(strstr(header(&r, "Content-Type"), "text/html"));
        assert_non_null(strstr(r.body, "name=\"token\""));
        assert_null(strstr(r.body, "app.js"));
        resp_free(&r);
    }
    /* Before login only the sign-in page's own style sheet and the icon are served. */
    assert_int_equal(http_anon(f->port, "GET", "/", NULL, &r), 0);
    assert_non_null(strstr(r.body, "href=\"/login.css\""));
    assert_non_null(strstr(r.body, "not logged in")); /* the page says why it is shown */
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/login.css", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "text/css"));
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/favicon.svg", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "POST", "/login.css", NULL, &r), 0);
    assert_true(r.status >= 400);
    resp_free(&r);
    /* A made-up or stale session cookie is no better. */
    char bad[256];
    snprintf(bad, sizeof bad, "Cookie: fednas_session_%d=%064d\r\n", f->port, 7);
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", bad, &r), 0);
    assert_json_error(&r, 401, NULL);
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_wrong_token_is_refused(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_anon(f->port, "GET", "/?token=" VIEWER_TOKEN "x", NULL, &r), 0);
    assert_int_equal(r.status, 401);
    assert_null(header(&r, "Set-Cookie"));
    assert_non_null(strstr(r.body, "wrong access token"));
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/api/runs?token=nope", NULL, &r), 0);
    assert_json_error(&r, 401, "token");
    assert_null(header(&r, "Set-Cookie"));
    resp_free(&r);
    /* The login redirect never leaves the site. */
    assert_int_equal(http_anon(f->port, "GET", "//evil.example/?token=" ADMIN_TOKEN, NULL, &r), 0);
    if (r.status == 303)
        assert_true(strncmp(header(&r, "Location"), "//", 2) != 0 && header(&r, "Location")[0] == '/');
    resp_free(&r);
}

static void test_roles(void **state)
{
    fixture_t *f = *state;
    char cookie[256], csrf[80];
    login(f->port, VIEWER_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    resp_t r;
    assert_int_equal(http_anon(f->port, "GET", "/api/session", cookie, &r), 0);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "role")), "viewer");
    json_decref(j);
    resp_free(&r);
    assert_int_equal(http_get(f->port, "/api/session", &r), 0);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "role")), "admin");
    json_decref(j);
    resp_free(&r);
    /* A viewer reads the API. */
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", cookie, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_bearer_token(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", "Authorization: Bearer " ADMIN_TOKEN "\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", "Authorization: Bearer wrong-token\r\n", &r), 0);
    assert_json_error(&r, 401, "Bearer");
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", "Authorization: Basic YTpi\r\n", &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
}

/* State-changing requests of a cookie session need the session's CSRF token. */
static void test_csrf(void **state)
{
    fixture_t *f = *state;
    char cookie[256], csrf[80], extra[512];
    login(f->port, ADMIN_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    resp_t r;
    snprintf(extra, sizeof extra, "%sContent-Length: 0\r\n", cookie);
    assert_int_equal(http_anon(f->port, "POST", "/api/logout", extra, &r), 0);
    assert_json_error(&r, 403, "X-CSRF-Token");
    resp_free(&r);
    snprintf(extra, sizeof extra, "%sContent-Length: 0\r\nX-CSRF-Token: %s\r\n", cookie, g_csrf); /* another session's */
    assert_int_equal(http_anon(f->port, "POST", "/api/logout", extra, &r), 0);
    assert_json_error(&r, 403, NULL);
    resp_free(&r);
    snprintf(extra, sizeof extra, "%sContent-Length: 0\r\nX-CSRF-Token: %.63s\r\n", cookie, csrf); /* one short */
    assert_int_equal(http_anon(f->port, "POST", "/api/logout", extra, &r), 0);
    assert_json_error(&r, 403, NULL);
    resp_free(&r);
    /* Still logged in after the refused attempts; the right token logs out. */
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", cookie, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    snprintf(extra, sizeof extra, "%sContent-Length: 0\r\nX-CSRF-Token: %s\r\n", cookie, csrf);
    assert_int_equal(http_anon(f->port, "POST", "/api/logout", extra, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Set-Cookie"), "Max-Age=0"));
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/api/runs", cookie, &r), 0);
    assert_json_error(&r, 401, NULL);
    resp_free(&r);
    /* The fixture's own session is untouched. */
    assert_int_equal(http_get(f->port, "/api/runs", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_experiments(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_get(f->port, "/api/experiments", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_array_size(j), 1);
    json_t *x = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(x, "name")), "mnist-fedavg");
    assert_int_equal(json_integer_value(json_object_get(x, "runs")), 1);
    assert_true(json_is_object(json_object_get(x, "config")));
    json_decref(j);
    resp_free(&r);
}

static void test_metrics_and_privacy(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    char path[96];
    snprintf(path, sizeof path, "/api/runs/%lld/metrics", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    json_t *j = body_json(&r);
    assert_int_equal(json_array_size(j), 6);
    json_decref(j);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/runs/%lld/metrics?name=epsilon", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 3);
    assert_float_equal(json_real_value(json_object_get(json_array_get(j, 2), "value")), 1.5, 1e-12);
    json_decref(j);
    resp_free(&r);
    /* since: only later rounds (the live Run page asks for what it has not seen). */
    snprintf(path, sizeof path, "/api/runs/%lld/metrics?since=2", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    j = body_json(&r);
    assert_int_equal(json_array_size(j), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "round")), 3);
    json_decref(j);
    resp_free(&r);
    static const char *const bad[] = {"?name=", "?name=a%20b", "?name=%27%3B", "?name=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "/api/runs/%lld/metrics%s", (long long)f->run_id, bad[i]);
        assert_int_equal(http_get(f->port, path, &r), 0);
        assert_json_error(&r, 400, "name");
        resp_free(&r);
    }
    static const char *const bad_since[] = {"?since=-1", "?since=x", "?since=99999999999"};
    for (size_t i = 0; i < sizeof bad_since / sizeof bad_since[0]; i++) {
        snprintf(path, sizeof path, "/api/runs/%lld/metrics%s", (long long)f->run_id, bad_since[i]);
        assert_int_equal(http_get(f->port, path, &r), 0);
        assert_json_error(&r, 400, "since");
        resp_free(&r);
    }
    assert_int_equal(http_get(f->port, "/api/runs/999/metrics", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);

    snprintf(path, sizeof path, "/api/runs/%lld/privacy", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_float_equal(json_real_value(json_object_get(j, "epsilon")), 1.5, 1e-12);
    assert_float_equal(json_real_value(json_object_get(j, "target_epsilon")), 3.0, 1e-12);
    assert_int_equal(json_array_size(json_object_get(j, "rounds")), 3);
    assert_true(json_is_object(json_object_get(j, "dp")));
    json_decref(j);
    resp_free(&r);
    static const char *const ids[] = {"/api/runs/x/privacy", "/api/runs/-1/privacy", "/api/runs/99999999999999999999/privacy",
                                      "/api/runs/1e3/events", "/api/runs/%20/metrics", "/api/runs/x/rounds.csv"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        assert_int_equal(http_get(f->port, ids[i], &r), 0);
        if (r.status != 400)
            fail_msg("%s: status %d, expected 400", ids[i], r.status);
        resp_free(&r);
    }
    assert_int_equal(http_get(f->port, "/api/runs/999/privacy", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
}

static void test_events(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    char path[96];
    snprintf(path, sizeof path, "/api/runs/%lld/events", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    json_t *j = body_json(&r);
    int started = 0, joined = 0, rounds = 0;
    double last = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(j, i, ev) {
        const char *t = json_string_value(json_object_get(ev, "type"));
        double time = json_number_value(json_object_get(ev, "time"));
        assert_true(time >= last); /* oldest first */
        last = time;
        started += strcmp(t, "run_started") == 0;
        joined += strcmp(t, "client_joined") == 0;
        rounds += strcmp(t, "round_finished") == 0;
    }
    assert_int_equal(started, 1);
    assert_int_equal(joined, 2);
    assert_int_equal(rounds, 3);
    json_decref(j);
    resp_free(&r);
}

static void test_csv_export(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    char path[96];
    snprintf(path, sizeof path, "/api/runs/%lld/rounds.csv", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "text/csv"));
    assert_non_null(strstr(header(&r, "Content-Disposition"), "rounds.csv"));
    assert_true(strncmp(r.body, "round,started_at,ended_at,duration,", 35) == 0);
    int lines = 0;
    for (const char *p = r.body; (p = strstr(p, "\r\n")) != NULL; p += 2)
        lines++;
    assert_int_equal(lines, 4);
    assert_non_null(strstr(r.body, "\r\n2,"));
    resp_free(&r);
    snprintf(path, sizeof path, "/api/runs/%lld/clients.csv", (long long)f->run_id);
    assert_int_equal(http_get(f->port, path, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"site-1\""));
    resp_free(&r);
    assert_int_equal(http_get(f->port, "/api/runs/999/rounds.csv", &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
}

static void test_prometheus(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_anon(f->port, "GET", "/metrics", NULL, &r), 0);
    assert_json_error(&r, 401, NULL);
    resp_free(&r);
    assert_int_equal(http_anon(f->port, "GET", "/metrics", "Authorization: Bearer " VIEWER_TOKEN "\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type"), "text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "# TYPE fednas_runs gauge\n"));
    assert_non_null(strstr(r.body, "fednas_runs{status=\"running\"} 1\n"));
    assert_non_null(strstr(r.body, "fednas_runs{status=\"done\"} 0\n"));
    assert_non_null(strstr(r.body, "fednas_rounds_total 3\n"));
    char want[128];
    snprintf(want, sizeof want, "fednas_run_last_accuracy{run=\"%lld\",experiment=\"mnist-fedavg\"} 0.69999",
             (long long)f->run_id);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "fednas_http_requests_total{code=\"2xx\"} "));
    assert_non_null(strstr(r.body, "fednas_http_requests_total{code=\"4xx\"} "));
    /* Every sample line is "name{labels} value" or "name value". */
    for (char *line = r.body; *line;) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] != '#') {
            char *sp = memchr(line, ' ', (size_t)(end - line));
            assert_non_null(sp);
            char *num_end;
            strtod(sp + 1, &num_end);
            assert_true(num_end == end);
        }
        line = end + 1;
    }
    resp_free(&r);
}

static void test_openapi(void **state)
{
    fixture_t *f = *state;
    resp_t r;
    assert_int_equal(http_anon(f->port, "GET", "/openapi.json", NULL, &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(http_get(f->port, "/openapi.json", &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_non_null(json_object_get(j, "openapi"));
    json_t *paths = json_object_get(j, "paths");
    static const char *const routes[] = {"/healthz", "/metrics", "/api/session", "/api/logout", "/api/experiments",
                                         "/api/runs", "/api/runs/{id}", "/api/runs/{id}/rounds",
                                         "/api/runs/{id}/rounds.csv", "/api/runs/{id}/clients",
                                         "/api/runs/{id}/clients.csv", "/api/runs/{id}/metrics",
                                         "/api/runs/{id}/privacy", "/api/runs/{id}/events", "/api/runs/{id}/stop",
                                         "/api/runs/{id}/resume", "/ws"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!json_object_get(paths, routes[i]))
            fail_msg("openapi.json does not describe %s", routes[i]);
    json_decref(j);
    resp_free(&r);
}

/* Admin actions: role, CSRF, size and shape of the body; a real `fednas run` of a bad config
 * is reported with its error. */
static void test_launch_refusals(void **state)
{
    fixture_t *f = *state;
    char vcookie[256], vcsrf[80], extra[1024];
    login(f->port, VIEWER_TOKEN, vcookie, sizeof vcookie, vcsrf, sizeof vcsrf);
    resp_t r;
    static const char body[] = "{\"name\":\"x\"}";
    snprintf(extra, sizeof extra, "%sX-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", vcookie, vcsrf,
             sizeof body - 1, body);
    assert_int_equal(http_anon(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    snprintf(extra, sizeof extra, "%sX-CSRF-Token: %s\r\nContent-Length: 0\r\n", vcookie, vcsrf);
    assert_int_equal(http_anon(f->port, "POST", "/api/runs/1/stop", extra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    /* Admin without CSRF. */
    snprintf(extra, sizeof extra, "Content-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 403, "CSRF");
    resp_free(&r);
    /* Oversized: refused from Content-Length before reading. */
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 10000000\r\n", g_csrf);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 413, "limit");
    resp_free(&r);
    static const char *const bad[] = {"", "[1,2]", "{\"name\":", "\"text\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, strlen(bad[i]),
                 bad[i]);
        assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
        assert_json_error(&r, 400, "experiment config");
        resp_free(&r);
    }
    /* A config fednas refuses: the real binary exits 2 and the answer carries its message. */
    static const char invalid[] = "{\"name\":\"bad\",\"rounds\":\"many\"}";
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, sizeof invalid - 1,
             invalid);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 422, "exited");
    json_t *j = body_json(&r);
    const char *tail = json_string_value(json_object_get(j, "log_tail"));
    if (!tail || !strstr(tail, "rounds"))
        fail_msg("log tail does not name the bad key: %s", tail ? tail : "(none)");
    json_decref(j);
    resp_free(&r);
    /* Stop and resume of runs that are absent or not running. */
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 0\r\n", g_csrf);
    assert_int_equal(http_request(f->port, "POST", "/api/runs/999/stop", extra, &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
    assert_int_equal(http_request(f->port, "POST", "/api/runs/abc/stop", extra, &r), 0);
    assert_json_error(&r, 400, NULL);
    resp_free(&r);
    char path[64];
    snprintf(path, sizeof path, "/api/runs/%lld/stop", (long long)f->run_id);
    assert_int_equal(http_request(f->port, "POST", path, extra, &r), 0);
    assert_json_error(&r, 409, "not known"); /* running, but no pid recorded */
    resp_free(&r);
    assert_int_equal(http_request(f->port, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    resp_free(&r);
}

/* ---- a tiny WebSocket client over TLS ---------------------------------------------------- */

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

/* Opens /ws with extra header lines; returns the handshake's HTTP status (101 on success), or
 * -1 when the connection failed or was closed without an answer. */
static int ws_open(int port, const char *extra, ws_t *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
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

static void test_bad_options(void **state)
{
    (void)state;
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/x.db", .port = -1};
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_null(w);
    opt.port = 70000;
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    opt.port = 0;
    opt.host = "example.com";
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "example.com"));
    opt.host = "127.0.0.1";
    opt.db_path = NULL;
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_int_equal(web_start(NULL, &w, &e), FN_EINVAL);
    web_stop(NULL);
}

static void test_missing_store_is_503(void **state)
{
    (void)state;
    web_t *w = NULL;
    err_t e = {0};
    char dir[] = "/tmp/fednas-test-web503-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_options_t opt = {.db_path = "/nonexistent/fednas-web-test/runs.db", .host = "localhost", .port = 0,
                         .state_dir = dir};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    /* The token comes from web_url: https://127.0.0.1:PORT/?token=<64 hex>. */
    const char *url = web_url(w);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "https://127.0.0.1:%d/?token=", port);
    assert_true(strncmp(url, prefix, strlen(prefix)) == 0);
    const char *tok = url + strlen(prefix);
    assert_int_equal(strlen(tok), 64);
    assert_int_equal(strspn(tok, "0123456789abcdef"), 64);
    assert_string_not_equal(strstr(web_viewer_url(w), "token=") + 6, tok);
    login(port, tok, g_auth, sizeof g_auth, g_csrf, sizeof g_csrf);
    resp_t r;
    assert_int_equal(http_get(port, "/api/runs", &r), 0);
    assert_json_error(&r, 503, "does not exist");
    resp_free(&r);
    assert_int_equal(http_get(port, "/api/runs/1/rounds", &r), 0);
    assert_json_error(&r, 503, NULL);
    resp_free(&r);
    assert_int_equal(http_get(port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(http_get(port, "/", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    g_auth[0] = '\0';
    /* Stopped means closed. */
    assert_int_not_equal(http_get(port, "/healthz", &r), 0);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_fixed_port_reuse_after_stop(void **state)
{
    (void)state;
    /* Start on port 0, note the port, stop, and start again on that port explicitly. */
    web_t *w = NULL;
    err_t e = {0};
    char dir[] = "/tmp/fednas-test-webport-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_options_t opt = {.db_path = "/tmp/none.db", .port = 0, .state_dir = dir};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    web_stop(w);
    opt.port = port;
    if (web_start(&opt, &w, &e) != 0)
        fail_msg("restart on port %d: %s", port, e.msg);
    assert_int_equal(web_port(w), port);
    resp_t r;
    assert_int_equal(http_get(port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Ten wrong tokens in a minute from one address, then 429 even for the right token; an
 * existing session keeps working. */
static void test_failed_logins_rate_limited(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-webrl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/none.db", .state_dir = dir, .admin_token = ADMIN_TOKEN};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    char cookie[256], csrf[80];
    login(port, ADMIN_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    resp_t r;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(http_anon(port, "GET", i % 2 ? "/?token=wrong" : "/api/runs?token=wrong", NULL, &r), 0);
        if (r.status != 401)
            fail_msg("attempt %d: status %d, expected 401", i + 1, r.status);
        resp_free(&r);
    }
    assert_int_equal(http_anon(port, "GET", "/?token=" ADMIN_TOKEN, NULL, &r), 0);
    assert_json_error(&r, 429, "too many");
    assert_non_null(header(&r, "Retry-After"));
    resp_free(&r);
    assert_int_equal(http_anon(port, "GET", "/api/runs", "Authorization: Bearer " ADMIN_TOKEN "\r\n", &r), 0);
    assert_int_equal(r.status, 429);
    resp_free(&r);
    assert_int_equal(http_anon(port, "GET", "/api/session", cookie, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The self-signed certificate: made on first start in <state_dir>/tls with a 0600 key,
 * verifiable for 127.0.0.1, and the same one after a restart. Plain HTTP to the port fails. */
static void test_tls_certificate(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-webtls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], ca[160], key[160], tlsdir[160];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    snprintf(ca, sizeof ca, "%s/tls/cert.pem", dir);
    snprintf(key, sizeof key, "%s/tls/key.pem", dir);
    snprintf(tlsdir, sizeof tlsdir, "%s/tls", dir);
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = db}; /* state_dir defaults to the store's folder */
    if (web_start(&opt, &w, &e) != 0)
        fail_msg("web_start: %s", e.msg);
    int port = web_port(w);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(tlsdir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char *pem1;
    size_t len1;
    assert_int_equal(fn_read_file(ca, &pem1, &len1, &e), 0);

    resp_t r;
    g_verify_ca = ca;
    assert_int_equal(http_anon(port, "GET", "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Strict-Transport-Security"), "max-age"));
    resp_free(&r);
    g_verify_ca = NULL;
    g_plain = 1;
    assert_int_not_equal(http_anon(port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200, 1);
    resp_free(&r);
    g_plain = 0;
    web_stop(w);

    /* Restart: the certificate is reused (a browser's exception stays valid). */
    assert_int_equal(web_start(&opt, &w, &e), 0);
    char *pem2;
    size_t len2;
    assert_int_equal(fn_read_file(ca, &pem2, &len2, &e), 0);
    assert_int_equal(len1, len2);
    assert_memory_equal(pem1, pem2, len1);
    g_verify_ca = ca;
    assert_int_equal(http_anon(web_port(w), "GET", "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    g_verify_ca = NULL;
    web_stop(w);

    /* Given files: this same pair works; a key of another pair is refused. */
    web_options_t given = {.db_path = db, .tls_cert = ca, .tls_key = key, .state_dir = dir};
    assert_int_equal(web_start(&given, &w, &e), 0);
    g_verify_ca = ca;
    assert_int_equal(http_anon(web_port(w), "GET", "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    g_verify_ca = NULL;
    web_stop(w);
    char other[200], pem_other[256], other_key[256];
    snprintf(other, sizeof other, "%s/other", dir);
    assert_int_equal(tls_ensure_self_signed(other, pem_other, sizeof pem_other, &e), 0);
    snprintf(other_key, sizeof other_key, "%s/key.pem", other);
    given.tls_key = other_key;
    assert_int_equal(web_start(&given, &w, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "does not belong"));
    given.tls_key = NULL;
    assert_int_equal(web_start(&given, &w, &e), FN_EINVAL);
    free(pem1);
    free(pem2);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Plain HTTP only when asked, and only on loopback. */
static void test_insecure_http(void **state)
{
    (void)state;
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/none.db", .insecure_http = 1, .host = "0.0.0.0"};
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "loopback"));
    opt.host = "127.0.0.1";
    assert_int_equal(web_start(&opt, &w, &e), 0);
    assert_true(strncmp(web_url(w), "http://127.0.0.1:", 17) == 0);
    g_plain = 1;
    resp_t r;
    assert_int_equal(http_anon(web_port(w), "GET", "/api/runs", NULL, &r), 0);
    assert_int_equal(r.status, 401); /* still needs the token */
    resp_free(&r);
    char path[160];
    snprintf(path, sizeof path, "/?%s", strstr(web_url(w), "token="));
    assert_int_equal(http_anon(web_port(w), "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 303);
    assert_null(strstr(header(&r, "Set-Cookie"), "Secure"));
    resp_free(&r);
    g_plain = 0;
    web_stop(w);
}

static int proc_gone(long pid)
{
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    FILE *fp = fopen(p, "r");
    if (!fp)
        return 1;
    size_t n = fread(st, 1, sizeof st - 1, fp);
    fclose(fp);
    st[n] = '\0';
    const char *rp = strrchr(st, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X'); /* a zombie nobody reaps is gone too */
}

/* Launch, stop and resume against a stand-in for fednas: a script that records its arguments,
 * registers a run in the store with sqlite3 and then sleeps (exec keeps its pid). */
static void test_launch_stop_resume(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-weblaunch-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], script[128], args[128];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    snprintf(script, sizeof script, "%s/fake-fednas", dir);
    snprintf(args, sizeof args, "%s/args.txt", dir);
    err_t e = {0};
    store_t *st;
    assert_int_equal(store_open(db, 0, &st, &e), 0);
    FILE *fp = fopen(script, "w");
    assert_non_null(fp);
    fprintf(fp,
            "#!/bin/sh\n"
            "echo \"$@\" >> '%s'\n"
            "case \"$2\" in --resume) exec sleep 30;; esac\n"
            "sqlite3 '%s' \"INSERT INTO experiments(name, config, created_at) VALUES ('fake', '{}', 0); "
            "INSERT INTO runs(experiment_id, status, rounds_planned, clients_planned, seed, started_at, pid) "
            "VALUES (last_insert_rowid(), 'running', 1, 1, 1, 0, $$);\" || exit 3\n"
            "exec sleep 30\n",
            args, db);
    fclose(fp);
    chmod(script, 0700);

    web_t *w = NULL;
    web_options_t opt = {.db_path = db, .admin_token = ADMIN_TOKEN, .viewer_token = VIEWER_TOKEN, .fednas_bin = script};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    login(port, ADMIN_TOKEN, g_auth, sizeof g_auth, g_csrf, sizeof g_csrf);
    char extra[1024];
    static const char body[] = "{\"name\":\"fake\",\"rounds\":1}";
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, sizeof body - 1, body);
    resp_t r;
    assert_int_equal(http_request(port, "POST", "/api/runs", extra, &r), 0);
    if (r.status != 201)
        fail_msg("launch: %d %s", r.status, r.body);
    json_t *j = body_json(&r);
    int64_t run = json_integer_value(json_object_get(j, "run_id"));
    long pid = (long)json_integer_value(json_object_get(j, "pid"));
    const char *cfg = json_string_value(json_object_get(j, "config"));
    assert_true(run >= 1 && pid > 1);
    /* The posted config was written (0600) in the state folder and handed to `fednas run`. */
    struct stat sb;
    assert_int_equal(stat(cfg, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char *a;
    size_t alen;
    assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
    char want[512];
    snprintf(want, sizeof want, "run %s --db %s --http off", cfg, db);
    if (!strstr(a, want))
        fail_msg("arguments \"%s\" lack \"%s\"", a, want);
    free(a);
    json_decref(j);
    resp_free(&r);

    char path[64];
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 0\r\n", g_csrf);
    snprintf(path, sizeof path, "/api/runs/%lld/resume", (long long)run);
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    assert_json_error(&r, 409, "running"); /* alive: no second server on one run */
    resp_free(&r);
    snprintf(path, sizeof path, "/api/runs/%lld/stop", (long long)run);
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    for (int i = 0; i < 50 && !proc_gone(pid); i++)
        usleep(100000);
    assert_true(proc_gone(pid));

    /* A viewer may not resume, with a valid session and CSRF token or with its bearer token,
     * though the run could be resumed now (the admin does so below): 403 and nothing started. */
    snprintf(path, sizeof path, "/api/runs/%lld/resume", (long long)run);
    char vcookie[256], vcsrf[80], vextra[512];
    login(port, VIEWER_TOKEN, vcookie, sizeof vcookie, vcsrf, sizeof vcsrf);
    snprintf(vextra, sizeof vextra, "%sX-CSRF-Token: %s\r\nContent-Length: 0\r\n", vcookie, vcsrf);
    assert_int_equal(http_anon(port, "POST", path, vextra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    assert_int_equal(http_anon(port, "POST", path, "Authorization: Bearer " VIEWER_TOKEN "\r\nContent-Length: 0\r\n", &r),
                     0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
    if (strstr(a, "--resume"))
        fail_msg("a viewer's refused resume started fednas: %s", a);
    free(a);
    char launch_dir[160];
    snprintf(launch_dir, sizeof launch_dir, "%s/launch", dir);
    DIR *ld = opendir(launch_dir);
    for (struct dirent *de; ld && (de = readdir(ld)) != NULL;)
        if (strncmp(de->d_name, "resume-", 7) == 0)
            fail_msg("a viewer's refused resume left %s/%s", launch_dir, de->d_name);
    if (ld)
        closedir(ld);

    /* The store still says running (the stand-in never finishes it); its process is gone, so
     * resume starts `fednas run --resume ID`. */
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    if (r.status != 202)
        fail_msg("resume: %d %s", r.status, r.body);
    j = body_json(&r);
    long pid2 = (long)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    resp_free(&r);
    assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
    snprintf(want, sizeof want, "run --resume %lld --db %s --http off", (long long)run, db);
    assert_non_null(strstr(a, want));
    free(a);
    kill((pid_t)pid2, SIGTERM);

    web_stop(w);
    g_auth[0] = '\0';
    store_close(st);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_port_zero_picks_a_port),
        cmocka_unit_test(test_runs_list),
        cmocka_unit_test(test_run_one),
        cmocka_unit_test(test_rounds_in_order),
        cmocka_unit_test(test_rounds_since),
        cmocka_unit_test(test_rounds_of_absent_run),
        cmocka_unit_test(test_bad_numbers_are_400),
        cmocka_unit_test(test_clients),
        cmocka_unit_test(test_unknown_paths_are_404),
        cmocka_unit_test(test_index_page_and_headers),
        cmocka_unit_test(test_static_assets),
        cmocka_unit_test(test_path_traversal),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_dns_rebinding_guard),
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_no_session_is_refused),
        cmocka_unit_test(test_wrong_token_is_refused),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_csrf),
        cmocka_unit_test(test_experiments),
        cmocka_unit_test(test_metrics_and_privacy),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_csv_export),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_openapi),
        cmocka_unit_test(test_launch_refusals),
        cmocka_unit_test(test_new_rounds_show_up), /* adds a run */
        cmocka_unit_test(test_websocket_events),   /* adds a run */
        cmocka_unit_test(test_concurrent_requests), /* adds a run */
        cmocka_unit_test(test_civetweb_stacks),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_missing_store_is_503),
        cmocka_unit_test(test_fixed_port_reuse_after_stop),
        cmocka_unit_test(test_failed_logins_rate_limited),
        cmocka_unit_test(test_tls_certificate),
        cmocka_unit_test(test_insecure_http),
        cmocka_unit_test(test_launch_stop_resume),
    };
    int failed = cmocka_run_group_tests_name("web served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("web alone", alone, NULL, NULL);
    return failed;
}
