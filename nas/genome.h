/* genome: one architecture of a search space, its canonical form and hash (the cache key:
 * isomorphic cells are one candidate), JSON round trip, random draws and mutations, and the
 * decoding to the engine's {"type":"layers"} model with its parameter and FLOP counts. */
#ifndef FEDNAS_NAS_GENOME_H
#define FEDNAS_NAS_GENOME_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "common/rng.h"
#include "nas/config.h"

/* SHA-256 (libsodium) of the canonical encoding, as 64 lowercase hex digits plus NUL. */
#define NAS_HASH_LEN 65

typedef struct nas_macro_layer {
    int op;     /* nas_macro_op_t */
    int width;  /* output channels (a value from space.widths) */
    int bn;     /* batch norm after the op */
    int reduce; /* 2x2 max-pools (stride 2) after this layer: 0 or 1 in a drawn genome, more
                 * where the canonical form merges reductions of dropped identity layers */
} nas_macro_layer_t;

/* A plain value: copy it with =. Only the part of the space's kind is meaningful. */
typedef struct nas_genome {
    nas_space_kind_t kind;
    int nlayers;                              /* macro: = space.layers */
    nas_macro_layer_t layer[NAS_MAX_LAYERS];
    int edge[NAS_CELL_EDGES];                 /* cell: nas_edge_op_t per edge (config.h order) */
    int cells;                                /* cell: N cells per stage */
    int width;                                /* cell: stem channels C (stage s has C * 2^s) */
} nas_genome_t;

/* 0 when g is a possible candidate of sp: every gene is one of the space's choices, the cell
 * has a path from input to output, the image stays at least 1x1 through every layer. */
int nas_genome_validate(const nas_space_t *sp, const nas_genome_t *g, err_t *err);

/* The canonical form (specs/nas.md): macro: identity layers dropped (a reduction after one
 * moves to the layer before it; reductions before the first real layer stay on one leading
 * identity layer), unused genes (a pool's width, identity's batch norm) zeroed;
 * cell: "none" edges and edges on no input-to-output path set to none, intermediate nodes
 * relabelled to the lexicographically smallest edge encoding. Isomorphic genomes have equal
 * canonical forms. The macro canonical form may have fewer layers than the space's slots. */
void nas_genome_canonical(const nas_space_t *sp, const nas_genome_t *g, nas_genome_t *out);
/* Hex SHA-256 over "fednas-nas-v1" and the canonical encoding (space kind, genes, stacking). */
void nas_genome_hash(const nas_space_t *sp, const nas_genome_t *g, char out[NAS_HASH_LEN]);

/* A uniformly drawn valid genome (redrawn until valid; FN_EINVAL if the space admits none). */
int nas_genome_random(const nas_space_t *sp, rng_t *r, nas_genome_t *out, err_t *err);
/* Marks sp->reductions of the macro genome g's layers as reductions, a uniform subset drawn from r
 * (the layers' reduce flags must be clear). */
void nas_genome_place_reductions(const nas_space_t *sp, rng_t *r, nas_genome_t *g);
/* child = parent with exactly one gene changed to a different allowed value (an op, a cell
 * edge, a width, the cells per stage, a batch-norm flag, or a reduction moved), redrawn until
 * valid and of a different canonical hash than the parent. desc (may be NULL) gets a short
 * description ("layer 3 op conv3x3 -> sepconv5x5", "edge 1-3 none -> skip"). FN_EINVAL when
 * the space has nothing to mutate. */
int nas_genome_mutate(const nas_space_t *sp, rng_t *r, const nas_genome_t *parent, nas_genome_t *child, char *desc,
                      size_t desc_cap, err_t *err);
/* Uniform crossover (each layer, or each edge and stacking gene, from a or b; reductions from
 * a), redrawn until valid (falls back to a). */
void nas_genome_crossover(const nas_space_t *sp, rng_t *r, const nas_genome_t *a, const nas_genome_t *b,
                          nas_genome_t *out);

/* {"space":"macro","layers":[{"op":"conv3x3","width":16,"bn":true,"reduce":0},...]} or
 * {"space":"cell","edges":["conv3x3","skip","none","conv1x1","avgpool3x3","conv3x3"],
 *  "cells_per_stage":2,"width":16}. from_json checks the genome against sp (validate). */
int nas_genome_to_json(const nas_space_t *sp, const nas_genome_t *g, json_t **out, err_t *err);
int nas_genome_from_json(const nas_space_t *sp, const json_t *j, nas_genome_t *out, err_t *err);

/* The engine model ({"type":"layers","layers":[...]}, engine/nn.h) of the canonical form.
 * Macro: per layer op [+ batchnorm] + relu [+ maxpool 2], then global average pool and a
 * linear classifier. Cell: stem conv3x3 + BN; stages of N "cell" layers, a strided residual
 * block (ReLU, 3x3 s2, BN, ReLU, 3x3, BN; shortcut 1x1 s2 conv + BN) doubling the channels
 * between stages; BN, ReLU, global average pool, linear. */
int nas_genome_decode(const nas_space_t *sp, const nas_genome_t *g, json_t **model, err_t *err);
/* Trainable parameters (weights, biases, batch-norm affine; not the running statistics) and
 * forward FLOPs per sample (multiply-add = 2, convolutions and linear layers: pools, norms and
 * additions are not counted) on the space's input, from the decoded model built on the engine. */
int nas_genome_cost(const nas_space_t *sp, const nas_genome_t *g, double *params, double *flops, err_t *err);

#endif
