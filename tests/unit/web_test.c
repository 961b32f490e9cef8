/* web_test.c: what the web unit tests share: a tiny HTTP/1.1 client over TLS (OpenSSL) or plain
 * TCP, response parsing, login, and the served fixture (a temp run store with one experiment,
 * one run, three rounds and two clients, and a dashboard on a free port). See web_test.h. */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "web_test.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

int g_plain;
const char *g_verify_ca;
char g_auth[512];
char g_csrf[80];
const double k_acc[3] = {0.50, 0.90, 0.70}; /* best is not the last */
const double k_loss[3] = {1.25, 0.40, 0.60};

void resp_free(resp_t *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

int io_write(SSL *ssl, int fd, const char *p, size_t n)
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
int http_raw(int port, const char *req, resp_t *r)
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
int http_request(int port, const char *method, const char *path, const char *extra, resp_t *r)
{
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s\r\n", method, path,
             port, g_auth, extra ? extra : "");
    return http_raw(port, req, r);
}

/* Without the session. */
int http_anon(int port, const char *method, const char *path, const char *extra, resp_t *r)
{
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n", method, path,
             port, extra ? extra : "");
    return http_raw(port, req, r);
}

int http_get(int port, const char *path, resp_t *r)
{
    return http_request(port, "GET", path, NULL, r);
}

/* The value of a response header (copied into a static buffer), or NULL. */
const char *header(const resp_t *r, const char *name)
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
json_t *body_json(const resp_t *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    if (!j)
        fail_msg("response body is not JSON (%s): %.200s", je.text, r->body);
    return j;
}

/* Asserts status, a JSON content type and an {"error": "..."} body; returns the message. */
void assert_json_error(const resp_t *r, int status, const char *needle)
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
void login(int port, const char *token, char *cookie_line, size_t cap, char *csrf, size_t csrf_cap)
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

int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void add_round(fixture_t *f, int64_t run, int round, double acc, double loss)
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

int fixture_up(void **state)
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

int fixture_down(void **state)
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
