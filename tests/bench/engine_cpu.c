/* engine_cpu: training throughput of the FedAvg CNN (McMahan et al. 2017) on the CPU backend
 * at batch 10, 64 and 256, as samples/s and achieved GFLOP/s, against the OpenBLAS sgemm
 * GFLOP/s measured in the same run (DESIGN: compare within one run, print the BLAS core and
 * threads). FLOPs counted: forward of every linear/conv layer (multiply-add = 2), backward
 * twice that except the first conv's input gradient, which is never computed. Random data:
 * the data pipeline is not what is measured here. Never gates CI. Usage: engine_cpu [SAMPLES]
 * (3000 by default); FEDNAS_PROFILE=1 adds per-op kernel times at batch 64.
 *
 * The reference is OpenBLAS's own multithreaded sgemm (all its threads, as the environment set
 * them); the engine runs its pool with OpenBLAS held to one thread inside (engine/threadpool.h).
 * The reference is measured before and again after the training runs and the higher value is
 * used, so a machine busier at the start does not flatter the ratios. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/rng.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/threadpool.h"

char *openblas_get_corename(void);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of a few runs of C = A B for n x n. */
static double sgemm_gflops(int M, int N, int K, double seconds)
{
    float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float)),
          *C = malloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        B[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    double best = 0.0, t_end = now() + seconds;
    while (now() < t_end) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double gf = 2.0 * M * N * K / (now() - t0) / 1e9;
        if (gf > best)
            best = gf;
    }
    free(A);
    free(B);
    free(C);
    return best;
}

int main(int argc, char **argv)
{
    int samples = argc > 1 ? atoi(argv[1]) : 3000;
    err_t err = {0};
    json_t *arch = json_pack("{s:s}", "type", "cnn");
    engine_model_t *m = NULL;
    if (engine_model_create_shape(arch, 1, 28, 28, 10, &m, &err) < 0) {
        fprintf(stderr, "engine_cpu: %s\n", err.msg);
        return 1;
    }
    engine_model_init(m, 1);
    /* Train FLOPs per sample: forward + 2x forward for backward, minus conv1's input gradient. */
    const double fwd = engine_net_flops_per_sample(engine_model_net(m));
    const double conv1 = 2.0 * 28 * 28 * 32 * 25;
    const double train_flops = 3.0 * fwd - conv1;

    engine_dataset_t d = {0};
    d.count = samples;
    d.rows = d.cols = 28;
    d.num_classes = 10;
    d.images = malloc((size_t)samples * 784);
    d.labels = malloc((size_t)samples);
    rng_t r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < (size_t)samples * 784; i++)
        d.images[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < samples; i++)
        d.labels[i] = (uint8_t)rng_below(&r, 10);

    static const char *const blas_modes[] = {"sequential", "pthreads", "OpenMP"};
    const int par = openblas_get_parallel();
    const int blas_threads = openblas_get_num_threads();
    double peak = sgemm_gflops(1024, 1024, 1024, 2.0);
    double conv2_like = sgemm_gflops(64, 13 * 196, 800, 1.0);
    printf("engine_cpu: FedAvg CNN (%zu parameters), %.1f MFLOP per training sample\n", engine_model_num_params(m),
           train_flops / 1e6);
    printf("OpenBLAS core %s (%s build), %d threads for the reference; engine pool %d threads "
           "(OpenBLAS on 1 thread inside each)\n",
           openblas_get_corename(), par >= 0 && par <= 2 ? blas_modes[par] : "?", blas_threads,
           engine_threadpool_size(engine_threadpool_default()));
    printf("OpenBLAS sgemm 1024^3: %.1f GFLOP/s before the runs; conv2-shaped 64x2548x800: %.1f GFLOP/s\n", peak,
           conv2_like);
    fflush(stdout);
    const int batches[3] = {10, 64, 256};
    double sps_of[3];
    for (int bi = 0; bi < 3; bi++) {
        engine_train_config_t c;
        engine_train_config_default(&c);
        c.batch_size = batches[bi];
        c.optim.momentum = 0.9f;
        c.optim.lr = 0.01f;
        c.schedule.lr = 0.01;
        engine_train_stats_t st;
        /* warm-up on a few batches (arena growth, OpenBLAS buffers) */
        int warm_n = batches[bi] * 3;
        int *idx = malloc((size_t)samples * sizeof(int));
        for (int i = 0; i < samples; i++)
            idx[i] = i;
        engine_profile_enable(0);
        int rc = engine_model_train(m, &d, idx, warm_n, &c, &st, &err);
        engine_profile_enable(getenv("FEDNAS_PROFILE") != NULL);
        engine_op_profile_t drop;
        engine_profile_get(&drop, 1);
        if (rc < 0 || engine_model_train(m, &d, NULL, 0, &c, &st, &err) < 0) {
            fprintf(stderr, "engine_cpu: %s\n", err.msg);
            return 1;
        }
        free(idx);
        if (batches[bi] == 64 && getenv("FEDNAS_PROFILE")) {
            engine_op_profile_t pr;
            engine_profile_get(&pr, 1);
            double tot = 0;
            for (int o = 0; o < ENGINE_OP_COUNT; o++)
                tot += pr.fwd_seconds[o] + pr.bwd_seconds[o];
            printf("  per-op time at batch 64 (%.2fs in kernels of %.2fs; conv2d includes its fused ReLU):\n", tot,
                   st.seconds);
            for (int o = 0; o < ENGINE_OP_COUNT; o++)
                if (pr.fwd_calls[o] || pr.bwd_calls[o])
                    printf("    %-14s fwd %6.3fs  bwd %6.3fs\n", engine_op_name((engine_op_t)o), pr.fwd_seconds[o],
                           pr.bwd_seconds[o]);
        }
        sps_of[bi] = st.samples / st.seconds;
        fflush(stdout);
    }
    /* OpenBLAS's own threads again: the engine's loops restored the process's setting */
    double after = sgemm_gflops(1024, 1024, 1024, 2.0);
    printf("OpenBLAS sgemm 1024^3: %.1f GFLOP/s after the runs (%d threads); reference: the higher, %.1f GFLOP/s\n\n",
           after, openblas_get_num_threads(), after > peak ? after : peak);
    if (after > peak)
        peak = after;
    printf("%-6s %12s %10s %14s %12s\n", "batch", "samples/s", "GFLOP/s", "of sgemm peak", "ms/step");
    for (int bi = 0; bi < 3; bi++) {
        double sps = sps_of[bi], gf = sps * train_flops / 1e9;
        printf("%-6d %12.0f %10.1f %13.0f%% %12.2f\n", batches[bi], sps, gf, 100.0 * gf / peak, 1e3 * batches[bi] / sps);
    }
    engine_model_memory_t mem;
    engine_model_memory(m, &mem);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nmemory: params %.1f MB, grads %.1f MB, optimizer %.1f MB, activation arena peak %.1f MB, conv scratch %.1f MB, "
           "peak RSS %.1f MB\n",
           mem.params / 1e6, mem.grads / 1e6, mem.optimizer / 1e6, mem.activations_peak / 1e6, mem.scratch_peak / 1e6,
           ru.ru_maxrss / 1024.0);
    engine_model_free(m);
    engine_dataset_free(&d);
    json_decref(arch);
    return 0;
}
