/* web_internal: what the files of web/ share. Not a public header: only web/ (and the web unit
 * test) includes it. Its users: web.c (life cycle, server state), route.c (dispatch), respond.c
 * (responses), auth.c (login flow), host_guard.c (DNS rebinding), tls_load.c (OpenSSL shim and
 * civetweb's library state), thread_stack.c (civetweb's stacks), api.c, api_nas.c and actions.c
 * (REST handlers), events.c and events_nas.c (WebSocket) and static.c (embedded assets). */
#ifndef FEDNAS_WEB_WEB_INTERNAL_H
#define FEDNAS_WEB_WEB_INTERNAL_H

#include <arpa/inet.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct mg_connection;
struct mg_context;
struct mg_request_info;
typedef struct web_auth web_auth_t;
typedef struct web_events web_events_t;

/* One dashboard server (web.c owns it; route.c and auth.c read it). */
struct web {
    struct mg_context *ctx;
    char *db_path;
    char host[INET6_ADDRSTRLEN];
    int port;
    int loopback; /* bound to a loopback address: enforce the Host check */
    int tls;
    web_auth_t *auth;
    web_events_t *events;
    char cookie_name[40]; /* fednas_session_PORT: cookies ignore ports, dashboards must not */
    char url[INET6_ADDRSTRLEN + 128], viewer_url[INET6_ADDRSTRLEN + 128];
    char state_dir[PATH_MAX];
    char fednas_bin[PATH_MAX];
    unsigned long long counts[6]; /* by status class; __atomic */
    size_t min_stack;             /* the smallest stack of civetweb's threads so far; __atomic */
    pthread_mutex_t child_lock;
    struct {
        int64_t run_id;
        long pid;
    } children[64];
};

/* One request as the handlers see it. */
typedef struct web_req {
    struct mg_connection *conn;
    const char *db_path; /* the run store */
    const char *path;    /* decoded path without the query string, e.g. "/api/runs/3/rounds" */
    const char *query;   /* the raw query string after '?', or NULL */
    const char *id;      /* the {id} segment of the route, not NUL-terminated (id_len bytes), or NULL */
    size_t id_len;
    int head;            /* HEAD request: send the headers only */
    int post;            /* POST request (state-changing; CSRF already checked) */
    int role;            /* WEB_ROLE_VIEWER or WEB_ROLE_ADMIN (only /healthz runs with NONE) */
    const char *session; /* the session id from the cookie, or NULL (bearer token) */
    struct web *w;
} web_req_t;

/* A route handler sends a full response and returns its HTTP status. */
typedef int (*web_handler_fn)(const web_req_t *rq);

/* Responses (respond.c). Every response carries the security headers (nosniff, CSP, ...).
 * cache_control and etag may be NULL. Each returns status. */
int web_send(const web_req_t *rq, int status, const char *content_type, const void *body, size_t len,
             const char *cache_control, const char *etag);
/* Serializes body (the reference is stolen) as application/json, not cacheable. */
int web_send_json(const web_req_t *rq, int status, json_t *body);
/* {"error": message}. */
int web_send_error(const web_req_t *rq, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* {"error": msg} with an Allow header (405), allow may be NULL. */
int web_send_error_allow(const web_req_t *rq, int status, const char *allow, const char *msg);
/* The security headers, for handlers that build their own header block. */
void web_add_security_headers(const web_req_t *rq);
/* A download (Content-Disposition), not cacheable. */
int web_send_download(const web_req_t *rq, const char *content_type, const void *body, size_t len,
                      const char *disposition);
/* Requests answered so far by status class: counts[1] = 1xx ... counts[5] = 5xx. */
void web_request_counts(struct web *w, unsigned long long counts[6]);
/* Reads the request body (at most max bytes) into a malloc'ed, NUL-terminated buffer. Returns
 * 0, or the status of the error it sent (413 when larger, 400 when unreadable). */
int web_read_body(const web_req_t *rq, size_t max, char **out, size_t *len);
/* The store path, state folder and fednas binary of the server (web.c). */
const char *web_state_dir(struct web *w);
const char *web_fednas_bin(struct web *w);
/* The value of a request header, or NULL. */
const char *web_header(const web_req_t *rq, const char *name);

/* ---- auth (auth.c) ---- */
#include "common/err.h"
#define WEB_TOKEN_HEX 64 /* 32 random bytes as hex */
#define WEB_AUTH_MAX_FAILS 10
#define WEB_AUTH_MAX_LOGINS 30 /* a page reload needs none; a burst of tabs and tools fits */
#define WEB_AUTH_WINDOW_S 60
enum { WEB_ROLE_NONE = 0, WEB_ROLE_VIEWER = 1, WEB_ROLE_ADMIN = 2 };
/* NULL/empty tokens are made random. */
int web_auth_create(const char *admin_token, const char *viewer_token, web_auth_t **out, err_t *err);
void web_auth_free(web_auth_t *a);
const char *web_auth_token(const web_auth_t *a, int role);
/* The role a token grants (WEB_ROLE_NONE when it matches neither). */
int web_auth_check_token(const web_auth_t *a, const char *tok, size_t len);
/* 0, -1 (no random bytes), or -2: the table is full and this role may evict none (a viewer
 * never evicts an admin session). */
int web_auth_session_new(web_auth_t *a, int role, char sid[WEB_TOKEN_HEX + 1], char csrf[WEB_TOKEN_HEX + 1]);
/* The session's role (NONE when unknown or expired); copies its CSRF token when csrf != NULL.
 * Marks the session used (the table evicts the least recently used). */
int web_auth_session_get(web_auth_t *a, const char *sid, char csrf[WEB_TOKEN_HEX + 1]);
/* Whether the session exists and has not expired, without marking it used. */
int web_auth_session_alive(web_auth_t *a, const char *sid);
void web_auth_session_drop(web_auth_t *a, const char *sid);
/* The lifetime of sessions opened from now on (12 h by default; tests shorten it). */
void web_auth_session_ttl(web_auth_t *a, int seconds);
/* A WebSocket opened with a bearer token: its role, the role's logout generation then, and its
 * end (a session's lifetime after its opening). */
typedef struct web_bearer {
    int role;
    unsigned gen;
    time_t expires;
} web_bearer_t;
void web_auth_bearer_open(web_auth_t *a, int role, web_bearer_t *b);
/* Whether the socket may stay open: not expired, and no logout with its token since it opened. */
int web_auth_bearer_alive(web_auth_t *a, const web_bearer_t *b);
/* /api/logout with a bearer token: ends every socket opened with that role's token. */
void web_auth_bearer_logout(web_auth_t *a, int role);
/* Seconds until ip may try a token again, 0 when it may now. */
int web_auth_limited(web_auth_t *a, const char *ip);
/* Counts a failed token check, or a login (a session or a bearer WebSocket opened). */
void web_auth_failed(web_auth_t *a, const char *ip);
void web_auth_logged_in(web_auth_t *a, const char *ip);
int web_csrf_equal(const char *expected, const char *given);
/* nbytes random bytes as 2*nbytes hex characters plus NUL. */
int web_random_hex(char *out, size_t nbytes);
/* The server's auth state, for handlers (web.c). */
web_auth_t *web_auth_of(struct web *w);
/* Decides who is asking. Returns 0 with rq->role (and rq->session) set, or the status of the
 * answer it sent: 303 after a login with ?token=, 401, 403 (CSRF), 429. */
int web_authenticate(web_req_t *rq, const struct mg_request_info *ri);
/* What may be fetched without a session: the login page's style sheet and the icon. */
int web_auth_public_asset(const char *path);

/* REST handlers (api.c). */
int web_api_session(const web_req_t *rq);
int web_api_logout(const web_req_t *rq);
int web_api_healthz(const web_req_t *rq);
int web_api_runs(const web_req_t *rq);
int web_api_run(const web_req_t *rq);
int web_api_rounds(const web_req_t *rq);
int web_api_clients(const web_req_t *rq);
/* A NAS search's settings, candidates and retrained top-k (common/store_nas.h). */
int web_api_nas(const web_req_t *rq);
int web_api_not_found(const web_req_t *rq);
int web_api_experiments(const web_req_t *rq);
/* Closes the calling worker thread's store handle and caches (civetweb's exit_thread). */
void web_api_thread_exit(void);
int web_api_metrics(const web_req_t *rq);
int web_api_privacy(const web_req_t *rq);
int web_api_events(const web_req_t *rq);
int web_api_rounds_csv(const web_req_t *rq);
int web_api_clients_csv(const web_req_t *rq);
int web_api_prometheus(const web_req_t *rq);
/* What api.c lends api_nas.c: the thread's store handle (NULL after a 503), the {id} as a run
 * id (-1 after a 400), a store query's answer (200 / 404 / 500) and a CSV download (rows stolen). */
typedef struct store store_t;
store_t *web_api_store(const web_req_t *rq, int *status);
int web_api_run_id(const web_req_t *rq, int64_t *id, int *status);
int web_api_reply(const web_req_t *rq, int rc, json_t *body, const err_t *e);
int web_api_send_csv(const web_req_t *rq, json_t *rows, const char *const *cols, const char *filename);

/* NAS searches (api_nas.c): candidates (sorted, filtered; JSON and CSV), one candidate with its
 * architecture and lineage, the Pareto front, and every search with its hypervolume. */
int web_api_nas_candidates(const web_req_t *rq);
int web_api_nas_candidates_csv(const web_req_t *rq);
int web_api_nas_candidate(const web_req_t *rq);
int web_api_nas_pareto(const web_req_t *rq);
int web_api_nas_searches(const web_req_t *rq);
/* The Pareto front of n points (accuracy acc[i], maximised; cost x[i], minimised): front[i] = 1
 * when no other point has accuracy >= and cost <= with one of them strictly better. Returns how
 * many are on it. Non-finite points are never on it. */
int web_nas_front(const double *acc, const double *x, int n, int *front);
/* specs/nas.md's 2-objective hypervolume: the area dominated by the points (1 - acc[i],
 * params[i] / 100000) inside the reference box (1, 1). */
double web_nas_hypervolume(const double *acc, const double *params, int n);
/* The candidate columns every NAS answer and event carries, as SQL (no genome/arch), and one
 * JSON object per row of st (column name -> value; a column named "genome" or "arch" holding
 * JSON text is embedded as JSON). Finalizes st. */
#define WEB_NAS_CANDIDATE_COLUMNS                                                                  \
    "seq, cand_id, rung, hash, parent, mutation, budget, status, attempts, diverged, reason, worker, " \
    "cached_from, tell_seq, queued_at, started_at, ended_at, seconds, val_accuracy, val_loss, "       \
    "train_loss, params, flops, latency_ms, threads"
struct sqlite3_stmt;
int web_nas_rows_json(struct sqlite3_stmt *st, json_t *arr, int nest_json);

/* NAS candidate events (events_nas.c), polled by events.c's poller with the store it reads:
 * candidate_added, candidate_started and candidate_finished for each candidate row written
 * since the last poll; silent when baseline is 0 (it only records what is there). */
typedef struct web_events_nas web_events_nas_t;
void web_events_nas_poll(web_events_nas_t **state, store_t *s, int baseline,
                         void (*send)(web_events_t *ev, json_t *msg), web_events_t *ev);
void web_events_nas_free(web_events_nas_t *state);
/* Admin actions (actions.c): GET lists runs, POST launches one from an experiment config. */
int web_api_runs_collection(const web_req_t *rq);
int web_api_stop(const web_req_t *rq);
int web_api_resume(const web_req_t *rq);
/* Child processes the dashboard started: the pid serving a run, 0 when not known here. */
void web_children_note(struct web *w, int64_t run_id, long pid);
long web_children_pid(struct web *w, int64_t run_id);

/* Strict decimal parse of s[0..n): digits only (no sign, space or '+'), value <= max.
 * Returns 0, or -1 for anything else (empty, non-digit, overflow). */
int web_parse_u64(const char *s, size_t n, long long max, long long *out);

/* Live events over /ws (events.c). Started after civetweb (registers the /ws handler); stopped
 * after it (civetweb closes the sockets first, then the poller ends). */
int web_events_start(struct web *w, struct mg_context *ctx, const char *db_path, web_events_t **out, err_t *err);
void web_events_stop(web_events_t *ev);
/* Whether a WebSocket upgrade request carries a valid session or bearer token and an Origin
 * (when present) that names this server (auth.c); a bearer token counts against the login
 * limit. sid_out: the session's id, "" for a bearer token; bearer: its lifetime (role
 * WEB_ROLE_NONE for a session). */
int web_ws_authorized(struct web *w, const struct mg_connection *conn, char sid_out[WEB_TOKEN_HEX + 1],
                      web_bearer_t *bearer);
/* Wakes the poller, which closes the sockets of ended sessions (after a logout). */
void web_events_wake(web_events_t *ev);

/* Dispatch (route.c): civetweb's request handler for "/", cbdata the struct web. */
int web_route_request(struct mg_connection *conn, void *cbdata);

/* DNS-rebinding guard (host_guard.c): for a loopback server, whether a Host header may be
 * served: an IP literal, localhost or *.localhost (a name that could be rebound is not). No
 * Host (HTTP/1.0 tools) is fine. */
int web_host_allowed(const char *host);

/* civetweb's library state (tls_load.c): the first user loads the OpenSSL 3 shim and calls
 * mg_init_library (with TLS when the shim loaded); FN_EIO when tls is asked and unavailable. */
int web_lib_acquire(int tls, err_t *err);
void web_lib_release(void);

/* civetweb's thread stacks (thread_stack.c). While on (on this thread only), requests for
 * stacks below WEB_MIN_STACK get WEB_MIN_STACK; web_start turns it on around mg_start2. */
#define WEB_MIN_STACK (1024 * 1024)
void web_stack_raise(int on);
/* The calling thread's stack size in bytes (0 when unknown). */
size_t web_stack_of_this_thread(void);
/* The smallest stack among w's civetweb threads that have started so far (web.c). */
size_t web_civetweb_min_stack(struct web *w);

/* Embedded assets (static.c; the table is generated by cmake/embed.cmake). */
typedef struct web_asset {
    const char *path;         /* "/index.html" */
    const char *content_type; /* "text/html; charset=utf-8" */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, from the content's SHA-256 */
} web_asset_t;
extern const web_asset_t web_assets[];
extern const size_t web_assets_count;

/* The asset served at path ("/" is "/index.html"), or NULL. */
const web_asset_t *web_asset_find(const char *path);
int web_static_serve(const web_req_t *rq);

#endif
