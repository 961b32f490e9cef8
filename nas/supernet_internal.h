/* supernet_internal (internal to nas/supernet*.c): the store's layout and the helpers that
 * supernet.c (store, keys, training) lends supernet_score.c (recalibration, scoring) and
 * supernet_dp.c (data-parallel training), kept out of the public nas/supernet.h. */
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

void nas_sn_path_genome(const nas_supernet_t *s, const nas_genome_t *g, nas_genome_t *out);
/* g decoded (arch), built (net) and the key of every net tensor (keys: calloc'ed). */
int nas_sn_build(const nas_supernet_t *s, const nas_genome_t *g, json_t **arch, engine_net_t **net,
             char (**keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t **views, err_t *err);
int nas_sn_keys(const nas_space_t *sp, const nas_genome_t *canon, const json_t *arch, const engine_net_t *net,
            char (*keys)[NAS_SUPERNET_KEY_LEN], nas_slice_view_t *views, err_t *err);
/* Copies the path's stored slices into net; ids gets each net tensor's store id (-1: none).
 * persist 1 (training): creates and grows stored tensors and initialises their new elements
 * from engine_net_init(net, init_seed); persist 0 (scoring): reads only, and net keeps its
 * engine_net_init(net, init_seed) values where the store has nothing. */
int nas_sn_load(nas_supernet_t *s, engine_net_t *net, char (*keys)[NAS_SUPERNET_KEY_LEN], const nas_slice_view_t *views,
            int persist, uint64_t init_seed, int *ids, err_t *err);

/* One training path: its model built and its slices loaded from the store (nas_sn_path_open: creates,
 * grows and initialises stored tensors as nas_sn_load with persist 1 does, seeded by the step). */
typedef struct sn_path {
    json_t *arch;
    engine_net_t *net;
    char (*keys)[NAS_SUPERNET_KEY_LEN];
    nas_slice_view_t *views;
    int *ids; /* store id of each net tensor */
} sn_path_t;

int nas_sn_path_open(nas_supernet_t *s, const nas_genome_t *g, sn_path_t *p, err_t *err);
/* Forward in train mode and backward on x [nb, ...]: the path's gradient (the batch's mean loss)
 * is left in engine_net_grads(p->net); loss and correct (may be NULL) get the batch loss and add
 * the samples classified right. A non-finite loss is FN_EINVAL before any backward. */
int nas_sn_path_grad(nas_supernet_t *s, sn_path_t *p, const float *x, const uint8_t *y, int nb, double *loss,
                 int *correct, err_t *err);
void nas_sn_path_close(sn_path_t *p);
/* Adds weight times the net's gradient (clipped to opts.clip_norm first) to the step's store
 * gradient on the path's slices, and marks them reached. */
void nas_sn_accumulate(nas_supernet_t *s, engine_net_t *net, const int *ids, const nas_slice_view_t *views,
                   double weight);
/* Momentum SGD on the elements reached this step, then clears the step's gradient. */
void nas_sn_apply(nas_supernet_t *s, double lr);
/* Drops a failed step's partial gradient. */
void nas_sn_discard(nas_supernet_t *s);
/* Counts g among the distinct paths drawn (the stats' `paths`). */
void nas_sn_note_path(nas_supernet_t *s, const nas_genome_t *g);

#endif
