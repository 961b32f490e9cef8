/* The "cell" layer: node 0 is the layer's input, node j > 0 the sum over edges (i, j), i < j,
 * of the edge's layer list applied to node i, and the last node the layer's output. It is the
 * building block of cell-based NAS spaces (NAS-Bench-201); see engine/nn.h for the JSON. */
#include "engine/nn_cell.h"

#include <stdio.h>
#include <string.h>

#include "engine/ops.h"

#define CELL_MAX_NODES 16
#define CELL_MAX_EDGES 64
#define CELL_MAX_DEPTH 8 /* as nn.c's nesting limit */

typedef struct {
    int from, to;
    seq_t *body; /* NULL: the identity (an empty layer list, a skip connection) */
} cell_edge_t;

struct nn_cell {
    int nodes, nedges;
    cell_edge_t *edges; /* ordered by target node, then as written: the parameter order */
};

static void shp_str(const shp_t *s, char *buf, size_t n)
{
    if (s->nd == 3)
        snprintf(buf, n, "[%lld,%lld,%lld]", (long long)s->d[0], (long long)s->d[1], (long long)s->d[2]);
    else
        snprintf(buf, n, "[%lld]", (long long)s->d[0]);
}

int nn_cell_parse(engine_net_t *n, const json_t *o, shp_t *s, const char *path, int depth, nn_cell_t **out,
                  err_t *err)
{
    *out = NULL;
    if (depth >= CELL_MAX_DEPTH)
        return err_set(err, FN_EINVAL, "%s: blocks nest deeper than %d", path, CELL_MAX_DEPTH);
    const json_t *nj = json_object_get(o, "nodes"), *ej = json_object_get(o, "edges");
    if (!json_is_integer(nj) || json_integer_value(nj) < 2 || json_integer_value(nj) > CELL_MAX_NODES)
        return err_set(err, FN_EINVAL, "%s.nodes: expected an integer in [2, %d] (node 0 is the input, the last the "
                       "output)", path, CELL_MAX_NODES);
    if (!json_is_array(ej) || json_array_size(ej) < 1 || json_array_size(ej) > CELL_MAX_EDGES)
        return err_set(err, FN_EINVAL, "%s.edges: expected 1..%d edges {\"from\":i,\"to\":j,\"layers\":[...]}", path,
                       CELL_MAX_EDGES);
    nn_cell_t *c = calloc(1, sizeof *c);
    FN_CHECK(c);
    *out = c;
    c->nodes = (int)json_integer_value(nj);
    int ne = (int)json_array_size(ej);
    c->edges = calloc((size_t)ne, sizeof *c->edges);
    FN_CHECK(c->edges);
    int from[CELL_MAX_EDGES], to[CELL_MAX_EDGES];
    for (int e = 0; e < ne; e++) {
        const json_t *E = json_array_get(ej, (size_t)e);
        const json_t *f = json_object_get(E, "from"), *t = json_object_get(E, "to");
        const char *key;
        json_t *v;
        if (!json_is_object(E))
            return err_set(err, FN_EINVAL, "%s.edges[%d]: expected {\"from\":i,\"to\":j,\"layers\":[...]}", path, e);
        json_object_foreach((json_t *)E, key, v) {
            if (strcmp(key, "from") && strcmp(key, "to") && strcmp(key, "layers"))
                return err_set(err, FN_EINVAL, "%s.edges[%d]: unknown key \"%s\" (an edge takes from, to, layers)",
                               path, e, key);
        }
        if (!json_is_integer(f) || !json_is_integer(t) || json_integer_value(f) < 0 ||
            json_integer_value(f) >= json_integer_value(t) || json_integer_value(t) >= c->nodes)
            return err_set(err, FN_EINVAL, "%s.edges[%d]: expected integers 0 <= from < to < nodes (%d)", path, e,
                           c->nodes);
        if (!json_is_array(json_object_get(E, "layers")))
            return err_set(err, FN_EINVAL, "%s.edges[%d].layers: expected a list of layers ([] for the identity)",
                           path, e);
        from[e] = (int)json_integer_value(f);
        to[e] = (int)json_integer_value(t);
        for (int k = 0; k < e; k++)
            if (from[k] == from[e] && to[k] == to[e])
                return err_set(err, FN_EINVAL, "%s.edges[%d]: a second edge %d -> %d", path, e, from[e], to[e]);
    }
    /* Nodes are settled in order, so each edge is parsed knowing its source's shape; a node
     * without incoming edges has no value and may feed nothing. */
    shp_t node[CELL_MAX_NODES];
    int has[CELL_MAX_NODES] = {1};
    node[0] = *s;
    for (int j = 1; j < c->nodes; j++) {
        for (int e = 0; e < ne; e++) {
            if (to[e] != j)
                continue;
            char sub[256], s1[64], s2[64];
            if (!has[from[e]])
                return err_set(err, FN_EINVAL, "%s.edges[%d]: node %d has no incoming edge, so it cannot feed node %d",
                               path, e, from[e], j);
            cell_edge_t *E = &c->edges[c->nedges++];
            E->from = from[e];
            E->to = j;
            shp_t a = node[from[e]];
            const json_t *layers = json_object_get(json_array_get(ej, (size_t)e), "layers");
            if (json_array_size(layers) > 0) {
                snprintf(sub, sizeof sub, "%s.edges[%d].layers", path, e);
                int rc = nn_seq_parse(n, layers, &a, sub, depth + 1, &E->body, err);
                if (rc)
                    return rc;
            }
            if (has[j]) {
                shp_str(&node[j], s1, sizeof s1);
                shp_str(&a, s2, sizeof s2);
                if (strcmp(s1, s2) != 0)
                    return err_set(err, FN_EINVAL, "%s.edges[%d]: gives %s but node %d already receives %s; the "
                                   "inputs of a node are added, so they must match", path, e, s2, j, s1);
            }
            node[j] = a;
            has[j] = 1;
        }
    }
    if (!has[c->nodes - 1])
        return err_set(err, FN_EINVAL, "%s: the output node %d has no incoming edge", path, c->nodes - 1);
    *s = node[c->nodes - 1];
    return 0;
}

void nn_cell_free(nn_cell_t *c)
{
    if (!c)
        return;
    for (int e = 0; e < c->nedges; e++)
        nn_seq_free(c->edges[e].body);
    free(c->edges);
    free(c);
}

void nn_cell_init(engine_net_t *n, const nn_cell_t *c)
{
    for (int e = 0; e < c->nedges; e++)
        if (c->edges[e].body)
            nn_seq_init(n, c->edges[e].body);
}

engine_tensor_t *nn_cell_forward(engine_net_t *n, engine_graph_t *g, const nn_cell_t *c, engine_tensor_t *x,
                                 int training)
{
    engine_tensor_t *node[CELL_MAX_NODES] = {x};
    /* edges are stored by target, so every source is complete before it is read */
    for (int e = 0; e < c->nedges; e++) {
        const cell_edge_t *E = &c->edges[e];
        engine_tensor_t *in = node[E->from];
        if (!in)
            return NULL; /* an op failed upstream; the graph holds the error */
        engine_tensor_t *y = E->body ? nn_seq_run(n, g, E->body, in, training) : in;
        if (!y)
            return NULL;
        node[E->to] = node[E->to] ? engine_add(g, node[E->to], y) : y;
    }
    return node[c->nodes - 1];
}
