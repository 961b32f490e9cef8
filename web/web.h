/* web: the dashboard. A civetweb HTTP server that serves a REST API over the run store
 * (read-only handles, one per request) and the static UI embedded into the binary at build
 * time. It never calls into server/: what it shows is what the store holds.
 *
 * Routes (GET and HEAD; other methods get 405):
 *   /healthz                        {"status":"ok"}
 *   /api/runs                       store_runs_json
 *   /api/runs/{id}                  store_run_json
 *   /api/runs/{id}/rounds[?since=N] store_rounds_json (rounds after N)
 *   /api/runs/{id}/clients          store_clients_json
 *   /, /index.html, /app.js, ...    web/static/ (embedded)
 * Errors are JSON bodies {"error":"..."} with a 4xx/5xx status; paths with ".." get 400.
 * Every response carries X-Content-Type-Options: nosniff and a CSP without inline script.
 * On a loopback address, requests whose Host is a name other than localhost get 403, so a
 * web page cannot read the API through DNS rebinding. Debian's civetweb has no IPv6.
 * Plain HTTP only for now; TLS, login and WebSocket events come with their own issues. */
#ifndef FEDNAS_WEB_WEB_H
#define FEDNAS_WEB_WEB_H

#include "common/err.h"

typedef struct web web_t;

typedef struct web_options {
    const char *db_path; /* the run store to serve (read-only handles) */
    const char *host;    /* "127.0.0.1" by default when NULL; a numeric IPv4/IPv6 address or "localhost" */
    int port;            /* 0 = let the OS pick a free port */
} web_options_t;

/* Starts civetweb serving the dashboard. FN_EADDRINUSE with a clear message ("port 8080 on
 * 127.0.0.1 is already in use; pass --http PORT with a free port, or --http 0 to pick one")
 * when the port is taken; FN_EINVAL for a bad host or port; FN_EIO for other failures.
 * The store need not exist yet: the API answers 503 until it does. */
int web_start(const web_options_t *opt, web_t **out, err_t *err);
/* The port actually listened on (the OS's choice when the options said 0). */
int web_port(const web_t *w);
/* Stops the server, waiting for requests in flight; NULL is a no-op. */
void web_stop(web_t *w);

#endif
