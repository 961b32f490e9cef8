/* util: small helpers shared by every module: wall-clock time, files and directories,
 * free TCP ports for tests, parsing of numbers with range checks. */
#ifndef FEDNAS_COMMON_UTIL_H
#define FEDNAS_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Seconds since the epoch, with sub-millisecond resolution. */
double fn_now(void);
/* Monotonic seconds, for durations and deadlines. */
double fn_mono(void);
/* mkdir -p with the given mode for newly created directories. */
int fn_mkdirs(const char *path, int mode, err_t *err);
/* Reads a whole file into a NUL-terminated malloc'ed buffer. */
int fn_read_file(const char *path, char **data, size_t *len, err_t *err);
/* Writes data to path atomically (temp file + rename) with the given mode (e.g. 0600); the
 * temporary file is created O_EXCL | O_NOFOLLOW, 0600 until written. */
int fn_write_file(const char *path, const void *data, size_t len, int mode, err_t *err);
/* Parses a whole string as a base-10 integer in [lo, hi]. */
int fn_parse_int(const char *s, long lo, long hi, long *out);
/* Absolute path of the running executable (for spawning sub-commands). */
int fn_self_exe(char *buf, size_t len, err_t *err);
/* Raises this process's soft limit on open files to its hard limit (a server with a thousand
 * sites, or a worker simulating them, needs a few descriptors each; many systems start at 1024).
 * Returns the soft limit now in force, or -1 when it cannot be read. */
long fn_raise_open_files(void);
/* qsort/bsearch comparator for uint32_t in ascending order (ids, indices). */
int fn_cmp_u32(const void *a, const void *b);

#endif
