/* api.c: the REST handlers. Each request opens its own read-only store handle (store handles
 * are per thread, and opening one is cheap next to a browser round trip), runs one store_*_json
 * query and closes it, so a request always sees the latest committed round. */
#include <civetweb.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "common/log.h"
#include "common/store.h"
#include "web/web_internal.h"

int web_parse_u64(const char *s, size_t n, long long max, long long *out)
{
    if (!s || n == 0)
        return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > ((unsigned long long)max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = (long long)v;
    return 0;
}

/* Opens the store or answers 503: the server may not have created it yet. */
static store_t *open_store(const web_req_t *rq, int *status)
{
    store_t *s = NULL;
    err_t e = {0};
    if (store_open(rq->db_path, 1, &s, &e) < 0) {
        *status = web_send_error(rq, 503, "%s", e.msg);
        return NULL;
    }
    return s;
}

/* The {id} segment as a run id, or a 400 answer. */
static int run_id(const web_req_t *rq, int64_t *id, int *status)
{
    long long v;
    if (web_parse_u64(rq->id, rq->id_len, INT64_MAX, &v) < 0) {
        int n = rq->id_len > 40 ? 40 : (int)rq->id_len;
        *status = web_send_error(rq, 400, "run id \"%.*s%s\" is not a run number (digits only, 0..%lld)", n,
                                 rq->id ? rq->id : "", rq->id_len > 40 ? "..." : "", (long long)INT64_MAX);
        return -1;
    }
    *id = v;
    return 0;
}

static int reply(const web_req_t *rq, int rc, json_t *body, const err_t *e)
{
    if (rc == 0)
        return web_send_json(rq, 200, body);
    if (rc == FN_ENOTFOUND)
        return web_send_error(rq, 404, "%s", e->msg);
    log_warn("web: %s: %s", rq->path, e->msg);
    return web_send_error(rq, 500, "%s", e->msg);
}

int web_api_healthz(const web_req_t *rq)
{
    return web_send_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

int web_api_runs(const web_req_t *rq)
{
    int status = 500;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = store_runs_json(s, &body, &e);
    store_close(s);
    return reply(rq, rc, body, &e);
}

int web_api_run(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = store_run_json(s, id, &body, &e);
    store_close(s);
    return reply(rq, rc, body, &e);
}

int web_api_rounds(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    long long since = 0;
    if (rq->query) {
        char v[24];
        int n = mg_get_var(rq->query, strlen(rq->query), "since", v, sizeof v);
        if (n == -2 || (n >= 0 && web_parse_u64(v, (size_t)n, INT_MAX, &since) < 0))
            return web_send_error(rq, 400, "since must be a round number (digits only, 0..%d)", INT_MAX);
    }
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = store_rounds_json(s, id, (int)since, &body, &e);
    store_close(s);
    return reply(rq, rc, body, &e);
}

int web_api_clients(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = store_clients_json(s, id, &body, &e);
    store_close(s);
    return reply(rq, rc, body, &e);
}

int web_api_not_found(const web_req_t *rq)
{
    return web_send_error(rq, 404, "no API endpoint %.200s; the API is /api/runs, /api/runs/ID, "
                                   "/api/runs/ID/rounds?since=N and /api/runs/ID/clients",
                          rq->path);
}
