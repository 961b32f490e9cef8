/* The genome's JSON form and its decoding to the engine's layer list (nas/genome.h). */
#include <stdio.h>
#include <string.h>

#include "engine/nn.h"
#include "nas/genome.h"

static const int edge_from[NAS_CELL_EDGES] = {0, 0, 1, 0, 1, 2};
static const int edge_to[NAS_CELL_EDGES] = {1, 2, 2, 3, 3, 3};

int nas_genome_to_json(const nas_space_t *sp, const nas_genome_t *g, json_t **out, err_t *err)
{
    *out = NULL;
    if (g->kind == NAS_SPACE_MACRO) {
        if (g->nlayers < 0 || g->nlayers > NAS_MAX_LAYERS)
            return err_set(err, FN_EINVAL, "genome: %d layers (at most %d)", g->nlayers, NAS_MAX_LAYERS);
        json_t *layers = json_array();
        for (int i = 0; i < g->nlayers; i++) {
            const char *op = nas_macro_op_name((nas_macro_op_t)g->layer[i].op);
            if (!op) {
                json_decref(layers);
                return err_set(err, FN_EINVAL, "genome: layer %d: unknown operation %d", i, g->layer[i].op);
            }
            json_array_append_new(layers, json_pack("{s:s,s:i,s:b,s:i}", "op", op, "width", g->layer[i].width, "bn",
                                                    g->layer[i].bn, "reduce", g->layer[i].reduce));
        }
        *out = json_pack("{s:s,s:o}", "space", "macro", "layers", layers);
        return 0;
    }
    json_t *edges = json_array();
    for (int e = 0; e < NAS_CELL_EDGES; e++) {
        const char *op = nas_edge_op_name((nas_edge_op_t)g->edge[e]);
        if (!op) {
            json_decref(edges);
            return err_set(err, FN_EINVAL, "genome: edge %d: unknown operation %d", e, g->edge[e]);
        }
        json_array_append_new(edges, json_string(op));
    }
    *out = json_pack("{s:s,s:o,s:i,s:i}", "space", "cell", "edges", edges, "cells_per_stage", g->cells, "width",
                     g->width);
    return 0;
}

static int only_keys(const json_t *o, const char *const *keys, const char *what, err_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(k, keys[i]) == 0;
        if (!ok)
            return err_set(err, FN_EINVAL, "genome: %s: unknown key \"%s\"", what, k);
    }
    return 0;
}

int nas_genome_from_json(const nas_space_t *sp, const json_t *j, nas_genome_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(j))
        return err_set(err, FN_EINVAL, "genome: expected an object");
    const char *space = json_string_value(json_object_get(j, "space"));
    if (!space || (strcmp(space, "macro") != 0 && strcmp(space, "cell") != 0))
        return err_set(err, FN_EINVAL, "genome: \"space\" must be \"macro\" or \"cell\"");
    out->kind = strcmp(space, "cell") == 0 ? NAS_SPACE_CELL : NAS_SPACE_MACRO;
    if (out->kind == NAS_SPACE_MACRO) {
        static const char *const keys[] = {"space", "layers", NULL}, *const lkeys[] = {"op", "width", "bn", "reduce",
                                                                                       NULL};
        if (only_keys(j, keys, "macro genome", err))
            return FN_EINVAL;
        const json_t *ls = json_object_get(j, "layers");
        if (!json_is_array(ls) || json_array_size(ls) > NAS_MAX_LAYERS)
            return err_set(err, FN_EINVAL, "genome: \"layers\" must be an array of at most %d layers", NAS_MAX_LAYERS);
        out->nlayers = (int)json_array_size(ls);
        for (int i = 0; i < out->nlayers; i++) {
            const json_t *L = json_array_get(ls, (size_t)i);
            char what[32];
            snprintf(what, sizeof what, "layers[%d]", i);
            if (!json_is_object(L) || only_keys(L, lkeys, what, err))
                return err_set(err, FN_EINVAL, "genome: layers[%d]: expected {\"op\",\"width\",\"bn\",\"reduce\"}", i);
            const char *opname = json_string_value(json_object_get(L, "op"));
            int op = nas_macro_op_from_name(opname);
            if (op < 0)
                return err_set(err, FN_EINVAL, "genome: layers[%d].op: unknown operation \"%s\"", i,
                               opname ? opname : "(not a string)");
            const json_t *w = json_object_get(L, "width"), *bn = json_object_get(L, "bn"),
                         *red = json_object_get(L, "reduce");
            if (!json_is_integer(w) || !json_is_boolean(bn) || !json_is_integer(red) ||
                json_integer_value(red) < 0 || json_integer_value(red) > 64 || json_integer_value(w) < 0 ||
                json_integer_value(w) > 4096)
                return err_set(err, FN_EINVAL,
                               "genome: layers[%d]: expected an integer \"width\", boolean \"bn\" and integer "
                               "\"reduce\"",
                               i);
            out->layer[i].op = op;
            out->layer[i].width = (int)json_integer_value(w);
            out->layer[i].bn = json_is_true(bn);
            out->layer[i].reduce = (int)json_integer_value(red);
        }
    } else {
        static const char *const keys[] = {"space", "edges", "cells_per_stage", "width", NULL};
        if (only_keys(j, keys, "cell genome", err))
            return FN_EINVAL;
        const json_t *es = json_object_get(j, "edges"), *n = json_object_get(j, "cells_per_stage"),
                     *w = json_object_get(j, "width");
        if (!json_is_array(es) || json_array_size(es) != NAS_CELL_EDGES)
            return err_set(err, FN_EINVAL, "genome: \"edges\" must be an array of %d operation names", NAS_CELL_EDGES);
        for (int e = 0; e < NAS_CELL_EDGES; e++) {
            int op = nas_edge_op_from_name(json_string_value(json_array_get(es, (size_t)e)));
            if (op < 0)
                return err_set(err, FN_EINVAL, "genome: edges[%d]: unknown operation", e);
            out->edge[e] = op;
        }
        if (!json_is_integer(n) || !json_is_integer(w) || json_integer_value(n) < 0 || json_integer_value(n) > 4096 ||
            json_integer_value(w) < 0 || json_integer_value(w) > 4096)
            return err_set(err, FN_EINVAL, "genome: \"cells_per_stage\" and \"width\" must be integers");
        out->cells = (int)json_integer_value(n);
        out->width = (int)json_integer_value(w);
    }
    return nas_genome_validate(sp, out, err);
}

/* ---- decoding ---- */

static json_t *conv(int out, int k, int stride, int dil, int groups, int bias)
{
    json_t *c = json_pack("{s:s,s:i,s:i,s:i,s:b}", "type", "conv2d", "out", out, "kernel", k, "stride", stride, "bias",
                          bias);
    if (stride == 1)
        json_object_set_new(c, "padding", json_string("same"));
    else
        json_object_set_new(c, "padding", json_integer(dil * (k - 1) / 2));
    if (dil != 1)
        json_object_set_new(c, "dilation", json_integer(dil));
    if (groups != 1)
        json_object_set_new(c, "groups", json_integer(groups));
    return c;
}
static json_t *lay(const char *t) { return json_pack("{s:s}", "type", t); }
static json_t *pool(const char *t, int k, int stride, int pad)
{
    return json_pack("{s:s,s:i,s:i,s:i}", "type", t, "kernel", k, "stride", stride, "padding", pad);
}

static void decode_macro(const nas_space_t *sp, const nas_genome_t *c, json_t *L)
{
    int ch = sp->in_c;
    for (int i = 0; i < c->nlayers; i++) {
        const nas_macro_layer_t *l = &c->layer[i];
        int w = l->width, bias = !l->bn, act = 1;
        switch (l->op) {
        case NAS_OP_CONV3:
        case NAS_OP_CONV5:
            json_array_append_new(L, conv(w, l->op == NAS_OP_CONV3 ? 3 : 5, 1, 1, 1, bias));
            ch = w;
            break;
        case NAS_OP_SEP3:
        case NAS_OP_SEP5:
            /* depthwise (groups = channels) then pointwise: the MobileNet factorisation */
            json_array_append_new(L, conv(ch, l->op == NAS_OP_SEP3 ? 3 : 5, 1, 1, ch, 0));
            json_array_append_new(L, conv(w, 1, 1, 1, 1, bias));
            ch = w;
            break;
        case NAS_OP_DIL3:
            json_array_append_new(L, conv(w, 3, 1, 2, 1, bias));
            ch = w;
            break;
        case NAS_OP_MAXPOOL3:
        case NAS_OP_AVGPOOL3:
            json_array_append_new(L, pool(l->op == NAS_OP_MAXPOOL3 ? "maxpool" : "avgpool", 3, 1, 1));
            act = 0;
            break;
        default: /* identity: only carries leading reductions */
            act = 0;
            break;
        }
        if (l->op != NAS_OP_IDENTITY && l->bn)
            json_array_append_new(L, lay("batchnorm"));
        if (act)
            json_array_append_new(L, lay("relu"));
        for (int k = 0; k < l->reduce; k++)
            json_array_append_new(L, pool("maxpool", 2, 2, 0));
    }
}

static json_t *edge_layers(int op, int ch)
{
    json_t *a = json_array();
    switch (op) {
    case NAS_EDGE_CONV1:
    case NAS_EDGE_CONV3:
        json_array_append_new(a, lay("relu"));
        json_array_append_new(a, conv(ch, op == NAS_EDGE_CONV1 ? 1 : 3, 1, 1, 1, 0));
        json_array_append_new(a, lay("batchnorm"));
        break;
    case NAS_EDGE_AVGPOOL3:
        json_array_append_new(a, pool("avgpool", 3, 1, 1));
        break;
    default: /* skip: the empty list is the identity */
        break;
    }
    return a;
}

static void decode_cell(const nas_space_t *sp, const nas_genome_t *c, json_t *L)
{
    json_array_append_new(L, conv(c->width, 3, 1, 1, 1, 0));
    json_array_append_new(L, lay("batchnorm"));
    for (int s = 0; s < sp->stages; s++) {
        int ch = c->width << s;
        if (s > 0) {
            json_t *body = json_array(), *sc = json_array();
            json_array_append_new(body, lay("relu"));
            json_array_append_new(body, conv(ch, 3, 2, 1, 1, 0));
            json_array_append_new(body, lay("batchnorm"));
            json_array_append_new(body, lay("relu"));
            json_array_append_new(body, conv(ch, 3, 1, 1, 1, 0));
            json_array_append_new(body, lay("batchnorm"));
            /* a strided 1x1 conv gives floor((h-1)/2)+1 rows like the 3x3 s2 p1 body, odd h too */
            json_array_append_new(sc, conv(ch, 1, 2, 1, 1, 0));
            json_array_append_new(sc, lay("batchnorm"));
            json_array_append_new(L, json_pack("{s:s,s:o,s:o}", "type", "residual", "body", body, "shortcut", sc));
        }
        for (int n = 0; n < c->cells; n++) {
            json_t *edges = json_array();
            for (int e = 0; e < NAS_CELL_EDGES; e++)
                if (c->edge[e] != NAS_EDGE_NONE)
                    json_array_append_new(edges, json_pack("{s:i,s:i,s:o}", "from", edge_from[e], "to", edge_to[e],
                                                           "layers", edge_layers(c->edge[e], ch)));
            json_array_append_new(L, json_pack("{s:s,s:i,s:o}", "type", "cell", "nodes", NAS_CELL_NODES, "edges", edges));
        }
    }
    json_array_append_new(L, lay("batchnorm"));
    json_array_append_new(L, lay("relu"));
}

int nas_genome_decode(const nas_space_t *sp, const nas_genome_t *g, json_t **model, err_t *err)
{
    *model = NULL;
    int rc = nas_genome_validate(sp, g, err);
    if (rc)
        return rc;
    nas_genome_t c;
    nas_genome_canonical(sp, g, &c);
    json_t *L = json_array();
    if (sp->kind == NAS_SPACE_MACRO)
        decode_macro(sp, &c, L);
    else
        decode_cell(sp, &c, L);
    json_array_append_new(L, lay("global_avgpool"));
    json_array_append_new(L, json_pack("{s:s,s:i}", "type", "linear", "out", sp->classes));
    *model = json_pack("{s:s,s:o}", "type", "layers", "layers", L);
    return 0;
}

int nas_genome_cost(const nas_space_t *sp, const nas_genome_t *g, double *params, double *flops, err_t *err)
{
    json_t *m;
    int rc = nas_genome_decode(sp, g, &m, err);
    if (rc)
        return rc;
    engine_net_t *net;
    rc = engine_net_create(m, sp->in_c, sp->in_h, sp->in_w, sp->classes, &net, err);
    json_decref(m);
    if (rc)
        return err_wrap(err, "nas: the decoded genome does not build: ");
    *params = (double)engine_net_num_params(net);
    *flops = engine_net_flops_per_sample(net);
    engine_net_free(net);
    return 0;
}
