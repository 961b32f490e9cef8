/* web: the dashboard over real HTTP on 127.0.0.1: the REST API against a temp run store,
 * bad input, the embedded assets and their headers, methods, and a taken port. */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/store.h"
#include "common/util.h"
#include "web/web.h"

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

/* Sends a raw request and reads the response until the server closes. Returns 0, or -1 when
 * no valid response came back. */
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
    size_t n = strlen(req);
    if (write(fd, req, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
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

/* method path with a Host header and extra header lines (each ending in \r\n; may be NULL). */
static int http_request(int port, const char *method, const char *path, const char *extra, resp_t *r)
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
        store_experiment_create(f->writer, "mnist-fedavg", "{\"name\":\"mnist-fedavg\",\"rounds\":5}", &f->exp_id,
                                &e) != 0 ||
        store_run_create(f->writer, f->exp_id, 5, 4, 42, f->dir, &f->run_id, &e) != 0 ||
        store_client_upsert(f->writer, f->run_id, 0, "site-0", NULL, 600, "active", &e) != 0 ||
        store_client_upsert(f->writer, f->run_id, 1, "site-1", NULL, 400, "active", &e) != 0) {
        fprintf(stderr, "fixture: %s\n", e.msg);
        return -1;
    }
    for (int i = 0; i < 3; i++)
        add_round(f, f->run_id, i + 1, k_acc[i], k_loss[i]);
    web_options_t opt = {.db_path = f->db, .port = 0};
    if (web_start(&opt, &f->web, &e) != 0) {
        fprintf(stderr, "web_start: %s\n", e.msg);
        return -1;
    }
    f->port = web_port(f->web);
    *state = f;
    return 0;
}

static int fixture_down(void **state)
{
    fixture_t *f = *state;
    web_stop(f->web);
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
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        resp_t r;
        assert_int_equal(http_request(f->port, methods[i], "/api/runs", "Content-Length: 0\r\n", &r), 0);
        if (r.status != 405)
            fail_msg("%s: status %d, expected 405", methods[i], r.status);
        assert_json_error(&r, 405, NULL);
        assert_non_null(header(&r, "Allow"));
        resp_free(&r);
    }
    resp_t r;
    assert_int_equal(http_request(f->port, "POST", "/", "Content-Length: 5\r\n\r\nhello", &r), 0);
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
        char req[256];
        snprintf(req, sizeof req, "GET /api/runs HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", fine[i]);
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

typedef struct hammer {
    int port;
    int ok;
} hammer_t;

static void *hammer_thread(void *arg)
{
    hammer_t *h = arg;
    static const char *const paths[] = {"/api/runs", "/api/runs/1/rounds", "/api/runs/1", "/app.js"};
    for (int i = 0; i < 25; i++) {
        resp_t r;
        if (http_get(h->port, paths[i % 4], &r) == 0 && r.status == 200)
            h->ok++;
        resp_free(&r);
    }
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    fixture_t *f = *state;
    pthread_t th[6];
    hammer_t h[6];
    for (int i = 0; i < 6; i++) {
        h[i] = (hammer_t){.port = f->port};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].ok, 25);
    }
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
    web_options_t opt = {.db_path = "/nonexistent/fednas-web-test/runs.db", .host = "localhost", .port = 0};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
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
    /* Stopped means closed. */
    assert_int_not_equal(http_get(port, "/healthz", &r), 0);
}

static void test_fixed_port_reuse_after_stop(void **state)
{
    (void)state;
    /* Start on port 0, note the port, stop, and start again on that port explicitly. */
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/none.db", .port = 0};
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
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_new_rounds_show_up), /* last: adds a run */
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_missing_store_is_503),
        cmocka_unit_test(test_fixed_port_reuse_after_stop),
    };
    int failed = cmocka_run_group_tests_name("web served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("web alone", alone, NULL, NULL);
    return failed;
}
