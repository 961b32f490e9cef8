/* respond.c: the response helpers every handler uses (JSON, errors, downloads, request bodies),
 * each adding the security headers (nosniff, CSP, frame and referrer policy, HSTS under TLS). */
#include <civetweb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web/web_internal.h"

/* The page loads nothing but its own script, style and data; inline scripts and styles are
 * refused, and no other site may frame it. */
#define WEB_CSP                                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "            \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

void web_add_security_headers(const web_req_t *rq)
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
    web_add_security_headers(rq);
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
    web_add_security_headers(rq);
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

int web_send_error_allow(const web_req_t *rq, int status, const char *allow, const char *msg)
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
    return web_send_error_allow(rq, status, NULL, msg);
}

const char *web_header(const web_req_t *rq, const char *name)
{
    return mg_get_header(rq->conn, name);
}
