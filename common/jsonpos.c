#include "common/jsonpos.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A scanner that walks valid JSON once, keeping the path of the current value; when the path
 * equals the one asked for, it records where that value (or its key) starts. */
typedef struct {
    const char *p;
    int line, col;
    const char *want;
    int key_pos;
    int found, fline, fcol;
    int opaque;                 /* inside a key holding '.', '[' or ']': its path text is ambiguous */
    int loose, lline, lcol;     /* the first match through such a key, used only when no other */
    char path[512];
} scan_t;

static void adv(scan_t *s)
{
    if (*s->p == '\n') {
        s->line++;
        s->col = 1;
    } else if ((*s->p & 0xC0) != 0x80) { /* count characters, not UTF-8 continuation bytes */
        s->col++;
    }
    s->p++;
}

static void ws(scan_t *s)
{
    while (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')
        adv(s);
}

/* Reads a string token; copies its (unescaped enough for keys) content into out. */
static void str(scan_t *s, char *out, size_t cap)
{
    size_t n = 0;
    adv(s); /* opening quote */
    while (*s->p && *s->p != '"') {
        char c = *s->p;
        if (c == '\\') {
            adv(s);
            c = *s->p;
        }
        if (out && n + 1 < cap)
            out[n++] = c;
        if (*s->p)
            adv(s);
    }
    if (*s->p)
        adv(s);
    if (out)
        out[n] = '\0';
}

/* A path is made of keys joined by '.' and indices "[i]", so a key holding one of those is read
 * two ways ({"a.b": 1} and {"a": {"b": 1}} both give "a.b"): a match through such a key counts
 * only when the path has no plain match. */
static void check(scan_t *s, int line, int col)
{
    if (s->found || strcmp(s->path, s->want) != 0)
        return;
    if (!s->opaque) {
        s->found = 1;
        s->fline = line;
        s->fcol = col;
    } else if (!s->loose) {
        s->loose = 1;
        s->lline = line;
        s->lcol = col;
    }
}

static void value(scan_t *s, int key_line, int key_col)
{
    ws(s);
    if (s->key_pos && key_line > 0)
        check(s, key_line, key_col);
    else
        check(s, s->line, s->col);
    size_t base = strlen(s->path);
    if (*s->p == '{') {
        adv(s);
        ws(s);
        while (*s->p && *s->p != '}') {
            int kl = s->line, kc = s->col;
            char key[256];
            str(s, key, sizeof key);
            ws(s);
            if (*s->p == ':')
                adv(s);
            snprintf(s->path + base, sizeof s->path - base, "%s%s", base ? "." : "", key);
            int special = strpbrk(key, ".[]") != NULL;
            s->opaque += special;
            value(s, kl, kc);
            s->opaque -= special;
            s->path[base] = '\0';
            ws(s);
            if (*s->p == ',') {
                adv(s);
                ws(s);
            }
        }
        if (*s->p)
            adv(s);
    } else if (*s->p == '[') {
        adv(s);
        ws(s);
        for (int i = 0; *s->p && *s->p != ']'; i++) {
            snprintf(s->path + base, sizeof s->path - base, "[%d]", i);
            value(s, 0, 0);
            s->path[base] = '\0';
            ws(s);
            if (*s->p == ',') {
                adv(s);
                ws(s);
            }
        }
        if (*s->p)
            adv(s);
    } else if (*s->p == '"') {
        str(s, NULL, 0);
    } else {
        while (*s->p && !strchr(",}] \t\r\n", *s->p))
            adv(s);
    }
}

int jsonpos_locate(const char *text, const char *path, int key_pos, int *line, int *col)
{
    scan_t s = {.p = text, .line = 1, .col = 1, .want = path ? path : "", .key_pos = key_pos};
    ws(&s);
    int root_line = s.line, root_col = s.col;
    value(&s, 0, 0);
    if (!s.found && s.loose) {
        s.found = 1;
        s.fline = s.lline;
        s.fcol = s.lcol;
    }
    *line = s.found ? s.fline : root_line;
    *col = s.found ? s.fcol : root_col;
    return s.found ? 0 : -1;
}

int jsonpos_fail(err_t *err, const char *source, const char *text, const char *path, int key_pos, const char *fmt,
                 ...)
{
    int line = 1, col = 1;
    if (text)
        jsonpos_locate(text, path, key_pos, &line, &col);
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(err, FN_EINVAL, "%s:%d:%d: %s: %s", source ? source : "(config)", line, col,
                   path[0] ? path : "(top level)", msg);
}

int jsonpos_check_keys(err_t *err, const char *source, const char *text, const json_t *obj, const char *path,
                       const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char full[256], list[512] = "";
            snprintf(full, sizeof full, "%s%s%s", path, path[0] ? "." : "", key);
            for (int i = 0; allowed[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, allowed[i], sizeof list - strlen(list) - 1);
            }
            return jsonpos_fail(err, source, text, full, 1, "unknown key (expected one of: %s)", list);
        }
    }
    return 0;
}
