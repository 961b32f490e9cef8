/* `fednas profile`: runs a model's training step (forward, softmax cross-entropy, backward) on
 * a synthetic batch under the engine profiler (engine/profile.h) and writes a Chrome trace plus
 * a summary: per-op time, FLOPs and bytes, the arena over time, heap growth across steps and
 * CPU utilisation. One warm-up step runs untraced first, so the traced steps see the arena as
 * training does from its second step on (one block, no malloc). */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/rng.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/profile.h"

static const char *const k_help =
    "Usage: fednas profile --model MODEL [--batch-size 64] [--steps 3] [--output profile.json]\n"
    "                      [--metrics flops,latency,memory]\n"
    "\n"
    "Profiles training steps of MODEL on a random 1x28x28 batch and writes a Chrome trace JSON\n"
    "(open it in https://ui.perfetto.dev or chrome://tracing): one span per step with its forward\n"
    "and backward, one event per op (args: shape, flops, bytes) and an \"arena\" memory counter.\n"
    "Prints a table of ops sorted by time and the selected metrics.\n"
    "\n"
    "  --model MODEL      a .safetensors model (fednas nas export), an architecture JSON file, or\n"
    "                     a built-in name: softmax, mlp, cnn, lenet, resnet\n"
    "  --batch-size N     samples per step (1..4096, default 64)\n"
    "  --steps N          traced steps after one untraced warm-up (1..100, default 3)\n"
    "  --output FILE      the trace (default profile.json)\n"
    "  --metrics LIST     any of flops,latency,memory (default all): what the summary prints\n"
    "  -h, --help         this help\n"
    "\n"
    "An op's time runs from the previous op's end to its own, so it includes the engine's\n"
    "per-op bookkeeping. FLOPs count a multiply-add as 2; a linear/conv backward as twice its\n"
    "forward. Bytes estimate memory traffic (inputs read + output written; backward about 2x).\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

enum { M_FLOPS = 1, M_LATENCY = 2, M_MEMORY = 4 };

static int parse_metrics(const char *s, int *out)
{
    *out = 0;
    char buf[128];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "flops") == 0)
            *out |= M_FLOPS;
        else if (strcmp(tok, "latency") == 0)
            *out |= M_LATENCY;
        else if (strcmp(tok, "memory") == 0)
            *out |= M_MEMORY;
        else
            return -1;
    }
    return *out ? 0 : -1;
}

/* One training step; the profiler (when given) sees it as "step", "forward", "backward". */
static int step(engine_model_t *m, engine_graph_t *g, engine_profiler_t *p, float *x, uint8_t *y, int B, int k,
                size_t *reserved, err_t *err)
{
    char name[32];
    snprintf(name, sizeof name, "step %d", k);
    if (p)
        engine_profiler_begin(p, name), engine_profiler_begin(p, "forward");
    int64_t xs[4] = {B, 1, 28, 28}, ys[1] = {B};
    engine_tensor_t *xt = engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs);
    engine_tensor_t *yt = engine_graph_view(g, y, NULL, ENGINE_U8, 1, ys);
    engine_tensor_t *logits = engine_net_forward(engine_model_net(m), g, xt, 1);
    engine_tensor_t *loss = engine_softmax_xent(g, logits, yt, 0.0f);
    if (p)
        engine_profiler_end(p), engine_profiler_begin(p, "backward");
    int rc = engine_graph_error(g, err);
    if (rc == 0)
        rc = engine_graph_backward(g, loss, NULL, err);
    if (p)
        engine_profiler_end(p), engine_profiler_end(p);
    *reserved = engine_graph_arena(g)->reserved; /* before reset folds the block chain into one */
    engine_graph_reset(g);
    if (p)
        engine_profiler_sample_memory(p);
    return rc;
}

int cmd_profile(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"batch-size", required_argument, 0, 'b'},
                                         {"steps", required_argument, 0, 's'},  {"output", required_argument, 0, 'o'},
                                         {"metrics", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *output = "profile.json";
    int B = 64, steps = 3, metrics = M_FLOPS | M_LATENCY | M_MEMORY, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': output = optarg; break;
        case 'b':
            if (parse_int(optarg, 1, 4096, &B))
                return cli_usage_error("profile", "--batch-size: expected an integer in 1..4096");
            break;
        case 's':
            if (parse_int(optarg, 1, 100, &steps))
                return cli_usage_error("profile", "--steps: expected an integer in 1..100");
            break;
        case 'M':
            if (parse_metrics(optarg, &metrics))
                return cli_usage_error("profile", "--metrics: expected a comma list of flops, latency, memory");
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("profile", "unknown option");
        }
    }
    if (optind < argc)
        return cli_usage_error("profile", "unexpected argument \"%s\"", argv[optind]);
    if (!model)
        return cli_usage_error("profile", "--model is required");

    err_t err = {0};
    engine_model_t *m = NULL;
    if (cli_load_model(model, &m, &err))
        return cli_fail(&err);
    float *x = malloc((size_t)B * 784 * sizeof *x);
    uint8_t *y = malloc((size_t)B);
    engine_graph_t *g = engine_graph_create(1 << 20, 1);
    engine_profiler_t *p = NULL;
    int rc = (!x || !y || !g) ? err_set(&err, FN_ENOMEM, "out of memory for a batch of %d", B) : 0;
    if (rc == 0)
        rc = engine_profiler_create(1 << 20, &p, &err);
    rng_t rng;
    rng_seed(&rng, 7);
    for (int i = 0; rc == 0 && i < B * 784; i++)
        x[i] = (float)rng_uniform(&rng);
    for (int i = 0; rc == 0 && i < B; i++)
        y[i] = (uint8_t)(i % 10);

    /* Warm-up: the arena grows by chaining blocks here; what it held at most tells how much the
     * chain wasted before reset made it one block. */
    size_t warm_reserved = 0;
    if (rc == 0) {
        rc = step(m, g, NULL, x, y, B, 0, &warm_reserved, &err);
    }
    size_t reserved = 0;
    engine_graph_mem_t mem0;
    engine_graph_mem(g, &mem0);
    struct mallinfo2 h0 = mallinfo2();
    double t0 = now(), c0 = cpu_seconds();
    if (rc == 0)
        engine_profiler_attach(p, g);
    /* The engine's own kernel-only totals (engine/ops.h) alongside: what an op event holds
     * beyond its kernel is the engine's per-op bookkeeping. */
    engine_op_profile_t kp;
    engine_profile_get(&kp, 1);
    engine_profile_enable(1);
    for (int k = 1; rc == 0 && k <= steps; k++)
        rc = step(m, g, p, x, y, B, k, &reserved, &err);
    engine_profile_enable(0);
    engine_profile_get(&kp, 1);
    double kernel_s = 0;
    for (int i = 0; i < ENGINE_OP_COUNT; i++)
        kernel_s += kp.fwd_seconds[i] + kp.bwd_seconds[i];
    double wall = now() - t0, cpu = cpu_seconds() - c0;
    struct mallinfo2 h1 = mallinfo2();
    if (rc) {
        fprintf(stderr, "fednas: error: %s\n", err.msg);
        goto out;
    }
    engine_graph_mem_t mem;
    engine_graph_mem(g, &mem);
    const engine_arena_t *a = engine_graph_arena(g);
    double fwd_flops, bwd_flops, fwd_bytes, bwd_bytes;
    double fwd_s = engine_profiler_total(p, 0, &fwd_flops, &fwd_bytes);
    double bwd_s = engine_profiler_total(p, 1, &bwd_flops, &bwd_bytes);
    double net_fps = engine_net_flops_per_sample(engine_model_net(m));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    long long heap_growth = (long long)h1.uordblks - (long long)h0.uordblks;
    json_t *meta = json_pack("{s:s, s:i, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:i, s:f}",
                             "model", model, "batch_size", B, "steps", steps,
                             "params", (json_int_t)engine_model_num_params(m), "net_flops_per_sample", net_fps,
                             "forward_seconds", fwd_s, "backward_seconds", bwd_s, "forward_flops", fwd_flops,
                             "backward_flops", bwd_flops, "arena_peak_bytes", (json_int_t)mem.arena_peak,
                             "arena_reserved_bytes", (json_int_t)a->reserved, "warmup_reserved_bytes",
                             (json_int_t)warm_reserved, "arena_used_after_reset", (json_int_t)a->used,
                             "scratch_bytes", (json_int_t)mem.scratch_peak, "heap_growth_bytes", (json_int_t)heap_growth,
                             "wall_seconds", wall, "cpu_seconds", cpu, "cpus", (int)ncpu, "kernel_seconds", kernel_s);
    if (!meta)
        rc = err_set(&err, FN_ENOMEM, "out of memory");
    if (rc == 0)
        rc = engine_profiler_write_trace(p, output, meta, &err);
    json_decref(meta);
    if (rc) {
        fprintf(stderr, "fednas: error: %s\n", err.msg);
        goto out;
    }

    printf("model %s: %zu parameters, batch %d, %d traced steps (1 warm-up)\n", model, engine_model_num_params(m), B,
           steps);
    if (metrics & M_LATENCY) {
        engine_profiler_print(p, stdout);
        printf("per step: forward %.3f ms, backward %.3f ms, %.1f samples/s\n", 1e3 * fwd_s / steps,
               1e3 * bwd_s / steps, wall > 0 ? (double)B * steps / wall : 0.0);
        printf("kernels: %.3f ms of the %.3f ms in op events (the rest is per-op bookkeeping)\n", 1e3 * kernel_s,
               1e3 * (fwd_s + bwd_s));
        printf("cpu: %.2f s over %.2f s wall = %.0f%% of one core, %.0f%% of %ld\n", cpu, wall,
               wall > 0 ? 100 * cpu / wall : 0.0, wall > 0 ? 100 * cpu / wall / (double)ncpu : 0.0, ncpu);
    }
    if (metrics & M_FLOPS)
        printf("flops per step: forward %.4g (net: %.4g per sample x %d = %.4g in linear/conv), backward %.4g; "
               "%.2f GFLOP/s\n",
               fwd_flops / steps, net_fps, B, net_fps * B, bwd_flops / steps,
               wall > 0 ? 1e-9 * (fwd_flops + bwd_flops) / wall : 0.0);
    if (metrics & M_MEMORY) {
        double frag = warm_reserved ? 1.0 - (double)mem0.arena_peak / (double)warm_reserved : 0.0;
        printf("memory: arena peak %.2f MB (reserved %.2f MB); first step's block chain %.2f MB, %.1f%% slack; "
               "conv scratch %.2f MB; after reset %zu bytes in use; heap growth over the traced steps %lld bytes\n",
               1e-6 * (double)mem.arena_peak, 1e-6 * (double)a->reserved, 1e-6 * (double)warm_reserved, 100 * frag,
               1e-6 * (double)mem.scratch_peak, a->used, heap_growth);
    }
    printf("trace: %s\n", output);
out:
    engine_profiler_free(p);
    engine_graph_free(g);
    free(x);
    free(y);
    engine_model_free(m);
    return rc ? EXIT_FAILED : EXIT_OK;
}
