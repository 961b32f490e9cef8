/* supernet_internal (internal to nas/supernet*.c): the store's layout and the helpers that
 * supernet.c (store, keys, training) lends supernet_score.c (recalibration, scoring), kept out
 * of the public nas/supernet.h. */
#ifndef FEDNAS_NAS_SUPERNET_INTERNAL_H
#define FEDNAS_NAS_SUPERNET_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "nas/slice.h"
#include "nas/supernet.h"

/* One shared tensor at the largest shape any path gave it (row-major, up to 4 dimensions). */
typedef struct sn_tensor {
    char key[NAS_SUPERNET_KEY_LEN];
    int nd;
    int64_t shape[4];
    float *w;      /* weights */
    float *v;      /* SGD velocity */
    float *g;      /* this step's gradient, summed over its paths */
    uint8_t *hit;  /* 1 where a path of this step reached the element */
    uint8_t *init; /* 1 once a training path has initialised the element */
} sn_tensor_t;

/* A gene's cycle through a permutation of its choices (nas/supernet_sample.c, fair draws). */
typedef struct sn_cycle {
    int8_t perm[NAS_MAX_CHOICES > NAS_MACRO_OP_COUNT ? NAS_MAX_CHOICES : NAS_MACRO_OP_COUNT];
    int n, pos;
} sn_cycle_t;

/* Macro: genes 3i, 3i+1, 3i+2 are layer i's op, width and batch norm; cell: edges 0..5, then
 * the cells per stage and the width. */
typedef struct sn_sampler {
    sn_cycle_t gene[3 * NAS_MAX_LAYERS];
} sn_sampler_t;

struct nas_supernet {
    nas_space_t sp;
    nas_supernet_opts_t o;
    sn_tensor_t *t;
    int nt, cap;
    rng_t draw;        /* the path draws, continued across nas_supernet_train calls */
    engine_graph_t *g; /* the training steps' graph */
    long steps;
    uint64_t epochs;   /* passes begun, for their shuffles */
    uint64_t *seen;    /* open-addressed set of drawn paths (hash prefixes) */
    size_t nseen, capseen;
    sn_sampler_t sampler; /* fair draws' cycles, continued across nas_supernet_train calls */
};

void sn_path_genome(const nas_supernet_t *s, const nas_genome_t *g, nas_genome_t *out);
/* g decoded (arch), built (net) and the key of every net tensor (keys: calloc'ed). */
int sn_build(const nas_supernet_t *s, const nas_genome_t *g, json_t **arch, engine_net_t **net,
             char (**keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t **views, err_t *err);
int sn_keys(const nas_space_t *sp, const nas_genome_t *canon, const json_t *arch, const engine_net_t *net,
            char (*keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t *views, err_t *err);
/* Copies the path's stored slices into net; ids gets each net tensor's store id (-1: none).
 * persist 1 (training): creates and grows stored tensors and initialises their new elements
 * from engine_net_init(net, init_seed); persist 0 (scoring): reads only, and net keeps its
 * engine_net_init(net, init_seed) values where the store has nothing. */
int sn_load(nas_supernet_t *s, engine_net_t *net, char (*keys)[NAS_SUPERNET_KEY_LEN], const nas_slice_view_t *views,
            int persist, uint64_t init_seed, int *ids, err_t *err);

#endif
