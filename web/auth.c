/* auth.c: the whole login flow: tokens, sessions and the failed-login rate limit (first half);
 * then who is asking (web_authenticate: ?token= opens a session and redirects without it, a
 * Bearer header, or the session cookie with its CSRF check), the login page, /api/session,
 * /api/logout and the WebSocket upgrade check (second half).
 *
 * Two random access tokens are made at start (32 bytes from RAND_bytes, 64 hex characters):
 * the admin token (printed by fednas in the dashboard URL, as Jupyter does) and a viewer
 * token (web_viewer_url). A GET with ?token=... that matches opens a session: a random id
 * held here in memory with an absolute expiry, sent back as an HttpOnly cookie, plus a
 * per-session CSRF token that the page reads from a second cookie (or /api/session) and
 * sends back in X-CSRF-Token on every state-changing request. Tokens, session ids and CSRF
 * tokens are compared in constant time. Restarting the server ends every session.
 *
 * Token checks are counted per client IP in a fixed window of WEB_AUTH_WINDOW_S seconds:
 * WEB_AUTH_MAX_FAILS failures, or WEB_AUTH_MAX_LOGINS logins (sessions opened and WebSockets
 * opened with a bearer token, successful or not: each costs a session slot or a worker), then
 * 429 until the window ends. A bearer token on a plain request is checked, not counted when
 * right (API clients and scrapers send it with every request).
 *
 * The session table is bounded (N_SESSIONS). A new session takes a free or expired slot, else
 * the least recently used session of a viewer; only an admin login may take the least recently
 * used admin session; a viewer login that finds only admin sessions is refused (503), so a
 * viewer can never log the admin out.
 *
 * A WebSocket opened with a bearer token has no session, but the same bounds: it lives at most
 * a session's lifetime from its opening (then the client opens a new one, a counted login), and
 * /api/logout sent with that bearer token ends every socket the token opened (a generation
 * count per role, web_auth_bearer_alive). */
#include <civetweb.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "web/web_internal.h"

#define N_SESSIONS 1024
#define N_IPS 256

typedef struct session {
    char id[WEB_TOKEN_HEX + 1];
    char csrf[WEB_TOKEN_HEX + 1];
    int role;
    time_t expires;
    time_t last_used;
} session_t;

typedef struct ip_fail {
    char ip[48];
    time_t window_start;
    int count;  /* failed token checks */
    int logins; /* sessions and bearer WebSockets opened */
} ip_fail_t;

struct web_auth {
    pthread_mutex_t lock;
    char token[2][WEB_TOKEN_HEX + 1]; /* [0] viewer, [1] admin */
    session_t sessions[N_SESSIONS];
    ip_fail_t ips[N_IPS];
    int session_ttl_s;
    unsigned bearer_gen[2]; /* per role: a bearer logout ends the sockets of older generations */
};

int web_random_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b || RAND_bytes(b, (int)nbytes) != 1)
        return -1;
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    OPENSSL_cleanse(b, sizeof b);
    return 0;
}

static int valid_token(const char *t)
{
    size_t n = strlen(t);
    if (n < 16 || n > WEB_TOKEN_HEX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
              t[i] == '-' || t[i] == '_'))
            return 0;
    return 1;
}

int web_auth_create(const char *admin_token, const char *viewer_token, web_auth_t **out, err_t *err)
{
    web_auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(err, FN_ENOMEM, "web: out of memory");
    pthread_mutex_init(&a->lock, NULL);
    a->session_ttl_s = 12 * 3600;
    const char *given[2] = {viewer_token, admin_token};
    for (int r = 0; r < 2; r++) {
        if (given[r] && given[r][0]) {
            if (!valid_token(given[r])) {
                web_auth_free(a);
                return err_set(err, FN_EINVAL,
                               "web: a given %s token must be 16..64 characters of [A-Za-z0-9_-]",
                               r ? "admin" : "viewer");
            }
            snprintf(a->token[r], sizeof a->token[r], "%s", given[r]);
        } else if (web_random_hex(a->token[r], WEB_TOKEN_HEX / 2) < 0) {
            web_auth_free(a);
            return err_set(err, FN_EIO, "web: no random bytes for the access token");
        }
    }
    if (strcmp(a->token[0], a->token[1]) == 0) {
        web_auth_free(a);
        return err_set(err, FN_EINVAL, "web: the viewer and admin tokens must differ");
    }
    *out = a;
    return 0;
}

void web_auth_free(web_auth_t *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->lock);
    OPENSSL_cleanse(a, sizeof *a);
    free(a);
}

const char *web_auth_token(const web_auth_t *a, int role)
{
    return a->token[role == WEB_ROLE_ADMIN ? 1 : 0];
}

/* Constant time for equal lengths; a length mismatch is not secret (tokens are fixed-size). */
static int ct_equal(const char *known, const char *given, size_t given_len)
{
    size_t n = strlen(known);
    if (n == 0 || given_len != n)
        return 0;
    return CRYPTO_memcmp(known, given, n) == 0;
}

int web_auth_check_token(const web_auth_t *a, const char *tok, size_t len)
{
    if (!tok)
        return WEB_ROLE_NONE;
    /* Both comparisons always run, so the time does not say which role matched. */
    int admin = ct_equal(a->token[1], tok, len);
    int viewer = ct_equal(a->token[0], tok, len);
    return admin ? WEB_ROLE_ADMIN : viewer ? WEB_ROLE_VIEWER : WEB_ROLE_NONE;
}

int web_auth_session_new(web_auth_t *a, int role, char sid[WEB_TOKEN_HEX + 1], char csrf[WEB_TOKEN_HEX + 1])
{
    if (web_random_hex(sid, WEB_TOKEN_HEX / 2) < 0 || web_random_hex(csrf, WEB_TOKEN_HEX / 2) < 0)
        return -1;
    time_t now = time(NULL);
    pthread_mutex_lock(&a->lock);
    /* A free or expired slot; else the least recently used viewer session; else, for an admin
     * only, the least recently used admin session. */
    int best = -1, lru_viewer = -1, lru_admin = -1;
    for (int i = 0; i < N_SESSIONS && best < 0; i++) {
        session_t *s = &a->sessions[i];
        if (s->expires <= now)
            best = i;
        else if (s->role == WEB_ROLE_ADMIN) {
            if (lru_admin < 0 || s->last_used < a->sessions[lru_admin].last_used)
                lru_admin = i;
        } else if (lru_viewer < 0 || s->last_used < a->sessions[lru_viewer].last_used)
            lru_viewer = i;
    }
    if (best < 0)
        best = lru_viewer >= 0 ? lru_viewer : role == WEB_ROLE_ADMIN ? lru_admin : -1;
    if (best < 0) {
        pthread_mutex_unlock(&a->lock);
        return -2;
    }
    session_t *s = &a->sessions[best];
    memcpy(s->id, sid, WEB_TOKEN_HEX + 1);
    memcpy(s->csrf, csrf, WEB_TOKEN_HEX + 1);
    s->role = role;
    s->expires = now + a->session_ttl_s;
    s->last_used = now;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

static int session_find(web_auth_t *a, const char *sid, char csrf[WEB_TOKEN_HEX + 1], int touch)
{
    size_t n = sid ? strlen(sid) : 0;
    if (n != WEB_TOKEN_HEX)
        return WEB_ROLE_NONE;
    time_t now = time(NULL);
    int role = WEB_ROLE_NONE;
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < N_SESSIONS; i++) {
        session_t *s = &a->sessions[i];
        if (s->expires > now && CRYPTO_memcmp(s->id, sid, WEB_TOKEN_HEX) == 0) {
            role = s->role;
            if (csrf)
                memcpy(csrf, s->csrf, WEB_TOKEN_HEX + 1);
            if (touch)
                s->last_used = now;
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return role;
}

int web_auth_session_get(web_auth_t *a, const char *sid, char csrf[WEB_TOKEN_HEX + 1])
{
    return session_find(a, sid, csrf, 1);
}

int web_auth_session_alive(web_auth_t *a, const char *sid)
{
    return session_find(a, sid, NULL, 0) != WEB_ROLE_NONE;
}

void web_auth_session_ttl(web_auth_t *a, int seconds)
{
    pthread_mutex_lock(&a->lock);
    a->session_ttl_s = seconds;
    pthread_mutex_unlock(&a->lock);
}

void web_auth_bearer_open(web_auth_t *a, int role, web_bearer_t *b)
{
    pthread_mutex_lock(&a->lock);
    b->role = role;
    b->gen = a->bearer_gen[role == WEB_ROLE_ADMIN];
    b->expires = time(NULL) + a->session_ttl_s;
    pthread_mutex_unlock(&a->lock);
}

int web_auth_bearer_alive(web_auth_t *a, const web_bearer_t *b)
{
    pthread_mutex_lock(&a->lock);
    int alive = b->gen == a->bearer_gen[b->role == WEB_ROLE_ADMIN] && time(NULL) < b->expires;
    pthread_mutex_unlock(&a->lock);
    return alive;
}

void web_auth_bearer_logout(web_auth_t *a, int role)
{
    pthread_mutex_lock(&a->lock);
    a->bearer_gen[role == WEB_ROLE_ADMIN]++;
    pthread_mutex_unlock(&a->lock);
}

void web_auth_session_drop(web_auth_t *a, const char *sid)
{
    if (!sid || strlen(sid) != WEB_TOKEN_HEX)
        return;
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < N_SESSIONS; i++)
        if (a->sessions[i].expires && CRYPTO_memcmp(a->sessions[i].id, sid, WEB_TOKEN_HEX) == 0)
            memset(&a->sessions[i], 0, sizeof a->sessions[i]);
    pthread_mutex_unlock(&a->lock);
}

int web_csrf_equal(const char *expected, const char *given)
{
    return given && ct_equal(expected, given, strlen(given));
}

static ip_fail_t *ip_slot(web_auth_t *a, const char *ip, time_t now, int create)
{
    ip_fail_t *oldest = &a->ips[0];
    for (int i = 0; i < N_IPS; i++) {
        if (a->ips[i].ip[0] && strcmp(a->ips[i].ip, ip) == 0)
            return &a->ips[i];
        if (a->ips[i].window_start < oldest->window_start)
            oldest = &a->ips[i];
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->ip, sizeof oldest->ip, "%s", ip);
    oldest->window_start = now;
    return oldest;
}

int web_auth_limited(web_auth_t *a, const char *ip)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&a->lock);
    ip_fail_t *f = ip_slot(a, ip ? ip : "", now, 0);
    int wait = 0;
    if (f && now - f->window_start < WEB_AUTH_WINDOW_S &&
        (f->count >= WEB_AUTH_MAX_FAILS || f->logins >= WEB_AUTH_MAX_LOGINS))
        wait = (int)(WEB_AUTH_WINDOW_S - (now - f->window_start));
    pthread_mutex_unlock(&a->lock);
    return wait;
}

static void count(web_auth_t *a, const char *ip, int failed)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&a->lock);
    ip_fail_t *f = ip_slot(a, ip ? ip : "", now, 1);
    if (now - f->window_start >= WEB_AUTH_WINDOW_S) {
        f->window_start = now;
        f->count = 0;
        f->logins = 0;
    }
    if (failed)
        f->count++;
    f->logins++;
    pthread_mutex_unlock(&a->lock);
}

void web_auth_failed(web_auth_t *a, const char *ip)
{
    count(a, ip, 1);
}

void web_auth_logged_in(web_auth_t *a, const char *ip)
{
    count(a, ip, 0);
}

/* ---- the login flow ------------------------------------------------------------------ */

/* Shown for every page (not API) request without a session, with the reason. No script and
 * no inline style (the CSP allows neither): its look comes from /login.css, which with the icon
 * is all that is served before login (web_auth_public_asset). The %s: " info" for a first
 * visit (not an error), then why this page is shown. */
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
int web_auth_public_asset(const char *path)
{
    return strcmp(path, "/login.css") == 0 || strcmp(path, "/favicon.svg") == 0;
}

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
    return web_send(rq, 401, "text/html; charset=utf-8", page, (size_t)n < sizeof page ? (size_t)n : 0, "no-store",
                    NULL);
}

static int too_many(const web_req_t *rq, int wait)
{
    return web_send_error(rq, 429, "too many logins or failed logins from this address; try again in %d s", wait);
}

/* The session table holds only admin sessions and a viewer asked for one. */
static int sessions_full(const web_req_t *rq)
{
    static const char body[] = "{\"error\":\"too many open sessions; try again later\"}";
    struct mg_connection *c = rq->conn;
    if (mg_response_header_start(c, 503) != 0)
        return 503;
    mg_response_header_add(c, "Content-Type", "application/json", -1);
    mg_response_header_add(c, "Retry-After", "60", -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    char n[16];
    snprintf(n, sizeof n, "%zu", sizeof body - 1);
    mg_response_header_add(c, "Content-Length", n, -1);
    web_add_security_headers(rq);
    mg_response_header_send(c);
    if (!rq->head)
        mg_write(c, body, sizeof body - 1);
    return 503;
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
    web_add_security_headers(rq);
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
    if (rq->session) {
        web_auth_session_drop(rq->w->auth, rq->session);
        web_events_wake(rq->w->events); /* its WebSockets close now, not at the next period */
    } else if (rq->role != WEB_ROLE_NONE) {
        /* With a bearer token (no session, no cookie): ends every socket that token opened. */
        web_auth_bearer_logout(rq->w->auth, rq->role);
        web_events_wake(rq->w->events);
    }
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
    web_add_security_headers(rq);
    mg_response_header_send(c);
    mg_write(c, body, sizeof body - 1);
    return 200;
}

/* Decides who is asking. Returns 0 with rq->role set, or the status of the answer it sent
 * (303 after a login, 401, 403, 429). */
int web_authenticate(web_req_t *rq, const struct mg_request_info *ri)
{
    struct web *w = rq->w;
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
        web_auth_logged_in(w->auth, ip);
        char sid[WEB_TOKEN_HEX + 1], csrf[WEB_TOKEN_HEX + 1];
        int rc = web_auth_session_new(w->auth, role, sid, csrf);
        if (rc == -2) {
            log_warn("web: refusing a viewer session from %s: the session table is full", ip);
            return sessions_full(rq);
        }
        if (rc < 0)
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

int web_ws_authorized(struct web *w, const struct mg_connection *conn, char sid_out[WEB_TOKEN_HEX + 1],
                      web_bearer_t *bearer)
{
    sid_out[0] = '\0';
    bearer->role = WEB_ROLE_NONE;
    const char *host = mg_get_header(conn, "Host");
    if (w->loopback && !web_host_allowed(host))
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
    if (authz) {
        /* A bearer socket is a login: the same per-address limit as ?token=. */
        const struct mg_request_info *ri = mg_get_request_info(conn);
        const char *ip = ri ? ri->remote_addr : "";
        if (web_auth_limited(w->auth, ip) > 0)
            return 0;
        int role = strncasecmp(authz, "Bearer ", 7) == 0 ? web_auth_check_token(w->auth, authz + 7, strlen(authz + 7))
                                                         : WEB_ROLE_NONE;
        int ok = role != WEB_ROLE_NONE;
        if (ok) {
            web_auth_logged_in(w->auth, ip);
            web_auth_bearer_open(w->auth, role, bearer);
        } else {
            web_auth_failed(w->auth, ip);
            log_warn("web: wrong access token on a WebSocket from %s", ip);
        }
        return ok;
    }
    const char *cookies = mg_get_header(conn, "Cookie");
    char sid[WEB_TOKEN_HEX + 2];
    if (!cookies || mg_get_cookie(cookies, w->cookie_name, sid, sizeof sid) != WEB_TOKEN_HEX ||
        web_auth_session_get(w->auth, sid, NULL) == WEB_ROLE_NONE)
        return 0;
    memcpy(sid_out, sid, WEB_TOKEN_HEX + 1);
    return 1;
}
