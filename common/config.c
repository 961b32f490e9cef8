#include "common/config.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "common/features.h"
#include "common/jsonpos.h"
#include "common/util.h"

int config_error_at(const config_t *c, const char *json_path, err_t *err, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jsonpos_fail(err, c->source, c->text, json_path, 0, "%s", msg);
}

static void join(char *out, size_t cap, const char *path, const char *key)
{
    snprintf(out, cap, "%s%s%s", path, path[0] ? "." : "", key);
}

static int check_keys(const config_t *c, const json_t *obj, const char *path, const char *const *allowed,
                      err_t *err)
{
    return jsonpos_check_keys(err, c->source, c->text, obj, path, allowed);
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

static int get_obj(const config_t *c, const json_t *obj, const char *path, const char *key, int required,
                   const json_t **out, err_t *err)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return required ? config_error_at(c, path, err, "missing required key \"%s\" (an object)", key) : 0;
    if (!json_is_object(v))
        return config_error_at(c, full, err, "expected an object (got %s)", type_name(v));
    *out = v;
    return 0;
}

static int get_int(const config_t *c, const json_t *obj, const char *path, const char *key, int required,
                   long long def, long long lo, long long hi, long long *out, err_t *err)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return config_error_at(c, path, err, "missing required key \"%s\" (an integer >= %lld)", key, lo);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return config_error_at(c, full, err, "expected an integer in [%lld, %lld] (got %s)", lo, hi, type_name(v));
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return config_error_at(c, full, err, "expected an integer in [%lld, %lld] (got %lld)", lo, hi, x);
    *out = x;
    return 0;
}

static int get_num(const config_t *c, const json_t *obj, const char *path, const char *key, int required, double def,
                   double lo, double hi, int lo_open, double *out, err_t *err)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return config_error_at(c, path, err, "missing required key \"%s\" (a number)", key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return config_error_at(c, full, err, "expected a number (got %s)", type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
        return config_error_at(c, full, err, "expected a number %s %g and <= %g (got %g)", lo_open ? ">" : ">=", lo,
                               hi, x);
    *out = x;
    return 0;
}

static int get_str(const config_t *c, const json_t *obj, const char *path, const char *key, int required,
                   const char *def, const char *const *choices, const char **out, err_t *err)
{
    char full[256];
    join(full, sizeof full, path, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return config_error_at(c, path, err, "missing required key \"%s\" (a string)", key);
        *out = def;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return config_error_at(c, full, err, "expected a non-empty string (got %s)", type_name(v));
    const char *s = json_string_value(v);
    if (choices) {
        int ok = 0;
        char list[256] = "";
        for (int i = 0; choices[i]; i++) {
            ok |= strcmp(s, choices[i]) == 0;
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, choices[i], sizeof list - strlen(list) - 1);
        }
        if (!ok)
            return config_error_at(c, full, err, "expected one of: %s (got \"%s\")", list, s);
    }
    *out = s;
    return 0;
}

#define TRY(x)             \
    do {                   \
        int rc_ = (x);     \
        if (rc_ < 0)       \
            return rc_;    \
    } while (0)

static int validate(config_t *c, err_t *err)
{
    const json_t *root = c->root;
    long long v;
    static const char *const top_keys[] = {"name", "description", "seed", "rounds", "data", "model",
                                           "clients", "train", "server", "strategy", "dp",
                                           "secure_aggregation", "compression", "evaluate", "nas", "tune",
                                           "compress", /* checked by cli_compress_block_parse */ NULL};
    TRY(check_keys(c, root, "", top_keys, err));
    TRY(get_str(c, root, "", "name", 1, NULL, NULL, &c->name, err));
    const char *desc;
    TRY(get_str(c, root, "", "description", 0, "", NULL, &desc, err));
    TRY(get_int(c, root, "", "seed", 0, 1, 0, INT64_MAX, &v, err));
    c->seed = (uint64_t)v;
    TRY(get_int(c, root, "", "rounds", 1, 0, 1, 1000000, &v, err));
    c->rounds = (int)v;

    const json_t *data;
    TRY(get_obj(c, root, "", "data", 1, &data, err));
    static const char *const data_keys[] = {"dataset", "path", "partition", "features", "classes", "test", NULL};
    TRY(check_keys(c, data, "data", data_keys, err));
    static const char *const datasets[] = {"fashion-mnist", "mnist", "csv", NULL};
    TRY(get_str(c, data, "data", "dataset", 0, "fashion-mnist", datasets, &c->data.dataset, err));
    c->data.csv = strcmp(c->data.dataset, "csv") == 0;
    /* Tabular data lives at the sites (`fednas client --data site.csv`): the server cannot look
     * at it, so the experiment states the shape every site's table must have. */
    if (c->data.csv) {
        TRY(get_str(c, data, "data", "path", 0, "", NULL, &c->data.path, err));
        TRY(get_int(c, data, "data", "features", 1, 0, 1, 1 << 20, &v, err));
        c->data.features = (int)v;
        /* Labels are read as integers 0..255 (engine/data.h). */
        TRY(get_int(c, data, "data", "classes", 1, 0, 2, 256, &v, err));
        c->data.classes = (int)v;
        TRY(get_str(c, data, "data", "test", 0, NULL, NULL, &c->data.test, err));
    } else {
        static const char *const csv_only[] = {"features", "classes", "test", NULL};
        for (int i = 0; csv_only[i]; i++)
            if (json_object_get(data, csv_only[i])) {
                char key[32];
                snprintf(key, sizeof key, "data.%s", csv_only[i]);
                return config_error_at(c, key, err,
                                       "applies only to \"dataset\": \"csv\" (the %s images fix their own shape)",
                                       c->data.dataset);
            }
        TRY(get_str(c, data, "data", "path", 0, CONFIG_DEFAULT_DATA_PATH, NULL, &c->data.path, err));
    }
    const json_t *part;
    TRY(get_obj(c, data, "data", "partition", 0, &part, err));
    c->data.partition = CONFIG_PARTITION_IID;
    c->data.alpha = 0.5;
    c->data.min_size = 10;
    if (part) {
        static const char *const part_keys[] = {"scheme", "alpha", "min_size", NULL};
        static const char *const schemes[] = {"iid", "dirichlet", NULL};
        TRY(check_keys(c, part, "data.partition", part_keys, err));
        const char *scheme;
        TRY(get_str(c, part, "data.partition", "scheme", 1, NULL, schemes, &scheme, err));
        c->data.partition = strcmp(scheme, "dirichlet") == 0 ? CONFIG_PARTITION_DIRICHLET : CONFIG_PARTITION_IID;
        if (c->data.partition == CONFIG_PARTITION_IID && (json_object_get(part, "alpha") || json_object_get(part, "min_size")))
            return config_error_at(c, "data.partition", err, "\"alpha\" and \"min_size\" apply only to scheme \"dirichlet\"");
        TRY(get_num(c, part, "data.partition", "alpha", c->data.partition == CONFIG_PARTITION_DIRICHLET, 0.5, 0, 1e6,
                    1, &c->data.alpha, err));
        TRY(get_int(c, part, "data.partition", "min_size", 0, 10, 1, 1000000, &v, err));
        c->data.min_size = (int)v;
    }

    /* The search block belongs to nas/ (nas_config_parse validates it with c->text for positions).
     * A search needs no "model": its candidates are the models (a federated search's sites train
     * the paths the server sends). */
    TRY(get_obj(c, root, "", "nas", 0, &c->nas, err));
    TRY(get_obj(c, root, "", "model", c->nas == NULL, (const json_t **)&c->model, err));
    if (c->model && !json_is_string(json_object_get(c->model, "type")))
        return config_error_at(c, "model", err, "missing required key \"type\" (a string such as \"mlp\")");

    const json_t *clients;
    TRY(get_obj(c, root, "", "clients", 1, &clients, err));
    static const char *const client_keys[] = {"count", "per_round", "fraction", "min_fit", "simulate", NULL};
    TRY(check_keys(c, clients, "clients", client_keys, err));
    TRY(get_int(c, clients, "clients", "count", 1, 0, 1, 100000, &v, err));
    c->clients.count = (int)v;
    if (json_object_get(clients, "per_round") && json_object_get(clients, "fraction"))
        return config_error_at(c, "clients.fraction", err, "give either \"per_round\" or \"fraction\", not both");
    TRY(get_int(c, clients, "clients", "per_round", 0, 0, 1, c->clients.count, &v, err));
    c->clients.per_round = (int)v;
    TRY(get_num(c, clients, "clients", "fraction", 0, 1.0, 0, 1, 1, &c->clients.fraction, err));
    int expect = c->clients.per_round ? c->clients.per_round : (int)ceil(c->clients.fraction * c->clients.count);
    if (expect < 1)
        expect = 1;
    TRY(get_int(c, clients, "clients", "min_fit", 0, expect, 1, expect, &v, err));
    c->clients.min_fit = (int)v;

    const json_t *sim;
    TRY(get_obj(c, clients, "clients", "simulate", 0, &sim, err));
    if (sim) {
        static const char *const sim_keys[] = {"workers", NULL};
        TRY(check_keys(c, sim, "clients.simulate", sim_keys, err));
        TRY(get_int(c, sim, "clients.simulate", "workers", 1, 0, 1, c->clients.count, &v, err));
        c->clients.workers = (int)v;
    }

    const json_t *strategy;
    TRY(get_obj(c, root, "", "strategy", 0, &strategy, err));
    c->strategy = strategy;
    if (strategy && !json_is_string(json_object_get(strategy, "name")))
        return config_error_at(c, "strategy", err, "missing required key \"name\" (e.g. \"fedavg\")");

    const json_t *train;
    TRY(get_obj(c, root, "", "train", 1, &train, err));
    c->train_json = train;
    /* The optimizer, schedule and other training keys belong to the engine, which checks them
     * all (server_check_config); these three are read here for the summary. */
    TRY(get_int(c, train, "train", "epochs", 0, 1, 1, 10000, &v, err));
    c->train.epochs = (int)v;
    TRY(get_int(c, train, "train", "batch_size", 0, 32, 1, 65536, &v, err));
    c->train.batch_size = (int)v;
    TRY(get_num(c, train, "train", "lr", 1, 0, 0, 100, 1, &c->train.lr, err));

    const json_t *dp;
    TRY(get_obj(c, root, "", "dp", 0, &dp, err));
    if (dp) {
        static const char *const dp_keys[] = {"clip", "noise_multiplier", "delta", "target_epsilon", "adaptive", NULL};
        TRY(check_keys(c, dp, "dp", dp_keys, err));
        c->dp.enabled = 1;
        TRY(get_num(c, dp, "dp", "clip", 1, 0, 0, 1e9, 1, &c->dp.clip, err));
        TRY(get_num(c, dp, "dp", "noise_multiplier", 0, -1, 0, 1e6, 0, &c->dp.noise_multiplier, err));
        if (!json_object_get(dp, "noise_multiplier"))
            c->dp.noise_multiplier = -1;
        TRY(get_num(c, dp, "dp", "delta", 0, 1e-5, 0, 0.1, 1, &c->dp.delta, err));
        TRY(get_num(c, dp, "dp", "target_epsilon", 0, 0, 0, 1e6, 1, &c->dp.target_epsilon, err));
        if (c->dp.noise_multiplier < 0 && !json_object_get(dp, "target_epsilon"))
            return config_error_at(c, "dp", err,
                                   "give \"noise_multiplier\", or \"target_epsilon\" to have it calibrated (or both)");
        const json_t *ad;
        TRY(get_obj(c, dp, "dp", "adaptive", 0, &ad, err));
        c->dp.quantile = 0.5;
        c->dp.clip_lr = 0.2;
        c->dp.count_noise = -1;
        if (ad) {
            static const char *const ad_keys[] = {"quantile", "lr", "count_noise", NULL};
            TRY(check_keys(c, ad, "dp.adaptive", ad_keys, err));
            c->dp.adaptive = 1;
            TRY(get_num(c, ad, "dp.adaptive", "quantile", 0, 0.5, 0, 1, 1, &c->dp.quantile, err));
            if (c->dp.quantile >= 1)
                return config_error_at(c, "dp.adaptive.quantile", err, "expected a number in (0, 1)");
            TRY(get_num(c, ad, "dp.adaptive", "lr", 0, 0.2, 0, 100, 1, &c->dp.clip_lr, err));
            TRY(get_num(c, ad, "dp.adaptive", "count_noise", 0, -1, 0, 1e9, 1, &c->dp.count_noise, err));
            if (!json_object_get(ad, "count_noise"))
                c->dp.count_noise = -1;
        }
    }

    const json_t *sa;
    TRY(get_obj(c, root, "", "secure_aggregation", 0, &sa, err));
    if (sa) {
        static const char *const sa_keys[] = {"mode",       "threshold", "clip",      "bits",
                                              "neighbours", "dropout",   "corruption", NULL};
        static const char *const modes[] = {"secagg", "secagg+", NULL};
        const char *mode;
        TRY(check_keys(c, sa, "secure_aggregation", sa_keys, err));
        c->secagg.enabled = 1;
        TRY(get_str(c, sa, "secure_aggregation", "mode", 1, NULL, modes, &mode, err));
        c->secagg.plus = strcmp(mode, "secagg+") == 0;
        if (expect < 2)
            return config_error_at(c, "secure_aggregation", err,
                                   "secure aggregation needs at least 2 clients a round (%d selected)", expect);
        /* The clients selected each round: t must be reachable, and > n/2 (the library's rule). */
        TRY(get_int(c, sa, "secure_aggregation", "threshold", 0, 0, 2, expect, &v, err));
        c->secagg.threshold = (int)v;
        if (v && 2 * v <= expect)
            return config_error_at(c, "secure_aggregation.threshold", err,
                                   "expected more than half of the %d clients selected a round (got %lld)", expect, v);
        /* Under DP an update is clipped once, to dp.clip (common/features.c checks they agree). */
        TRY(get_num(c, sa, "secure_aggregation", "clip", !c->dp.enabled, c->dp.clip, 0, 1e9, 1, &c->secagg.clip,
                    err));
        TRY(get_int(c, sa, "secure_aggregation", "bits", 0, 32, 8, 32, &v, err));
        c->secagg.bits = (int)v;
        TRY(get_int(c, sa, "secure_aggregation", "neighbours", 0, 0, 2, 100000, &v, err));
        c->secagg.neighbours = (int)v;
        if (v && !c->secagg.plus)
            return config_error_at(c, "secure_aggregation.neighbours", err,
                                   "\"neighbours\" applies only to mode \"secagg+\"");
        /* SecAgg+ derives k and its threshold from these (crypto/secagg.h, secagg_plan_plus);
         * full SecAgg reports its failure bounds with them. */
        TRY(get_num(c, sa, "secure_aggregation", "dropout", 0, 0.1, 0, 0.5, 0, &c->secagg.dropout, err));
        TRY(get_num(c, sa, "secure_aggregation", "corruption", 0, 0.05, 0, 0.5, 0, &c->secagg.corruption, err));
        if (c->secagg.dropout >= 0.5 || c->secagg.corruption >= 0.5)
            return config_error_at(c, c->secagg.dropout >= 0.5 ? "secure_aggregation.dropout"
                                                                : "secure_aggregation.corruption",
                                   err, "expected a number in [0, 0.5)");
    }

    const json_t *server;
    TRY(get_obj(c, root, "", "server", 0, &server, err));
    c->server.round_timeout = 300;
    c->server.register_timeout = 120;
    c->server.heartbeat = 5;
    c->server.evaluate_every = 1;
    c->server.phase_timeout = 30;
    if (server) {
        static const char *const server_keys[] = {"round_timeout", "register_timeout", "heartbeat", "evaluate_every",
                                                  "phase_timeout", NULL};
        TRY(check_keys(c, server, "server", server_keys, err));
        TRY(get_num(c, server, "server", "round_timeout", 0, 300, 0, 86400, 1, &c->server.round_timeout, err));
        TRY(get_num(c, server, "server", "register_timeout", 0, 120, 0, 86400, 1, &c->server.register_timeout, err));
        TRY(get_num(c, server, "server", "heartbeat", 0, 5, 0.1, 3600, 0, &c->server.heartbeat, err));
        TRY(get_int(c, server, "server", "evaluate_every", 0, 1, 0, 1000000, &v, err));
        c->server.evaluate_every = (int)v;
        TRY(get_num(c, server, "server", "phase_timeout", 0, 30, 0, 86400, 1, &c->server.phase_timeout, err));
    }

    const json_t *comp;
    TRY(get_obj(c, root, "", "compression", 0, &comp, err));
    if (comp) {
        static const char *const comp_keys[] = {"quantize", "topk", "error_feedback", NULL};
        TRY(check_keys(c, comp, "compression", comp_keys, err));
        c->compression.enabled = 1;
        TRY(get_int(c, comp, "compression", "quantize", 0, 0, 8, 8, &v, err));
        c->compression.quantize = (int)v;
        TRY(get_num(c, comp, "compression", "topk", 0, 0, 0, 1, 1, &c->compression.topk, err));
        if (json_object_get(comp, "topk") && c->compression.topk >= 1)
            return config_error_at(c, "compression.topk", err,
                                   "expected the fraction of coordinates kept, a number in (0, 1) (got %g)",
                                   c->compression.topk);
        const json_t *ef = json_object_get(comp, "error_feedback");
        if (ef && !json_is_boolean(ef))
            return config_error_at(c, "compression.error_feedback", err, "expected a boolean (got %s)",
                                   type_name(ef));
        c->compression.error_feedback = json_is_true(ef);
        if (!c->compression.quantize && !(c->compression.topk > 0))
            return config_error_at(c, "compression", err,
                                   "give \"quantize\": 8, \"topk\": FRACTION, or both");
    }

    const json_t *ev;
    TRY(get_obj(c, root, "", "evaluate", 0, &ev, err));
    if (ev) {
        static const char *const ev_keys[] = {"clients_fraction", "every", "holdout", NULL};
        TRY(check_keys(c, ev, "evaluate", ev_keys, err));
        c->evaluate.enabled = 1;
        TRY(get_num(c, ev, "evaluate", "clients_fraction", 0, 0.1, 0, 1, 1, &c->evaluate.clients_fraction, err));
        TRY(get_int(c, ev, "evaluate", "every", 0, 1, 1, 1000000, &v, err));
        c->evaluate.every = (int)v;
        TRY(get_num(c, ev, "evaluate", "holdout", 0, 0.1, 0, 1, 1, &c->evaluate.holdout, err));
        if (c->evaluate.holdout >= 1)
            return config_error_at(c, "evaluate.holdout", err,
                                   "expected the fraction of each site's samples held out, a number in (0, 1) (got %g)",
                                   c->evaluate.holdout);
    }
    if (c->data.csv && !c->data.test && !ev) {
        /* No test set on the server: the model is measured only on the sites' held-out rows, so
         * federated evaluation is on (every site, every round, a tenth held out) unless given. */
        c->evaluate.enabled = 1;
        c->evaluate.clients_fraction = 1.0;
        c->evaluate.every = 1;
        c->evaluate.holdout = 0.1;
    }
    /* Which blocks may be combined is decided in one place; the server asks again once it
     * knows the strategy's kind and the model. */
    features_t f;
    const char *path;
    features_from_config(c, &f);
    if (features_check(&f, &path, err) < 0)
        return config_error_at(c, path, err, "%s", err->msg);
    return 0;
}

int config_load_string(const char *text, const char *source, config_t **out, err_t *err)
{
    *out = NULL;
    config_t *c = FN_CALLOC(1, sizeof *c);
    snprintf(c->source, sizeof c->source, "%s", source);
    c->text = strdup(text);
    json_error_t je;
    /* REJECT_DUPLICATES: two "rounds" keys would otherwise silently keep the last. */
    c->root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    int rc;
    if (!c->root)
        rc = err_set(err, FN_EINVAL, "%s:%d:%d: invalid JSON: %s", source, je.line, je.column, je.text);
    else if (!json_is_object(c->root))
        rc = err_set(err, FN_EINVAL, "%s:1:1: the experiment must be a JSON object", source);
    else
        rc = validate(c, err);
    if (rc < 0) {
        config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int config_load_file(const char *path, config_t **out, err_t *err)
{
    char *text;
    int rc = fn_read_file(path, &text, NULL, err);
    if (rc < 0) {
        *out = NULL;
        return err_wrap(err, "cannot load experiment: ");
    }
    rc = config_load_string(text, path, out, err);
    free(text);
    return rc;
}

void config_free(config_t *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c->text);
    free(c);
}
