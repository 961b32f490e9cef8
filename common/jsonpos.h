/* jsonpos: finds where a value sits in JSON text, so that errors found after parsing
 * (a count that must be >= 1, an unknown key) can name the file, line and column.
 * Paths read like "clients.count", "model.hidden[0]"; the text must already be valid JSON. */
#ifndef FEDNAS_COMMON_JSONPOS_H
#define FEDNAS_COMMON_JSONPOS_H

/* Finds the value at path (or, with key_pos, the key naming it) in text. Returns 0 and 1-based
 * line and column, or -1 when the path is not present (then line/col are those of the root). */
int jsonpos_locate(const char *text, const char *path, int key_pos, int *line, int *col);

#endif
