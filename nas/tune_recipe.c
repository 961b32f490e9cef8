/* Recipes: the canonical JSON (a tuning trial's genome), its hash, and the train block it
 * makes of the experiment's own. */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/optim.h"
#include "engine/schedule.h"
#include "nas/tune.h"

static double sig4(double x)
{
    char b[32];
    snprintf(b, sizeof b, "%.4g", x);
    return strtod(b, NULL);
}

void nas_tune_recipe_from_train(const json_t *base_train, nas_tune_recipe_t *r)
{
    engine_train_config_t tc;
    err_t err = {0};
    if (!base_train || engine_train_config_from_json(base_train, &tc, &err) < 0)
        engine_train_config_default(&tc);
    for (int p = 0; p < NAS_TUNE_NPARAMS; p++)
        r->v[p] = NAN;
    r->v[NAS_TUNE_P_LR] = sig4(tc.optim.lr);
    r->v[NAS_TUNE_P_BATCH_SIZE] = tc.batch_size;
    r->v[NAS_TUNE_P_ACCUMULATE] = tc.accumulate > 0 ? tc.accumulate : 1;
    r->v[NAS_TUNE_P_OPTIMIZER] = tc.optim.type;
    if (tc.optim.type == ENGINE_OPTIM_SGD || tc.optim.type == ENGINE_OPTIM_RMSPROP)
        r->v[NAS_TUNE_P_MOMENTUM] = sig4(tc.optim.momentum);
    if (tc.optim.type == ENGINE_OPTIM_SGD)
        r->v[NAS_TUNE_P_NESTEROV] = tc.optim.nesterov != 0;
    r->v[NAS_TUNE_P_WEIGHT_DECAY] = sig4(tc.optim.weight_decay);
    r->v[NAS_TUNE_P_SCHEDULE] = tc.schedule.type;
    r->v[NAS_TUNE_P_WARMUP] = tc.schedule.per_step ? 0 : (double)tc.schedule.warmup;
    r->v[NAS_TUNE_P_LABEL_SMOOTHING] = sig4(tc.label_smoothing);
}

json_t *nas_tune_recipe_json(const nas_tune_recipe_t *r)
{
    json_t *j = json_object();
    for (int p = 0; p < NAS_TUNE_NPARAMS; p++) {
        double v = r->v[p];
        if (isnan(v))
            continue;
        json_t *x;
        switch (p) {
        case NAS_TUNE_P_OPTIMIZER: x = json_string(engine_optim_type_name((engine_optim_type_t)v)); break;
        case NAS_TUNE_P_SCHEDULE: x = json_string(engine_schedule_type_name((engine_schedule_type_t)v)); break;
        case NAS_TUNE_P_NESTEROV: x = json_boolean(v != 0); break;
        case NAS_TUNE_P_BATCH_SIZE:
        case NAS_TUNE_P_ACCUMULATE:
        case NAS_TUNE_P_WARMUP: x = json_integer((json_int_t)v); break;
        default: x = json_real(v); break;
        }
        json_object_set_new(j, nas_tune_param_name((nas_tune_param_t)p), x);
    }
    return j;
}

int nas_tune_recipe_parse(const json_t *j, nas_tune_recipe_t *r, err_t *err)
{
    if (!json_is_object(j))
        return err_set(err, FN_EINVAL, "recipe: expected an object");
    for (int p = 0; p < NAS_TUNE_NPARAMS; p++) {
        const json_t *x = json_object_get(j, nas_tune_param_name((nas_tune_param_t)p));
        r->v[p] = NAN;
        if (!x)
            continue;
        if (p == NAS_TUNE_P_OPTIMIZER || p == NAS_TUNE_P_SCHEDULE) {
            const char *s = json_string_value(x);
            int t = !s ? -1 : p == NAS_TUNE_P_OPTIMIZER ? engine_optim_type_parse(s) : engine_schedule_type_parse(s);
            if (t < 0)
                return err_set(err, FN_EINVAL, "recipe.%s: unknown value", nas_tune_param_name((nas_tune_param_t)p));
            r->v[p] = t;
        } else if (p == NAS_TUNE_P_NESTEROV) {
            r->v[p] = json_is_true(x);
        } else if (json_is_number(x)) {
            r->v[p] = json_number_value(x);
        } else {
            return err_set(err, FN_EINVAL, "recipe.%s: expected a number", nas_tune_param_name((nas_tune_param_t)p));
        }
    }
    if (isnan(r->v[NAS_TUNE_P_LR]) || isnan(r->v[NAS_TUNE_P_BATCH_SIZE]) || isnan(r->v[NAS_TUNE_P_OPTIMIZER]))
        return err_set(err, FN_EINVAL, "recipe: needs lr, batch_size and optimizer");
    return 0;
}

void nas_tune_recipe_hash(const nas_tune_recipe_t *r, char out[65])
{
    json_t *j = nas_tune_recipe_json(r);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6));
    json_decref(j);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)(text ? text : ""), text ? strlen(text) : 0);
    free(text);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* A schedule object of type t for a run of `epochs` (its own settings where the experiment's
 * schedule is of the same type; defaults for the rest: step every third of the run, exponential
 * to a hundredth by the end, cosine/linear/polynomial to 0, one-cycle as PyTorch's). */
static json_t *schedule_json(int t, const json_t *base_sched, double warmup, double epochs)
{
    const json_t *bt = json_is_object(base_sched) ? json_object_get(base_sched, "type") : base_sched;
    json_t *s;
    if (json_is_string(bt) && engine_schedule_type_parse(json_string_value(bt)) == t && json_is_object(base_sched)) {
        s = json_deep_copy(base_sched);
    } else {
        s = json_object();
        json_object_set_new(s, "type", json_string(engine_schedule_type_name((engine_schedule_type_t)t)));
        long e = (long)epochs;
        if (t == ENGINE_SCHED_STEP) {
            json_object_set_new(s, "step_size", json_integer(e >= 3 ? e / 3 : 1));
            json_object_set_new(s, "gamma", json_real(0.1));
        } else if (t == ENGINE_SCHED_EXPONENTIAL) {
            json_object_set_new(s, "gamma", json_real(sig4(pow(0.01, 1.0 / (double)(e > 0 ? e : 1)))));
        }
    }
    json_object_del(s, "warmup");
    if (warmup > 0)
        json_object_set_new(s, "warmup", json_integer((json_int_t)warmup));
    return s;
}

json_t *nas_tune_recipe_train(const nas_tune_recipe_t *r, const json_t *base_train, double epochs)
{
    json_t *t = json_is_object(base_train) ? json_deep_copy(base_train) : json_object();
    const double *v = r->v;
    json_object_set_new(t, "lr", json_real(v[NAS_TUNE_P_LR]));
    json_object_set_new(t, "batch_size", json_integer((json_int_t)v[NAS_TUNE_P_BATCH_SIZE]));
    if (!isnan(v[NAS_TUNE_P_ACCUMULATE]))
        json_object_set_new(t, "accumulate", json_integer((json_int_t)v[NAS_TUNE_P_ACCUMULATE]));
    json_object_set_new(t, "epochs", json_integer((json_int_t)ceil(epochs)));
    if (!isnan(v[NAS_TUNE_P_LABEL_SMOOTHING]))
        json_object_set_new(t, "label_smoothing", json_real(v[NAS_TUNE_P_LABEL_SMOOTHING]));
    /* optimizer: the experiment's object when the type is the same (betas, eps, ...), else the
     * type's defaults; then the recipe's momentum, nesterov and weight decay */
    int ot = (int)v[NAS_TUNE_P_OPTIMIZER];
    const json_t *bo = json_object_get(base_train, "optimizer");
    const json_t *bot = json_is_object(bo) ? json_object_get(bo, "type") : bo;
    json_t *o;
    if (json_is_object(bo) && json_is_string(bot) && engine_optim_type_parse(json_string_value(bot)) == ot)
        o = json_deep_copy(bo);
    else {
        o = json_object();
        json_object_set_new(o, "type", json_string(engine_optim_type_name((engine_optim_type_t)ot)));
    }
    if (ot == ENGINE_OPTIM_SGD || ot == ENGINE_OPTIM_RMSPROP) {
        double m = isnan(v[NAS_TUNE_P_MOMENTUM]) ? 0 : v[NAS_TUNE_P_MOMENTUM];
        json_object_set_new(o, "momentum", json_real(m));
        if (ot == ENGINE_OPTIM_SGD)
            json_object_set_new(o, "nesterov", json_boolean(m > 0 && !isnan(v[NAS_TUNE_P_NESTEROV]) && v[NAS_TUNE_P_NESTEROV] != 0));
    } else {
        json_object_del(o, "momentum");
        json_object_del(o, "nesterov");
    }
    if (!isnan(v[NAS_TUNE_P_WEIGHT_DECAY]))
        json_object_set_new(o, "weight_decay", json_real(v[NAS_TUNE_P_WEIGHT_DECAY]));
    json_object_set_new(t, "optimizer", o);
    if (!isnan(v[NAS_TUNE_P_SCHEDULE]))
        json_object_set_new(t, "schedule",
                            schedule_json((int)v[NAS_TUNE_P_SCHEDULE], json_object_get(base_train, "schedule"),
                                          isnan(v[NAS_TUNE_P_WARMUP]) ? 0 : v[NAS_TUNE_P_WARMUP], epochs));
    return t;
}

void nas_tune_recipe_describe(const nas_tune_recipe_t *r, char *buf, size_t n)
{
    const double *v = r->v;
    int k = snprintf(buf, n, "lr %.4g  bs %d", v[NAS_TUNE_P_LR], (int)v[NAS_TUNE_P_BATCH_SIZE]);
    if (!isnan(v[NAS_TUNE_P_ACCUMULATE]) && v[NAS_TUNE_P_ACCUMULATE] > 1 && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, "x%d", (int)v[NAS_TUNE_P_ACCUMULATE]);
    if (k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, "  %s", engine_optim_type_name((engine_optim_type_t)v[NAS_TUNE_P_OPTIMIZER]));
    if (!isnan(v[NAS_TUNE_P_MOMENTUM]) && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, " m%.3g%s", v[NAS_TUNE_P_MOMENTUM],
                      !isnan(v[NAS_TUNE_P_NESTEROV]) && v[NAS_TUNE_P_NESTEROV] != 0 ? " nesterov" : "");
    if (!isnan(v[NAS_TUNE_P_WEIGHT_DECAY]) && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, "  wd %.3g", v[NAS_TUNE_P_WEIGHT_DECAY]);
    if (!isnan(v[NAS_TUNE_P_SCHEDULE]) && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, "  %s", engine_schedule_type_name((engine_schedule_type_t)v[NAS_TUNE_P_SCHEDULE]));
    if (!isnan(v[NAS_TUNE_P_WARMUP]) && v[NAS_TUNE_P_WARMUP] > 0 && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, " warmup %d", (int)v[NAS_TUNE_P_WARMUP]);
    if (!isnan(v[NAS_TUNE_P_LABEL_SMOOTHING]) && v[NAS_TUNE_P_LABEL_SMOOTHING] > 0 && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "  ls %.3g", v[NAS_TUNE_P_LABEL_SMOOTHING]);
}
