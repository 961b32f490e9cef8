/* fuzz_http_params: the REST API's parameter parsing (web/api.c): web_parse_u64, which reads
 * every {id} path segment and every "since" value, checked against an independent reference, and
 * the query-string handling the handlers run (civetweb's mg_get_var with the handlers' own
 * buffer sizes, then web_parse_u64 or the metric-name rule). The route matcher, the token
 * stripper and the Host check of web/web.c are static there and reachable only through a running
 * server; see tests/fuzz/README.md.
 *
 * Input: byte 0 picks the limit (INT_MAX, INT64_MAX, 9, 10, 99, or the next 8 bytes), the rest
 * is parsed both as a number and as a query string. */
#include <civetweb.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web/web_internal.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http_params: %s\n", what);
    abort();
}

/* The reference: digits only, at least one, value <= max (computed in 128 bits). */
static int reference_u64(const char *s, size_t n, long long max, long long *out)
{
    if (n == 0)
        return -1;
    unsigned __int128 v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > (unsigned __int128)max)
            return -1;
    }
    *out = (long long)v;
    return 0;
}

static void check_u64(const char *s, size_t n, long long max)
{
    long long a = -1, b = -2;
    int ra = web_parse_u64(s, n, max, &a), rb = reference_u64(s, n, max, &b);
    if (ra != rb || (ra == 0 && a != b))
        die("web_parse_u64 disagrees with the reference");
}

/* What web_api_rounds / web_api_metrics do with their query. */
static void check_query(const char *q, long long max)
{
    size_t ql = strlen(q);
    char since[24], name[80], tok[80];
    int n = mg_get_var(q, ql, "since", since, sizeof since);
    if (n >= (int)sizeof since)
        die("mg_get_var overran its buffer");
    if (n >= 0) {
        if (since[n] != '\0')
            die("mg_get_var left its value unterminated");
        check_u64(since, (size_t)n, max);
    }
    n = mg_get_var(q, ql, "name", name, sizeof name);
    if (n >= (int)sizeof name || (n >= 0 && name[n] != '\0'))
        die("mg_get_var returned a bad name");
    n = mg_get_var(q, ql, "token", tok, sizeof tok);
    if (n >= (int)sizeof tok || (n >= 0 && tok[n] != '\0'))
        die("mg_get_var returned a bad token");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const long long limits[] = {INT_MAX, INT64_MAX, 9, 10, 99};
    long long max;
    size_t skip = 1;
    if (data[0] % 6 < 5) {
        max = limits[data[0] % 6];
    } else {
        unsigned long long u = 0;
        for (size_t i = 1; i < 9 && i < size; i++)
            u = u << 8 | data[i];
        max = (long long)(u & (unsigned long long)INT64_MAX);
        skip = size < 9 ? size : 9;
    }
    /* Exactly sized copies, so ASan catches a read past the declared length. */
    size_t n = size - skip;
    char *s = malloc(n ? n : 1);
    memcpy(s, data + skip, n);
    check_u64(n ? s : NULL, n, max);
    check_u64(s, n, max);
    char *q = malloc(n + 1);
    memcpy(q, data + skip, n);
    q[n] = '\0';
    check_query(q, max);
    free(q);
    free(s);
    return 0;
}
