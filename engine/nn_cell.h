/* nn_cell (internal to engine/): the "cell" layer, a DAG of layer lists (NAS cells), kept
 * out of nn.c behind a small hook. nn.c lends its layer-list parser and runner through the
 * nn_seq_* functions; nn_cell.c owns the cell's parsing, initialisation and forward pass. */
#ifndef FEDNAS_ENGINE_NN_CELL_H
#define FEDNAS_ENGINE_NN_CELL_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/graph.h"
#include "engine/nn.h"

/* A sample's shape without the batch: [C, H, W] (nd 3) or [F] (nd 1). */
typedef struct {
    int nd;
    int64_t d[3];
} shp_t;

typedef struct seq seq_t;
typedef struct nn_cell nn_cell_t;

/* nn.c: parse a layer list (allocating *out, even on error, for nn_seq_free), free, init, run. */
int nn_seq_parse(engine_net_t *n, const json_t *arr, shp_t *s, const char *path, int depth, seq_t **out, err_t *err);
void nn_seq_free(seq_t *s);
void nn_seq_init(engine_net_t *n, const seq_t *s);
engine_tensor_t *nn_seq_run(engine_net_t *n, engine_graph_t *g, const seq_t *s, engine_tensor_t *x, int training);

/* nn_cell.c: the layer's four actions. *out is set as soon as it is allocated, so that a parse
 * error leaves it for nn_cell_free like the other layers' partial state. */
int nn_cell_parse(engine_net_t *n, const json_t *o, shp_t *s, const char *path, int depth, nn_cell_t **out,
                  err_t *err);
void nn_cell_free(nn_cell_t *c);
void nn_cell_init(engine_net_t *n, const nn_cell_t *c);
engine_tensor_t *nn_cell_forward(engine_net_t *n, engine_graph_t *g, const nn_cell_t *c, engine_tensor_t *x,
                                 int training);

#endif
