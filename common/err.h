/* err: the error convention of every fednas module.
 * Functions return 0 on success or a negative FN_E* code, and fill a caller-owned err_t
 * with a message that says what went wrong, where, and how to fix it. */
#ifndef FEDNAS_COMMON_ERR_H
#define FEDNAS_COMMON_ERR_H

#include <stdio.h>
#include <stdlib.h>

enum {
    FN_OK = 0,
    FN_EINVAL = -1,     /* bad input: config, arguments, file contents */
    FN_EIO = -2,        /* a file or socket operation failed */
    FN_ENOMEM = -3,
    FN_ENOTFOUND = -4,  /* a file, row or peer that should exist does not */
    FN_EPROTO = -5,     /* a malformed or unexpected wire message */
    FN_ETIMEOUT = -6,
    FN_EADDRINUSE = -7, /* a port is taken */
    FN_ESTATE = -8,     /* an operation not valid in the current state */
    FN_EAUTH = -9,      /* refused by the peer's authentication */
};

typedef struct err {
    int code;
    char msg[1024];
} err_t;

/* Sets e (if not NULL) and returns code, so callers can write `return err_set(e, ...)`. The
 * arguments may include e->msg (formatted through a copy). */
int err_set(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends context ("loading model: ") to an existing message; returns e->code. */
int err_wrap(err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For conditions that cannot happen unless fednas itself is wrong (never for bad input). */
#define FN_CHECK(cond)                                                                     \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fednas: internal error at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* malloc that aborts with file and line on exhaustion (as llm.c's mallocCheck). */
void *fn_malloc_check(size_t n, const char *file, int line);
void *fn_calloc_check(size_t count, size_t n, const char *file, int line);
#define FN_MALLOC(n) fn_malloc_check((n), __FILE__, __LINE__)
#define FN_CALLOC(c, n) fn_calloc_check((c), (n), __FILE__, __LINE__)

#endif
