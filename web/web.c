/* web.c: starting and stopping civetweb, the route table, and the response helpers every
 * handler uses. Everything is served from memory through one catch-all request handler: no
 * document_root, so no request can ever read the file system. */
#define _GNU_SOURCE /* dladdr-free /proc/self/exe lookup, memmem */
#include "web/web.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "crypto/tls.h"
#include "web/web_internal.h"

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
    pthread_mutex_t child_lock;
    struct {
        int64_t run_id;
        long pid;
    } children[64];
};

const char *web_state_dir(struct web *w)
{
    return w->state_dir;
}

const char *web_fednas_bin(struct web *w)
{
    return w->fednas_bin;
}

void web_request_counts(struct web *w, unsigned long long counts[6])
{
    for (int i = 0; i < 6; i++)
        counts[i] = __atomic_load_n(&w->counts[i], __ATOMIC_RELAXED);
}

void web_children_note(struct web *w, int64_t run_id, long pid)
{
    pthread_mutex_lock(&w->child_lock);
    int slot = 0;
    for (int i = 0; i < 64; i++) {
        if (w->children[i].run_id == run_id || w->children[i].run_id == 0) {
            slot = i;
            break;
        }
    }
    w->children[slot].run_id = run_id;
    w->children[slot].pid = pid;
    pthread_mutex_unlock(&w->child_lock);
}

long web_children_pid(struct web *w, int64_t run_id)
{
    long pid = 0;
    pthread_mutex_lock(&w->child_lock);
    for (int i = 0; i < 64; i++)
        if (w->children[i].run_id == run_id)
            pid = w->children[i].pid;
    pthread_mutex_unlock(&w->child_lock);
    return pid;
}

web_auth_t *web_auth_of(struct web *w)
{
    return w->auth;
}

/* ---- the route table ------------------------------------------------------------------
 * Matched in order against the decoded path. "{id}" captures one non-empty segment; a final
 * "*" matches the rest. One trailing slash is ignored. Later routes (/metrics, /ws, ...) go
 * here. */
enum { M_GET = 1, M_POST = 2, M_ANY = 3 };
typedef struct web_route {
    const char *pattern;
    int methods;
    web_handler_fn fn;
} web_route_t;

static const web_route_t k_routes[] = {
    {"/metrics", M_GET, web_api_prometheus},
    {"/api/session", M_GET, web_api_session},
    {"/api/logout", M_POST, web_api_logout},
    {"/api/experiments", M_GET, web_api_experiments},
    {"/api/runs", M_ANY, web_api_runs_collection},
    {"/api/runs/{id}", M_GET, web_api_run},
    {"/api/runs/{id}/rounds", M_GET, web_api_rounds},
    {"/api/runs/{id}/rounds.csv", M_GET, web_api_rounds_csv},
    {"/api/runs/{id}/clients", M_GET, web_api_clients},
    {"/api/runs/{id}/nas", M_GET, web_api_nas},
    {"/api/runs/{id}/clients.csv", M_GET, web_api_clients_csv},
    {"/api/runs/{id}/metrics", M_GET, web_api_metrics},
    {"/api/runs/{id}/privacy", M_GET, web_api_privacy},
    {"/api/runs/{id}/events", M_GET, web_api_events},
    {"/api/runs/{id}/stop", M_POST, web_api_stop},
    {"/api/runs/{id}/resume", M_POST, web_api_resume},
    {"/api/*", M_ANY, web_api_not_found},
    {"/*", M_GET, web_static_serve},
};

static int route_match(const char *pattern, const char *path, const char **id, size_t *id_len)
{
    const char *p = pattern, *s = path;
    while (*p) {
        if (*p == '*')
            return 1;
        if (strncmp(p, "{id}", 4) == 0) {
            size_t n = strcspn(s, "/");
            if (n == 0)
                return 0;
            *id = s;
            *id_len = n;
            s += n;
            p += 4;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return s[0] == '\0' || (s[0] == '/' && s[1] == '\0');
}

/* ---- responses ------------------------------------------------------------------------- */

/* The page loads nothing but its own script, style and data; inline scripts and styles are
 * refused, and no other site may frame it. */
#define WEB_CSP                                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "            \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static void add_security_headers(const web_req_t *rq)
{
    struct mg_connection *c = rq->conn;
    mg_response_header_add(c, "X-Content-Type-Options", "nosniff", -1);
    mg_response_header_add(c, "Content-Security-Policy", WEB_CSP, -1);
    mg_response_header_add(c, "X-Frame-Options", "DENY", -1);
    mg_response_header_add(c, "Referrer-Policy", "no-referrer", -1);
    if (rq->w && rq->w->tls)
        mg_response_header_add(c, "Strict-Transport-Security", "max-age=31536000", -1);
}

static int send_response(const web_req_t *rq, int status, const char *content_type, const void *body, size_t len,
                         const char *cache_control, const char *etag, const char *allow)
{
    struct mg_connection *c = rq->conn;
    if (mg_response_header_start(c, status) != 0)
        return status;
    if (content_type)
        mg_response_header_add(c, "Content-Type", content_type, -1);
    if (status != 304) {
        char n[32];
        snprintf(n, sizeof n, "%zu", len);
        mg_response_header_add(c, "Content-Length", n, -1);
    }
    add_security_headers(rq);
    if (status == 401 && rq->w)
        mg_response_header_add(c, "WWW-Authenticate", "Bearer realm=\"fednas\"", -1);
    if (status == 429)
        mg_response_header_add(c, "Retry-After", "60", -1);
    if (cache_control)
        mg_response_header_add(c, "Cache-Control", cache_control, -1);
    if (etag)
        mg_response_header_add(c, "ETag", etag, -1);
    if (allow)
        mg_response_header_add(c, "Allow", allow, -1);
    mg_response_header_send(c);
    if (!rq->head && status != 304 && len > 0)
        mg_write(c, body, len);
    return status;
}

int web_send(const web_req_t *rq, int status, const char *content_type, const void *body, size_t len,
             const char *cache_control, const char *etag)
{
    return send_response(rq, status, content_type, body, len, cache_control, etag, NULL);
}

int web_send_download(const web_req_t *rq, const char *content_type, const void *body, size_t len,
                      const char *disposition)
{
    struct mg_connection *c = rq->conn;
    if (mg_response_header_start(c, 200) != 0)
        return 200;
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    mg_response_header_add(c, "Content-Type", content_type, -1);
    mg_response_header_add(c, "Content-Length", n, -1);
    mg_response_header_add(c, "Content-Disposition", disposition, -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    add_security_headers(rq);
    mg_response_header_send(c);
    if (!rq->head && len > 0)
        mg_write(c, body, len);
    return 200;
}

int web_read_body(const web_req_t *rq, size_t max, char **out, size_t *len)
{
    const struct mg_request_info *ri = mg_get_request_info(rq->conn);
    if (ri->content_length > (long long)max)
        return web_send_error(rq, 413, "the request body is %lld bytes; the limit is %zu", ri->content_length, max);
    char *buf = malloc(max + 2);
    if (!buf)
        return web_send_error(rq, 500, "out of memory");
    size_t n = 0;
    for (;;) {
        int got = mg_read(rq->conn, buf + n, max + 1 - n);
        if (got < 0) {
            free(buf);
            return web_send_error(rq, 400, "cannot read the request body");
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n > max) {
            free(buf);
            return web_send_error(rq, 413, "the request body is larger than the limit of %zu bytes", max);
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int web_send_json(const web_req_t *rq, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) {
        static const char k_fail[] = "{\"error\":\"cannot encode the response as JSON\"}";
        return send_response(rq, 500, "application/json", k_fail, sizeof k_fail - 1, "no-store", NULL, NULL);
    }
    int rc = send_response(rq, status, "application/json", text, strlen(text), "no-store", NULL, NULL);
    free(text);
    return rc;
}

static int send_error_allow(const web_req_t *rq, int status, const char *allow, const char *msg)
{
    json_t *s = json_string(msg);
    if (!s) {
        /* Not UTF-8 (a path can hold any bytes): keep the ASCII, mark the rest. */
        char clean[1024];
        size_t i = 0;
        for (; msg[i] && i + 1 < sizeof clean; i++)
            clean[i] = (unsigned char)msg[i] < 0x80 ? msg[i] : '?';
        clean[i] = '\0';
        s = json_string(clean);
    }
    json_t *body = json_object();
    json_object_set_new(body, "error", s ? s : json_string("error"));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int rc = send_response(rq, status, "application/json", text ? text : "{}", text ? strlen(text) : 2, "no-store",
                           NULL, allow);
    free(text);
    return rc;
}

int web_send_error(const web_req_t *rq, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_error_allow(rq, status, NULL, msg);
}

const char *web_header(const web_req_t *rq, const char *name)
{
    return mg_get_header(rq->conn, name);
}

/* ---- dispatch -------------------------------------------------------------------------- */

/* True when a path has a ".." segment. civetweb already cleans local_uri, but a request that
 * tries to climb out is refused outright rather than quietly served something else. */
static int has_dotdot(const char *p)
{
    if (!p)
        return 0;
    for (const char *s = p; (s = strstr(s, "..")) != NULL; s += 2) {
        int starts = s == p || s[-1] == '/' || s[-1] == '\\';
        int ends = s[2] == '\0' || s[2] == '/' || s[2] == '\\';
        if (starts && ends)
            return 1;
    }
    return 0;
}

/* DNS-rebinding guard for a loopback server: a page on evil.example whose name later resolves
 * to 127.0.0.1 must not read the API. Browsers always send the name they used in Host, so
 * only IP literals and localhost are accepted. No Host (HTTP/1.0 tools) is fine. */
static int host_allowed(const char *host)
{
    if (!host || !*host)
        return 1;
    char name[256];
    size_t n;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end)
            return 0;
        n = (size_t)(end - host - 1);
        if (n >= sizeof name)
            return 0;
        memcpy(name, host + 1, n);
        name[n] = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, name, &a6) == 1;
    }
    n = strcspn(host, ":");
    if (n >= sizeof name)
        return 0;
    memcpy(name, host, n);
    name[n] = '\0';
    if (n > 0 && name[n - 1] == '.')
        name[--n] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1 || strcasecmp(name, "localhost") == 0)
        return 1;
    return n > 10 && strcasecmp(name + n - 10, ".localhost") == 0;
}

/* ---- login ----------------------------------------------------------------------------- */

/* Shown for every page (not API) request without a session, with the reason. No script and
 * no inline style (the CSP allows neither): its look comes from /login.css, which with the icon
 * is all that is served before login (PUBLIC_ASSET). The %s: " info" for a first visit (not an
 * error), then why this page is shown. */
static const char k_login_page[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<meta name=\"color-scheme\" content=\"light dark\">"
    "<title>fednas dashboard: sign in</title>"
    "<link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">"
    "<link rel=\"stylesheet\" href=\"/login.css\"></head><body>\n"
    "<main class=\"login\"><h1><img src=\"/favicon.svg\" alt=\"\" width=\"28\" height=\"28\"> fednas</h1>\n"
    "<p class=\"why%s\" role=\"alert\">%s</p>\n"
    "<p>Open the link that <code>fednas</code> printed when it started (it ends in "
    "<code>?token=...</code>), or paste its token here.</p>\n"
    "<form method=\"get\" action=\"/\"><label for=\"token\">Access token</label>"
    "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" "
    "required autofocus><button type=\"submit\">Sign in</button></form>\n"
    "<p class=\"hint\">The link is printed by <code>fednas run</code>, <code>fednas server</code> and "
    "<code>fednas dashboard</code> when they start; tokens change at every start.</p></main>\n"
    "</body></html>\n";

/* What may be fetched without a session: the login page's style sheet and the icon. */
#define PUBLIC_ASSET(p) (strcmp((p), "/login.css") == 0 || strcmp((p), "/favicon.svg") == 0)

static int is_api_path(const char *p)
{
    return strncmp(p, "/api/", 5) == 0 || strcmp(p, "/api") == 0 || strcmp(p, "/metrics") == 0 ||
           strcmp(p, "/ws") == 0 || strcmp(p, "/openapi.json") == 0;
}

static int unauthorized(const web_req_t *rq, const char *why)
{
    if (is_api_path(rq->path))
        return web_send_error(rq, 401, "%s", why);
    char page[sizeof k_login_page + 512];
    const char *kind = strncmp(why, "not logged in", 13) == 0 ? " info" : "";
    int n = snprintf(page, sizeof page, k_login_page, kind, why); /* why: our own constant text */
    return send_response(rq, 401, "text/html; charset=utf-8", page, (size_t)n < sizeof page ? (size_t)n : 0,
                         "no-store", NULL, NULL);
}

static int too_many(const web_req_t *rq, int wait)
{
    return web_send_error(rq, 429, "too many failed logins from this address; try again in %d s", wait);
}

/* The query string without its token parameters, into out ("" when nothing is left). */
static void strip_token(const char *query, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = query; p && *p;) {
        size_t n = strcspn(p, "&");
        int is_token = n >= 5 && strncmp(p, "token", 5) == 0 && (n == 5 || p[5] == '=');
        if (!is_token && n > 0 && o + n + 2 < cap) {
            if (o)
                out[o++] = '&';
            memcpy(out + o, p, n);
            o += n;
            out[o] = '\0';
        }
        p += n;
        if (*p == '&')
            p++;
    }
}

/* 303 to the same URL without the token, with the session cookie. The browser keeps the
 * #fragment across the redirect, so /?token=T#run=3 lands on #run=3. */
static int login_redirect(const web_req_t *rq, const char *raw_path, const char *sid)
{
    char rest[1024], loc[2048];
    strip_token(rq->query, rest, sizeof rest);
    /* Only a local absolute path of printable ASCII: never "//host" (an open redirect). */
    int ok = raw_path && raw_path[0] == '/' && raw_path[1] != '/' && raw_path[1] != '\\' && strlen(raw_path) < 900;
    for (const char *c = raw_path; ok && *c; c++)
        ok = *c > 0x20 && *c < 0x7f;
    for (const char *c = rest; ok && *c; c++)
        ok = *c > 0x20 && *c < 0x7f;
    snprintf(loc, sizeof loc, "%s%s%s", ok ? raw_path : "/", ok && rest[0] ? "?" : "", ok ? rest : "");

    char cookie[256];
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; Max-Age=43200; HttpOnly;%s SameSite=Strict", rq->w->cookie_name,
             sid, rq->w->tls ? " Secure;" : "");
    struct mg_connection *c = rq->conn;
    if (mg_response_header_start(c, 303) != 0)
        return 303;
    mg_response_header_add(c, "Location", loc, -1);
    mg_response_header_add(c, "Set-Cookie", cookie, -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    mg_response_header_add(c, "Content-Length", "0", -1);
    add_security_headers(rq);
    mg_response_header_send(c);
    return 303;
}

int web_api_session(const web_req_t *rq)
{
    char csrf[WEB_TOKEN_HEX + 1] = "";
    if (rq->session)
        web_auth_session_get(rq->w->auth, rq->session, csrf);
    return web_send_json(rq, 200,
                         json_pack("{s:s, s:s?}", "role", rq->role == WEB_ROLE_ADMIN ? "admin" : "viewer", "csrf",
                                   rq->session ? csrf : NULL));
}

int web_api_logout(const web_req_t *rq)
{
    if (rq->session)
        web_auth_session_drop(rq->w->auth, rq->session);
    char cookie[128];
    snprintf(cookie, sizeof cookie, "%s=; Path=/; Max-Age=0; HttpOnly;%s SameSite=Strict", rq->w->cookie_name,
             rq->w->tls ? " Secure;" : "");
    static const char body[] = "{\"status\":\"logged out\"}";
    struct mg_connection *c = rq->conn;
    if (mg_response_header_start(c, 200) != 0)
        return 200;
    mg_response_header_add(c, "Content-Type", "application/json", -1);
    mg_response_header_add(c, "Set-Cookie", cookie, -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    mg_response_header_add(c, "Content-Length", "22", -1);
    add_security_headers(rq);
    mg_response_header_send(c);
    mg_write(c, body, sizeof body - 1);
    return 200;
}

/* Decides who is asking. Returns 0 with rq->role set, or the status of the answer it sent
 * (303 after a login, 401, 403, 429). */
static int authenticate(web_req_t *rq, const struct mg_request_info *ri)
{
    web_t *w = rq->w;
    const char *ip = ri->remote_addr;
    char tok[256];
    int n = rq->query ? mg_get_var(rq->query, strlen(rq->query), "token", tok, sizeof tok) : -1;
    if (n >= 0 || n == -2) {
        int wait = web_auth_limited(w->auth, ip);
        if (wait > 0)
            return too_many(rq, wait);
        int role = n >= 0 ? web_auth_check_token(w->auth, tok, (size_t)n) : WEB_ROLE_NONE;
        if (role == WEB_ROLE_NONE || rq->post) {
            web_auth_failed(w->auth, ip);
            log_warn("web: wrong access token from %s", ip);
            return unauthorized(rq, "wrong access token; use the URL fednas printed when it started");
        }
        char sid[WEB_TOKEN_HEX + 1], csrf[WEB_TOKEN_HEX + 1];
        if (web_auth_session_new(w->auth, role, sid, csrf) < 0)
            return web_send_error(rq, 500, "no random bytes for a session");
        return login_redirect(rq, ri->local_uri_raw ? ri->local_uri_raw : "/", sid);
    }

    const char *authz = web_header(rq, "Authorization");
    if (authz) {
        int wait = web_auth_limited(w->auth, ip);
        if (wait > 0)
            return too_many(rq, wait);
        int role = WEB_ROLE_NONE;
        if (strncasecmp(authz, "Bearer ", 7) == 0)
            role = web_auth_check_token(w->auth, authz + 7, strlen(authz + 7));
        if (role == WEB_ROLE_NONE) {
            web_auth_failed(w->auth, ip);
            return web_send_error(rq, 401, "wrong access token in the Authorization header (Bearer TOKEN)");
        }
        rq->role = role; /* no CSRF check: a browser never attaches this header on its own */
        return 0;
    }

    const char *cookies = web_header(rq, "Cookie");
    static _Thread_local char sid[WEB_TOKEN_HEX + 2];
    if (cookies && mg_get_cookie(cookies, w->cookie_name, sid, sizeof sid) == WEB_TOKEN_HEX) {
        char csrf[WEB_TOKEN_HEX + 1];
        int role = web_auth_session_get(w->auth, sid, csrf);
        if (role != WEB_ROLE_NONE) {
            if (rq->post && !web_csrf_equal(csrf, web_header(rq, "X-CSRF-Token")))
                return web_send_error(rq, 403,
                                      "missing or wrong X-CSRF-Token header (its value is \"csrf\" of GET /api/session)");
            rq->role = role;
            rq->session = sid;
            return 0;
        }
        return unauthorized(rq, "the session has expired or the server restarted; open the URL with the token again");
    }
    return unauthorized(rq, "not logged in; open the URL with ?token=... that fednas printed, or send "
                            "Authorization: Bearer TOKEN");
}

static int handle_request(struct mg_connection *conn, void *cbdata);

int web_ws_authorized(struct web *w, const struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *host = mg_get_header(conn, "Host");
    if (w->loopback && !host_allowed(host))
        return 0;
    /* Cross-site WebSocket hijacking: a browser always sends Origin; it must be this server. */
    const char *origin = mg_get_header(conn, "Origin");
    if (origin) {
        const char *scheme = w->tls ? "https://" : "http://";
        size_t sl = strlen(scheme);
        if (!host || strncasecmp(origin, scheme, sl) != 0 || strcasecmp(origin + sl, host) != 0)
            return 0;
    }
    const char *authz = mg_get_header(conn, "Authorization");
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0)
        return web_auth_check_token(w->auth, authz + 7, strlen(authz + 7)) != WEB_ROLE_NONE;
    const char *cookies = mg_get_header(conn, "Cookie");
    char sid[WEB_TOKEN_HEX + 2];
    (void)ri;
    return cookies && mg_get_cookie(cookies, w->cookie_name, sid, sizeof sid) == WEB_TOKEN_HEX &&
           web_auth_session_get(w->auth, sid, NULL) != WEB_ROLE_NONE;
}

static int on_request(struct mg_connection *conn, void *cbdata)
{
    web_t *w = cbdata;
    int status = handle_request(conn, cbdata);
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        __atomic_add_fetch(&w->counts[cls], 1, __ATOMIC_RELAXED);
    return status;
}

static int handle_request(struct mg_connection *conn, void *cbdata)
{
    web_t *w = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    web_req_t rq = {.conn = conn, .db_path = w->db_path, .w = w};
    rq.path = ri && ri->local_uri ? ri->local_uri : "/";
    rq.query = ri ? ri->query_string : NULL;
    const char *method = ri && ri->request_method ? ri->request_method : "";
    rq.head = strcmp(method, "HEAD") == 0;
    rq.post = strcmp(method, "POST") == 0;

    if (strcmp(method, "GET") != 0 && !rq.head && !rq.post) {
        char msg[128];
        snprintf(msg, sizeof msg, "method %.32s is not allowed (GET, HEAD, POST)", method);
        return send_error_allow(&rq, 405, "GET, HEAD, POST", msg);
    }
    if (w->loopback && !host_allowed(web_header(&rq, "Host")))
        return web_send_error(&rq, 403,
                              "Host header is not an IP address or localhost; open the dashboard as "
                              "%s://127.0.0.1:%d/",
                              w->tls ? "https" : "http", w->port);
    if (has_dotdot(ri ? ri->local_uri_raw : NULL) || has_dotdot(ri ? ri->request_uri : NULL))
        return web_send_error(&rq, 400, "\"..\" is not allowed in paths");

    if (route_match("/healthz", rq.path, &rq.id, &rq.id_len)) {
        if (rq.post)
            return send_error_allow(&rq, 405, "GET, HEAD", "/healthz takes GET or HEAD");
        return web_api_healthz(&rq);
    }
    if (!rq.post && PUBLIC_ASSET(rq.path))
        return web_static_serve(&rq);
    int rc = authenticate(&rq, ri);
    if (rc != 0)
        return rc;

    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        rq.id = NULL;
        rq.id_len = 0;
        if (route_match(k_routes[i].pattern, rq.path, &rq.id, &rq.id_len)) {
            int m = rq.post ? M_POST : M_GET;
            if (!(k_routes[i].methods & m))
                return send_error_allow(&rq, 405, k_routes[i].methods == M_POST ? "POST" : "GET, HEAD",
                                        rq.post ? "this resource is read-only (GET, HEAD)"
                                                : "this action takes POST");
            return k_routes[i].fn(&rq);
        }
    }
    return web_send_error(&rq, 404, "not found");
}

/* ---- civetweb's log -------------------------------------------------------------------- */

/* While web_start runs mg_start2 on this thread, civetweb's messages ("cannot bind to
 * 127.0.0.1:8080: 98 (Address already in use)") are kept here to build the error. */
static _Thread_local char *t_start_msg;
static _Thread_local size_t t_start_cap;

static int on_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    if (!message)
        return 1;
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        n--;
    if (t_start_msg) {
        size_t used = strlen(t_start_msg);
        if (used + 3 < t_start_cap)
            snprintf(t_start_msg + used, t_start_cap - used, "%s%.*s", used ? "; " : "", (int)n, message);
        return 1;
    }
    log_warn("web: civetweb: %.*s", (int)n, message);
    return 1; /* never let civetweb print on its own */
}

static void on_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer)
{
    (void)ctx, (void)thread_type, (void)thread_pointer;
    web_api_thread_exit();
}

/* ---- start / stop ---------------------------------------------------------------------- */

/* ---- the civetweb/OpenSSL 3 shim (DESIGN.md, "Known dependency pitfalls") -----------------
 * libfednas-sslshim.so (SONAME libssl.so, built from web/tls_shim.c) sits next to the fednas
 * binary. Loaded RTLD_GLOBAL before mg_init_library(MG_FEATURES_TLS), it is what civetweb's
 * own dlopen("libssl.so") returns. Test and bench programs live one folder below the binary,
 * hence the second place to look. */
#define WEB_SHIM_NAME "libfednas-sslshim.so"
static void *g_shim;

static int load_shim(char *why, size_t cap)
{
    if (g_shim)
        return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(why, cap, "cannot read /proc/self/exe: %s", strerror(errno));
        return -1;
    }
    exe[n] = '\0';
    char *dir = dirname(exe);
    char path[PATH_MAX + 64];
    const char *const where[] = {"%s/" WEB_SHIM_NAME, "%s/../" WEB_SHIM_NAME};
    why[0] = '\0';
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        snprintf(path, sizeof path, where[i], dir);
        if (access(path, R_OK) != 0)
            continue;
        g_shim = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (g_shim)
            return 0;
        snprintf(why, cap, "cannot load %s: %s", path, dlerror());
        return -1;
    }
    snprintf(why, cap, "%s is not next to %s (it is built with fednas; copy it along with the binary)",
             WEB_SHIM_NAME, dir);
    return -1;
}

/* ---- civetweb's thread stacks ------------------------------------------------------------
 * Debian's civetweb is built with a fixed 100 KiB worker stack (pthread_attr_setstacksize),
 * and glibc carves each thread's static TLS out of that stack. OpenBLAS, linked into fednas,
 * has 60 KiB of TLS, which leaves civetweb's workers about 40 KiB: a TLS handshake or a store
 * query then overflows it (SIGSEGV in a worker, seen first in vfprintf). fednas interposes
 * pthread_attr_setstacksize so that no thread is given less than WEB_MIN_STACK; civetweb's
 * call resolves to this definition, the rest of the process is unaffected unless it asks for
 * tiny stacks itself. */
#define WEB_MIN_STACK (1024 * 1024)
int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size)
{
    typedef int (*setstacksize_fn)(pthread_attr_t *, size_t);
    static void *real; /* threads may race here: each stores the same pointer */
    void *fn = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
        if (!fn)
            return EINVAL;
        __atomic_store_n(&real, fn, __ATOMIC_RELEASE);
    }
    setstacksize_fn f;
    memcpy(&f, &fn, sizeof f);
    return f(attr, size < WEB_MIN_STACK ? WEB_MIN_STACK : size);
}

/* mg_init_library/mg_exit_library are process-wide; several servers (tests) may coexist. */
static pthread_mutex_t g_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_lib_users;
static int g_lib_tls; /* the library was initialized with TLS */

static int lib_acquire(int tls, err_t *err)
{
    pthread_mutex_lock(&g_lib_lock);
    if (g_lib_users == 0) {
        char why[PATH_MAX + 128];
        g_lib_tls = 0;
        if (load_shim(why, sizeof why) == 0)
            g_lib_tls = (mg_init_library(MG_FEATURES_TLS) & MG_FEATURES_TLS) != 0;
        else
            mg_init_library(0);
        if (tls && !g_lib_tls) {
            mg_exit_library();
            pthread_mutex_unlock(&g_lib_lock);
            return err_set(err, FN_EIO, "web: HTTPS is not available: %s",
                           why[0] ? why : "civetweb could not initialize OpenSSL");
        }
    } else if (tls && !g_lib_tls) {
        pthread_mutex_unlock(&g_lib_lock);
        return err_set(err, FN_EIO, "web: HTTPS is not available (the TLS shim did not load)");
    }
    g_lib_users++;
    pthread_mutex_unlock(&g_lib_lock);
    return 0;
}

static void lib_release(void)
{
    pthread_mutex_lock(&g_lib_lock);
    if (--g_lib_users == 0)
        mg_exit_library();
    pthread_mutex_unlock(&g_lib_lock);
}

static int addr_in_use(const char *host, int port, err_t *err)
{
    return err_set(err, FN_EADDRINUSE,
                   "port %d on %s is already in use; pass --http PORT with a free port, or --http 0 to pick one",
                   port, host);
}

/* civetweb reports a taken port only as "Failed to setup server ports"; binding first (with
 * SO_REUSEADDR, as civetweb does) gives the errno and so a message that says what to do. */
static int precheck_bind(int family, const char *host, int port, err_t *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        len = sizeof *a;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0; /* let civetweb try and report */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, len);
    int e = errno;
    close(fd);
    if (rc == 0)
        return 0;
    if (e == EADDRINUSE)
        return addr_in_use(host, port, err);
    if (e == EACCES)
        return err_set(err, FN_EINVAL,
                       "no permission to listen on port %d on %s (ports below 1024 need privileges); pass --http PORT "
                       "with a port above 1023, or --http 0 to pick one",
                       port, host);
    if (e == EADDRNOTAVAIL)
        return err_set(err, FN_EINVAL,
                       "%s is not an address of this machine; pass 127.0.0.1 (this machine only) or 0.0.0.0 (all "
                       "interfaces)",
                       host);
    return err_set(err, FN_EIO, "cannot listen on port %d on %s: %s", port, host, strerror(e));
}

int web_start(const web_options_t *opt, web_t **out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "web_start: no output handle");
    *out = NULL;
    if (!opt || !opt->db_path || !opt->db_path[0])
        return err_set(err, FN_EINVAL, "web: no run store path given (pass --db PATH)");
    if (opt->port < 0 || opt->port > 65535)
        return err_set(err, FN_EINVAL, "port %d is out of range; pass --http PORT with 1..65535, or --http 0 to pick one",
                       opt->port);
    const char *host = opt->host && opt->host[0] ? opt->host : "127.0.0.1";
    if (strcasecmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (strlen(host) >= INET6_ADDRSTRLEN)
        return err_set(err, FN_EINVAL, "web: host \"%.64s...\" is too long for an IP address", host);

    int family, loopback;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        family = AF_INET;
        loopback = (ntohl(a4.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        family = AF_INET6;
        loopback = IN6_IS_ADDR_LOOPBACK(&a6);
        if (!mg_check_feature(MG_FEATURES_IPV6))
            return err_set(err, FN_EINVAL, "web: this civetweb was built without IPv6; listen on 127.0.0.1 instead of %s",
                           host);
    } else {
        return err_set(err, FN_EINVAL,
                       "web: host \"%s\" is not a numeric IP address; use 127.0.0.1 (this machine only), 0.0.0.0 (all "
                       "interfaces) or an IPv6 address such as ::1",
                       host);
    }

    if (opt->insecure_http && !loopback)
        return err_set(err, FN_EINVAL,
                       "web: plain HTTP is only allowed on a loopback address (127.0.0.1), not on %s: anyone on "
                       "the network could read the access token; drop --insecure-http to serve HTTPS",
                       host);
    if ((opt->tls_cert && opt->tls_cert[0]) != (opt->tls_key && opt->tls_key[0]))
        return err_set(err, FN_EINVAL, "web: pass both --tls-cert and --tls-key, or neither (a self-signed "
                                       "certificate is made)");
    int tls = !opt->insecure_http;

    if (opt->port != 0) {
        int rc = precheck_bind(family, host, opt->port, err);
        if (rc < 0)
            return rc;
    }

    /* The certificate: given, or self-signed in <state_dir>/tls/. */
    char pem[PATH_MAX + 32] = "";
    if (tls) {
        char state[PATH_MAX], tlsdir[PATH_MAX + 8];
        if (opt->state_dir && opt->state_dir[0]) {
            snprintf(state, sizeof state, "%s", opt->state_dir);
        } else {
            char tmp[PATH_MAX];
            snprintf(tmp, sizeof tmp, "%s", opt->db_path);
            snprintf(state, sizeof state, "%s", dirname(tmp));
        }
        snprintf(tlsdir, sizeof tlsdir, "%s/tls", state);
        int rc = opt->tls_cert && opt->tls_cert[0] ? tls_combine(opt->tls_cert, opt->tls_key, tlsdir, pem, sizeof pem, err)
                                                   : tls_ensure_self_signed(tlsdir, pem, sizeof pem, err);
        if (rc < 0)
            return err_wrap(err, "web: HTTPS certificate: ");
    }

    char ports[INET6_ADDRSTRLEN + 16];
    if (family == AF_INET6)
        snprintf(ports, sizeof ports, "[%s]:%d%s", host, opt->port, tls ? "s" : "");
    else
        snprintf(ports, sizeof ports, "%s:%d%s", host, opt->port, tls ? "s" : "");

    web_t *w = FN_CALLOC(1, sizeof *w);
    w->db_path = strdup(opt->db_path);
    snprintf(w->host, sizeof w->host, "%s", host);
    w->loopback = loopback;
    w->tls = tls;
    pthread_mutex_init(&w->child_lock, NULL);
    {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", opt->db_path);
        snprintf(w->state_dir, sizeof w->state_dir, "%s",
                 opt->state_dir && opt->state_dir[0] ? opt->state_dir : dirname(tmp));
        if (opt->fednas_bin && opt->fednas_bin[0]) {
            snprintf(w->fednas_bin, sizeof w->fednas_bin, "%s", opt->fednas_bin);
        } else {
            ssize_t n = readlink("/proc/self/exe", w->fednas_bin, sizeof w->fednas_bin - 1);
            w->fednas_bin[n > 0 ? n : 0] = '\0';
        }
    }
    if (!w->db_path) {
        free(w);
        return err_set(err, FN_ENOMEM, "web: out of memory");
    }
    if (web_auth_create(opt->admin_token, opt->viewer_token, &w->auth, err) < 0) {
        free(w->db_path);
        free(w);
        return err->code;
    }

    /* 16 workers: browser tabs, API clients and, later, one per open WebSocket. Each request
     * opens its own read-only store handle, so workers share nothing. Keep-alive lets HTTPS
     * clients reuse one handshake; idle connections time out after 10 s. */
    const char *options[] = {
        "listening_ports", ports, "num_threads", "16", "request_timeout_ms", "10000",
        "enable_keep_alive", "yes", "keep_alive_timeout_ms", "10000",
        /* Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
         * the client's delayed ACK hold every keep-alive response back about 40 ms. */
        "tcp_nodelay", "1",
        "access_control_allow_origin", "",
        tls ? "ssl_certificate" : NULL, pem, "ssl_protocol_version", "4", NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = on_log;
    cb.exit_thread = on_exit_thread;
    struct mg_init_data init = {.callbacks = &cb, .user_data = w, .configuration_options = options};
    char start_log[512] = "", start_err[256] = "";
    unsigned code = 0;
    struct mg_error_data ed = {.code = &code, .text = start_err, .text_buffer_size = sizeof start_err};

    if (lib_acquire(tls, err) < 0) {
        web_auth_free(w->auth);
        free(w->db_path);
        free(w);
        return err->code;
    }
    t_start_msg = start_log;
    t_start_cap = sizeof start_log;
    w->ctx = mg_start2(&init, &ed);
    t_start_msg = NULL;
    t_start_cap = 0;
    if (!w->ctx) {
        lib_release();
        web_auth_free(w->auth);
        free(w->db_path);
        free(w);
        if (strstr(start_log, "in use") || strstr(start_err, "in use"))
            return addr_in_use(host, opt->port, err);
        return err_set(err, FN_EIO, "web: cannot start the %s server on %s: %s", tls ? "HTTPS" : "HTTP", ports,
                       start_log[0] ? start_log : start_err[0] ? start_err : "unknown civetweb error");
    }

    struct mg_server_port sp[4];
    int n = mg_get_server_ports(w->ctx, 4, sp);
    if (n < 1 || sp[0].port <= 0) {
        web_stop(w);
        return err_set(err, FN_EIO, "web: civetweb started on %s but reports no listening port", ports);
    }
    w->port = sp[0].port;
    snprintf(w->cookie_name, sizeof w->cookie_name, "fednas_session_%d", w->port);
    const char *scheme = tls ? "https" : "http";
    /* A wildcard bind is still reached as 127.0.0.1 from this machine. */
    const char *shown = strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : strcmp(host, "::") == 0 ? "::1" : host;
    const char *lb = family == AF_INET6 ? "[" : "", *rb = family == AF_INET6 ? "]" : "";
    snprintf(w->url, sizeof w->url, "%s://%s%s%s:%d/?token=%s", scheme, lb, shown, rb, w->port,
             web_auth_token(w->auth, WEB_ROLE_ADMIN));
    snprintf(w->viewer_url, sizeof w->viewer_url, "%s://%s%s%s:%d/?token=%s", scheme, lb, shown, rb, w->port,
             web_auth_token(w->auth, WEB_ROLE_VIEWER));
    mg_set_request_handler(w->ctx, "/", on_request, w);
    if (web_events_start(w, w->ctx, w->db_path, &w->events, err) < 0) {
        web_stop(w);
        return err->code;
    }

    log_info("web: dashboard at %s://%s%s%s:%d/ (store %s)", scheme, lb, host, rb, w->port, w->db_path);
    if (tls && pem[0]) {
        char fp[97];
        err_t fe = {0};
        if (tls_fingerprint(pem, fp, &fe) == 0)
            log_info("web: TLS certificate %s, SHA-256 %s", pem, fp);
    }
    *out = w;
    return 0;
}

const char *web_url(const web_t *w)
{
    return w ? w->url : NULL;
}

const char *web_viewer_url(const web_t *w)
{
    return w ? w->viewer_url : NULL;
}

int web_port(const web_t *w)
{
    return w ? w->port : -1;
}

void web_stop(web_t *w)
{
    if (!w)
        return;
    if (w->ctx) {
        mg_stop(w->ctx);
        lib_release();
    }
    web_events_stop(w->events);
    web_auth_free(w->auth);
    pthread_mutex_destroy(&w->child_lock);
    free(w->db_path);
    free(w);
}
