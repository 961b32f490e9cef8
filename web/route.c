/* route.c: dispatch. Every request enters through web_route_request (the one civetweb handler
 * for "/"): method check, the DNS-rebinding guard, ".." refusal, /healthz and the pre-login
 * assets, authentication (auth.c), then the route table. Everything is served from memory: no
 * document_root, so no request can ever read the file system. */
#include <civetweb.h>
#include <stdio.h>
#include <string.h>

#include "web/web_internal.h"

static int handle_request(struct mg_connection *conn, void *cbdata);

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
    {"/api/runs/{id}/nas/candidates", M_GET, web_api_nas_candidates},
    {"/api/runs/{id}/nas/candidates.csv", M_GET, web_api_nas_candidates_csv},
    {"/api/runs/{id}/nas/candidate", M_GET, web_api_nas_candidate},
    {"/api/runs/{id}/nas/pareto", M_GET, web_api_nas_pareto},
    {"/api/nas/searches", M_GET, web_api_nas_searches},
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

int web_route_request(struct mg_connection *conn, void *cbdata)
{
    struct web *w = cbdata;
    int status = handle_request(conn, cbdata);
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        __atomic_add_fetch(&w->counts[cls], 1, __ATOMIC_RELAXED);
    return status;
}

static int handle_request(struct mg_connection *conn, void *cbdata)
{
    struct web *w = cbdata;
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
        return web_send_error_allow(&rq, 405, "GET, HEAD, POST", msg);
    }
    if (w->loopback && !web_host_allowed(web_header(&rq, "Host")))
        return web_send_error(&rq, 403,
                              "Host header is not an IP address or localhost; open the dashboard as "
                              "%s://127.0.0.1:%d/",
                              w->tls ? "https" : "http", w->port);
    if (has_dotdot(ri ? ri->local_uri_raw : NULL) || has_dotdot(ri ? ri->request_uri : NULL))
        return web_send_error(&rq, 400, "\"..\" is not allowed in paths");

    if (route_match("/healthz", rq.path, &rq.id, &rq.id_len)) {
        if (rq.post)
            return web_send_error_allow(&rq, 405, "GET, HEAD", "/healthz takes GET or HEAD");
        return web_api_healthz(&rq);
    }
    if (!rq.post && web_auth_public_asset(rq.path))
        return web_static_serve(&rq);
    int rc = web_authenticate(&rq, ri);
    if (rc != 0)
        return rc;

    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        rq.id = NULL;
        rq.id_len = 0;
        if (route_match(k_routes[i].pattern, rq.path, &rq.id, &rq.id_len)) {
            int m = rq.post ? M_POST : M_GET;
            if (!(k_routes[i].methods & m))
                return web_send_error_allow(&rq, 405, k_routes[i].methods == M_POST ? "POST" : "GET, HEAD",
                                        rq.post ? "this resource is read-only (GET, HEAD)"
                                                : "this action takes POST");
            return k_routes[i].fn(&rq);
        }
    }
    return web_send_error(&rq, 404, "not found");
}
