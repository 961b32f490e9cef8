/* web.c: starting and stopping civetweb, the route table, and the response helpers every
 * handler uses. Everything is served from memory through one catch-all request handler: no
 * document_root, so no request can ever read the file system. */
#include "web/web.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
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
#include "web/web_internal.h"

struct web {
    struct mg_context *ctx;
    char *db_path;
    char host[INET6_ADDRSTRLEN];
    int port;
    int loopback; /* bound to a loopback address: enforce the Host check */
};

/* ---- the route table ------------------------------------------------------------------
 * Matched in order against the decoded path. "{id}" captures one non-empty segment; a final
 * "*" matches the rest. One trailing slash is ignored. Later routes (/metrics, /ws, ...) go
 * here. */
typedef struct web_route {
    const char *pattern;
    web_handler_fn fn;
} web_route_t;

static const web_route_t k_routes[] = {
    {"/healthz", web_api_healthz},
    {"/api/runs", web_api_runs},
    {"/api/runs/{id}", web_api_run},
    {"/api/runs/{id}/rounds", web_api_rounds},
    {"/api/runs/{id}/clients", web_api_clients},
    {"/api/*", web_api_not_found},
    {"/*", web_static_serve},
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
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

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
    mg_response_header_add(c, "X-Content-Type-Options", "nosniff", -1);
    mg_response_header_add(c, "Content-Security-Policy", WEB_CSP, -1);
    mg_response_header_add(c, "X-Frame-Options", "DENY", -1);
    mg_response_header_add(c, "Referrer-Policy", "no-referrer", -1);
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

static int on_request(struct mg_connection *conn, void *cbdata)
{
    const web_t *w = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    web_req_t rq = {.conn = conn, .db_path = w->db_path};
    rq.path = ri && ri->local_uri ? ri->local_uri : "/";
    rq.query = ri ? ri->query_string : NULL;
    const char *method = ri && ri->request_method ? ri->request_method : "";
    rq.head = strcmp(method, "HEAD") == 0;

    if (strcmp(method, "GET") != 0 && !rq.head) {
        char msg[128];
        snprintf(msg, sizeof msg, "method %.32s is not allowed; the dashboard is read-only (GET, HEAD)", method);
        return send_error_allow(&rq, 405, "GET, HEAD", msg);
    }
    if (w->loopback && !host_allowed(web_header(&rq, "Host")))
        return web_send_error(&rq, 403,
                              "Host header is not an IP address or localhost; open the dashboard as "
                              "http://127.0.0.1:%d/",
                              w->port);
    if (has_dotdot(ri ? ri->local_uri_raw : NULL) || has_dotdot(ri ? ri->request_uri : NULL))
        return web_send_error(&rq, 400, "\"..\" is not allowed in paths");

    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        rq.id = NULL;
        rq.id_len = 0;
        if (route_match(k_routes[i].pattern, rq.path, &rq.id, &rq.id_len))
            return k_routes[i].fn(&rq);
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

/* ---- start / stop ---------------------------------------------------------------------- */

/* mg_init_library/mg_exit_library are process-wide; several servers (tests) may coexist. */
static pthread_mutex_t g_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_lib_users;

static void lib_acquire(void)
{
    pthread_mutex_lock(&g_lib_lock);
    if (g_lib_users++ == 0)
        mg_init_library(0);
    pthread_mutex_unlock(&g_lib_lock);
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

    if (opt->port != 0) {
        int rc = precheck_bind(family, host, opt->port, err);
        if (rc < 0)
            return rc;
    }

    char ports[INET6_ADDRSTRLEN + 16];
    if (family == AF_INET6)
        snprintf(ports, sizeof ports, "[%s]:%d", host, opt->port);
    else
        snprintf(ports, sizeof ports, "%s:%d", host, opt->port);

    web_t *w = FN_CALLOC(1, sizeof *w);
    w->db_path = strdup(opt->db_path);
    snprintf(w->host, sizeof w->host, "%s", host);
    w->loopback = loopback;
    if (!w->db_path) {
        free(w);
        return err_set(err, FN_ENOMEM, "web: out of memory");
    }

    /* 4 workers: a few browser tabs polling every 2 s; each request opens its own read-only
     * store handle, so workers share nothing. Keep-alive stays off so a tab never pins one. */
    const char *options[] = {
        "listening_ports", ports,          "num_threads", "4", "request_timeout_ms", "10000",
        "access_control_allow_origin", "", NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = on_log;
    struct mg_init_data init = {.callbacks = &cb, .user_data = w, .configuration_options = options};
    char start_log[512] = "", start_err[256] = "";
    unsigned code = 0;
    struct mg_error_data ed = {.code = &code, .text = start_err, .text_buffer_size = sizeof start_err};

    lib_acquire();
    t_start_msg = start_log;
    t_start_cap = sizeof start_log;
    w->ctx = mg_start2(&init, &ed);
    t_start_msg = NULL;
    t_start_cap = 0;
    if (!w->ctx) {
        lib_release();
        free(w->db_path);
        free(w);
        if (strstr(start_log, "in use") || strstr(start_err, "in use"))
            return addr_in_use(host, opt->port, err);
        return err_set(err, FN_EIO, "web: cannot start the HTTP server on %s: %s", ports,
                       start_log[0] ? start_log : start_err[0] ? start_err : "unknown civetweb error");
    }

    struct mg_server_port sp[4];
    int n = mg_get_server_ports(w->ctx, 4, sp);
    if (n < 1 || sp[0].port <= 0) {
        web_stop(w);
        return err_set(err, FN_EIO, "web: civetweb started on %s but reports no listening port", ports);
    }
    w->port = sp[0].port;
    mg_set_request_handler(w->ctx, "/", on_request, w);

    if (family == AF_INET6)
        log_info("web: dashboard at http://[%s]:%d/ (store %s)", host, w->port, w->db_path);
    else
        log_info("web: dashboard at http://%s:%d/ (store %s)", host, w->port, w->db_path);
    if (!loopback)
        log_warn("web: listening on %s without TLS or login: anyone who can reach this port can read the runs", host);
    *out = w;
    return 0;
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
    free(w->db_path);
    free(w);
}
