/* mpi: a search across machines under the cluster's own launcher (mpirun, srun): rank 0 runs the
 * controller and owns the store, ranks 1..K-1 evaluate candidates behind the worker interface
 * (nas/worker.h). With "evaluation": "weight_sharing" every rank (rank 0 included) first trains a
 * replica of the supernet data-parallel (nas/supernet_dp.h), then ranks 1..K-1 score candidates
 * with their replicas. Without MPI at build time everything here says so and the CLI stays local. */
#ifndef FEDNAS_NAS_MPI_H
#define FEDNAS_NAS_MPI_H

#include <stddef.h>

#include <stdint.h>

#include "common/err.h"
#include "nas/config.h"
#include "nas/eval.h"
#include "nas/supernet_dp.h"
#include "nas/worker.h"

/* 1 when this binary was built with MPI. */
int nas_mpi_built(void);

/* 1 when a launcher started this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or
 * SLURM_PROCID is set): only then is MPI initialised, so a plain `fednas nas` never needs one. */
int nas_mpi_launched(void);

/* Initialises MPI and reports this rank and the world's size. A world of one is finalised at
 * once (*size 1: the caller runs a local search). FN_ESTATE when not built with MPI. */
int nas_mpi_init(int *rank, int *size, err_t *err);

/* Rank 0: sends the search's setup (opaque bytes: what every worker rank needs to load the data
 * and the recipe) to ranks 1..size-1. */
int nas_mpi_send_setup(const void *blob, size_t n, err_t *err);

/* Ranks > 0: waits for the setup. 1 with *blob (malloc'ed, NUL-terminated, *n bytes before the
 * NUL), 0 when rank 0 gave up before sending one (the rank exits cleanly). */
int nas_mpi_recv_setup(char **blob, size_t *n, err_t *err);

/* Rank 0, when the worker ranks need nothing after the setup (`fednas run`'s simulated sites
 * end with the server's own end message): nas_mpi_end then stops none of them, and aborts the
 * job if rank 0 failed (nothing else would end sites that wait for a server). */
void nas_mpi_release(void);

/* Rank 0: the worker pool over ranks 1..size-1 (slot i is rank i+1; results are tagged "mpi:R"
 * with the rank). A rank that dies ends the whole job (the launcher's rule), so no result ever
 * comes back with worker_died: the run store keeps what finished and --resume continues. */
int nas_workers_start_mpi(nas_workers_t **out, err_t *err);

/* Ranks > 0: evaluates jobs with base's recipe until rank 0 says stop. When cfg asks for weight
 * sharing, first trains this rank's supernet replica with the others (nas_mpi_supernet_train's
 * partner; rank 0 may instead say stop), then scores search jobs with it; final jobs are
 * retrained from scratch either way. */
int nas_mpi_serve(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, err_t *err);

/* Rank 0, weight sharing, after the setup and before the search: every rank trains its replica of
 * cfg's supernet (nas_supernet_opts_for_search, cfg->epochs over d's training split), one shard of
 * each global batch per rank, with FEDNAS_THREADS=threads engine threads; then one MPI_Allreduce
 * compares the replicas' checksums: FN_ESTATE when they differ. Rank 0 drops its replica after. */
int nas_mpi_supernet_train(const nas_config_t *cfg, const nas_data_t *d, const nas_eval_opts_t *base, int threads,
                           err_t *err);

/* Every rank of a world of >= 2: dp for this rank's share of the data-parallel training (shard
 * `rank` of `size`, summed by MPI_Allreduce over every rank). */
int nas_mpi_dp(nas_supernet_dp_t *dp, err_t *err);

/* Every rank: one MPI_Allreduce (MIN over {h, ~h}) of a checksum; 1 when every rank has the same
 * one, 0 when not (*lo and *hi, may be NULL, get the smallest and the largest), negative on error. */
int nas_mpi_same(uint64_t h, uint64_t *lo, uint64_t *hi, err_t *err);

/* Every rank, last: a clean MPI_Finalize, after rank 0 stopped each worker rank that is not
 * busy; when a worker rank is mid-evaluation (rank 0 was interrupted or failed) or this rank
 * failed after the setup, the job is aborted instead, since nothing else ends a busy rank. */
void nas_mpi_end(int failed);

#endif
