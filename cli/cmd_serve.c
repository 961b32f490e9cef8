/* `fednas serve MODEL --http PORT`: an HTTPS inference endpoint. civetweb with the dashboard's
 * TLS pieces (the self-signed certificate of crypto/tls.h, the OpenSSL shim and thread stacks
 * of web/, its access tokens and failed-token limit); requests go through the dynamic batcher
 * of cli/infer.h. Everything a client sends is checked before use: the body's size before it
 * is read, the JSON's shape and every number before it reaches the model. */
#include <civetweb.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/infer.h"
#include "common/log.h"
#include "crypto/tls.h"
#include "web/web.h"

#define MAX_BODY (2u << 20) /* 64 images of 784 numbers fit with room for long decimals */

static const char *const k_help =
    "Usage: fednas serve MODEL --http PORT [--host 127.0.0.1] [--max-batch 32] [--max-wait-ms 5]\n"
    "                    [--workers 64] [--state-dir DIR]\n"
    "\n"
    "Serves MODEL (a .safetensors model, an architecture JSON or a built-in name, see `fednas\n"
    "profile --help`; a quantized model.int8.safetensors from `fednas compress` runs in int8)\n"
    "over HTTPS with the dashboard's self-signed certificate (DIR/tls/, made on\n"
    "first start) and a random access token printed at start (FEDNAS_SERVE_TOKEN fixes it: 16..64\n"
    "of [A-Za-z0-9_-]). Every request but /healthz needs \"Authorization: Bearer TOKEN\".\n"
    "\n"
    "  POST /v1/predict  {\"images\": [IMAGE, ...]} (1..64 images; a bare list works too), each\n"
    "                    IMAGE 784 numbers (a 28x28 image, row by row) or a base64 string of 784\n"
    "                    little-endian float32. Answers {\"batch_size\":B, \"predictions\":[{\"class\":C,\n"
    "                    \"probabilities\":[...]}, ...]} in the order sent; B is the size of the\n"
    "                    forward pass the request shared. Bad bodies get 400 with the reason.\n"
    "  GET /metrics      Prometheus text: requests by status, images, batch-size histogram,\n"
    "                    latency quantiles (0.5, 0.9, 0.99), requests per second.\n"
    "  GET /healthz      {\"status\":\"ok\"} (no token)\n"
    "\n"
    "  --http PORT       the port (0: pick a free one; the URL is printed)\n"
    "  --host ADDR       the address to listen on (default 127.0.0.1)\n"
    "  --max-batch N     images per forward pass, 1..1024 (default 32; 1 serves each request alone)\n"
    "  --max-wait-ms MS  the longest a request waits for others to share its pass (default 5); the\n"
    "                    wait shrinks to the average pass time, and nothing waits under load\n"
    "  --workers N       HTTP worker threads = concurrent connections served, 2..512 (default 64)\n"
    "  --state-dir DIR   where tls/ lives (default: the folder of MODEL, or .)\n"
    "  -h, --help        this help\n";

typedef struct serve {
    infer_t *q;
    web_auth_t *auth;
    int classes;
} serve_t;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int send_body(struct mg_connection *c, int status, const char *type, const char *body, size_t len)
{
    mg_response_header_start(c, status);
    mg_response_header_add(c, "Content-Type", type, -1);
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    mg_response_header_add(c, "Content-Length", n, -1);
    mg_response_header_add(c, "X-Content-Type-Options", "nosniff", -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    if (status == 401)
        mg_response_header_add(c, "WWW-Authenticate", "Bearer realm=\"fednas serve\"", -1);
    if (status == 405)
        mg_response_header_add(c, "Allow", "POST", -1);
    if (status == 429)
        mg_response_header_add(c, "Retry-After", "60", -1);
    mg_response_header_send(c);
    if (len)
        mg_write(c, body, len);
    return status;
}

/* Room kept before a 200 answer's body for its status line and headers (about 200 bytes). */
#define HEAD_ROOM 320

/* A 200 JSON answer (the body at buf + HEAD_ROOM, len bytes) in one write. civetweb's
 * mg_response_header_send writes the status line and every header with a write of its own,
 * each its own TLS record and system call: nine per answer (strace), more than the rest of a
 * batched request's network work. The headers are send_body's plus the Date and Connection
 * that civetweb adds, the latter decided as civetweb decides keep-alive (enable_keep_alive is
 * on): a Connection header asks for it by name, without one HTTP/1.1 means yes. */
static int send_ok_json(struct mg_connection *c, char *buf, size_t len)
{
    const struct mg_request_info *ri = mg_get_request_info(c);
    const char *conn = mg_get_header(c, "Connection");
    int keep = !conn && ri->http_version && strcmp(ri->http_version, "1.1") == 0;
    for (const char *p = conn; p && *p && !keep; p++)
        keep = strncasecmp(p, "keep-alive", 10) == 0;
    char date[64], head[HEAD_ROOM];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int h = snprintf(head, sizeof head,
                     "HTTP/%s 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nDate: %s\r\nConnection: %s\r\n\r\n",
                     ri->http_version && strlen(ri->http_version) <= 3 ? ri->http_version : "1.1", len, date,
                     keep ? "keep-alive" : "close");
    if (h < 0 || h >= (int)sizeof head) /* cannot happen: the fields are bounded */
        return send_body(c, 200, "application/json", buf + HEAD_ROOM, len);
    memcpy(buf + HEAD_ROOM - h, head, (size_t)h);
    mg_write(c, buf + HEAD_ROOM - h, (size_t)h + len);
    return 200;
}

/* {"error": msg}; msg is JSON-escaped by jansson, so quoting client text in it is safe. */
__attribute__((format(printf, 3, 4))) static int send_error(struct mg_connection *c, int status, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s}", "error", msg);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = send_body(c, status, "application/json", s ? s : "{\"error\":\"out of memory\"}",
                       strlen(s ? s : "{\"error\":\"out of memory\"}"));
    free(s);
    return rc;
}

/* 1 + the 6-bit value of each base64 digit, standard and URL-safe; 0 marks anything else. */
static const unsigned char k_b64[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8, ['I'] = 9, ['J'] = 10,
    ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19,
    ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37,
    ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46,
    ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55,
    ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['-'] = 63,
    ['/'] = 64, ['_'] = 64};

static int b64_value(unsigned char ch) { return (int)k_b64[ch] - 1; }

/* Standard or URL-safe base64, padding optional; exactly cap bytes or -1. */
static int b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    while (len && s[len - 1] == '=')
        len--;
    size_t n = 0, i = 0;
    /* whole groups of 4 digits to 3 bytes, then the tail bit by bit */
    for (; i + 4 <= len && n + 3 <= cap; i += 4, n += 3) {
        int a = b64_value((unsigned char)s[i]), b = b64_value((unsigned char)s[i + 1]),
            c = b64_value((unsigned char)s[i + 2]), d = b64_value((unsigned char)s[i + 3]);
        if ((a | b | c | d) < 0)
            return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        out[n] = (unsigned char)(v >> 16), out[n + 1] = (unsigned char)(v >> 8), out[n + 2] = (unsigned char)v;
    }
    unsigned acc = 0;
    int bits = 0;
    for (; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n == cap ? 0 : -1;
}

/* Base64 digits only: what a body's image strings hold on the fast path (no escapes). */
static int b64_char(unsigned char ch) { return b64_value(ch) >= 0 || ch == '='; }

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The common body, {"images": ["BASE64", ...]} or ["BASE64", ...] (any JSON whitespace between
 * tokens), found without building a JSON tree: 1..INFER_MAX_IMAGES strings of base64 digits,
 * their starts and lengths in at[] and len[]; returns how many, or 0 for anything else (arrays
 * of numbers, escapes, other keys, too many images, trailing bytes), which the full parser then
 * reads and, where it is wrong, words the error. Every body this takes is valid JSON that the
 * full parser reads to the same strings. */
static int fast_scan(const char *s, size_t n, const char **at, size_t *len)
{
    const char *p = skip_ws(s, s + n), *e = s + n;
    int obj = p < e && *p == '{';
    if (obj) {
        p = skip_ws(p + 1, e);
        if ((size_t)(e - p) < 8 || memcmp(p, "\"images\"", 8) != 0)
            return 0;
        p = skip_ws(p + 8, e);
        if (p == e || *p != ':')
            return 0;
        p = skip_ws(p + 1, e);
    }
    if (p == e || *p != '[')
        return 0;
    int k = 0;
    for (;;) {
        p = skip_ws(p + 1, e);
        if (p == e || *p != '"' || k == INFER_MAX_IMAGES)
            return 0;
        const char *q = ++p;
        while (p < e && b64_char((unsigned char)*p))
            p++;
        if (p == e || *p != '"')
            return 0;
        at[k] = q;
        len[k++] = (size_t)(p - q);
        p = skip_ws(p + 1, e);
        if (p < e && *p == ',')
            continue;
        if (p == e || *p != ']')
            return 0;
        break;
    }
    p = skip_ws(p + 1, e);
    if (obj) {
        if (p == e || *p != '}')
            return 0;
        p = skip_ws(p + 1, e);
    }
    return p == e ? k : 0;
}

/* The fast path's images into x (n of them): 0, or -1 when one is not 784 finite float32 (the
 * full parser then says which and why). */
static int fast_decode(const char *const *at, const size_t *len, int n, float *x)
{
    for (int i = 0; i < n; i++) {
        float *dst = x + (size_t)i * INFER_INPUT;
        if (b64_decode(at[i], len[i], (unsigned char *)dst, INFER_INPUT * sizeof *dst))
            return -1;
        for (int k = 0; k < INFER_INPUT; k++)
            if (!isfinite(dst[k]))
                return -1;
    }
    return 0;
}

/* Fills *x (malloc'ed for the images the body holds: a request's buffer is its own size, not
 * the 200 KB of the largest, which glibc would mmap and unmap per request) with n images from
 * the parsed body, or sends the 400 and returns its status. */
static int read_images(struct mg_connection *c, json_t *body, float **xp, int *n_out)
{
    json_t *imgs = body;
    if (json_is_object(body)) {
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v)
            if (strcmp(key, "images") != 0)
                return send_error(c, 400, "unknown key \"%.40s\": the body is {\"images\": [...]}", key);
        imgs = json_object_get(body, "images");
    }
    if (!json_is_array(imgs))
        return send_error(c, 400, "the body must be {\"images\": [IMAGE, ...]} or a list of images");
    size_t n = json_array_size(imgs);
    if (n < 1 || n > INFER_MAX_IMAGES)
        return send_error(c, 400, "a request holds 1..%d images, not %zu", INFER_MAX_IMAGES, n);
    float *x = *xp = malloc(n * INFER_INPUT * sizeof *x);
    if (!x)
        return send_error(c, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(imgs, i);
        float *dst = x + i * INFER_INPUT;
        if (json_is_string(im)) {
            unsigned char raw[INFER_INPUT * 4];
            if (b64_decode(json_string_value(im), json_string_length(im), raw, sizeof raw))
                return send_error(c, 400, "images[%zu]: base64 must decode to %d float32 (%d bytes)", i, INFER_INPUT,
                                  INFER_INPUT * 4);
            memcpy(dst, raw, sizeof raw); /* little-endian hosts only, as the engine */
            for (int k = 0; k < INFER_INPUT; k++)
                if (!isfinite(dst[k]))
                    return send_error(c, 400, "images[%zu][%d]: not a finite number", i, k);
            continue;
        }
        if (!json_is_array(im) || json_array_size(im) != INFER_INPUT)
            return send_error(c, 400, "images[%zu]: expected %d numbers (a 28x28 image) or a base64 string", i,
                              INFER_INPUT);
        for (int k = 0; k < INFER_INPUT; k++) {
            json_t *v = json_array_get(im, (size_t)k);
            double d = json_number_value(v);
            if (!json_is_number(v) || !isfinite(d) || fabs(d) > 1e30)
                return send_error(c, 400, "images[%zu][%d]: not a finite number", i, k);
            dst[k] = (float)d;
        }
    }
    *n_out = (int)n;
    return 0;
}

static int predict(struct mg_connection *c, serve_t *s)
{
    const struct mg_request_info *ri = mg_get_request_info(c);
    if (strcmp(ri->request_method, "POST") != 0)
        return send_error(c, 405, "POST a JSON body to /v1/predict");
    if (ri->content_length < 0)
        return send_error(c, 411, "the request needs a Content-Length");
    if (ri->content_length > (long long)MAX_BODY)
        return send_error(c, 413, "the body is %lld bytes; the limit is %u", ri->content_length, MAX_BODY);
    size_t len = (size_t)ri->content_length, got = 0;
    infer_expect(s->q, 1); /* a request on its way: the batcher may wait for it */
    int expecting = 1;
    /* The usual request (one to a few images) needs no heap: the HTTP threads' stacks are 1 MB
     * (web/thread_stack.c) and the batcher reads x while this thread waits for it. */
    enum { SMALL_BODY = 16384, SMALL_IMAGES = 4, SMALL_OUT = 4096 };
    char sbuf[SMALL_BODY], sout[SMALL_OUT];
    float sx[SMALL_IMAGES * INFER_INPUT], sprobs[INFER_MAX_IMAGES * 16];
    char *buf = len < sizeof sbuf ? sbuf : malloc(len + 1);
    float *x = NULL;
    float *probs = s->classes <= 16 ? sprobs : malloc((size_t)INFER_MAX_IMAGES * (size_t)s->classes * sizeof *probs);
    char *out = NULL;
    int status;
    if (!buf || !probs) {
        status = send_error(c, 500, "out of memory");
        goto done;
    }
    while (got < len) {
        int r = mg_read(c, buf + got, len - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got != len) {
        status = send_error(c, 400, "the body ended after %zu of %zu bytes", got, len);
        goto done;
    }
    const char *at[INFER_MAX_IMAGES];
    size_t alen[INFER_MAX_IMAGES];
    int n = fast_scan(buf, len, at, alen);
    if (n > 0) {
        x = n <= SMALL_IMAGES ? sx : malloc((size_t)n * INFER_INPUT * sizeof *x);
        if (!x) {
            status = send_error(c, 500, "out of memory");
            goto done;
        }
        if (fast_decode(at, alen, n, x)) {
            if (x != sx)
                free(x);
            x = NULL;
            n = 0;
        }
    }
    if (n == 0) { /* anything but base64 strings, and every error: the JSON parser */
        json_error_t je;
        json_t *body = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!body) {
            status = send_error(c, 400, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
            goto done;
        }
        status = read_images(c, body, &x, &n);
        json_decref(body);
        if (status)
            goto done;
    }
    err_t e = {0};
    int batch = 0;
    expecting = 0; /* infer_run counts the arrival */
    if (infer_run(s->q, x, n, probs, &batch, &e)) {
        status = send_error(c, 503, "%s", e.msg);
        goto done;
    }
    /* By hand rather than through jansson: 10 numbers an image, %.6g is exact enough. The body
     * goes after HEAD_ROOM bytes, where send_ok_json puts the status line and headers. */
    size_t cap = HEAD_ROOM + 64 + (size_t)n * (48 + 16 * (size_t)s->classes), k = HEAD_ROOM;
    out = cap <= sizeof sout ? sout : malloc(cap);
    if (!out) {
        status = send_error(c, 500, "out of memory");
        goto done;
    }
    k += (size_t)snprintf(out + k, cap - k, "{\"batch_size\":%d,\"predictions\":[", batch);
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * s->classes;
        int best = 0;
        for (int j = 1; j < s->classes; j++)
            best = p[j] > p[best] ? j : best;
        k += (size_t)snprintf(out + k, cap - k, "%s{\"class\":%d,\"probabilities\":[", i ? "," : "", best);
        for (int j = 0; j < s->classes; j++)
            k += (size_t)snprintf(out + k, cap - k, "%s%.6g", j ? "," : "", (double)p[j]);
        k += (size_t)snprintf(out + k, cap - k, "]}");
    }
    k += (size_t)snprintf(out + k, cap - k, "]}");
    status = send_ok_json(c, out, k - HEAD_ROOM);
done:
    if (expecting)
        infer_expect(s->q, -1);
    if (out != sout)
        free(out);
    if (buf != sbuf)
        free(buf);
    if (x != sx)
        free(x);
    if (probs != sprobs)
        free(probs);
    return status;
}

static int handle(struct mg_connection *c, void *ud)
{
    serve_t *s = ud;
    double t0 = mono();
    const struct mg_request_info *ri = mg_get_request_info(c);
    const char *path = ri->local_uri ? ri->local_uri : "";
    if (strcmp(path, "/healthz") == 0) {
        send_body(c, 200, "application/json", "{\"status\":\"ok\"}", 15);
        return 200;
    }
    int status;
    const char *authz = mg_get_header(c, "Authorization");
    const char *ip = ri->remote_addr;
    int wait = web_auth_limited(s->auth, ip);
    if (wait > 0) {
        status = send_error(c, 429, "too many wrong tokens from this address; try again in %d s", wait);
    } else if (!authz || strncasecmp(authz, "Bearer ", 7) != 0) {
        status = send_error(c, 401, "send the access token: Authorization: Bearer TOKEN");
    } else if (web_auth_check_token(s->auth, authz + 7, strlen(authz + 7)) == 0) {
        web_auth_failed(s->auth, ip);
        status = send_error(c, 401, "wrong access token in the Authorization header");
    } else if (strcmp(path, "/v1/predict") == 0) {
        status = predict(c, s);
    } else if (strcmp(path, "/metrics") == 0) {
        char *text = infer_metrics_text(s->q);
        status = text ? send_body(c, 200, "text/plain; version=0.0.4", text, strlen(text))
                      : send_error(c, 500, "out of memory");
        free(text);
        return status; /* scrapes are not prediction requests */
    } else {
        status = send_error(c, 404, "no such endpoint; POST /v1/predict, GET /metrics or /healthz");
    }
    infer_note_response(s->q, status, mono() - t0);
    return status;
}

static char g_start_log[256];

static int on_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    if (message && !g_start_log[0])
        snprintf(g_start_log, sizeof g_start_log, "%s", message);
    return 1;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"http", required_argument, 0, 'p'},      {"host", required_argument, 0, 'H'},
                                         {"max-batch", required_argument, 0, 'b'}, {"max-wait-ms", required_argument, 0, 'w'},
                                         {"workers", required_argument, 0, 'W'},   {"state-dir", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int port = -1, max_batch = 32, workers = 64, c;
    double max_wait_ms = 5;
    const char *host = "127.0.0.1", *state = NULL;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'p':
            if (cli_parse_int(optarg, 0, 65535, &port))
                return cli_usage_error("serve", "--http: expected a port in 0..65535");
            break;
        case 'H': host = optarg; break;
        case 'b':
            if (cli_parse_int(optarg, 1, 1024, &max_batch))
                return cli_usage_error("serve", "--max-batch: expected an integer in 1..1024");
            break;
        case 'w':
            max_wait_ms = strtod(optarg, &end);
            if (!*optarg || *end || !(max_wait_ms >= 0 && max_wait_ms <= 1000))
                return cli_usage_error("serve", "--max-wait-ms: expected milliseconds in 0..1000");
            break;
        case 'W':
            if (cli_parse_int(optarg, 2, 512, &workers))
                return cli_usage_error("serve", "--workers: expected an integer in 2..512");
            break;
        case 's': state = optarg; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("serve", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("serve", "expected one MODEL");
    if (port < 0)
        return cli_usage_error("serve", "--http PORT is required");
    const char *model = argv[optind];
    if (strlen(host) > 64 || strspn(host, "0123456789.:abcdefABCDEF") != strlen(host))
        return cli_usage_error("serve", "--host: expected a numeric IP address such as 127.0.0.1");

    err_t err = {0};
    engine_model_t *m = NULL;
    const int int8 = cli_model_is_int8(model); /* a quantized file: its int8 plans serve */
    if (cli_load_model(model, &m, &err))
        return cli_fail(&err);
    char dir[PATH_MAX], tlsdir[PATH_MAX + 8], pem[PATH_MAX + 32];
    struct stat sb;
    if (state) {
        snprintf(dir, sizeof dir, "%s", state);
    } else if (stat(model, &sb) == 0 && strrchr(model, '/')) {
        snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(model, '/') - model), model);
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    snprintf(tlsdir, sizeof tlsdir, "%s/tls", dir);
    serve_t s = {.classes = engine_model_num_classes(m)};
    int rc = tls_ensure_self_signed(tlsdir, pem, sizeof pem, &err);
    if (rc == 0) {
        const char *tok = getenv("FEDNAS_SERVE_TOKEN");
        rc = web_auth_create(tok && tok[0] ? tok : NULL, NULL, &s.auth, &err);
    }
    if (rc == 0)
        rc = infer_start(m, max_batch, max_wait_ms / 1000.0, int8 ? model : NULL, &s.q, &err);
    else
        engine_model_free(m);
    if (rc) {
        web_auth_free(s.auth);
        return cli_fail(&err);
    }
    if (web_lib_acquire(1, &err)) {
        infer_stop(s.q);
        web_auth_free(s.auth);
        return cli_fail(&err);
    }
    char ports[96], threads[16];
    snprintf(ports, sizeof ports, "%s:%ds", host, port);
    snprintf(threads, sizeof threads, "%d", workers);
    /* One worker per kept-alive connection: a worker waits in the batcher while its request
     * shares a pass, so concurrency is bounded by --workers. */
    const char *options[] = {"listening_ports", ports, "num_threads", threads, "request_timeout_ms", "10000",
                             "enable_keep_alive", "yes", "keep_alive_timeout_ms", "10000", "tcp_nodelay", "1",
                             "ssl_certificate", pem, "ssl_protocol_version", "4", NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = on_log;
    struct mg_init_data init = {.callbacks = &cb, .user_data = &s, .configuration_options = options};
    char start_err[256] = "";
    unsigned code = 0;
    struct mg_error_data ed = {.code = &code, .text = start_err, .text_buffer_size = sizeof start_err};
    web_stack_raise(1); /* civetweb makes its threads here; OpenBLAS's TLS needs bigger stacks */
    struct mg_context *ctx = mg_start2(&init, &ed);
    web_stack_raise(0);
    struct mg_server_port sp[2];
    if (!ctx || mg_get_server_ports(ctx, 2, sp) < 1) {
        fprintf(stderr, "fednas: error: cannot serve HTTPS on %s:%d: %s\n", host, port,
                g_start_log[0] ? g_start_log : start_err[0] ? start_err : "civetweb failed to start");
        if (ctx)
            mg_stop(ctx);
        web_lib_release();
        infer_stop(s.q);
        web_auth_free(s.auth);
        return EXIT_FAILED;
    }
    mg_set_request_handler(ctx, "/", handle, &s);
    cli_install_signals();
    printf("serving %s%s on https://%s:%d/v1/predict (max batch %d, max wait %g ms, %d workers)\n", model,
           int8 ? " (int8)" : "", host, sp[0].port, max_batch, max_wait_ms, workers);
    printf("token: %s\n", web_auth_token(s.auth, 2));
    fflush(stdout);
    while (!cli_stop)
        usleep(100 * 1000);
    mg_stop(ctx);
    web_lib_release();
    infer_stop(s.q);
    web_auth_free(s.auth);
    return EXIT_OK;
}
