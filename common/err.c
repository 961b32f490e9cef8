#include "common/err.h"

#include <stdarg.h>
#include <string.h>

int err_set(err_t *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    /* Through a copy: callers may pass e->msg itself as an argument (re-coding an error). */
    char msg[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(e->msg, msg, sizeof msg);
    e->code = code;
    return code;
}

int err_wrap(err_t *e, const char *fmt, ...)
{
    if (!e)
        return FN_EINVAL;
    char prefix[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s%s", prefix, old);
    return e->code;
}

void *fn_malloc_check(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "fednas: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
        abort();
    }
    return p;
}

void *fn_calloc_check(size_t count, size_t n, const char *file, int line)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "fednas: out of memory allocating %zu x %zu bytes at %s:%d\n", count, n, file,
                line);
        abort();
    }
    return p;
}
