/* jsonpos: finds where a value sits in JSON text, so that errors found after parsing
 * (a count that must be >= 1, an unknown key) can name the file, line and column.
 * Paths read like "clients.count", "model.hidden[0]"; the text must already be valid JSON. */
#ifndef FEDNAS_COMMON_JSONPOS_H
#define FEDNAS_COMMON_JSONPOS_H

#include <jansson.h>

#include "common/err.h"

/* Finds the value at path (or, with key_pos, the key naming it) in text. Returns 0 and 1-based
 * line and column, or -1 when the path is not present (then line/col are those of the root). */
int jsonpos_locate(const char *text, const char *path, int key_pos, int *line, int *col);

/* FN_EINVAL with "SOURCE:LINE:COL: PATH: MESSAGE", the position of path (or of its key, with
 * key_pos) in text: the one error format of every config reader (experiments, "nas" blocks,
 * recipes). text may be NULL (then 1:1); an empty path reads "(top level)". */
int jsonpos_fail(err_t *err, const char *source, const char *text, const char *path, int key_pos, const char *fmt,
                 ...) __attribute__((format(printf, 6, 7)));

/* Every object is checked against the keys it may hold, so a typo ("round" for "rounds") is an
 * error naming the key (at path.key) and listing the valid ones, not a silently ignored
 * setting. allowed is NULL-terminated. */
int jsonpos_check_keys(err_t *err, const char *source, const char *text, const json_t *obj, const char *path,
                       const char *const *allowed);

#endif
