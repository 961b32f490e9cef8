/* web_test: the helpers the web unit tests share (web_test.c): an HTTP/1.1 client that speaks
 * TLS like a browser told to accept the certificate (or checks it against g_verify_ca), the
 * session login, JSON checks, and the served fixture. Tests only. */
#ifndef FEDNAS_TESTS_WEB_TEST_H
#define FEDNAS_TESTS_WEB_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <sys/stat.h>

#include "common/store.h"
#include "web/web.h"

typedef struct resp {
    int status;
    char *raw;     /* whole response, NUL-terminated */
    char *headers; /* points into raw: the header block, NUL-terminated */
    char *body;    /* points into raw */
    size_t body_len;
} resp_t;
void resp_free(resp_t *r);

/* How requests travel: TLS by default; g_plain for a server started with insecure_http.
 * g_verify_ca: when set, the server's certificate must chain to this file and name 127.0.0.1
 * (otherwise the test client, like a browser told to go ahead, accepts it unverified). */
extern int g_plain;
extern const char *g_verify_ca;
/* Header lines http_request adds to every request (the session cookie), "" for none, and the
 * CSRF token of that session. */
extern char g_auth[512];
extern char g_csrf[80];

#define ADMIN_TOKEN "admin-0123456789abcdef0123456789abcdef"
#define VIEWER_TOKEN "viewer-0123456789abcdef0123456789abcdef"

/* Writes all n bytes through ssl, or fd when ssl is NULL (plain HTTP); -1 on failure. */
int io_write(SSL *ssl, int fd, const char *p, size_t n);
/* One request (req: the whole request text) and its whole response; -1 when the connection or
 * the handshake fails. */
int http_raw(int port, const char *req, resp_t *r);
/* method path with a Host header, the session (g_auth) and extra header lines (each ending in
 * \r\n; may be NULL). */
int http_request(int port, const char *method, const char *path, const char *extra, resp_t *r);
/* Without the session. */
int http_anon(int port, const char *method, const char *path, const char *extra, resp_t *r);
int http_get(int port, const char *path, resp_t *r);
/* The value of a response header (copied into a static buffer: not for threads), or NULL. */
const char *header(const resp_t *r, const char *name);
/* Parses the body as JSON; fails the test if it is not JSON. */
json_t *body_json(const resp_t *r);
/* Asserts status, a JSON content type and an {"error": "..."} body mentioning needle. */
void assert_json_error(const resp_t *r, int status, const char *needle);
/* Logs in with token (GET /?token=T&x=1, checking the 303 and its cookie); writes
 * "Cookie: name=value\r\n" to cookie_line and the session's CSRF token to csrf. */
void login(int port, const char *token, char *cookie_line, size_t cap, char *csrf, size_t csrf_cap);

/* ---- the served fixture: a temp store with one experiment, one run, three rounds, two clients */
typedef struct fixture {
    char dir[64];
    char db[128];
    store_t *writer; /* stays open, as the server's would */
    int64_t exp_id, run_id;
    web_t *web;
    int port;
} fixture_t;
extern const double k_acc[3], k_loss[3];
/* nftw callback that removes every entry (rm -r). */
int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw);
void add_round(fixture_t *f, int64_t run, int round, double acc, double loss);
/* cmocka group setup/teardown: the store, the dashboard (admin and viewer tokens fixed, fednas
 * = FEDNAS_BIN) and an admin session in g_auth. */
int fixture_up(void **state);
int fixture_down(void **state);

#endif
