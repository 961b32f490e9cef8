/* `fednas run` under mpirun / srun: rank 0 serves the run (store, dashboard, the usual CURVE
 * socket), ranks 1..K-1 each simulate a block of the sites, as clients.simulate.workers does on
 * one machine, and connect to rank 0 like any agent. MPI carries only the setup (nas/mpi.h). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/util.h"
#include "nas/mpi.h"

/* Rank 0, once the server listens: every site rank gets the client's arguments and the count of
 * sites, and takes its own block by rank. The keys stay files: the run folder (beside the store)
 * must be readable from every node, as a shared home or scratch is; no secret travels over MPI. */
static int send_sites(void *ctx, const config_t *cfg, const char *endpoint, const char *keys_dir, err_t *err)
{
    if (cfg->data.csv && (!cfg->data.path || !cfg->data.path[0]))
        return err_set(err, FN_EINVAL, "%s: data.path: a csv experiment under mpirun needs a table to split among "
                                       "its sites", cfg->source);
    /* Bound to every interface: the other ranks reach it by this host's name. */
    char ep[512], host[256];
    const char *any = strstr(endpoint, "0.0.0.0");
    if (any && gethostname(host, sizeof host) == 0) {
        host[sizeof host - 1] = 0;
        snprintf(ep, sizeof ep, "%.*s%s%s", (int)(any - endpoint), endpoint, host, any + 7);
    } else {
        snprintf(ep, sizeof ep, "%s", endpoint);
    }
    char kits[PATH_MAX], seed[32], alpha[32], min_size[32];
    snprintf(kits, sizeof kits, "%s/sites", keys_dir);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)cfg->seed);
    snprintf(alpha, sizeof alpha, "%.17g", cfg->data.alpha);
    snprintf(min_size, sizeof min_size, "%d", cfg->data.min_size);
    json_t *j = json_pack("{s:[s,s,s,s,s,s,s,s,s,s,s,s,s,s,s], s:i}", "argv", "client", "--connect", ep, "--kits",
                          kits, "--data", cfg->data.path ? cfg->data.path : "", "--partition",
                          cfg->data.partition == CONFIG_PARTITION_DIRICHLET ? "dirichlet" : "iid", "--alpha", alpha,
                          "--min-size", min_size, "--seed", seed, "count", cfg->clients.count);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(err, FN_EINVAL, "MPI: cannot encode the sites' setup");
    int rc = nas_mpi_send_setup(text, strlen(text), err);
    free(text);
    if (rc == 0) {
        nas_mpi_release();
        printf("fednas: %d sites on MPI ranks 1..%d, connecting to %s\n", cfg->clients.count,
               *(int *)ctx - 1, ep);
        fflush(stdout);
    }
    return rc;
}

/* Ranks > 0: the usual `fednas client --simulate FIRST-LAST/COUNT`, as a child process (so it
 * starts with one BLAS thread, as spawned agents do) that dies with this rank. */
static int site_rank(int rank, int size)
{
    err_t err = {0};
    char *blob = NULL;
    size_t n;
    int rc = nas_mpi_recv_setup(&blob, &n, &err);
    if (rc <= 0)
        return rc < 0 ? cli_fail(&err) : EXIT_OK;
    json_error_t je;
    json_t *j = json_loads(blob, 0, &je);
    free(blob);
    json_t *av = json_object_get(j, "argv");
    int count = (int)json_integer_value(json_object_get(j, "count"));
    size_t na = json_array_size(av);
    int procs = size - 1, i = rank - 1;
    int a = (int)((long long)i * count / procs), b = (int)((long long)(i + 1) * count / procs) - 1;
    char exe[PATH_MAX], part[64];
    if (!json_is_array(av) || na < 1 || count < 1)
        rc = err_set(&err, FN_EPROTO, "MPI: unreadable sites' setup from rank 0");
    else
        rc = fn_self_exe(exe, sizeof exe, &err);
    if (rc == 0 && b < a) { /* more ranks than sites */
        json_decref(j);
        return EXIT_OK;
    }
    char **args = FN_CALLOC(na + 4, sizeof *args);
    args[0] = exe;
    for (size_t k = 0; rc == 0 && k < na; k++)
        args[k + 1] = (char *)json_string_value(json_array_get(av, k));
    snprintf(part, sizeof part, "%d-%d/%d", a, b, count);
    args[na + 1] = "--simulate";
    args[na + 2] = part;
    int status = EXIT_FAILED;
    pid_t parent = getpid(), pid = rc == 0 ? fork() : -1;
    if (rc == 0 && pid < 0)
        rc = err_set(&err, FN_EIO, "rank %d: cannot start its sites: %s", rank, strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        setenv("FEDNAS_THREADS", "1", 1);
        if (!getenv("FEDNAS_LOG"))
            setenv("FEDNAS_LOG", "warn", 1);
        execv(exe, args);
        fprintf(stderr, "fednas: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    if (pid > 0) {
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        status = WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_FAILED;
    }
    free(args);
    json_decref(j);
    return rc < 0 ? cli_fail(&err) : status;
}

int cli_run_mpi(serve_options_t *so, int bind_given, int *handled)
{
    err_t err = {0};
    *handled = 0;
    if (!nas_mpi_launched())
        return EXIT_OK;
    if (!nas_mpi_built()) {
        const char *k = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
        if (k && atoi(k) > 1) {
            *handled = 1;
            err_set(&err, FN_ESTATE, "started as one of %s ranks, but this fednas was built without MPI: every rank "
                                     "would run its own federation (rebuild with libopenmpi-dev installed)", k);
            return cli_fail(&err);
        }
        return EXIT_OK;
    }
    int rank, size;
    if (nas_mpi_init(&rank, &size, &err) < 0) {
        *handled = 1;
        return cli_fail(&err);
    }
    if (size < 2)
        return EXIT_OK;
    *handled = 1;
    int rc;
    if (rank > 0) {
        log_set_tag("sites");
        rc = site_rank(rank, size);
        nas_mpi_end(0); /* a site rank that failed has said so; the launcher ends the job on its status */
        return rc;
    }
    if (!bind_given)
        so->bind = "tcp://0.0.0.0:*";
    so->on_listening = send_sites;
    so->on_ended = NULL;
    so->ctx = &size;
    so->keep_dashboard = 0; /* a batch job: the run ends when it is done */
    log_set_tag("server");
    cli_install_signals();
    rc = cli_serve(so);
    nas_mpi_end(rc != EXIT_OK);
    return rc;
}
