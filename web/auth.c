/* auth.c: tokens, sessions and the failed-login rate limit.
 *
 * Two random access tokens are made at start (32 bytes from RAND_bytes, 64 hex characters):
 * the admin token (printed by fednas in the dashboard URL, as Jupyter does) and a viewer
 * token (web_viewer_url). A GET with ?token=... that matches opens a session: a random id
 * held here in memory with an absolute expiry, sent back as an HttpOnly cookie, plus a
 * per-session CSRF token that the page reads from a second cookie (or /api/session) and
 * sends back in X-CSRF-Token on every state-changing request. Tokens, session ids and CSRF
 * tokens are compared in constant time. Restarting the server ends every session.
 *
 * Failed token checks are counted per client IP in a fixed window: WEB_AUTH_MAX_FAILS in
 * WEB_AUTH_WINDOW_S seconds, then 429 until the window ends. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "web/web_internal.h"

#define N_SESSIONS 1024
#define N_IPS 256

typedef struct session {
    char id[WEB_TOKEN_HEX + 1];
    char csrf[WEB_TOKEN_HEX + 1];
    int role;
    time_t expires;
} session_t;

typedef struct ip_fail {
    char ip[48];
    time_t window_start;
    int count;
} ip_fail_t;

struct web_auth {
    pthread_mutex_t lock;
    char token[2][WEB_TOKEN_HEX + 1]; /* [0] viewer, [1] admin */
    session_t sessions[N_SESSIONS];
    ip_fail_t ips[N_IPS];
    int session_ttl_s;
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
    /* A free or expired slot, else the one closest to expiry. */
    int best = 0;
    for (int i = 0; i < N_SESSIONS; i++) {
        if (a->sessions[i].expires <= now) {
            best = i;
            break;
        }
        if (a->sessions[i].expires < a->sessions[best].expires)
            best = i;
    }
    session_t *s = &a->sessions[best];
    memcpy(s->id, sid, WEB_TOKEN_HEX + 1);
    memcpy(s->csrf, csrf, WEB_TOKEN_HEX + 1);
    s->role = role;
    s->expires = now + a->session_ttl_s;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

int web_auth_session_get(web_auth_t *a, const char *sid, char csrf[WEB_TOKEN_HEX + 1])
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
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return role;
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
    if (f && now - f->window_start < WEB_AUTH_WINDOW_S && f->count >= WEB_AUTH_MAX_FAILS)
        wait = (int)(WEB_AUTH_WINDOW_S - (now - f->window_start));
    pthread_mutex_unlock(&a->lock);
    return wait;
}

void web_auth_failed(web_auth_t *a, const char *ip)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&a->lock);
    ip_fail_t *f = ip_slot(a, ip ? ip : "", now, 1);
    if (now - f->window_start >= WEB_AUTH_WINDOW_S) {
        f->window_start = now;
        f->count = 0;
    }
    f->count++;
    pthread_mutex_unlock(&a->lock);
}
