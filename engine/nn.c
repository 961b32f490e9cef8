/* nn.c: networks from JSON. Map: parameter registration into the one blob (add_param); the
 * per-layer parser (parse_layer: every key checked, every shape computed here so errors name the
 * layer path) and sequences; the named architectures (cnn, lenet, resnet, mlp) expanded into
 * layer lists; creation/initialisation; the forward pass (run_seq) that calls the ops; and the
 * nn_seq_* entry points that nn_cell.c uses for the edges of a cell. */
#include "engine/nn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/rng.h"
#include "engine/nn_cell.h"
#include "engine/ops.h"

#define MAX_WIDTH (1 << 20)
#define MAX_DEPTH 8

enum { L_LINEAR, L_CONV, L_MAXPOOL, L_AVGPOOL, L_GAP, L_BN, L_LN, L_RELU, L_GELU, L_SIGMOID, L_TANH, L_DROPOUT,
       L_FLATTEN, L_RESIDUAL, L_CONCAT, L_LSTM, L_CELL, L_COUNT };
static const char *const kind_names[L_COUNT] = {"linear", "conv2d", "maxpool", "avgpool", "global_avgpool",
                                                "batchnorm", "layernorm", "relu", "gelu", "sigmoid", "tanh",
                                                "dropout", "flatten", "residual", "concat", "lstm", "cell"};
/* Keys each layer type accepts besides "type". */
static const char *const kind_keys[L_COUNT] = {
    "out bias", "out kernel stride padding dilation groups bias", "kernel stride padding",
    "kernel stride padding", "", "momentum eps", "eps", "", "", "", "", "p", "", "body shortcut", "branches",
    "hidden bias", "nodes edges"};

typedef struct seq seq_t;
typedef struct layer {
    int kind;
    int out, k, stride, pad, dil, groups, bias;
    float p, eps, mom;
    int w, b;      /* parameter tensor indices, -1 when absent */
    int wh;        /* LSTM: the recurrent weight */
    int T, I;      /* LSTM: steps and features per step */
    size_t rm, rv; /* buffer offsets (batch norm) */
    seq_t *body, *sc; /* residual; sc NULL: identity */
    int nbr;
    seq_t *br; /* concat branches */
    nn_cell_t *cell; /* cell (engine/nn_cell.c) */
} layer_t;

struct seq {
    int n;
    layer_t *l;
};

/* shp_t, a sample's shape without the batch, is in engine/nn_cell.h (the cell layer shares it). */

struct engine_net {
    seq_t top;
    int c, h, w, classes;
    engine_param_info_t *info;
    int ninfo, capinfo;
    size_t nparams, nbuf;
    float *params, *grads, *buffers;
    double flops;
    engine_net_input_hook_fn in_hook; /* engine_net_set_input_hook */
    void *in_hook_ctx;
    int in_hook_n;
};

static int64_t feat(const shp_t *s) { return s->nd == 3 ? s->d[0] * s->d[1] * s->d[2] : s->d[0]; }

static void shp_str(const shp_t *s, char *buf, size_t n)
{
    if (s->nd == 3)
        snprintf(buf, n, "[%lld,%lld,%lld]", (long long)s->d[0], (long long)s->d[1], (long long)s->d[2]);
    else
        snprintf(buf, n, "[%lld]", (long long)s->d[0]);
}

static int add_param(engine_net_t *n, const char *path, const char *what, int ndim, const int64_t *shape, int fan_in)
{
    if (n->ninfo == n->capinfo) {
        n->capinfo = n->capinfo ? 2 * n->capinfo : 16;
        n->info = realloc(n->info, (size_t)n->capinfo * sizeof *n->info);
        FN_CHECK(n->info);
    }
    engine_param_info_t *p = &n->info[n->ninfo];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", path, what);
    p->offset = n->nparams;
    p->ndim = ndim;
    size_t cnt = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        cnt *= (size_t)shape[i];
    }
    p->fan_in = fan_in;
    n->nparams += cnt;
    return n->ninfo++;
}

static int get_int(const json_t *o, const char *key, int def, int lo, int hi, const char *path, int *out, err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return err_set(err, FN_EINVAL, "%s.%s: expected an integer in %d..%d", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(const json_t *o, const char *key, double def, double lo, double hi, const char *path, float *out,
                   err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return err_set(err, FN_EINVAL, "%s.%s: expected a number in [%g, %g]", path, key, lo, hi);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(const json_t *o, const char *key, int def, const char *path, int *out, err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return err_set(err, FN_EINVAL, "%s.%s: expected true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

static int key_allowed(const char *list, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == kl && strncmp(p, key, l) == 0)
            return 1;
        p += l + (e != NULL);
    }
    return 0;
}

static int parse_seq(engine_net_t *n, const json_t *arr, shp_t *s, const char *path, int depth, seq_t *out, err_t *err);

static int parse_layer(engine_net_t *n, const json_t *o, shp_t *s, const char *path, int depth, layer_t *L, err_t *err)
{
    char sb[64], sub[256];
    int rc;
    memset(L, 0, sizeof *L);
    L->w = L->b = -1;
    if (!json_is_object(o))
        return err_set(err, FN_EINVAL, "%s: expected a layer object like {\"type\":\"relu\"}", path);
    const json_t *ty = json_object_get(o, "type");
    if (!json_is_string(ty))
        return err_set(err, FN_EINVAL, "%s.type: expected a layer type string (linear, conv2d, maxpool, ...)", path);
    const char *t = json_string_value(ty);
    int kind = -1;
    for (int i = 0; i < L_COUNT; i++)
        if (strcmp(t, kind_names[i]) == 0)
            kind = i;
    if (kind < 0)
        return err_set(err, FN_EINVAL, "%s.type: unknown layer type \"%s\"", path, t);
    L->kind = kind;
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)o, key, val) {
        if (strcmp(key, "type") != 0 && !key_allowed(kind_keys[kind], key))
            return err_set(err, FN_EINVAL, "%s: unknown key \"%s\" for a %s layer (it takes: %s)", path, key, t,
                           *kind_keys[kind] ? kind_keys[kind] : "nothing but type");
    }
    shp_str(s, sb, sizeof sb);
    switch (kind) {
    case L_LINEAR: {
        if ((rc = get_int(o, "out", n->classes, 1, MAX_WIDTH, path, &L->out, err)) ||
            (rc = get_bool(o, "bias", 1, path, &L->bias, err)))
            return rc;
        int64_t in = feat(s);
        if (in > MAX_WIDTH || in * (int64_t)L->out > 0x7fffffffLL)
            return err_set(err, FN_EINVAL, "%s (linear): %lld inputs x %d outputs = %lld parameters exceed the limit of %d; use "
                           "narrower layers", path, (long long)in, L->out, (long long)in * L->out, 0x7fffffff);
        int64_t ws[2] = {L->out, in}, bs[1] = {L->out};
        L->w = add_param(n, path, "weight", 2, ws, (int)in);
        if (L->bias)
            L->b = add_param(n, path, "bias", 1, bs, 0);
        n->flops += 2.0 * (double)in * L->out;
        s->nd = 1;
        s->d[0] = L->out;
        return 0;
    }
    case L_CONV: {
        if (s->nd != 3)
            return err_set(err, FN_EINVAL, "%s (conv2d): the input %s is not an image [C,H,W]", path, sb);
        if ((rc = get_int(o, "out", 0, 1, MAX_WIDTH, path, &L->out, err)) ||
            (rc = get_int(o, "kernel", 0, 1, 64, path, &L->k, err)) ||
            (rc = get_int(o, "stride", 1, 1, 64, path, &L->stride, err)) ||
            (rc = get_int(o, "dilation", 1, 1, 64, path, &L->dil, err)) ||
            (rc = get_int(o, "groups", 1, 1, MAX_WIDTH, path, &L->groups, err)) ||
            (rc = get_bool(o, "bias", 1, path, &L->bias, err)))
            return rc;
        if (!L->out || !L->k)
            return err_set(err, FN_EINVAL, "%s (conv2d): \"out\" (channels) and \"kernel\" are required", path);
        const json_t *pd = json_object_get(o, "padding");
        if (json_is_string(pd) && strcmp(json_string_value(pd), "same") == 0) {
            if (L->stride != 1 || (L->dil * (L->k - 1)) % 2)
                return err_set(err, FN_EINVAL, "%s.padding: \"same\" needs stride 1 and an odd kernel", path);
            L->pad = L->dil * (L->k - 1) / 2;
        } else if (json_is_string(pd) && strcmp(json_string_value(pd), "valid") == 0) {
            L->pad = 0;
        } else if ((rc = get_int(o, "padding", 0, 0, 64, path, &L->pad, err))) {
            return err_set(err, FN_EINVAL, "%s.padding: expected an integer >= 0, \"same\" or \"valid\"", path);
        }
        if (s->d[0] % L->groups || L->out % L->groups)
            return err_set(err, FN_EINVAL, "%s (conv2d): groups %d must divide the input channels (%lld) and out (%d)",
                           path, L->groups, (long long)s->d[0], L->out);
        int64_t span = (int64_t)L->dil * (L->k - 1) + 1;
        if (s->d[1] + 2 * L->pad < span || s->d[2] + 2 * L->pad < span)
            return err_set(err, FN_EINVAL, "%s (conv2d): kernel %d (dilation %d) is larger than the input %s padded by %d",
                           path, L->k, L->dil, sb, L->pad);
        int64_t cg = s->d[0] / L->groups;
        int64_t ws[4] = {L->out, cg, L->k, L->k}, bs[1] = {L->out};
        L->w = add_param(n, path, "weight", 4, ws, (int)(cg * L->k * L->k));
        if (L->bias)
            L->b = add_param(n, path, "bias", 1, bs, 0);
        int64_t oh = (s->d[1] + 2 * L->pad - span) / L->stride + 1, ow = (s->d[2] + 2 * L->pad - span) / L->stride + 1;
        n->flops += 2.0 * (double)(cg * L->k * L->k) * (double)(L->out * oh * ow);
        s->d[0] = L->out;
        s->d[1] = oh;
        s->d[2] = ow;
        return 0;
    }
    case L_MAXPOOL:
    case L_AVGPOOL: {
        if (s->nd != 3)
            return err_set(err, FN_EINVAL, "%s (%s): the input %s is not an image [C,H,W]", path, t, sb);
        if ((rc = get_int(o, "kernel", 2, 1, 64, path, &L->k, err)) ||
            (rc = get_int(o, "stride", L->k, 1, 64, path, &L->stride, err)) ||
            (rc = get_int(o, "padding", 0, 0, L->k / 2, path, &L->pad, err)))
            return rc;
        if (s->d[1] + 2 * L->pad < L->k || s->d[2] + 2 * L->pad < L->k)
            return err_set(err, FN_EINVAL, "%s (%s): kernel %d is larger than the input %s", path, t, L->k, sb);
        s->d[1] = (s->d[1] + 2 * L->pad - L->k) / L->stride + 1;
        s->d[2] = (s->d[2] + 2 * L->pad - L->k) / L->stride + 1;
        return 0;
    }
    case L_GAP:
        if (s->nd != 3)
            return err_set(err, FN_EINVAL, "%s (global_avgpool): the input %s is not an image [C,H,W]", path, sb);
        s->nd = 1;
        return 0;
    case L_BN:
    case L_LN: {
        if ((rc = get_num(o, "eps", 1e-5, 1e-12, 1.0, path, &L->eps, err)) ||
            (rc = get_num(o, "momentum", 0.1, 0.0, 1.0, path, &L->mom, err)))
            return rc;
        int64_t C = kind == L_BN ? s->d[0] : (s->nd == 3 ? s->d[2] : s->d[0]);
        int64_t cs[1] = {C};
        L->w = add_param(n, path, "weight", 1, cs, 0);
        L->b = add_param(n, path, "bias", 1, cs, 0);
        if (kind == L_BN) {
            L->rm = n->nbuf;
            L->rv = n->nbuf + (size_t)C;
            n->nbuf += 2 * (size_t)C;
        }
        return 0;
    }
    case L_DROPOUT:
        return get_num(o, "p", 0.5, 0.0, 0.99, path, &L->p, err);
    case L_LSTM: {
        if ((rc = get_int(o, "hidden", 0, 1, 65536, path, &L->out, err)) ||
            (rc = get_bool(o, "bias", 1, path, &L->bias, err)))
            return rc;
        if (!L->out)
            return err_set(err, FN_EINVAL, "%s (lstm): \"hidden\" (the state size) is required", path);
        if (s->nd == 3 && s->d[0] != 1)
            return err_set(err, FN_EINVAL, "%s (lstm): the input %s has %lld channels; an LSTM reads one-channel "
                           "images row by row (T = H, I = W) or feature vectors one value per step", path, sb,
                           (long long)s->d[0]);
        L->T = (int)(s->nd == 3 ? s->d[1] : s->d[0]);
        L->I = (int)(s->nd == 3 ? s->d[2] : 1);
        int64_t wi[2] = {4 * (int64_t)L->out, L->I}, wh[2] = {4 * (int64_t)L->out, L->out}, bs[1] = {4 * (int64_t)L->out};
        L->w = add_param(n, path, "weight_ih", 2, wi, L->I);
        L->wh = add_param(n, path, "weight_hh", 2, wh, L->out);
        if (L->bias)
            L->b = add_param(n, path, "bias", 1, bs, 0);
        n->flops += 2.0 * L->T * 4.0 * L->out * (L->I + L->out);
        s->nd = 1;
        s->d[0] = L->out; /* the last step's hidden state */
        return 0;
    }
    case L_FLATTEN:
        s->d[0] = feat(s);
        s->nd = 1;
        return 0;
    case L_RESIDUAL: {
        if (depth >= MAX_DEPTH)
            return err_set(err, FN_EINVAL, "%s: blocks nest deeper than %d", path, MAX_DEPTH);
        shp_t a = *s, b = *s;
        L->body = calloc(1, sizeof *L->body);
        snprintf(sub, sizeof sub, "%s.body", path);
        if ((rc = parse_seq(n, json_object_get(o, "body"), &a, sub, depth + 1, L->body, err)))
            return rc;
        const json_t *scj = json_object_get(o, "shortcut");
        if (scj) {
            L->sc = calloc(1, sizeof *L->sc);
            snprintf(sub, sizeof sub, "%s.shortcut", path);
            if ((rc = parse_seq(n, scj, &b, sub, depth + 1, L->sc, err)))
                return rc;
        }
        char s1[64], s2[64];
        shp_str(&a, s1, sizeof s1);
        shp_str(&b, s2, sizeof s2);
        if (strcmp(s1, s2) != 0)
            return err_set(err, FN_EINVAL, "%s (residual): the body produces %s but the shortcut %s; they are added, so "
                           "they must match (add a 1x1 conv shortcut)", path, s1, s2);
        *s = a;
        return 0;
    }
    case L_CONCAT: {
        const json_t *brs = json_object_get(o, "branches");
        if (!json_is_array(brs) || json_array_size(brs) < 1 || json_array_size(brs) > 16)
            return err_set(err, FN_EINVAL, "%s.branches: expected 1..16 lists of layers", path);
        if (depth >= MAX_DEPTH)
            return err_set(err, FN_EINVAL, "%s: blocks nest deeper than %d", path, MAX_DEPTH);
        L->nbr = (int)json_array_size(brs);
        L->br = calloc((size_t)L->nbr, sizeof *L->br);
        shp_t res = {0};
        for (int i = 0; i < L->nbr; i++) {
            shp_t a = *s;
            snprintf(sub, sizeof sub, "%s.branches[%d]", path, i);
            if ((rc = parse_seq(n, json_array_get(brs, (size_t)i), &a, sub, depth + 1, &L->br[i], err)))
                return rc;
            if (i == 0) {
                res = a;
            } else if (a.nd != res.nd || (a.nd == 3 && (a.d[1] != res.d[1] || a.d[2] != res.d[2]))) {
                char s1[64], s2[64];
                shp_str(&res, s1, sizeof s1);
                shp_str(&a, s2, sizeof s2);
                return err_set(err, FN_EINVAL, "%s (concat): branch 0 gives %s, branch %d gives %s; they must agree "
                               "except in channels", path, s1, i, s2);
            } else {
                res.d[0] += a.d[0];
            }
        }
        *s = res;
        return 0;
    }
    case L_CELL:
        return nn_cell_parse(n, o, s, path, depth, &L->cell, err);
    default:
        return 0;
    }
}

static int parse_seq(engine_net_t *n, const json_t *arr, shp_t *s, const char *path, int depth, seq_t *out, err_t *err)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 1024)
        return err_set(err, FN_EINVAL, "%s: expected a list of 1..1024 layers", path);
    out->n = (int)json_array_size(arr);
    out->l = calloc((size_t)out->n, sizeof *out->l);
    FN_CHECK(out->l);
    for (int i = 0; i < out->n; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s[%d]", path, i);
        int rc = parse_layer(n, json_array_get(arr, (size_t)i), s, p, depth, &out->l[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

static void free_seq(seq_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        layer_t *L = &s->l[i];
        if (L->body) {
            free_seq(L->body);
            free(L->body);
        }
        if (L->sc) {
            free_seq(L->sc);
            free(L->sc);
        }
        for (int b = 0; b < L->nbr; b++)
            free_seq(&L->br[b]);
        free(L->br);
        nn_cell_free(L->cell);
    }
    free(s->l);
}

/* ---- the named architectures, expanded into layer lists ---- */

static int expand(const json_t *arch, int classes, json_t **layers, err_t *err);
int engine_net_expand(const json_t *arch, int classes, json_t **layers, err_t *err) { return expand(arch, classes, layers, err); }

static json_t *lay(const char *type) { return json_pack("{s:s}", "type", type); }
static json_t *conv(int out, int k, int stride, int pad, int bias)
{
    return json_pack("{s:s,s:i,s:i,s:i,s:i,s:b}", "type", "conv2d", "out", out, "kernel", k, "stride", stride,
                     "padding", pad, "bias", bias);
}
static json_t *lin(int out) { return json_pack("{s:s,s:i}", "type", "linear", "out", out); }
static json_t *pool2(void) { return json_pack("{s:s,s:i}", "type", "maxpool", "kernel", 2); }

static int expand(const json_t *arch, int classes, json_t **layers, err_t *err)
{
    static const char *example =
        "e.g. {\"type\":\"mlp\",\"hidden\":[128]}, {\"type\":\"softmax\"}, {\"type\":\"cnn\"}, {\"type\":\"lenet\"}, "
        "{\"type\":\"resnet\"} or {\"type\":\"layers\",\"layers\":[...]}";
    if (!json_is_object(arch))
        return err_set(err, FN_EINVAL, "model arch: expected a JSON object, %s", example);
    const json_t *type = json_object_get(arch, "type");
    if (!type)
        return err_set(err, FN_EINVAL, "model arch: missing key \"type\"; %s", example);
    if (!json_is_string(type))
        return err_set(err, FN_EINVAL, "model arch.type: expected a string; %s", example);
    const char *t = json_string_value(type);
    const char *allowed;
    if (strcmp(t, "softmax") == 0 || strcmp(t, "cnn") == 0 || strcmp(t, "lenet") == 0)
        allowed = "";
    else if (strcmp(t, "mlp") == 0)
        allowed = "hidden";
    else if (strcmp(t, "resnet") == 0)
        allowed = "widths blocks";
    else if (strcmp(t, "layers") == 0)
        allowed = "layers";
    else
        return err_set(err, FN_EINVAL, "model arch.type: unknown type \"%s\"; expected \"softmax\", \"mlp\", \"cnn\", "
                       "\"lenet\", \"resnet\" or \"layers\"", t);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)arch, key, val) {
        if (strcmp(key, "type") != 0 && !key_allowed(allowed, key))
            return err_set(err, FN_EINVAL, "model arch: unknown key \"%s\" for type \"%s\"%s%s", key, t,
                           *allowed ? "; it takes " : "; it takes only \"type\"", allowed);
    }
    json_t *L = json_array();
    if (strcmp(t, "layers") == 0) {
        json_decref(L);
        const json_t *l = json_object_get(arch, "layers");
        if (!l)
            return err_set(err, FN_EINVAL, "model arch: type \"layers\" needs key \"layers\", a list of layers");
        *layers = json_deep_copy(l);
        return 0;
    }
    json_array_append_new(L, lay("flatten"));
    if (strcmp(t, "mlp") == 0) {
        const json_t *h = json_object_get(arch, "hidden");
        if (!h) {
            json_decref(L);
            return err_set(err, FN_EINVAL, "model arch: type \"mlp\" needs key \"hidden\", the hidden layer widths, e.g. [128]");
        }
        if (!json_is_array(h) || json_array_size(h) == 0 || json_array_size(h) > 64) {
            json_decref(L);
            return err_set(err, FN_EINVAL, "model arch.hidden: expected an array of 1..64 layer widths, e.g. [128]");
        }
        for (size_t i = 0; i < json_array_size(h); i++) {
            const json_t *w = json_array_get(h, i);
            if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > MAX_WIDTH) {
                json_decref(L);
                return err_set(err, FN_EINVAL, "model arch.hidden[%zu]: expected an integer width in 1..%d", i, MAX_WIDTH);
            }
            json_array_append_new(L, lin((int)json_integer_value(w)));
            json_array_append_new(L, lay("relu"));
        }
    } else if (strcmp(t, "cnn") == 0) {
        json_array_clear(L);
        json_array_append_new(L, json_pack("{s:s,s:i,s:i,s:s}", "type", "conv2d", "out", 32, "kernel", 5, "padding", "same"));
        json_array_append_new(L, lay("relu"));
        json_array_append_new(L, pool2());
        json_array_append_new(L, json_pack("{s:s,s:i,s:i,s:s}", "type", "conv2d", "out", 64, "kernel", 5, "padding", "same"));
        json_array_append_new(L, lay("relu"));
        json_array_append_new(L, pool2());
        json_array_append_new(L, lay("flatten"));
        json_array_append_new(L, lin(512));
        json_array_append_new(L, lay("relu"));
    } else if (strcmp(t, "lenet") == 0) {
        json_array_clear(L);
        json_array_append_new(L, conv(6, 5, 1, 0, 1));
        json_array_append_new(L, lay("relu"));
        json_array_append_new(L, pool2());
        json_array_append_new(L, conv(16, 5, 1, 0, 1));
        json_array_append_new(L, lay("relu"));
        json_array_append_new(L, pool2());
        json_array_append_new(L, lay("flatten"));
        json_array_append_new(L, lin(120));
        json_array_append_new(L, lay("relu"));
        json_array_append_new(L, lin(84));
        json_array_append_new(L, lay("relu"));
    } else if (strcmp(t, "resnet") == 0) {
        json_array_clear(L);
        int widths[8] = {16, 32, 64}, nw = 3, blocks = 1;
        const json_t *wj = json_object_get(arch, "widths");
        if (wj) {
            if (!json_is_array(wj) || json_array_size(wj) < 1 || json_array_size(wj) > 8) {
                json_decref(L);
                return err_set(err, FN_EINVAL, "model arch.widths: expected 1..8 stage widths, e.g. [16,32,64]");
            }
            nw = (int)json_array_size(wj);
            for (int i = 0; i < nw; i++) {
                const json_t *w = json_array_get(wj, (size_t)i);
                if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 4096) {
                    json_decref(L);
                    return err_set(err, FN_EINVAL, "model arch.widths[%d]: expected an integer in 1..4096", i);
                }
                widths[i] = (int)json_integer_value(w);
            }
        }
        int rc = get_int(arch, "blocks", 1, 1, 16, "model arch", &blocks, err);
        if (rc) {
            json_decref(L);
            return rc;
        }
        json_array_append_new(L, conv(widths[0], 3, 1, 1, 0));
        json_array_append_new(L, lay("batchnorm"));
        json_array_append_new(L, lay("relu"));
        int cin = widths[0];
        for (int s = 0; s < nw; s++)
            for (int b = 0; b < blocks; b++) {
                int stride = (s > 0 && b == 0) ? 2 : 1, w = widths[s];
                json_t *body = json_array();
                json_array_append_new(body, conv(w, 3, stride, 1, 0));
                json_array_append_new(body, lay("batchnorm"));
                json_array_append_new(body, lay("relu"));
                json_array_append_new(body, conv(w, 3, 1, 1, 0));
                json_array_append_new(body, lay("batchnorm"));
                json_t *blk = json_pack("{s:s,s:o}", "type", "residual", "body", body);
                if (stride != 1 || cin != w) {
                    json_t *sc = json_array();
                    json_array_append_new(sc, conv(w, 1, stride, 0, 0));
                    json_array_append_new(sc, lay("batchnorm"));
                    json_object_set_new(blk, "shortcut", sc);
                }
                json_array_append_new(L, blk);
                json_array_append_new(L, lay("relu"));
                cin = w;
            }
        json_array_append_new(L, lay("global_avgpool"));
    }
    json_array_append_new(L, lin(classes));
    *layers = L;
    return 0;
}

int engine_net_create(const json_t *arch, int c, int h, int w, int num_classes, engine_net_t **out, err_t *err)
{
    *out = NULL;
    if (c < 1 || h < 1 || w < 1 || (int64_t)c * h * w > MAX_WIDTH)
        return err_set(err, FN_EINVAL, "model: input shape %dx%dx%d is invalid (each >= 1, at most %d values)", c, h, w,
                       MAX_WIDTH);
    if (num_classes < 1 || num_classes > MAX_WIDTH)
        return err_set(err, FN_EINVAL, "model: num_classes is %d; expected 1..%d", num_classes, MAX_WIDTH);
    json_t *layers = NULL;
    int rc = expand(arch, num_classes, &layers, err);
    if (rc)
        return rc;
    engine_net_t *n = calloc(1, sizeof *n);
    FN_CHECK(n);
    n->c = c;
    n->h = h;
    n->w = w;
    n->classes = num_classes;
    shp_t s = {3, {c, h, w}};
    rc = parse_seq(n, layers, &s, "model.layers", 0, &n->top, err);
    json_decref(layers);
    if (!rc && (s.nd != 1 || s.d[0] != num_classes)) {
        char sb[64];
        shp_str(&s, sb, sizeof sb);
        rc = err_set(err, FN_EINVAL, "model: the last layer produces %s per sample but the data set has %d classes; "
                     "end with a linear layer of %d outputs", sb, num_classes, num_classes);
    }
    if (!rc && n->nparams > 0x7fffffffu)
        rc = err_set(err, FN_EINVAL, "model: %zu parameters exceed the limit of %d; use narrower or fewer layers",
                     n->nparams, 0x7fffffff);
    if (!rc) {
        /* Sizes come from configs: a huge model must be an error, not an abort. */
        /* Buffers right after the parameters: together they are the federated vector. */
        n->params = calloc(n->nparams + n->nbuf ? n->nparams + n->nbuf : 1, sizeof(float));
        n->grads = calloc(n->nparams ? n->nparams : 1, sizeof(float));
        n->buffers = n->params ? n->params + n->nparams : NULL;
        if (!n->params || !n->grads)
            rc = err_set(err, FN_ENOMEM, "model: %zu parameters (%zu MiB) do not fit in memory", n->nparams,
                         2 * n->nparams * sizeof(float) >> 20);
    }
    if (rc) {
        engine_net_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

void engine_net_free(engine_net_t *n)
{
    if (!n)
        return;
    free_seq(&n->top);
    free(n->info);
    free(n->params); /* and the buffers after them */
    free(n->grads);
    free(n);
}

size_t engine_net_num_params(const engine_net_t *n) { return n->nparams; }
float *engine_net_params(engine_net_t *n) { return n->params; }
float *engine_net_grads(engine_net_t *n) { return n->grads; }
size_t engine_net_num_buffers(const engine_net_t *n) { return n->nbuf; }
float *engine_net_buffers(engine_net_t *n) { return n->buffers; }
int engine_net_num_tensors(const engine_net_t *n) { return n->ninfo; }
const engine_param_info_t *engine_net_tensor(const engine_net_t *n, int i) { return &n->info[i]; }
double engine_net_flops_per_sample(const engine_net_t *n) { return n->flops; }

static void init_seq(engine_net_t *n, const seq_t *s)
{
    for (int i = 0; i < s->n; i++) {
        const layer_t *L = &s->l[i];
        if (L->kind == L_BN || L->kind == L_LN) {
            const engine_param_info_t *g = &n->info[L->w];
            for (int64_t c = 0; c < g->shape[0]; c++) {
                n->params[g->offset + (size_t)c] = 1.0f;
                if (L->kind == L_BN)
                    n->buffers[L->rv + (size_t)c] = 1.0f;
            }
        }
        if (L->body)
            init_seq(n, L->body);
        if (L->sc)
            init_seq(n, L->sc);
        for (int b = 0; b < L->nbr; b++)
            init_seq(n, &L->br[b]);
        if (L->cell)
            nn_cell_init(n, L->cell);
    }
}

void engine_net_init(engine_net_t *n, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    memset(n->params, 0, n->nparams * sizeof(float));
    memset(n->buffers, 0, n->nbuf * sizeof(float));
    for (int i = 0; i < n->ninfo; i++) {
        const engine_param_info_t *p = &n->info[i];
        if (!p->fan_in)
            continue;
        size_t cnt = 1;
        for (int d = 0; d < p->ndim; d++)
            cnt *= (size_t)p->shape[d];
        double bound = sqrt(6.0 / p->fan_in);
        for (size_t k = 0; k < cnt; k++)
            n->params[p->offset + k] = (float)((2.0 * rng_uniform(&r) - 1.0) * bound);
    }
    init_seq(n, &n->top);
}

static engine_tensor_t *view(engine_net_t *n, engine_graph_t *g, int idx)
{
    if (idx < 0)
        return NULL;
    const engine_param_info_t *p = &n->info[idx];
    return engine_graph_view(g, n->params + p->offset, n->grads + p->offset, ENGINE_F32, p->ndim, p->shape);
}

static engine_tensor_t *run_seq(engine_net_t *n, engine_graph_t *g, const seq_t *s, engine_tensor_t *x, int training)
{
    for (int i = 0; i < s->n && x; i++) {
        const layer_t *L = &s->l[i];
        switch (L->kind) {
        case L_LINEAR:
            if (x->ndim != 2)
                x = engine_flatten(g, x);
            if (n->in_hook)
                x = n->in_hook(n->in_hook_ctx, g, x, n->in_hook_n++, training);
            x = engine_linear(g, x, view(n, g, L->w), view(n, g, L->b));
            break;
        case L_CONV: {
            engine_conv2d_params_t p = {L->stride, L->stride, L->pad, L->pad, L->dil, L->dil, L->groups, 0};
            /* conv then relu: one fused op (the same values, a tensor and two memory passes fewer) */
            if (i + 1 < s->n && s->l[i + 1].kind == L_RELU) {
                p.relu = 1;
                i++;
            }
            if (n->in_hook)
                x = n->in_hook(n->in_hook_ctx, g, x, n->in_hook_n++, training);
            x = engine_conv2d(g, x, view(n, g, L->w), view(n, g, L->b), &p);
            break;
        }
        case L_MAXPOOL:
            x = engine_maxpool2d(g, x, L->k, L->stride, L->pad);
            break;
        case L_AVGPOOL:
            x = engine_avgpool2d(g, x, L->k, L->stride, L->pad);
            break;
        case L_GAP:
            x = engine_global_avgpool(g, x);
            break;
        case L_BN:
            x = engine_batchnorm(g, x, view(n, g, L->w), view(n, g, L->b), n->buffers + L->rm, n->buffers + L->rv,
                                 L->mom, L->eps, training);
            break;
        case L_LN:
            x = engine_layernorm(g, x, view(n, g, L->w), view(n, g, L->b), L->eps);
            break;
        case L_RELU:
            x = engine_relu(g, x);
            break;
        case L_GELU:
            x = engine_gelu(g, x);
            break;
        case L_SIGMOID:
            x = engine_sigmoid(g, x);
            break;
        case L_TANH:
            x = engine_tanh(g, x);
            break;
        case L_DROPOUT:
            x = engine_dropout(g, x, L->p, training);
            break;
        case L_FLATTEN:
            x = engine_flatten(g, x);
            break;
        case L_RESIDUAL: {
            engine_tensor_t *a = run_seq(n, g, L->body, x, training);
            engine_tensor_t *b = L->sc ? run_seq(n, g, L->sc, x, training) : x;
            x = engine_add(g, a, b);
            break;
        }
        case L_LSTM: {
            int64_t seq[3] = {x->ne[0], L->T, L->I}, last[2] = {x->ne[0], L->out};
            engine_tensor_t *hs = engine_lstm(g, engine_reshape(g, x, 3, seq), view(n, g, L->w), view(n, g, L->wh),
                                              view(n, g, L->b), NULL, NULL);
            x = engine_reshape(g, engine_slice(g, hs, 1, L->T - 1, 1), 2, last);
            break;
        }
        case L_CONCAT: {
            engine_tensor_t *parts[16];
            for (int b = 0; b < L->nbr; b++)
                parts[b] = run_seq(n, g, &L->br[b], x, training);
            x = engine_concat(g, L->nbr, parts, 1);
            break;
        }
        case L_CELL:
            x = nn_cell_forward(n, g, L->cell, x, training);
            break;
        }
    }
    return x;
}

engine_tensor_t *engine_net_forward(engine_net_t *n, engine_graph_t *g, engine_tensor_t *x, int training)
{
    if (!x)
        return NULL;
    if (engine_tensor_numel(x) != x->ne[0] * (int64_t)n->c * n->h * n->w) {
        char sb[64];
        engine_graph_fail(g, FN_EINVAL, "model: input %s does not hold [B, %d, %d, %d] samples",
                          engine_tensor_shape_str(x, sb, sizeof sb), n->c, n->h, n->w);
        return NULL;
    }
    if (x->ndim != 4) {
        int64_t shape[4] = {x->ne[0], n->c, n->h, n->w};
        x = engine_reshape(g, x, 4, shape);
    }
    n->in_hook_n = 0;
    return run_seq(n, g, &n->top, x, training);
}

void engine_net_set_input_hook(engine_net_t *n, engine_net_input_hook_fn fn, void *ctx)
{
    n->in_hook = fn;
    n->in_hook_ctx = ctx;
}

/* For engine/nn_cell.c: a cell's edges are layer lists like a residual's body. */
int nn_seq_parse(engine_net_t *n, const json_t *arr, shp_t *s, const char *path, int depth, seq_t **out, err_t *err)
{
    *out = calloc(1, sizeof **out);
    FN_CHECK(*out);
    return parse_seq(n, arr, s, path, depth, *out, err);
}
void nn_seq_free(seq_t *s)
{
    free_seq(s);
    free(s);
}
void nn_seq_init(engine_net_t *n, const seq_t *s) { init_seq(n, s); }
engine_tensor_t *nn_seq_run(engine_net_t *n, engine_graph_t *g, const seq_t *s, engine_tensor_t *x, int training)
{
    return run_seq(n, g, s, x, training);
}
