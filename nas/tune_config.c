/* The "tune" block: search space, sampler, early stopping and the search's settings, validated
 * in full (every error names the file, line, column and key path). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/jsonpos.h"
#include "engine/optim.h"
#include "engine/schedule.h"
#include "nas/tune.h"

static const char *const k_names[NAS_TUNE_NPARAMS] = {"lr",           "batch_size", "accumulate", "optimizer",
                                                  "momentum",     "nesterov",   "weight_decay", "schedule",
                                                  "warmup",       "label_smoothing"};

const char *nas_tune_param_name(nas_tune_param_t p)
{
    return (unsigned)p < NAS_TUNE_NPARAMS ? k_names[p] : "?";
}

typedef struct ctx {
    const char *source, *text, *prefix;
    err_t *err;
} ctx_t;

#define FAIL(c, path, ...) jsonpos_fail((c)->err, (c)->source, (c)->text, path, 0, __VA_ARGS__)

static void kpath(char *buf, size_t n, const ctx_t *c, const char *a, const char *b)
{
    if (b)
        snprintf(buf, n, "%s.%s.%s", c->prefix, a, b);
    else
        snprintf(buf, n, "%s.%s", c->prefix, a);
}

static int is_float_param(int p)
{
    return p == NAS_TUNE_P_LR || p == NAS_TUNE_P_MOMENTUM || p == NAS_TUNE_P_WEIGHT_DECAY || p == NAS_TUNE_P_LABEL_SMOOTHING;
}

/* One value of parameter p: 0 with *v, or the error at path. */
static int value(const ctx_t *c, int p, const json_t *j, const char *path, double max_epochs, double *v)
{
    switch (p) {
    case NAS_TUNE_P_OPTIMIZER: {
        int t = json_is_string(j) ? engine_optim_type_parse(json_string_value(j)) : -1;
        if (t < 0)
            return FAIL(c, path, "expected \"sgd\", \"rmsprop\", \"adam\" or \"adamw\"");
        *v = t;
        return 0;
    }
    case NAS_TUNE_P_SCHEDULE: {
        int t = json_is_string(j) ? engine_schedule_type_parse(json_string_value(j)) : -1;
        if (t < 0 || t == ENGINE_SCHED_MULTISTEP)
            return FAIL(c, path, "expected \"constant\", \"step\", \"exponential\", \"cosine\", \"linear\", "
                                 "\"polynomial\" or \"onecycle\"");
        *v = t;
        return 0;
    }
    case NAS_TUNE_P_NESTEROV:
        if (!json_is_boolean(j))
            return FAIL(c, path, "expected true or false");
        *v = json_is_true(j);
        return 0;
    default: break;
    }
    if (!json_is_number(j))
        return FAIL(c, path, "expected a number");
    double x = json_number_value(j);
    switch (p) {
    case NAS_TUNE_P_LR:
        if (!(x > 0 && x <= 10))
            return FAIL(c, path, "%g: expected a learning rate in (0, 10]", x);
        break;
    case NAS_TUNE_P_BATCH_SIZE:
    case NAS_TUNE_P_ACCUMULATE: {
        double hi = p == NAS_TUNE_P_BATCH_SIZE ? 65536 : 1024;
        if (!json_is_integer(j) || x < 1 || x > hi)
            return FAIL(c, path, "expected an integer in [1, %g]", hi);
        break;
    }
    case NAS_TUNE_P_WARMUP:
        if (!json_is_integer(j) || x < 0 || x >= max_epochs)
            return FAIL(c, path, "expected whole warmup epochs in [0, %g) (train.epochs is %g)", max_epochs, max_epochs);
        break;
    case NAS_TUNE_P_MOMENTUM:
        if (!(x >= 0 && x <= 0.999))
            return FAIL(c, path, "%g: expected a momentum in [0, 0.999]", x);
        break;
    case NAS_TUNE_P_WEIGHT_DECAY:
        if (!(x >= 0 && x <= 1))
            return FAIL(c, path, "%g: expected a weight decay in [0, 1]", x);
        break;
    case NAS_TUNE_P_LABEL_SMOOTHING:
        if (!(x >= 0 && x <= 0.5))
            return FAIL(c, path, "%g: expected label smoothing in [0, 0.5]", x);
        break;
    default: break;
    }
    *v = x;
    return 0;
}

static int domain(const ctx_t *c, int p, const json_t *j, double max_epochs, nas_tune_dom_t *d)
{
    char path[160], sub[200];
    kpath(path, sizeof path, c, "space", k_names[p]);
    memset(d, 0, sizeof *d);
    if (json_is_array(j)) {
        size_t n = json_array_size(j);
        if (n < 1 || n > NAS_TUNE_MAX_CHOICES)
            return FAIL(c, path, "expected 1 to %d choices, got %zu", NAS_TUNE_MAX_CHOICES, n);
        d->kind = NAS_TUNE_DOM_CHOICE;
        for (size_t i = 0; i < n; i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            double v;
            int rc = value(c, p, json_array_get(j, i), sub, max_epochs, &v);
            if (rc < 0)
                return rc;
            for (int k = 0; k < d->n; k++)
                if (d->choice[k] == v)
                    return FAIL(c, sub, "a repeated choice (the same value is listed twice)");
            d->choice[d->n++] = v;
        }
        if (d->n == 1)
            d->kind = NAS_TUNE_DOM_FIXED;
        return 0;
    }
    if (json_is_object(j)) {
        static const char *const keys[] = {"uniform", "log_uniform", NULL};
        int rc = jsonpos_check_keys(c->err, c->source, c->text, j, path, keys);
        if (rc < 0)
            return rc;
        if (json_object_size(j) != 1)
            return FAIL(c, path, "expected one of {\"uniform\": [LO, HI]} or {\"log_uniform\": [LO, HI]}");
        int log = json_object_get(j, "log_uniform") != NULL;
        const json_t *r = json_object_get(j, log ? "log_uniform" : "uniform");
        snprintf(sub, sizeof sub, "%s.%s", path, log ? "log_uniform" : "uniform");
        if (!is_float_param(p))
            return FAIL(c, sub, "a range needs a real-valued parameter (lr, momentum, weight_decay, "
                                "label_smoothing); list the choices of %s instead", k_names[p]);
        if (!json_is_array(r) || json_array_size(r) != 2)
            return FAIL(c, sub, "expected [LO, HI]");
        char e[220];
        snprintf(e, sizeof e, "%s[0]", sub);
        if ((rc = value(c, p, json_array_get(r, 0), e, max_epochs, &d->lo)) < 0)
            return rc;
        snprintf(e, sizeof e, "%s[1]", sub);
        if ((rc = value(c, p, json_array_get(r, 1), e, max_epochs, &d->hi)) < 0)
            return rc;
        if (!(d->lo < d->hi))
            return FAIL(c, sub, "expected LO < HI, got [%g, %g]", d->lo, d->hi);
        if (log && !(d->lo > 0))
            return FAIL(c, sub, "a log-uniform range needs LO > 0, got %g", d->lo);
        d->kind = log ? NAS_TUNE_DOM_LOG_UNIFORM : NAS_TUNE_DOM_UNIFORM;
        return 0;
    }
    d->kind = NAS_TUNE_DOM_FIXED;
    d->n = 1;
    return value(c, p, j, path, max_epochs, &d->choice[0]);
}

static void fixed(nas_tune_dom_t *d, double v)
{
    memset(d, 0, sizeof *d);
    d->kind = NAS_TUNE_DOM_FIXED;
    d->n = 1;
    d->choice[0] = v;
}

static void choices(nas_tune_dom_t *d, const double *v, int n)
{
    memset(d, 0, sizeof *d);
    d->kind = NAS_TUNE_DOM_CHOICE;
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int k = 0; k < d->n; k++)
            dup |= d->choice[k] == v[i];
        if (!dup)
            d->choice[d->n++] = v[i];
    }
    if (d->n == 1)
        d->kind = NAS_TUNE_DOM_FIXED;
}

/* Defaults around the experiment's own recipe: lr a decade either way (log-uniform), half,
 * same and double batch size, accumulation 1 or 2, the experiment's optimizer, momentum
 * 0.8-0.95 and Nesterov or not (SGD), weight decay 0 to 5e-4, the schedule constant (or the
 * experiment's), cosine or one-cycle, warmup 0 or 1 epoch, label smoothing as it is. */
static void defaults(nas_tune_config_t *c, const nas_tune_recipe_t *b)
{
    double lr = b->v[NAS_TUNE_P_LR];
    memset(&c->space[NAS_TUNE_P_LR], 0, sizeof c->space[0]);
    c->space[NAS_TUNE_P_LR].kind = NAS_TUNE_DOM_LOG_UNIFORM;
    c->space[NAS_TUNE_P_LR].lo = lr / 10;
    c->space[NAS_TUNE_P_LR].hi = lr * 10 > 10 ? 10 : lr * 10;
    double bs = b->v[NAS_TUNE_P_BATCH_SIZE];
    double bss[3] = {bs >= 2 ? floor(bs / 2) : bs, bs, bs * 2 <= 65536 ? bs * 2 : bs};
    choices(&c->space[NAS_TUNE_P_BATCH_SIZE], bss, 3);
    double acc[2] = {1, 2};
    choices(&c->space[NAS_TUNE_P_ACCUMULATE], acc, 2);
    fixed(&c->space[NAS_TUNE_P_OPTIMIZER], b->v[NAS_TUNE_P_OPTIMIZER]);
    double mom[4] = {0.8, 0.9, 0.95, isnan(b->v[NAS_TUNE_P_MOMENTUM]) ? 0.9 : b->v[NAS_TUNE_P_MOMENTUM]};
    choices(&c->space[NAS_TUNE_P_MOMENTUM], mom, 4);
    double nes[2] = {0, 1};
    choices(&c->space[NAS_TUNE_P_NESTEROV], nes, 2);
    double wd[5] = {0, 1e-5, 1e-4, 5e-4, b->v[NAS_TUNE_P_WEIGHT_DECAY]};
    choices(&c->space[NAS_TUNE_P_WEIGHT_DECAY], wd, 5);
    double sc[4] = {b->v[NAS_TUNE_P_SCHEDULE], ENGINE_SCHED_CONSTANT, ENGINE_SCHED_COSINE, ENGINE_SCHED_ONECYCLE};
    choices(&c->space[NAS_TUNE_P_SCHEDULE], sc, 4);
    double wu[2] = {0, 1};
    choices(&c->space[NAS_TUNE_P_WARMUP], wu, c->max_epochs > 1 ? 2 : 1);
    fixed(&c->space[NAS_TUNE_P_LABEL_SMOOTHING], b->v[NAS_TUNE_P_LABEL_SMOOTHING]);
}

int nas_tune_config_rungs(nas_tune_config_t *c, err_t *err)
{
    if (!c->asha) {
        c->nrungs = 1;
        c->rungs[0] = c->max_epochs;
        return 0;
    }
    if (!(c->min_epochs > 0) || c->min_epochs > c->max_epochs)
        return err_set(err, FN_EINVAL, "early_stopping.min_epochs %g: expected (0, train.epochs = %g]", c->min_epochs,
                       c->max_epochs);
    /* rung k trains max / eta^(K - k) epochs, K the most rungs whose lowest is >= min_epochs */
    int K = 0;
    while (K + 1 < NAS_TUNE_MAX_RUNGS && c->max_epochs / pow(c->eta, K + 1) >= c->min_epochs * (1 - 1e-9))
        K++;
    c->nrungs = K + 1;
    for (int k = 0; k <= K; k++)
        c->rungs[k] = k == K ? c->max_epochs : round(c->max_epochs / pow(c->eta, K - k) * 1000) / 1000;
    return 0;
}

static int get_int(const ctx_t *c, const json_t *o, const char *key, long lo, long hi, int *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    char path[160];
    kpath(path, sizeof path, c, key, NULL);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return FAIL(c, path, "expected an integer in [%ld, %ld]", lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bool(const ctx_t *c, const json_t *o, const char *key, int *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    char path[160];
    kpath(path, sizeof path, c, key, NULL);
    if (!json_is_boolean(v))
        return FAIL(c, path, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

/* KEY: "A" | "B" | {"type": "A" | "B", other keys}: *is_a, path (n bytes) the key's path; an
 * object's keys are checked against keys. */
static int parse_kind(const ctx_t *c, const json_t *v, const char *key, const char *a, const char *b,
                      const char *example, const char *const *keys, char *path, size_t n, int *is_a)
{
    kpath(path, n, c, key, NULL);
    const json_t *t = json_is_object(v) ? json_object_get(v, "type") : v;
    const char *name = json_string_value(t);
    if (!name || (strcmp(name, a) && strcmp(name, b)))
        return FAIL(c, json_is_object(v) && t ? strcat(path, ".type") : path, "expected \"%s\" or \"%s\" (or %s)", a,
                    b, example);
    *is_a = strcmp(name, a) == 0;
    return json_is_object(v) ? jsonpos_check_keys(c->err, c->source, c->text, v, path, keys) : 0;
}

static int parse_sampler(const ctx_t *c, const json_t *v, nas_tune_config_t *o)
{
    char path[160];
    static const char *const keys[] = {"type", "population", "sample", NULL};
    int is_random, rc = parse_kind(c, v, "sampler", "random", "evolution",
                                "{\"type\": \"evolution\", \"population\": 8, \"sample\": 3}", keys, path,
                                sizeof path, &is_random);
    if (rc < 0)
        return rc;
    o->sampler = is_random ? NAS_TUNE_SAMPLER_RANDOM : NAS_TUNE_SAMPLER_EVOLUTION;
    if (!json_is_object(v))
        return 0;
    ctx_t s = *c;
    s.prefix = path;
    if (rc == 0 && o->sampler == NAS_TUNE_SAMPLER_RANDOM && json_object_size(v) > 1)
        return FAIL(c, path, "population and sample belong to the \"evolution\" sampler");
    if (rc == 0)
        rc = get_int(&s, v, "population", 2, 4096, &o->population);
    if (rc == 0)
        rc = get_int(&s, v, "sample", 1, 4096, &o->sample);
    if (rc == 0 && o->sample > o->population) {
        kpath(path, sizeof path, c, "sampler", "sample");
        return FAIL(c, path, "sample %d exceeds population %d", o->sample, o->population);
    }
    return rc;
}

static int parse_stopping(const ctx_t *c, const json_t *v, nas_tune_config_t *o)
{
    char path[160];
    static const char *const keys[] = {"type", "eta", "min_epochs", NULL};
    int rc = parse_kind(c, v, "early_stopping", "asha", "none", "{\"type\": \"asha\", \"eta\": 3, \"min_epochs\": 1}",
                        keys, path, sizeof path, &o->asha);
    if (rc < 0 || !json_is_object(v))
        return rc;
    if (!o->asha && json_object_size(v) > 1)
        return FAIL(c, path, "eta and min_epochs belong to \"asha\"");
    ctx_t s = *c;
    s.prefix = path;
    if ((rc = get_int(&s, v, "eta", 2, 16, &o->eta)) < 0)
        return rc;
    const json_t *m = json_object_get(v, "min_epochs");
    if (m) {
        kpath(path, sizeof path, c, "early_stopping", "min_epochs");
        if (!json_is_number(m) || !(json_number_value(m) > 0) || json_number_value(m) > o->max_epochs)
            return FAIL(c, path, "expected epochs in (0, %g] (train.epochs is the top rung)", o->max_epochs);
        o->min_epochs = json_number_value(m);
    }
    return 0;
}

int nas_tune_config_parse(const json_t *block, const json_t *base_train, const char *source, const char *text,
                      const char *prefix, uint64_t default_seed, nas_tune_config_t *out, err_t *err)
{
    ctx_t c = {.source = source, .text = text, .prefix = prefix, .err = err};
    memset(out, 0, sizeof *out);
    nas_tune_recipe_t b;
    nas_tune_recipe_from_train(base_train, &b);
    const json_t *ep = json_object_get(base_train, "epochs");
    out->max_epochs = json_is_integer(ep) ? (double)json_integer_value(ep) : 1;
    out->trials = 20;
    out->workers = 1;
    out->retries = 1;
    out->seed = default_seed;
    out->sampler = NAS_TUNE_SAMPLER_RANDOM;
    out->population = 8;
    out->sample = 3;
    out->asha = out->max_epochs >= 3;
    out->eta = 3;
    out->min_epochs = -1;
    out->baseline = 1;
    defaults(out, &b);
    int rc = 0;
    if (block) {
        if (!json_is_object(block))
            return FAIL(&c, prefix, "expected an object (see `fednas tune --help`)");
        static const char *const keys[] = {"trials", "workers", "retries", "seed", "sampler", "early_stopping",
                                           "space", "enqueue_default", "baseline", NULL};
        if ((rc = jsonpos_check_keys(err, source, text, block, prefix, keys)) < 0)
            return rc;
        if ((rc = get_int(&c, block, "trials", 1, 100000, &out->trials)) < 0 ||
            (rc = get_int(&c, block, "workers", 1, 256, &out->workers)) < 0 ||
            (rc = get_int(&c, block, "retries", 0, 10, &out->retries)) < 0 ||
            (rc = get_bool(&c, block, "enqueue_default", &out->enqueue_default)) < 0 ||
            (rc = get_bool(&c, block, "baseline", &out->baseline)) < 0)
            return rc;
        const json_t *s = json_object_get(block, "seed");
        if (s) {
            char path[160];
            kpath(path, sizeof path, &c, "seed", NULL);
            if (!json_is_integer(s) || json_integer_value(s) < 0)
                return FAIL(&c, path, "expected an integer >= 0");
            out->seed = (uint64_t)json_integer_value(s);
        }
        const json_t *v;
        if ((v = json_object_get(block, "sampler")) && (rc = parse_sampler(&c, v, out)) < 0)
            return rc;
        if ((v = json_object_get(block, "early_stopping")) && (rc = parse_stopping(&c, v, out)) < 0)
            return rc;
        const json_t *sp = json_object_get(block, "space");
        if (sp) {
            char path[160];
            kpath(path, sizeof path, &c, "space", NULL);
            if (!json_is_object(sp))
                return FAIL(&c, path, "expected an object of parameter: value, [choices], or {\"log_uniform\": [LO, HI]}");
            static const char *const pkeys[] = {"lr",       "batch_size", "accumulate", "optimizer", "momentum",
                                                "nesterov", "weight_decay", "schedule", "warmup", "label_smoothing",
                                                "precision", NULL};
            if ((rc = jsonpos_check_keys(err, source, text, sp, path, pkeys)) < 0)
                return rc;
            for (int p = 0; p < NAS_TUNE_NPARAMS; p++) {
                const json_t *j = json_object_get(sp, k_names[p]);
                if (j && (rc = domain(&c, p, j, out->max_epochs, &out->space[p])) < 0)
                    return rc;
            }
            const json_t *pr = json_object_get(sp, "precision");
            if (pr) {
                /* fp32 is the only precision of the CPU engine: mixed precision is a GPU choice */
                int ok = json_is_string(pr) && strcmp(json_string_value(pr), "fp32") == 0;
                ok |= json_is_array(pr) && json_array_size(pr) == 1 &&
                      json_is_string(json_array_get(pr, 0)) && strcmp(json_string_value(json_array_get(pr, 0)), "fp32") == 0;
                if (!ok) {
                    kpath(path, sizeof path, &c, "space", "precision");
                    return FAIL(&c, path, "only \"fp32\" here: this build trains on the CPU (mixed precision needs the "
                                          "CUDA backend)");
                }
            }
        }
    }
    if (out->sampler == NAS_TUNE_SAMPLER_EVOLUTION && out->sample > out->population) {
        char path[160];
        kpath(path, sizeof path, &c, "sampler", NULL);
        return FAIL(&c, path, "sample %d exceeds population %d", out->sample, out->population);
    }
    if (out->min_epochs < 0)
        out->min_epochs = out->max_epochs / (out->eta * out->eta);
    if ((rc = nas_tune_config_rungs(out, err)) < 0)
        return err_wrap(err, "%s: %s.", source, prefix);
    return 0;
}

void nas_tune_config_describe(const nas_tune_config_t *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s", c->sampler == NAS_TUNE_SAMPLER_EVOLUTION ? "evolution" : "random", c->asha ? "+asha" : "");
}
