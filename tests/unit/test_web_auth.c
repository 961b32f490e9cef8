/* web: login and its defences over real HTTPS: no session, wrong tokens, viewer and admin
 * roles, bearer tokens, CSRF, the failed-login limit, the self-signed certificate (checked as a
 * browser would) and plain HTTP on loopback only. */
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
#include "web/web_internal.h"

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

/* Issue 12: successful logins count too. WEB_AUTH_MAX_LOGINS logins with the right token in
 * a window, then 429 (with Retry-After) even for the right token; an open session keeps
 * working. */
static void test_logins_rate_limited(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-weblrl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/none.db", .state_dir = dir, .admin_token = ADMIN_TOKEN};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    char cookie[256], csrf[80];
    login(port, ADMIN_TOKEN, cookie, sizeof cookie, csrf, sizeof csrf);
    resp_t r;
    for (int i = 1; i < WEB_AUTH_MAX_LOGINS; i++) {
        assert_int_equal(http_anon(port, "GET", "/?token=" ADMIN_TOKEN, NULL, &r), 0);
        if (r.status != 303)
            fail_msg("login %d: status %d, expected 303", i + 1, r.status);
        resp_free(&r);
    }
    assert_int_equal(http_anon(port, "GET", "/?token=" ADMIN_TOKEN, NULL, &r), 0);
    assert_json_error(&r, 429, "too many");
    assert_non_null(header(&r, "Retry-After"));
    resp_free(&r);
    assert_int_equal(http_anon(port, "GET", "/api/session", cookie, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Issue 12: the session table is bounded, and a flood of viewer logins must not log the admin
 * out: viewers evict the least recently used viewer session, never an admin one; a table full
 * of admin sessions refuses a viewer (-2: 503) and still takes an admin. */
static void test_session_table_keeps_admin(void **state)
{
    (void)state;
    web_auth_t *a = NULL;
    err_t e = {0};
    assert_int_equal(web_auth_create(ADMIN_TOKEN, VIEWER_TOKEN, &a, &e), 0);
    char admin[WEB_TOKEN_HEX + 1], first_viewer[WEB_TOKEN_HEX + 1], sid[WEB_TOKEN_HEX + 1], csrf[WEB_TOKEN_HEX + 1];
    assert_int_equal(web_auth_session_new(a, WEB_ROLE_ADMIN, admin, csrf), 0);
    assert_int_equal(web_auth_session_new(a, WEB_ROLE_VIEWER, first_viewer, csrf), 0);
    for (int i = 0; i < 2100; i++)
        assert_int_equal(web_auth_session_new(a, WEB_ROLE_VIEWER, sid, csrf), 0);
    assert_int_equal(web_auth_session_get(a, admin, NULL), WEB_ROLE_ADMIN);
    assert_int_equal(web_auth_session_get(a, first_viewer, NULL), WEB_ROLE_NONE); /* evicted */
    assert_int_equal(web_auth_session_get(a, sid, NULL), WEB_ROLE_VIEWER);
    web_auth_free(a);

    assert_int_equal(web_auth_create(ADMIN_TOKEN, VIEWER_TOKEN, &a, &e), 0);
    assert_int_equal(web_auth_session_new(a, WEB_ROLE_ADMIN, admin, csrf), 0);
    for (int i = 1; i < 1024; i++)
        assert_int_equal(web_auth_session_new(a, WEB_ROLE_ADMIN, sid, csrf), 0);
    assert_int_equal(web_auth_session_new(a, WEB_ROLE_VIEWER, first_viewer, csrf), -2);
    assert_int_equal(web_auth_session_get(a, admin, NULL), WEB_ROLE_ADMIN);
    assert_int_equal(web_auth_session_new(a, WEB_ROLE_ADMIN, sid, csrf), 0);
    assert_int_equal(web_auth_session_get(a, sid, NULL), WEB_ROLE_ADMIN);
    web_auth_free(a);
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

int main(void)
{
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_no_session_is_refused),
        cmocka_unit_test(test_wrong_token_is_refused),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_csrf),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_failed_logins_rate_limited),
        cmocka_unit_test(test_logins_rate_limited),
        cmocka_unit_test(test_session_table_keeps_admin),
        cmocka_unit_test(test_tls_certificate),
        cmocka_unit_test(test_insecure_http),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("test_web_auth served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("test_web_auth alone", alone, NULL, NULL);
    return failed;
}
