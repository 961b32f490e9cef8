#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"

#define CMD "run"
#include "common/log.h"
#include "common/util.h"

static const char *const k_help =
    "Usage: fednas run CONFIG [--db PATH] [--http PORT|off] [--bind ENDPOINT]\n"
    "       fednas run --resume RUN [--db PATH] [--http PORT|off] [--bind ENDPOINT]\n"
    "\n"
    "Runs the experiment in CONFIG on this machine: an aggregation server, one client agent\n"
    "process per site (clients.count) on 127.0.0.1, each with its own key pair and its share of\n"
    "the data, and the dashboard. Prints a line per round and a summary at the end.\n"
    "\n"
    "At a terminal (stdin and stdout), the dashboard stays up after the run until Ctrl-C, and\n"
    "the last line is its link; otherwise the run exits when done, and the last line is the\n"
    "`fednas dashboard` command that serves the run store again. With --http off nothing waits.\n"
    "\n"
    "  --db PATH         run store (SQLite), created if missing (default: fednas.db); each run\n"
    "                    also gets a folder NAME-runs/ID/ beside it with its keys\n"
    "  --http PORT|off   dashboard port on 127.0.0.1 (default: 8080; 0 picks a free port)\n"
    "  --bind ENDPOINT   server socket (default: tcp://127.0.0.1:*, a free port)\n"
    "  --resume RUN      continue run RUN from its last committed round, with its keys\n"
    "  -h, --help        this help\n";

typedef struct children {
    pid_t *pids;
    int n;
} children_t;

/* Starts one `fednas client` per site. Each is told to die with us (PR_SET_PDEATHSIG), so a
 * killed run never leaves agents behind, and uses one BLAS thread: the sites share the cores. */
static int spawn_clients(void *ctx, const config_t *cfg, const char *endpoint, const char *keys_dir, err_t *err)
{
    children_t *ch = ctx;
    if (cfg->data.csv && (!cfg->data.path || !cfg->data.path[0]))
        return err_set(err, FN_EINVAL,
                       "%s: data.path: a csv experiment run on this machine needs a table for `fednas run` to "
                       "split among its sites; set data.path to a CSV file, or start `fednas server` and give each "
                       "site its own file with `fednas client --data SITE.csv`",
                       cfg->source);
    char exe[PATH_MAX];
    int rc = fn_self_exe(exe, sizeof exe, err);
    if (rc < 0)
        return rc;
    int procs = cfg->clients.workers ? cfg->clients.workers : cfg->clients.count;
    ch->pids = FN_CALLOC((size_t)procs, sizeof *ch->pids);
    pid_t parent = getpid();
    char kits[PATH_MAX], seed[32], alpha[32], min_size[32];
    snprintf(kits, sizeof kits, "%s/sites", keys_dir);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)cfg->seed);
    snprintf(alpha, sizeof alpha, "%.17g", cfg->data.alpha);
    snprintf(min_size, sizeof min_size, "%d", cfg->data.min_size);
    const char *scheme = cfg->data.partition == CONFIG_PARTITION_DIRICHLET ? "dirichlet" : "iid";
    for (int i = 0; i < procs; i++) {
        char kit[PATH_MAX], part[64];
        /* One process per site, or `workers` processes each simulating a block of sites. */
        const char *part_flag = cfg->clients.workers ? "--simulate" : "--shard";
        const char *kit_flag = cfg->clients.workers ? "--kits" : "--kit";
        if (cfg->clients.workers) {
            int a = (int)((long long)i * cfg->clients.count / procs);
            int b = (int)((long long)(i + 1) * cfg->clients.count / procs) - 1;
            snprintf(part, sizeof part, "%d-%d/%d", a, b, cfg->clients.count);
            snprintf(kit, sizeof kit, "%s", kits);
        } else {
            snprintf(part, sizeof part, "%d/%d", i, cfg->clients.count);
            snprintf(kit, sizeof kit, "%s/site-%d", kits, i + 1);
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            return err_set(err, FN_EIO, "cannot start client process %d: %s", i + 1, strerror(errno));
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(1);
            setenv("OPENBLAS_NUM_THREADS", "1", 1);
            setenv("FEDNAS_THREADS", "1", 1);
            if (!getenv("FEDNAS_LOG"))
                setenv("FEDNAS_LOG", "warn", 1);
            char *args[] = {exe, "client", "--connect", (char *)endpoint, (char *)kit_flag, kit, "--data",
                            (char *)cfg->data.path, (char *)part_flag, part, "--partition", (char *)scheme, "--alpha",
                            alpha, "--min-size", min_size, "--seed", seed, NULL};
            execv(exe, args);
            fprintf(stderr, "fednas: cannot run %s: %s\n", exe, strerror(errno));
            _exit(127);
        }
        ch->pids[ch->n++] = pid;
    }
    return 0;
}

/* Waits for the agents to leave after the server said "end"; stops any that linger. Called when
 * the run ends (before the dashboard may stay up) and again on the way out, which finds nothing. */
static void reap(void *ctx)
{
    children_t *ch = ctx;
    double deadline = fn_mono() + 15;
    int left = ch->n;
    while (left > 0 && fn_mono() < deadline) {
        left = 0;
        for (int i = 0; i < ch->n; i++) {
            if (ch->pids[i] <= 0)
                continue;
            int st;
            pid_t r = waitpid(ch->pids[i], &st, WNOHANG);
            if (r == ch->pids[i] || r < 0)
                ch->pids[i] = 0;
            else
                left++;
        }
        if (left)
            usleep(50000);
    }
    for (int i = 0; i < ch->n; i++)
        if (ch->pids[i] > 0) {
            log_warn("client %d did not stop; terminating it", i + 1);
            kill(ch->pids[i], SIGTERM);
            waitpid(ch->pids[i], NULL, 0);
        }
    free(ch->pids);
    ch->pids = NULL;
    ch->n = 0;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"http", required_argument, 0, 'p'},
                                         {"bind", required_argument, 0, 'b'},
                                         {"resume", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    serve_options_t so = {.db_path = "fednas.db", .bind = "tcp://127.0.0.1:*", .http_port = 8080};
    int c, bind_given = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        switch (c) {
        case 'd': so.db_path = optarg; break;
        case 'b': so.bind = optarg, bind_given = 1; break;
        case 'p':
            if (strcmp(optarg, "off") == 0)
                so.http_port = -1;
            else if (fn_parse_int(optarg, 0, 65535, &v) == 0)
                so.http_port = (int)v;
            else
                return cli_usage_error("run", "--http expects a port number 0-65535 or \"off\" (got \"%s\")", optarg);
            break;
        case 'r':
            if (fn_parse_int(optarg, 1, 1L << 62, &v) < 0)
                return cli_usage_error(CMD, "--resume expects a run id (see `fednas runs`), got \"%s\"", optarg);
            so.resume_run = v;
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("run", "unknown option");
        }
    }
    if (so.resume_run ? optind != argc : optind != argc - 1)
        return cli_usage_error("run", so.resume_run ? "--resume takes the experiment from the run store; give no file"
                                                    : "expected one experiment file, e.g. fednas run "
                                                      "experiments/quickstart.json");
    so.config_path = so.resume_run ? NULL : argv[optind];
    int handled, st = cli_run_mpi(&so, bind_given, &handled);
    if (handled)
        return st;
    log_set_tag("server");
    cli_install_signals();
    children_t ch = {0};
    so.on_listening = spawn_clients;
    so.on_ended = reap;
    so.ctx = &ch;
    /* At a terminal the dashboard outlives the run until Ctrl-C, so the link printed last works;
     * in a script or a pipe the run exits when done and its last line names `fednas dashboard`. */
    so.keep_dashboard = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int status = cli_serve(&so);
    reap(&ch);
    return status;
}
