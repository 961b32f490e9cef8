/* web: the REST API over real HTTPS on 127.0.0.1 (an OpenSSL client; the server's civetweb
 * goes through the libssl shim) against a temp run store: runs, rounds, clients, experiments,
 * metrics, privacy, events, CSV and Prometheus exports, the API description, bad numbers and
 * paths, the embedded assets and their headers, methods, malformed requests and the
 * DNS-rebinding guard. Shared client and fixture: web_test.h. */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include "web_test.h"

#include <arpa/inet.h>
#include <dirent.h>
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

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/util.h"
#include "crypto/tls.h"

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
        cmocka_unit_test(test_experiments),
        cmocka_unit_test(test_metrics_and_privacy),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_csv_export),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_openapi),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("test_web_api served", served, fixture_up, fixture_down);
    return failed;
}
