/* engine_cpu: training throughput on the CPU backend, fednas against PyTorch side by side in one
 * run, at batch 10, 64 and 256, for the FedAvg CNN (McMahan et al. 2017) and two small NAS-style
 * CNNs: "plain3" (3x3 convs of 16-32-64 channels, 24k parameters) and "dwsep" (depthwise 3x3 +
 * pointwise 1x1 blocks, 30k parameters). Samples/s over the first SAMPLES images of
 * Fashion-MNIST (FEDNAS_FMNIST_DIR, else Debian's; random images when it is missing), SGD with
 * momentum 0.9 at lr 0.01, after a warm-up of three batches. fednas's achieved GFLOP/s is also
 * given against OpenBLAS's own sgemm measured in the same run (DESIGN: compare within one run,
 * print the BLAS core and threads); it counts a direct convolution's FLOPs, so where Winograd's
 * tiles do fewer multiplications (ops_conv_wino.c) it can pass the sgemm rate. Never gates CI.
 *
 * PyTorch (tests/bench/engine_cpu_torch.py, with FEDNAS_PYTHON or /usr/bin/python3 when it
 * imports torch) runs the same cases right after each net's fednas runs, at its best set-up on
 * this machine kind: torch.set_num_threads(T) for the engine's T pool threads, OpenBLAS held to
 * one thread. Its default threading oversubscribes small machines and runs at about half speed.
 *
 * Usage: engine_cpu [SAMPLES] [--eval] [--nets cnn,plain3,dwsep]. SAMPLES: 3000 by default.
 * --eval adds, per net in both, one epoch over all 60000 training images at batch 64 from each
 * of three seeds (weights and data order), and the test accuracies with their mean. FEDNAS_PROFILE=B prints fednas's per-op kernel times at batch B;
 * FEDNAS_BENCH_BATCH=B runs batch B only (for perf record).
 * FEDNAS_CONV_PORTABLE=1 and FEDNAS_DENSE_PORTABLE=1 turn off the engine's AVX-512 convolution
 * code and small-batch linear kernels, FEDNAS_CONV_WINO=0 Winograd's tiles (ops_conv_wino.c),
 * FEDNAS_CONV_DIRECT=0 the direct convolutions
 * (ops_conv_direct.c), FEDNAS_CONV_OC=0 their output-channel variant (ops_conv_oc.c), FEDNAS_CONV_PW=0
 * the 1x1 convs' own product (ops_conv_pw.c), FEDNAS_POOL_PORTABLE=1 the AVX-512 max pool (FEDNAS_PYTHON=/bin/false: no
 * PyTorch column), so one binary measures what they gain, alternating runs under the same load.
 * FEDNAS_POOL_SPIN_US=N: the pool's threads poll N us between loops before sleeping (threadpool.c). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/rng.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/threadpool.h"

char *openblas_get_corename(void);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);

#define NBATCH 3
#define MAX_NETS 3
static const int batches[NBATCH] = {10, 64, 256};

/* Keep in step with make() in engine_cpu_torch.py. */
static const struct {
    const char *name, *arch;
} nets[MAX_NETS] = {
    {"cnn", "{\"type\":\"cnn\"}"},
    {"plain3", "{\"type\":\"layers\",\"layers\":["
               "{\"type\":\"conv2d\",\"out\":16,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\"},"
               "{\"type\":\"maxpool\",\"kernel\":2},"
               "{\"type\":\"conv2d\",\"out\":32,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\"},"
               "{\"type\":\"maxpool\",\"kernel\":2},"
               "{\"type\":\"conv2d\",\"out\":64,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\"},"
               "{\"type\":\"global_avgpool\"},{\"type\":\"linear\"}]}"},
    {"dwsep", "{\"type\":\"layers\",\"layers\":["
              "{\"type\":\"conv2d\",\"out\":32,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\"},"
              "{\"type\":\"conv2d\",\"out\":32,\"kernel\":3,\"padding\":\"same\",\"groups\":32},{\"type\":\"relu\"},"
              "{\"type\":\"conv2d\",\"out\":64,\"kernel\":1},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"kernel\":2},"
              "{\"type\":\"conv2d\",\"out\":64,\"kernel\":3,\"padding\":\"same\",\"groups\":64},{\"type\":\"relu\"},"
              "{\"type\":\"conv2d\",\"out\":128,\"kernel\":1},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"kernel\":2},"
              "{\"type\":\"conv2d\",\"out\":128,\"kernel\":3,\"padding\":\"same\",\"groups\":128},{\"type\":\"relu\"},"
              "{\"type\":\"conv2d\",\"out\":128,\"kernel\":1},{\"type\":\"relu\"},"
              "{\"type\":\"global_avgpool\"},{\"type\":\"linear\"}]}"},
};

/* User + system time of the whole process (all its threads). */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of a few runs of C = A B. */
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

/* The Python that runs the PyTorch side, or NULL when none imports torch. */
static const char *torch_python(void)
{
    static char cmd[512];
    const char *py = getenv("FEDNAS_PYTHON");
    if (!py)
        py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", py);
    return system(cmd) == 0 ? py : NULL;
}

/* --eval's seeds (weights and data order) in each framework: one epoch's accuracy of these small
 * nets moves by several points from seed to seed (plain3 0.65-0.75 in fednas over seeds 1-4),
 * so "the same accuracy" is judged on the spread of three. */
#define EVAL_SEEDS 3

typedef struct {
    double fed_sps[NBATCH], torch_sps[NBATCH];
    double fed_cps[NBATCH], torch_cps[NBATCH]; /* samples per CPU-second of the process */
    double flops; /* training FLOPs per sample */
    double fed_acc[EVAL_SEEDS], torch_acc[EVAL_SEEDS]; /* -1: not measured */
    size_t params;
} net_result_t;

/* One framework's accuracies over the seeds and their mean ("-" where not measured). */
static void print_accs(const char *who, const double *acc)
{
    double sum = 0.0;
    int n = 0;
    printf("%s", who);
    for (int k = 0; k < EVAL_SEEDS; k++) {
        if (acc[k] < 0) {
            printf(" -");
            continue;
        }
        printf(" %.4f", acc[k]);
        sum += acc[k], n++;
    }
    if (n)
        printf(" (mean %.4f)", sum / n);
}

static void print_profile(int batch)
{
    engine_op_profile_t pr;
    engine_profile_get(&pr, 1);
    printf("  fednas per-op kernel time at batch %d:\n", batch);
    for (int o = 0; o < ENGINE_OP_COUNT; o++)
        if (pr.fwd_calls[o] || pr.bwd_calls[o])
            printf("    %-14s fwd %6.3fs  bwd %6.3fs\n", engine_op_name((engine_op_t)o), pr.fwd_seconds[o],
                   pr.bwd_seconds[o]);
}

/* PyTorch as a co-process (engine_cpu_torch.py serve): requests on its stdin, results on its
 * stdout, so fednas's and PyTorch's runs of a case alternate under about the same load. */
typedef struct {
    FILE *in, *out;
    pid_t pid;
} torch_t;

static int torch_start(torch_t *t, const char *py, int threads, int samples, const char *dir)
{
    int req[2], res[2];
    if (pipe(req) < 0)
        return -1;
    if (pipe(res) < 0) {
        close(req[0]), close(req[1]);
        return -1;
    }
    char th[16], sa[16], script[512];
    snprintf(th, sizeof th, "%d", threads);
    snprintf(sa, sizeof sa, "%d", samples);
    snprintf(script, sizeof script, "%s/tests/bench/engine_cpu_torch.py", FEDNAS_SOURCE_DIR);
    fflush(stdout);
    t->pid = fork();
    if (t->pid == 0) {
        dup2(req[0], 0);
        dup2(res[1], 1);
        close(req[0]), close(req[1]), close(res[0]), close(res[1]);
        setenv("OPENBLAS_NUM_THREADS", "1", 1); /* PyTorch's best set-up here (file comment) */
        setenv("OMP_NUM_THREADS", th, 1);
        execl(py, py, script, th, sa, dir ? dir : "-", "serve", "-", (char *)NULL);
        _exit(127);
    }
    close(req[0]), close(res[1]);
    if (t->pid < 0) {
        close(req[1]), close(res[0]);
        return -1;
    }
    t->in = fdopen(req[1], "w");
    t->out = fdopen(res[0], "r");
    char line[64];
    if (!t->in || !t->out || !fgets(line, sizeof line, t->out) || strncmp(line, "ready", 5) != 0)
        return -1;
    return 0;
}

/* Sends one request and reads its answer line ("torch ..." or "acc ..."); 0 or -1. */
static int torch_ask(torch_t *t, const char *req, char *line, size_t n)
{
    if (!t->in || fprintf(t->in, "%s\n", req) < 0 || fflush(t->in) != 0)
        return -1;
    while (fgets(line, (int)n, t->out))
        if (!strncmp(line, "torch ", 6) || !strncmp(line, "acc ", 4))
            return 0;
    return -1;
}

static void torch_stop(torch_t *t)
{
    if (t->in)
        fclose(t->in); /* EOF: the script returns */
    if (t->out)
        fclose(t->out);
    if (t->pid > 0)
        waitpid(t->pid, NULL, 0);
}

static void train_config(engine_train_config_t *c, int batch)
{
    engine_train_config_default(c);
    c->batch_size = batch;
    c->optim.momentum = 0.9f;
    c->optim.lr = 0.01f;
    c->schedule.lr = 0.01;
}

/* One net in both frameworks: per batch a warm-up, then `reps` rounds of one timed fednas
 * epoch and one timed PyTorch epoch (t NULL: none); the best of each is kept (the round least
 * disturbed by the rest of the machine). 0 or -1. */
static int run_net(int ni, const engine_dataset_t *train, const engine_dataset_t *test, int samples, int eval,
                   int reps, torch_t *t, net_result_t *r)
{
    err_t err = {0};
    json_error_t je;
    json_t *arch = json_loads(nets[ni].arch, 0, &je);
    engine_model_t *m = NULL;
    if (!arch || engine_model_create_shape(arch, 1, 28, 28, 10, &m, &err) < 0) {
        fprintf(stderr, "engine_cpu: %s: %s\n", nets[ni].name, arch ? err.msg : je.text);
        json_decref(arch);
        return -1;
    }
    json_decref(arch);
    r->params = engine_model_num_params(m);
    /* forward + 2x forward for backward (the first conv's input gradient is never computed,
     * a small share: counted anyway, as PyTorch's would be) */
    r->flops = 3.0 * engine_net_flops_per_sample(engine_model_net(m));
    int *idx = malloc((size_t)samples * sizeof *idx);
    for (int i = 0; i < samples; i++)
        idx[i] = i;
    const char *prof = getenv("FEDNAS_PROFILE"), *only_b = getenv("FEDNAS_BENCH_BATCH");
    int rc = 0;
    for (int bi = 0; bi < NBATCH && rc == 0; bi++) {
        if (only_b && *only_b && atoi(only_b) != batches[bi])
            continue; /* one batch size only (perf record of one case) */
        engine_model_init(m, 1);
        engine_train_config_t c;
        train_config(&c, batches[bi]);
        engine_train_stats_t st;
        /* warm-up (arena growth, OpenBLAS buffers) on three batches, never past the samples */
        const int warm_n = batches[bi] * 3 < samples ? batches[bi] * 3 : samples;
        const int profiled = prof && atoi(prof) == batches[bi];
        engine_profile_enable(0);
        rc = engine_model_train(m, train, idx, warm_n, &c, &st, &err);
        engine_profile_enable(profiled);
        engine_op_profile_t drop;
        engine_profile_get(&drop, 1);
        for (int rep = 0; rep < reps && rc == 0; rep++) {
            const double c0 = cpu_seconds();
            rc = engine_model_train(m, train, idx, samples, &c, &st, &err);
            if (rc < 0)
                break;
            const double sps = st.samples / st.seconds, cps = st.samples / (cpu_seconds() - c0);
            r->fed_sps[bi] = sps > r->fed_sps[bi] ? sps : r->fed_sps[bi];
            r->fed_cps[bi] = cps > r->fed_cps[bi] ? cps : r->fed_cps[bi];
            fprintf(stderr, "  fednas %-6s batch %3d: %6.0f samples/s", nets[ni].name, batches[bi], sps);
            char req[64], line[256], name[64];
            int b;
            double v = 0, cv = 0;
            snprintf(req, sizeof req, "%s %d", nets[ni].name, batches[bi]);
            if (t && torch_ask(t, req, line, sizeof line) == 0 &&
                sscanf(line, "torch %63s %d %lf %lf", name, &b, &v, &cv) == 4) {
                r->torch_sps[bi] = v > r->torch_sps[bi] ? v : r->torch_sps[bi];
                r->torch_cps[bi] = cv > r->torch_cps[bi] ? cv : r->torch_cps[bi];
                fprintf(stderr, "   torch %6.0f samples/s", v);
            }
            fprintf(stderr, "\n");
        }
        if (rc == 0 && profiled)
            print_profile(batches[bi]);
        engine_profile_enable(0);
    }
    for (int k = 0; k < EVAL_SEEDS; k++)
        r->fed_acc[k] = r->torch_acc[k] = -1;
    for (int k = 0; k < EVAL_SEEDS && rc == 0 && eval && test; k++) {
        const int seed = k + 1; /* the weights and the data order */
        engine_model_init(m, (uint64_t)seed);
        engine_train_config_t c;
        train_config(&c, 64);
        c.seed = (uint64_t)seed;
        engine_train_stats_t st;
        rc = engine_model_train(m, train, NULL, 0, &c, &st, &err);
        if (rc == 0)
            rc = engine_model_evaluate(m, test, NULL, 0, NULL, &r->fed_acc[k], &err);
        char req[64], line[256], name[64];
        snprintf(req, sizeof req, "acc %s %d", nets[ni].name, seed);
        if (rc == 0 && t && torch_ask(t, req, line, sizeof line) == 0)
            sscanf(line, "acc %63s %lf", name, &r->torch_acc[k]);
    }
    if (rc < 0)
        fprintf(stderr, "engine_cpu: %s: %s\n", nets[ni].name, err.msg);
    free(idx);
    engine_model_free(m);
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    int samples = 3000, eval = 0, reps = getenv("FEDNAS_BENCH_REPS") ? atoi(getenv("FEDNAS_BENCH_REPS")) : 3;
    if (reps < 1)
        reps = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--eval"))
            eval = 1;
        else if (!strcmp(argv[i], "--nets") && i + 1 < argc)
            only = argv[++i];
        else if (atoi(argv[i]) > 0)
            samples = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: engine_cpu [SAMPLES] [--eval] [--nets cnn,plain3,dwsep]\n");
            return 2;
        }
    }
    err_t err = {0};
    engine_dataset_t train = {0}, test = {0};
    const char *dir = getenv("FEDNAS_FMNIST_DIR") ? getenv("FEDNAS_FMNIST_DIR") : ENGINE_FMNIST_DEFAULT_DIR;
    if (engine_fmnist_load(dir, "train", &train, &err) < 0 || engine_fmnist_load(dir, "test", &test, &err) < 0) {
        printf("no Fashion-MNIST (%s): random images, speed only\n", err.msg);
        engine_dataset_free(&train);
        engine_dataset_free(&test);
        dir = NULL;
        eval = 0;
        train.count = samples;
        train.rows = train.cols = 28;
        train.num_classes = 10;
        train.images = malloc((size_t)samples * 784);
        train.labels = malloc((size_t)samples);
        rng_t r;
        rng_seed(&r, 5);
        for (size_t i = 0; i < (size_t)samples * 784; i++)
            train.images[i] = (uint8_t)rng_below(&r, 256);
        for (int i = 0; i < samples; i++)
            train.labels[i] = (uint8_t)rng_below(&r, 10);
    }
    if (samples > train.count)
        samples = train.count;

    static const char *const blas_modes[] = {"sequential", "pthreads", "OpenMP"};
    const int par = openblas_get_parallel(), threads = engine_threadpool_size(engine_threadpool_default());
    /* FEDNAS_BENCH_SGEMM=0: no reference sgemm (keeps it out of a perf record) */
    const int ref = !getenv("FEDNAS_BENCH_SGEMM") || atoi(getenv("FEDNAS_BENCH_SGEMM")) != 0;
    double peak = ref ? sgemm_gflops(1024, 1024, 1024, 2.0) : 1.0;
    const char *py = torch_python();
    printf("engine_cpu: %d training samples of %s per case\n", samples, dir ? "Fashion-MNIST" : "random images");
    printf("OpenBLAS core %s (%s build), %d threads for the reference sgemm; fednas pool %d threads "
           "(OpenBLAS on 1 thread inside each)\n",
           openblas_get_corename(), par >= 0 && par <= 2 ? blas_modes[par] : "?", openblas_get_num_threads(), threads);
    printf("PyTorch: %s\n", py ? "set_num_threads(pool threads), OPENBLAS_NUM_THREADS=1" : "not found (no torch column)");
    printf("each case: %d rounds of one fednas epoch then one PyTorch epoch; the best of each is kept "
           "(FEDNAS_BENCH_REPS)\n", reps);
    printf("OpenBLAS sgemm 1024^3: %.1f GFLOP/s before the runs\n", peak);
    fflush(stdout);

    torch_t tp = {0};
    if (py && torch_start(&tp, py, threads, samples, dir) < 0) {
        fprintf(stderr, "engine_cpu: PyTorch co-process did not start; no torch column\n");
        torch_stop(&tp);
        tp = (torch_t){0};
        py = NULL;
    }
    net_result_t res[MAX_NETS];
    int ran[MAX_NETS] = {0};
    for (int ni = 0; ni < MAX_NETS; ni++) {
        if (only && !strstr(only, nets[ni].name))
            continue;
        memset(&res[ni], 0, sizeof res[ni]);
        if (run_net(ni, &train, dir ? &test : NULL, samples, eval, reps, py ? &tp : NULL, &res[ni]) < 0)
            return 1;
        ran[ni] = 1;
    }
    if (py)
        torch_stop(&tp);
    double after = ref ? sgemm_gflops(1024, 1024, 1024, 2.0) : 1.0;
    printf("OpenBLAS sgemm 1024^3: %.1f GFLOP/s after the runs; reference: the higher\n\n", after);
    if (after > peak)
        peak = after;
    printf("wall: samples per second; cpu: samples per CPU-second of each process, all threads (a busy machine\n"
           "slows the wall clock of both; the CPU-time ratio says which does less work per sample)\n");
    printf("%-7s %6s %10s %10s %7s %10s %10s %7s %9s %8s\n", "net", "batch", "fednas/s", "torch/s", "ratio",
           "fednas/cpu", "torch/cpu", "ratio", "GFLOP/s", "of sgemm");
    for (int ni = 0; ni < MAX_NETS; ni++) {
        if (!ran[ni])
            continue;
        for (int bi = 0; bi < NBATCH; bi++) {
            const net_result_t *r = &res[ni];
            const double gf = r->fed_sps[bi] * r->flops / 1e9;
            char t[32] = "-", q[32] = "-", tc[32] = "-", qc[32] = "-";
            if (r->torch_sps[bi] > 0) {
                snprintf(t, sizeof t, "%.0f", r->torch_sps[bi]);
                snprintf(q, sizeof q, "%.2f", r->fed_sps[bi] / r->torch_sps[bi]);
            }
            if (r->torch_cps[bi] > 0) {
                snprintf(tc, sizeof tc, "%.0f", r->torch_cps[bi]);
                snprintf(qc, sizeof qc, "%.2f", r->fed_cps[bi] / r->torch_cps[bi]);
            }
            printf("%-7s %6d %10.0f %10s %7s %10.0f %10s %7s %9.1f %7.0f%%\n", nets[ni].name, batches[bi],
                   r->fed_sps[bi], t, q, r->fed_cps[bi], tc, qc, gf, 100.0 * gf / peak);
        }
    }
    if (eval) {
        printf("\ntest accuracy after one epoch (60000 images, batch 64, SGD momentum 0.9, lr 0.01, the same "
               "initialisation scheme), seeds 1-%d, and their mean:\n",
               EVAL_SEEDS);
        for (int ni = 0; ni < MAX_NETS; ni++)
            if (ran[ni]) {
                printf("%-7s (%zu parameters)", nets[ni].name, res[ni].params);
                print_accs(" fednas", res[ni].fed_acc);
                print_accs("  torch", res[ni].torch_acc);
                printf("\n");
            }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak RSS %.1f MB\n", ru.ru_maxrss / 1024.0);
    engine_dataset_free(&train);
    engine_dataset_free(&test);
    return 0;
}
