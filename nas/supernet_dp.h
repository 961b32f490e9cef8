/* supernet_dp: the weight-sharing supernet (nas/supernet.h) trained data-parallel: K replicas (one
 * per MPI rank, nas/mpi.h) draw the same path sequence, each runs one shard of every global batch,
 * and one all-reduce per step sums the packed path gradients, so every replica applies the same
 * update and the replicas stay bit-identical. Without a launcher nothing here runs.
 *
 * The split (ours): the global batch is opts.batch_size, the same whatever K, and shard j of K
 * is its rows [j*B/K, (j+1)*B/K); the step's gradient is sum_j (n_j / B) * grad(mean loss of shard
 * j), the mean over the same B examples as one process would take. So the step count, the cosine
 * schedule, the shuffles and the path draws do not depend on K. What does: batch norm normalises
 * each shard by its own statistics (PyTorch DDP without SyncBatchNorm, "ghost batch norm"), so K
 * ranks train exactly like one process that runs the K shards of each batch one after the other
 * (this module with dp.count = dp.shards and no all-reduce): that is the oracle
 * tests/integration/nas_mpi_ws.sh holds K ranks to. Gradient clipping applies to each path's
 * summed gradient, after the all-reduce, as one process clips it. A resumed search retrains its
 * supernet: resume with the same K to score new candidates with the same supernet.
 *
 * The flat buffer of a step (one all-reduce): the step's paths' gradients one after another, each
 * its model's gradient blob (engine_net_grads: the trainable tensors in the net's order, every
 * tensor the path's slice of a stored tensor), then per path its weighted shard loss, then the
 * samples classified right and the count of processes whose shard failed. A failure on any shard
 * is thus known to every process after the same all-reduce, and they all stop at the same step. */
#ifndef FEDNAS_NAS_SUPERNET_DP_H
#define FEDNAS_NAS_SUPERNET_DP_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/data.h"
#include "nas/genome.h"
#include "nas/supernet.h"

typedef struct nas_supernet_dp {
    int shards;       /* K: each global batch is split into K shards */
    int first, count; /* the shards this process computes: [first, first + count) */
    /* Sums buf[0..n) over the processes, in place (MPI_Allreduce with MPI_SUM: nas_mpi_dp; an
     * NCCL all-reduce between GPUs fits here too); NULL when this process computes every shard
     * (count == shards). */
    int (*allreduce)(void *ctx, float *buf, size_t n, err_t *err);
    void *ctx;
} nas_supernet_dp_t;

/* As nas_supernet_train (same schedule, shuffles and path draws), with this process computing
 * dp's shards of every batch. Every process of a group must call it with the same supernet
 * state, data, n and epochs. *agreed (may be NULL) is 1 when a failure is known to every process
 * (refusals of what the group shares, such as a batch that leaves a shard fewer than 2 samples,
 * FN_EINVAL: batch norm needs 2; a shard's non-finite loss or error, carried by the step's
 * all-reduce: each process returns an error at the same step), 0 when it is this process's alone
 * (a bad shard range, out of memory, the all-reduce itself failing: the others may wait forever,
 * so end the job). */
int nas_supernet_dp_train(nas_supernet_t *s, const engine_source_t *src, const int *idx, int n, double epochs,
                          const nas_supernet_dp_t *dp, nas_supernet_stats_t *st, int *agreed, err_t *err);

/* What every process of a group must share before nas_supernet_dp_train (each reads its own copy
 * of the data): the training rows (n, idx, their images and labels), epochs and the supernet's
 * options and state, hashed. Processes whose fingerprints differ would train different step counts
 * and pair unrelated all-reduces (a hang), or silently average gradients of different data: compare
 * the fingerprints first (nas_mpi_same). 0 with *out set, FN_ENOMEM. */
int nas_supernet_dp_fingerprint(const nas_supernet_t *s, const engine_source_t *src, const int *idx, int n,
                                double epochs, uint64_t *out, err_t *err);

/* One segment of a step's flat buffer: a tensor of one of the step's paths. */
typedef struct nas_supernet_dp_seg {
    int path;      /* which of the step's k paths */
    int store_id;  /* the stored tensor it is a slice of (nas_supernet_tensor_key) */
    size_t offset; /* first float in the buffer */
    size_t count;  /* floats: the path's slice, not the stored tensor */
} nas_supernet_dp_seg_t;

/* The layout of a step that trains paths g[0..k): segs[0..*nseg) in buffer order (cap bounds it),
 * *total the buffer's floats with the tail. Opening the paths creates their stored tensors as a
 * training step would (so nothing here may run on one replica only). */
int nas_supernet_dp_layout(nas_supernet_t *s, const nas_genome_t *g, int k, nas_supernet_dp_seg_t *segs, int cap,
                           int *nseg, size_t *total, err_t *err);

/* The second half of a step: buf (total floats of nas_supernet_dp_layout, as the all-reduce left
 * it) unpacked into paths g[0..k), each clipped, averaged over the k paths into the store and
 * applied with momentum SGD at lr. */
int nas_supernet_dp_apply(nas_supernet_t *s, const nas_genome_t *g, int k, const float *buf, size_t total, double lr,
                          err_t *err);

/* FNV-1a over every stored tensor's key, shape, weights, velocities and initialised flags, in store
 * order: equal on two replicas exactly when they are the same bit for bit. */
uint64_t nas_supernet_checksum(const nas_supernet_t *s);

#endif
