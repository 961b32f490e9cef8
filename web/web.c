/* web.c: the dashboard's life cycle: checking the options, the certificate, starting civetweb
 * (with its log and thread callbacks) and stopping it, and the server state that handlers read
 * through accessors. The rest of web/ by concern: route.c (dispatch and the route table),
 * respond.c (responses), auth.c (the login flow), host_guard.c (DNS rebinding), tls_load.c
 * (the OpenSSL 3 shim and civetweb's library state), thread_stack.c (civetweb's stacks),
 * api.c and actions.c (REST handlers), events.c (WebSocket), static.c (embedded assets). */
#define _GNU_SOURCE /* /proc/self/exe lookup */
#include "web/web.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "crypto/tls.h"
#include "web/web_internal.h"

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

size_t web_civetweb_min_stack(struct web *w)
{
    return __atomic_load_n(&w->min_stack, __ATOMIC_RELAXED);
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

/* Records the smallest stack among civetweb's threads (for the tests) and says so when the
 * scoped raise of thread_stack.c did not reach one: that thread would crash on a deep request. */
static void *on_init_thread(const struct mg_context *ctx, int thread_type)
{
    struct web *w = mg_get_user_data(ctx);
    size_t have = web_stack_of_this_thread(), seen = __atomic_load_n(&w->min_stack, __ATOMIC_RELAXED);
    if (have < WEB_MIN_STACK)
        log_warn("web: civetweb thread (type %d) has a %zu KiB stack, less than %d KiB; deep requests may crash it",
                 thread_type, have / 1024, WEB_MIN_STACK / 1024);
    while ((seen == 0 || have < seen) &&
           !__atomic_compare_exchange_n(&w->min_stack, &seen, have, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return NULL;
}

static void on_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer)
{
    (void)ctx, (void)thread_type, (void)thread_pointer;
    web_api_thread_exit();
}

/* ---- start / stop ---------------------------------------------------------------------- */

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
    cb.init_thread = on_init_thread;
    cb.exit_thread = on_exit_thread;
    struct mg_init_data init = {.callbacks = &cb, .user_data = w, .configuration_options = options};
    char start_log[512] = "", start_err[256] = "";
    unsigned code = 0;
    struct mg_error_data ed = {.code = &code, .text = start_err, .text_buffer_size = sizeof start_err};

    if (web_lib_acquire(tls, err) < 0) {
        web_auth_free(w->auth);
        free(w->db_path);
        free(w);
        return err->code;
    }
    t_start_msg = start_log;
    t_start_cap = sizeof start_log;
    web_stack_raise(1); /* civetweb creates all its threads in mg_start2, on this thread */
    w->ctx = mg_start2(&init, &ed);
    web_stack_raise(0);
    t_start_msg = NULL;
    t_start_cap = 0;
    if (!w->ctx) {
        web_lib_release();
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
    mg_set_request_handler(w->ctx, "/", web_route_request, w);
    if (web_events_start(w, w->ctx, w->db_path, &w->events, err) < 0) {
        web_stop(w);
        return err->code;
    }

    /* No link is logged here: one without the token only leads to the login page. The caller
     * prints web_url (with the token) to the user who started fednas. */
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
        web_lib_release();
    }
    web_events_stop(w->events);
    web_auth_free(w->auth);
    pthread_mutex_destroy(&w->child_lock);
    free(w->db_path);
    free(w);
}
