#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "cli/cli.h"

volatile sig_atomic_t cli_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_fail(const err_t *err)
{
    fprintf(stderr, "fednas: error: %s\n", err->msg);
    switch (err->code) {
    case FN_EINVAL: return EXIT_USAGE;
    case FN_EAUTH: return EXIT_REFUSED;
    case FN_ETIMEOUT: return EXIT_UNREACHABLE;
    default: return EXIT_FAILED;
    }
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fednas %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nRun `fednas %s --help` for the options.\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v > 0) || v > 1e7)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("fednas: federated learning with secure aggregation and differential privacy\n"
          "\n"
          "Usage: fednas COMMAND [OPTIONS]\n"
          "\n"
          "Commands:\n"
          "  run CONFIG      run an experiment on this machine: a server, its client agents and the dashboard\n"
          "  server CONFIG   run only the aggregation server, for client agents at partner sites\n"
          "  client          run a client agent at a partner site\n"
          "  relay           aggregate a region's client agents and forward one update to the server\n"
          "  runs            list the runs in a run store\n"
          "  dashboard       serve the dashboard for a run store\n"
          "  keys            make the server's keys and per-site startup kits\n"
          "  train CONFIG    train a model centrally (no federation), as a baseline\n"
          "  privacy         compute a DP guarantee (epsilon) or the noise a target needs\n"
          "  nas CONFIG      search architectures (and export the best: nas export RUN)\n"
          "  tune CONFIG     tune the training recipe (lr, schedule, batch size, ...) with ASHA\n"
          "  compress MODEL  fold, quantize (INT8) or prune a trained model: compress M --recipe R --out DIR\n"
          "  profile         time, FLOPs and memory of a model's training step, as a Chrome trace\n"
          "  serve MODEL     an HTTPS inference endpoint with dynamic batching\n"
          "\n"
          "`fednas COMMAND --help` describes a command's options.\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 bad arguments or experiment file,\n"
          "3 the server refused this site's key, 4 the server could not be reached.\n"
          "Environment: FEDNAS_LOG=debug|info|warn|error sets how much is logged.\n",
          f);
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
    /* A fixed mmap threshold: glibc's dynamic one climbs to 32 MiB after the first freed block
     * of a model's or a rounds list's size, and from then on each thread's arena keeps such
     * blocks when freed. A server soaked for an hour (tests/bench/soak.sh) held 40 MB from the
     * system with 14 MB in use, spread over its 16 web threads' arenas, growing all the while. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        puts("fednas 0.1.0");
        return EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"run", cmd_run},   {"server", cmd_server}, {"client", cmd_client}, {"relay", cmd_relay}, {"runs", cmd_runs},
                {"keys", cmd_keys}, {"dashboard", cmd_dashboard}, {"train", cmd_train},   {"privacy", cmd_privacy}, {"nas", cmd_nas},
                {"compress", cmd_compress}, {"profile", cmd_profile}, {"serve", cmd_serve},
                {"tune", cmd_tune}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "fednas: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
