#include "nas/config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/jsonpos.h"

static const char *const macro_names[NAS_MACRO_OP_COUNT] = {"conv3x3",    "conv5x5",    "sepconv3x3", "sepconv5x5",
                                                            "dilconv3x3", "maxpool3x3", "avgpool3x3", "identity"};
static const char *const edge_names[NAS_EDGE_OP_COUNT] = {"none", "skip", "conv1x1", "conv3x3", "avgpool3x3"};
static const char *const strategy_names[] = {"random", "evolution", "nsga2", "asha", NULL};
static const char *const objective_names[] = {"val_acc", "params", "flops", "latency", NULL};

const char *nas_macro_op_name(nas_macro_op_t op) { return (unsigned)op < NAS_MACRO_OP_COUNT ? macro_names[op] : NULL; }
const char *nas_edge_op_name(nas_edge_op_t op) { return (unsigned)op < NAS_EDGE_OP_COUNT ? edge_names[op] : NULL; }
const char *nas_strategy_name(nas_strategy_kind_t k) { return (unsigned)k < 4 ? strategy_names[k] : NULL; }
const char *nas_objective_name(nas_objective_t o) { return (unsigned)o < NAS_OBJ_COUNT ? objective_names[o] : NULL; }

static int lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}
int nas_macro_op_from_name(const char *s) { return lookup(macro_names, NAS_MACRO_OP_COUNT, s); }
int nas_edge_op_from_name(const char *s) { return lookup(edge_names, NAS_EDGE_OP_COUNT, s); }

/* ---- positioned errors: the same "FILE:LINE:COL: path: message" as common/config.c ---- */

typedef struct {
    const char *source, *text;
    err_t *err;
} ctx_t;

#define fail_at(c, path, key_pos, ...) jsonpos_fail((c)->err, (c)->source, (c)->text, path, key_pos, __VA_ARGS__)

static void join(char *out, size_t cap, const char *path, const char *key)
{
    snprintf(out, cap, "%s%s%s", path, path[0] ? "." : "", key);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int check_keys(const ctx_t *c, const json_t *obj, const char *path, const char *const *allowed)
{
    return jsonpos_check_keys(c->err, c->source, c->text, obj, path, allowed);
}

static int get_int(const ctx_t *c, const json_t *obj, const char *path, const char *key, long long def, long long lo,
                   long long hi, int *out)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        if (json_is_integer(v))
            return fail_at(c, full, 0, "expected an integer in [%lld, %lld] (got %lld)", lo, hi,
                           (long long)json_integer_value(v));
        return fail_at(c, full, 0, "expected an integer in [%lld, %lld] (got %s)", lo, hi, type_name(v));
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(const ctx_t *c, const json_t *obj, const char *path, const char *key, double def, double lo,
                   double hi, int lo_open, double *out)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v) || !isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo)) {
        if (!json_is_number(v))
            return fail_at(c, full, 0, "expected a number %s %g and <= %g (got %s)", lo_open ? ">" : ">=", lo, hi,
                           type_name(v));
        return fail_at(c, full, 0, "expected a number %s %g and <= %g (got %g)", lo_open ? ">" : ">=", lo, hi, x);
    }
    *out = x;
    return 0;
}

/* A string from a fixed list: returns its index in choices. */
static int get_choice(const ctx_t *c, const json_t *obj, const char *path, const char *key, int required, int def,
                      const char *const *choices, int *out)
{
    char full[256], list[256] = "";
    join(full, sizeof full, path, key);
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return fail_at(c, path, 0, "missing required key \"%s\" (one of: %s)", key, list);
        *out = def;
        return 0;
    }
    for (int i = 0; json_is_string(v) && choices[i]; i++)
        if (strcmp(json_string_value(v), choices[i]) == 0) {
            *out = i;
            return 0;
        }
    if (json_is_string(v))
        return fail_at(c, full, 0, "expected one of: %s (got \"%s\")", list, json_string_value(v));
    return fail_at(c, full, 0, "expected one of: %s (got %s)", list, type_name(v));
}

/* A non-empty array of distinct integers in [lo, hi], at most NAS_MAX_CHOICES. */
static int get_int_list(const ctx_t *c, const json_t *obj, const char *path, const char *key, int def, int lo, int hi,
                        int *vals, int *n)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        vals[0] = def;
        *n = 1;
        return 0;
    }
    size_t cnt = json_is_array(v) ? json_array_size(v) : 0;
    if (cnt == 0 || cnt > NAS_MAX_CHOICES)
        return fail_at(c, full, 0, "expected a non-empty array of at most %d integers in [%d, %d]", NAS_MAX_CHOICES,
                       lo, hi);
    for (size_t i = 0; i < cnt; i++) {
        const json_t *e = json_array_get(v, i);
        char ep[280];
        snprintf(ep, sizeof ep, "%s[%zu]", full, i);
        if (!json_is_integer(e) || json_integer_value(e) < lo || json_integer_value(e) > hi)
            return fail_at(c, ep, 0, "expected an integer in [%d, %d]", lo, hi);
        vals[i] = (int)json_integer_value(e);
        for (size_t k = 0; k < i; k++)
            if (vals[k] == vals[i])
                return fail_at(c, ep, 0, "%d appears twice in the list", vals[i]);
    }
    *n = (int)cnt;
    return 0;
}

/* A non-empty array of distinct names from names[0..count). */
static int get_name_list(const ctx_t *c, const json_t *obj, const char *path, const char *key,
                         const char *const *names, int count, int *vals, int *n)
{
    char full[256], list[256] = "";
    join(full, sizeof full, path, key);
    for (int i = 0; i < count; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        for (int i = 0; i < count; i++)
            vals[i] = i;
        *n = count;
        return 0;
    }
    size_t cnt = json_is_array(v) ? json_array_size(v) : 0;
    if (cnt == 0 || cnt > (size_t)count)
        return fail_at(c, full, 0, "expected a non-empty array of distinct names from: %s", list);
    for (size_t i = 0; i < cnt; i++) {
        const json_t *e = json_array_get(v, i);
        char ep[280];
        snprintf(ep, sizeof ep, "%s[%zu]", full, i);
        int k = json_is_string(e) ? lookup(names, count, json_string_value(e)) : -1;
        if (k < 0)
            return fail_at(c, ep, 0, "expected one of: %s", list);
        for (size_t j = 0; j < i; j++)
            if (vals[j] == k)
                return fail_at(c, ep, 0, "\"%s\" appears twice in the list", names[k]);
        vals[i] = k;
    }
    *n = (int)cnt;
    return 0;
}

#define TRY(x)          \
    do {                \
        int rc_ = (x);  \
        if (rc_ < 0)    \
            return rc_; \
    } while (0)

/* Reductions halve the image (floor) and must leave it at least 1x1; a 2x2 pool needs 2x2. */
static int max_reductions(int h, int w)
{
    int k = 0;
    while (h >= 2 && w >= 2) {
        h /= 2;
        w /= 2;
        k++;
    }
    return k;
}

static int parse_space(const ctx_t *c, const json_t *sp, const char *path, nas_space_t *s)
{
    static const char *const kinds[] = {"macro", "cell", NULL};
    int kind;
    TRY(get_choice(c, sp, path, "type", 1, 0, kinds, &kind));
    s->kind = (nas_space_kind_t)kind;
    s->in_c = 1;
    s->in_h = s->in_w = 28;
    s->classes = 10;
    char full[256];
    if (s->kind == NAS_SPACE_MACRO) {
        static const char *const keys[] = {"type", "layers", "ops", "widths", "batchnorm", "reductions", NULL};
        TRY(check_keys(c, sp, path, keys));
        TRY(get_int(c, sp, path, "layers", 6, 1, NAS_MAX_LAYERS, &s->layers));
        int ops[NAS_MACRO_OP_COUNT];
        TRY(get_name_list(c, sp, path, "ops", macro_names, NAS_MACRO_OP_COUNT, ops, &s->nops));
        for (int i = 0; i < s->nops; i++)
            s->ops[i] = (nas_macro_op_t)ops[i];
        TRY(get_int_list(c, sp, path, "widths", 16, 1, 4096, s->widths, &s->nwidths));
        const json_t *bn = json_object_get(sp, "batchnorm");
        join(full, sizeof full, path, "batchnorm");
        if (!bn || json_is_true(bn))
            s->batchnorm = NAS_BN_ON;
        else if (json_is_false(bn))
            s->batchnorm = NAS_BN_OFF;
        else if (json_is_string(bn) && strcmp(json_string_value(bn), "search") == 0)
            s->batchnorm = NAS_BN_SEARCH;
        else
            return fail_at(c, full, 0, "expected true, false or \"search\" (got %s)", type_name(bn));
        int maxr = max_reductions(s->in_h, s->in_w);
        TRY(get_int(c, sp, path, "reductions", 2, 0, s->layers < maxr ? s->layers : maxr, &s->reductions));
        int has_nonid = 0;
        for (int i = 0; i < s->nops; i++)
            has_nonid |= s->ops[i] != NAS_OP_IDENTITY;
        join(full, sizeof full, path, "ops");
        if (!has_nonid)
            return fail_at(c, full, 0, "expected at least one operation besides \"identity\"");
    } else {
        static const char *const keys[] = {"type", "ops", "widths", "cells_per_stage", "stages", NULL};
        TRY(check_keys(c, sp, path, keys));
        int ops[NAS_EDGE_OP_COUNT];
        TRY(get_name_list(c, sp, path, "ops", edge_names, NAS_EDGE_OP_COUNT, ops, &s->nedge_ops));
        int has_edge = 0;
        for (int i = 0; i < s->nedge_ops; i++) {
            s->edge_ops[i] = (nas_edge_op_t)ops[i];
            has_edge |= ops[i] != NAS_EDGE_NONE;
        }
        join(full, sizeof full, path, "ops");
        if (!has_edge)
            return fail_at(c, full, 0, "expected at least one operation besides \"none\" (a cell needs a path)");
        TRY(get_int_list(c, sp, path, "widths", 16, 1, 4096, s->widths, &s->nwidths));
        TRY(get_int_list(c, sp, path, "cells_per_stage", 5, 1, 32, s->cells, &s->ncells));
        int maxr = max_reductions(s->in_h, s->in_w);
        TRY(get_int(c, sp, path, "stages", 3, 1, maxr + 1 < 6 ? maxr + 1 : 6, &s->stages));
    }
    return 0;
}

static int parse_strategy(const ctx_t *c, const json_t *st, const char *path, nas_config_t *cfg)
{
    int kind;
    TRY(get_choice(c, st, path, "name", 1, 0, strategy_names, &kind));
    cfg->strategy.kind = (nas_strategy_kind_t)kind;
    char full[256];
    switch (cfg->strategy.kind) {
    case NAS_STRATEGY_RANDOM: {
        static const char *const keys[] = {"name", NULL};
        return check_keys(c, st, path, keys);
    }
    case NAS_STRATEGY_EVOLUTION: {
        static const char *const keys[] = {"name", "population", "sample", NULL};
        TRY(check_keys(c, st, path, keys));
        TRY(get_int(c, st, path, "population", 20, 2, NAS_MAX_POPULATION, &cfg->strategy.population));
        TRY(get_int(c, st, path, "sample", 5, 1, cfg->strategy.population, &cfg->strategy.sample));
        return 0;
    }
    case NAS_STRATEGY_NSGA2: {
        static const char *const keys[] = {"name", "mu", "lambda", "objectives", "crossover", NULL};
        TRY(check_keys(c, st, path, keys));
        TRY(get_int(c, st, path, "mu", 20, 2, NAS_MAX_POPULATION, &cfg->strategy.mu));
        TRY(get_int(c, st, path, "lambda", cfg->strategy.mu, 1, NAS_MAX_POPULATION, &cfg->strategy.lambda));
        TRY(get_num(c, st, path, "crossover", 0.0, 0, 1, 0, &cfg->strategy.crossover));
        const json_t *ob = json_object_get(st, "objectives");
        if (!ob) {
            cfg->strategy.nobjectives = 2;
            cfg->strategy.objectives[0] = NAS_OBJ_VAL_ACC;
            cfg->strategy.objectives[1] = NAS_OBJ_PARAMS;
            return 0;
        }
        int vals[NAS_OBJ_COUNT];
        TRY(get_name_list(c, st, path, "objectives", objective_names, NAS_OBJ_COUNT, vals,
                          &cfg->strategy.nobjectives));
        join(full, sizeof full, path, "objectives");
        if (cfg->strategy.nobjectives < 2)
            return fail_at(c, full, 0, "expected at least two objectives (one is plain evolution)");
        for (int i = 0; i < cfg->strategy.nobjectives; i++)
            cfg->strategy.objectives[i] = (nas_objective_t)vals[i];
        return 0;
    }
    case NAS_STRATEGY_ASHA: {
        static const char *const keys[] = {"name", "r", "eta", "max_epochs", NULL};
        TRY(check_keys(c, st, path, keys));
        TRY(get_num(c, st, path, "r", 1, 0, 10000, 1, &cfg->strategy.r));
        TRY(get_int(c, st, path, "eta", 3, 2, 100, &cfg->strategy.eta));
        TRY(get_num(c, st, path, "max_epochs", cfg->strategy.r * cfg->strategy.eta * cfg->strategy.eta,
                    cfg->strategy.r, 100000, 0, &cfg->strategy.max_epochs));
        return 0;
    }
    }
    return 0;
}

int nas_config_parse(const json_t *nas_block, const char *source, const char *text, const char *prefix,
                     uint64_t default_seed, nas_config_t *out, err_t *err)
{
    ctx_t c = {source, text, err};
    const char *p = prefix ? prefix : "";
    char path[256];
    memset(out, 0, sizeof *out);
    if (!json_is_object(nas_block))
        return fail_at(&c, p[0] ? p : "(top level)", 0, "expected an object (got %s)",
                       nas_block ? type_name(nas_block) : "nothing");
    static const char *const keys[] = {"space",    "strategy", "budget",         "epochs",     "workers",
                                       "retries",  "seed",     "top_k",          "retrain_epochs", "batch_size",
                                       "lr",       "evaluation", "device",       NULL};
    TRY(check_keys(&c, nas_block, p, keys));
    const json_t *sp = json_object_get(nas_block, "space");
    join(path, sizeof path, p, "space");
    if (!sp)
        return fail_at(&c, p, 0, "missing required key \"space\" (an object with \"type\": \"macro\" or \"cell\")");
    if (!json_is_object(sp))
        return fail_at(&c, path, 0, "expected an object (got %s)", type_name(sp));
    TRY(parse_space(&c, sp, path, &out->space));

    const json_t *st = json_object_get(nas_block, "strategy");
    join(path, sizeof path, p, "strategy");
    if (!st)
        return fail_at(&c, p, 0, "missing required key \"strategy\" (an object with \"name\")");
    if (!json_is_object(st))
        return fail_at(&c, path, 0, "expected an object (got %s)", type_name(st));
    TRY(parse_strategy(&c, st, path, out));

    TRY(get_int(&c, nas_block, p, "budget", 100, 1, 10000000, &out->budget));
    TRY(get_num(&c, nas_block, p, "epochs", 1, 0, 10000, 1, &out->epochs));
    TRY(get_int(&c, nas_block, p, "workers", 1, 1, 4096, &out->workers));
    TRY(get_int(&c, nas_block, p, "retries", 1, 0, 100, &out->retries));
    TRY(get_int(&c, nas_block, p, "top_k", 3, 0, 1000, &out->top_k));
    TRY(get_int(&c, nas_block, p, "retrain_epochs", 10, 1, 10000, &out->retrain_epochs));
    TRY(get_int(&c, nas_block, p, "batch_size", 64, 1, 65536, &out->batch_size));
    TRY(get_num(&c, nas_block, p, "lr", 0.05, 0, 100, 1, &out->lr));
    const json_t *seed = json_object_get(nas_block, "seed");
    join(path, sizeof path, p, "seed");
    if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0))
        return fail_at(&c, path, 0, "expected an integer >= 0");
    out->seed = seed ? (uint64_t)json_integer_value(seed) : default_seed;
    static const char *const evals[] = {"standalone", "weight_sharing", NULL};
    int ev;
    TRY(get_choice(&c, nas_block, p, "evaluation", 0, 0, evals, &ev));
    out->evaluation = (nas_evaluation_t)ev;
    static const char *const devices[] = {"cpu", NULL};
    int dev;
    TRY(get_choice(&c, nas_block, p, "device", 0, 0, devices, &dev));
    snprintf(out->device, sizeof out->device, "%s", devices[dev]);
    return 0;
}
