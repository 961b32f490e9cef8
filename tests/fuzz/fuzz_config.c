/* fuzz_config: the experiment loader (config_load_string) and the error locator it uses
 * (jsonpos_locate) on arbitrary text. Checked:
 *   - a refused config is FN_EINVAL with a message "SOURCE:LINE:COL: ..." (DESIGN.md: errors
 *     name the file, line and column), and nothing is returned;
 *   - a loaded config has its root, text and the counts validation promises;
 *   - for text that is valid JSON without escapes, every path made of the document's own keys
 *     and indices is found by jsonpos_locate, at a character that starts that value (or, asked
 *     for the key, at the key's opening quote). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/jsonpos.h"

#define MAX_PATHS 64

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* The byte at 1-based (line, col), counting columns as jsonpos does (UTF-8 characters). */
static const char *at(const char *text, int line, int col)
{
    int l = 1, c = 1;
    for (const char *p = text; *p; p++) {
        if (l == line && c == col && (*p & 0xC0) != 0x80)
            return p;
        if (*p == '\n')
            l++, c = 1;
        else if ((*p & 0xC0) != 0x80)
            c++;
    }
    return NULL;
}

static int simple_key(const char *k)
{
    if (!*k || strlen(k) > 40)
        return 0;
    for (; *k; k++)
        if (!isalnum((unsigned char)*k) && *k != '_')
            return 0;
    return 1;
}

static void check_path(const char *text, const char *path, const json_t *v)
{
    int line = 0, col = 0;
    if (jsonpos_locate(text, path, 0, &line, &col) != 0)
        die("jsonpos_locate missed a path that exists", path);
    const char *p = at(text, line, col);
    if (!p)
        die("jsonpos_locate gave a position outside the text", path);
    static const char starts[] = {[JSON_OBJECT] = '{', [JSON_ARRAY] = '[', [JSON_STRING] = '"',
                                  [JSON_TRUE] = 't', [JSON_FALSE] = 'f', [JSON_NULL] = 'n'};
    json_type t = json_typeof(v);
    if (t == JSON_INTEGER || t == JSON_REAL) {
        if (*p != '-' && !isdigit((unsigned char)*p))
            die("jsonpos_locate points elsewhere than a number", path);
    } else if (*p != starts[t]) {
        die("jsonpos_locate points elsewhere than the value", path);
    }
    if (path[0] && path[strlen(path) - 1] != ']') {
        if (jsonpos_locate(text, path, 1, &line, &col) != 0 || !(p = at(text, line, col)) || *p != '"')
            die("jsonpos_locate (key) does not point at the key", path);
    }
}

static void walk(const char *text, const json_t *v, char *path, size_t len, int *budget)
{
    if ((*budget)-- <= 0)
        return;
    check_path(text, path, v);
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
        {
            if (!simple_key(key) || len + strlen(key) + 2 >= 256)
                continue;
            snprintf(path + len, 256 - len, "%s%s", len ? "." : "", key);
            walk(text, child, path, strlen(path), budget);
            path[len] = '\0';
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && len + 24 < 256; i++) {
            snprintf(path + len, 256 - len, "[%zu]", i);
            walk(text, json_array_get(v, i), path, strlen(path), budget);
            path[len] = '\0';
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    config_t *c = NULL;
    err_t e = {0};
    int rc = config_load_string(text, "fuzz.json", &c, &e);
    if (rc == 0) {
        if (!c || !c->root || !c->text || c->rounds < 1 || c->clients.count < 1 || c->train.batch_size < 1)
            die("a loaded config breaks what validation promises", NULL);
        config_free(c);
    } else {
        if (c)
            die("a refused config was returned", NULL);
        if (rc != FN_EINVAL || strncmp(e.msg, "fuzz.json:", 10) != 0)
            die("an error that does not name the file, line and column", e.msg);
    }

    /* jsonpos on valid JSON; escapes are left out because jsonpos reads keys unescaped. */
    json_error_t je;
    json_t *root = strchr(text, '\\') ? NULL : json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (root) {
        char path[256] = "";
        int budget = MAX_PATHS;
        walk(text, root, path, 0, &budget);
        json_decref(root);
    }
    free(text);
    return 0;
}
