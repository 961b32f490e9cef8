/* scatter: a site's part of a federated search under secure aggregation. The site trains the
 * path it was sent like any model, but every site must mask a vector of one length: the train
 * message's "scatter" block places each of the model's tensors (as the leading slice of a larger
 * stored tensor) and its batch-norm statistics in that vector, and every other value is zero. */
#ifndef FEDNAS_CLIENT_SCATTER_H
#define FEDNAS_CLIENT_SCATTER_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "engine/model.h"

/* scatter: {"length": L, "tensors": [[offset, d0, d1, d2, d3], ...] (one per tensor of model, in
 * engine_net_tensor order: where its stored tensor starts and the stored shape), "stats": offset
 * of the statistics (m - num_params values) or -1 when the model has none}. u holds the model's
 * federated vector (m values). *full gets a malloc'ed vector of L values (the caller frees it).
 * FN_EPROTO, naming what is wrong, for a block that does not fit the model or overflows L. */
int client_scatter_expand(const json_t *scatter, engine_model_t *model, const float *u, size_t m, float **full,
                          size_t *len, err_t *err);

#endif
