/* fedsuper: the server's supernet in a federated search (Zhu and Jin's real-time federated
 * evolutionary NAS): one store of shared weights, from which each candidate path is cut as a
 * flat model vector the sites train, and into which the sites' changes are averaged back.
 *
 * Which weights a path reads is nas/supernet.h's rule (the same keys, nas_supernet_keys): a
 * tensor is stored under its choice's key at the largest shape any path gave it, and a path
 * reads its leading slice. A path's vector is its decoded model's federated vector
 * (engine/model.h: parameters, then batch-norm running statistics), so a site trains it like any
 * model. Batch-norm statistics are not shared: each canonical genome keeps its own (they
 * describe one path's activations; sharing them would be wrong for every other path).
 *
 * Aggregation: each stored element (and each genome's statistic) becomes its old value plus
 * the weighted mean of the changes of the sites that trained a path reading it this round;
 * elements no site trained keep their value. An element first reached by a path takes that
 * path's engine initialisation (seeded by the store's seed and the genome's hash), so the store
 * depends only on the sequence of paths and updates, not on when a slice is cut. */
#ifndef FEDNAS_NAS_FEDSUPER_H
#define FEDNAS_NAS_FEDSUPER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/model.h"
#include "nas/config.h"
#include "nas/genome.h"
#include "nas/slice.h"

typedef struct nas_fedsuper nas_fedsuper_t;

/* One candidate as a path of the store: its decoded model and where each tensor lives. */
typedef struct nas_fedsuper_path {
    nas_genome_t genome;
    char hash[NAS_HASH_LEN];
    json_t *arch;            /* the decoded model ({"type":"layers"}), what sites build */
    engine_model_t *model;   /* built from arch on the space's input */
    size_t m;                /* federated values: parameters, then batch-norm statistics */
    size_t np;               /* of which parameters */
    int nt;                  /* tensors of the model */
    int *ids;                /* the stored tensor each reads */
    nas_slice_view_t *views; /* and where in it (nas/slice.h: leading slice or kernel view) */
    int buf;                 /* the genome's batch-norm statistics in the store (-1: none) */
} nas_fedsuper_path_t;

int nas_fedsuper_create(const nas_space_t *sp, uint64_t seed, nas_fedsuper_t **out, err_t *err);
void nas_fedsuper_free(nas_fedsuper_t *fs);

/* The path of g: its tensors created or grown in the store and first-reached elements
 * initialised. FN_EINVAL when g does not decode or build. nas_fedsuper_path_free frees it. */
int nas_fedsuper_path(nas_fedsuper_t *fs, const nas_genome_t *g, nas_fedsuper_path_t **out, err_t *err);
void nas_fedsuper_path_free(nas_fedsuper_path_t *p);

/* The path's current vector (p->m values) into out. */
void nas_fedsuper_slice(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, float *out);
/* Adds one site's change of p's vector (p->m values) with weight w > 0. FN_EINVAL (nothing
 * added) when a value is not finite. */
int nas_fedsuper_add(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *delta, double w, err_t *err);
/* Applies the round's means (see above) and clears them; returns the elements changed. */
size_t nas_fedsuper_apply(nas_fedsuper_t *fs);
/* Drops the round's changes unapplied (a round that did not complete). */
void nas_fedsuper_discard(nas_fedsuper_t *fs);

/* Stored values: shared tensors and per-genome statistics (introspection, tests). */
size_t nas_fedsuper_size(const nas_fedsuper_t *fs);

/* ---- secure aggregation: every site sends one vector of the same length ----
 * The layout: every stored tensor at its stored shape, in the store's order (params values in
 * all). A site scatters its path's change into it (its tensors' leading slices; zeros elsewhere);
 * the server, which knows who survived, adds the decoded sum with add_sum and each element is
 * divided by the number of survivors whose path reads it. The layout must not change while a
 * round is open: secure aggregation fixes the vector's length (the caller creates every tensor
 * first, e.g. by cutting paths that reach them all). */
size_t nas_fedsuper_num_params(const nas_fedsuper_t *fs);
/* For each of p's tensors (engine_net_tensor order): its offset in the layout and the stored
 * shape (4 entries, unused dimensions 1). */
void nas_fedsuper_layout_of(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, int64_t *offset,
                            int64_t (*shape)[4]);
/* p's vector's parameters scattered into full (num_params values, zeroed first). */
void nas_fedsuper_scatter(const nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *v, float *full);
/* The decoded sum of the survivors' scattered changes: survivors[i] is the path survivor i
 * trained (one entry per survivor, repeated paths included). */
int nas_fedsuper_add_sum(nas_fedsuper_t *fs, const nas_fedsuper_path_t *const *survivors, int n, const float *sum,
                         err_t *err);
/* p's statistics: the sum of `count` sites' changes of them (statistics, p->m - p->np values). */
int nas_fedsuper_add_stats_sum(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, const float *sum, double count,
                               err_t *err);

/* The store as one byte block (magic "FNSUPER1"; a checkpoint) and back. load replaces the
 * store's contents; FN_EINVAL for a block that is malformed or was not written by save. */
int nas_fedsuper_save(const nas_fedsuper_t *fs, void **blob, size_t *len, err_t *err);
int nas_fedsuper_load(nas_fedsuper_t *fs, const void *blob, size_t len, err_t *err);

#endif
