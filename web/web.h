/* web: the dashboard. A civetweb HTTP server that serves a REST API over the run store
 * (read-only handles, one per request) and the static UI embedded into the binary at build
 * time. It never calls into server/: what it shows is what the store holds.
 *
 * Security defaults (every zero field of web_options_t means the secure choice):
 *  - HTTPS. The certificate is opts.tls_cert/tls_key when given, otherwise a self-signed one
 *    made on first start in <state_dir>/tls/ (crypto/tls.h) and reused afterwards. Plain HTTP
 *    only with insecure_http, and only on a loopback address.
 *  - Login. Two random access tokens are made at start: admin (web_url) and viewer
 *    (web_viewer_url). Opening a URL with ?token=T sets a session cookie (HttpOnly, Secure,
 *    SameSite=Strict) and redirects to the same URL without the token. API clients may send
 *    "Authorization: Bearer T" instead. Every state-changing request of a cookie session must
 *    carry X-CSRF-Token (the fednas_csrf cookie, or "csrf" of GET /api/session). Logins are
 *    limited per IP (web/auth.c): ten failed tokens, or thirty logins of any outcome (?token=
 *    sessions and bearer WebSockets), in a minute get 429 with Retry-After; a new session never
 *    evicts an admin's unless it is an admin's. Only /healthz is open;
 *    everything else answers 401 (JSON under /api/ and /metrics, the login page elsewhere).
 *
 * Routes (GET and HEAD unless marked POST):
 *   /healthz                        {"status":"ok"} (no login)
 *   /api/session                    {"role":"admin"|"viewer","csrf":"..."}
 *   /api/logout              POST   ends the session
 *   /api/runs                       store_runs_json
 *   /api/runs/{id}                  store_run_json
 *   /api/runs/{id}/rounds[?since=N] store_rounds_json (rounds after N)
 *   /api/runs/{id}/clients          store_clients_json
 *   /api/experiments, /api/runs/{id}/{metrics,privacy,events,rounds.csv,clients.csv}
 *   /api/runs                 POST  (admin) launch a run from the posted experiment JSON
 *   /api/runs/{id}/stop       POST  (admin) SIGTERM to the run's process
 *   /api/runs/{id}/resume     POST  (admin) `fednas run --resume ID`
 *   /metrics                        Prometheus text exposition
 *   /openapi.json                   the API description
 *   /, /index.html, /app.js, ...    web/static/ (embedded)
 * Errors are JSON bodies {"error":"..."} with a 4xx/5xx status; paths with ".." get 400.
 * Every response carries X-Content-Type-Options: nosniff and a CSP without inline script.
 * On a loopback address, requests whose Host is a name other than localhost get 403, so a
 * web page cannot read the API through DNS rebinding. Debian's civetweb has no IPv6. */
#ifndef FEDNAS_WEB_WEB_H
#define FEDNAS_WEB_WEB_H

#include <stddef.h>

#include "common/err.h"

typedef struct web web_t;

typedef struct web_options {
    const char *db_path; /* the run store to serve (read-only handles) */
    const char *host;    /* "127.0.0.1" by default when NULL; a numeric IPv4/IPv6 address or "localhost" */
    int port;            /* 0 = let the OS pick a free port */
    /* Where the dashboard keeps its state (tls/ with the certificate). NULL: the folder of
     * db_path. */
    const char *state_dir;
    /* A certificate (chain) and unencrypted key in PEM, both or neither. Neither: self-signed. */
    const char *tls_cert, *tls_key;
    /* Serve plain HTTP instead of HTTPS; refused (FN_EINVAL) unless host is a loopback address. */
    int insecure_http;
    /* Fixed access tokens (16..64 of [A-Za-z0-9_-]) instead of random ones; NULL: random. */
    const char *admin_token, *viewer_token;
    /* The fednas program that launch and resume run; NULL: this process's own binary. */
    const char *fednas_bin;
} web_options_t;

/* Starts civetweb serving the dashboard. FN_EADDRINUSE with a clear message ("port 8080 on
 * 127.0.0.1 is already in use; pass --http PORT with a free port, or --http 0 to pick one")
 * when the port is taken; FN_EINVAL for a bad host or port; FN_EIO for other failures.
 * The store need not exist yet: the API answers 503 until it does. */
int web_start(const web_options_t *opt, web_t **out, err_t *err);
/* The port actually listened on (the OS's choice when the options said 0). */
int web_port(const web_t *w);
/* The login URL with the admin token, "https://127.0.0.1:PORT/?token=...", valid while w runs.
 * Whoever has it controls the dashboard: print it only to the user who started fednas. */
const char *web_url(const web_t *w);
/* The same with the viewer token (read-only: no launch, stop or resume). */
const char *web_viewer_url(const web_t *w);
/* Stops the server, waiting for requests in flight; NULL is a no-op. */
void web_stop(web_t *w);

/* ---- the dashboard's HTTPS pieces, for another endpoint in this process (`fednas serve`) ----
 * Same declarations as in web_internal.h: civetweb's library state with the OpenSSL 3 shim
 * (tls_load.c), the raised civetweb thread stacks to wrap around mg_start2 (thread_stack.c),
 * and the access tokens with their per-IP failure limit (auth.c). Roles: 1 viewer, 2 admin. */
typedef struct web_auth web_auth_t;
int web_lib_acquire(int tls, err_t *err);
void web_lib_release(void);
void web_stack_raise(int on);
int web_auth_create(const char *admin_token, const char *viewer_token, web_auth_t **out, err_t *err);
void web_auth_free(web_auth_t *a);
const char *web_auth_token(const web_auth_t *a, int role);
int web_auth_check_token(const web_auth_t *a, const char *tok, size_t len);
int web_auth_limited(web_auth_t *a, const char *ip);
void web_auth_failed(web_auth_t *a, const char *ip);

#endif
