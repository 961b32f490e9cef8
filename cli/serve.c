#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/store.h"
#include "common/util.h"
#include "crypto/keys.h"
#include "server/server.h"
#include "web/web.h"

/* Fresh keys for a run that starts its own clients: the server's pair and one kit per site,
 * all inside the run directory, so nothing outlives the run's own folder. */
static int make_run_keys(const char *keys_dir, int sites, err_t *err)
{
    int rc = keys_init_dir(keys_dir, err);
    for (int i = 1; rc == 0 && i <= sites; i++) {
        char name[32];
        snprintf(name, sizeof name, "site-%d", i);
        rc = keys_add_site(keys_dir, name, err);
    }
    return rc;
}

static void human_bytes(double b, char *out, size_t cap)
{
    const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        u++;
    }
    snprintf(out, cap, u ? "%.2f %s" : "%.0f %s", b, unit[u]);
}

static void print_summary(const config_t *cfg, int64_t run_id, const char *db, const server_summary_t *s,
                          const char *status)
{
    char down[32], up[32];
    double per = s->selections > 0 ? (double)s->selections : 1;
    human_bytes(s->bytes_down / per, down, sizeof down);
    human_bytes(s->bytes_up / per, up, sizeof up);
    printf("\n");
    printf("+-----------------------------+----------------------------------------+\n");
    printf("| run %-6lld                  | %-38s |\n", (long long)run_id, cfg->name);
    printf("+-----------------------------+----------------------------------------+\n");
    printf("| status                      | %-38s |\n", status);
    char rounds[32];
    snprintf(rounds, sizeof rounds, "%d of %d", s->rounds_done, cfg->rounds);
    printf("| rounds                      | %-38s |\n", rounds);
    if (s->rounds_done > 0) {
        char a[64], b[64];
        /* Without a server-side test set (a CSV experiment with no data.test) the sites'
         * federated evaluation is the only accuracy: it is in the round lines and the store. */
        if (isnan(s->final_accuracy))
            snprintf(a, sizeof a, "- (no test set: see fed acc)");
        else
            snprintf(a, sizeof a, "%.2f%% (loss %.4f)", 100 * s->final_accuracy, s->final_loss);
        if (s->best_round < 0)
            snprintf(b, sizeof b, "-");
        else
            snprintf(b, sizeof b, "%.2f%% (round %d)", 100 * s->best_accuracy, s->best_round);
        printf("| final test accuracy         | %-38s |\n", a);
        printf("| best test accuracy          | %-38s |\n", b);
    }
    char t[64], p[64], traffic[80];
    snprintf(t, sizeof t, "%.1f s (rounds %.2f s on average)", s->total_seconds, s->mean_round_seconds);
    snprintf(p, sizeof p, "%d", s->params);
    snprintf(traffic, sizeof traffic, "%s down, %s up", down, up);
    if (s->dp) {
        char eps[64], noise[64];
        snprintf(eps, sizeof eps, "epsilon %.3f at delta %g", s->epsilon, s->delta);
        snprintf(noise, sizeof noise, "z %.4f, clip %g", s->noise_multiplier, s->clip);
        printf("| differential privacy        | %-38s |\n", eps);
        printf("| noise                       | %-38s |\n", noise);
    }
    if (s->note[0])
        printf("| ended early                 | %-38.38s |\n", s->note);
    printf("| clients                     | %-38d |\n", s->clients);
    printf("| model parameters            | %-38s |\n", p);
    printf("| time                        | %-38s |\n", t);
    printf("| traffic per selected site   | %-38s |\n", traffic);
    printf("| run store                   | %-38s |\n", db);
    printf("+-----------------------------+----------------------------------------+\n");
    fflush(stdout);
}

/* The last line of a run when its own dashboard is gone: the command that serves the store
 * again, never the run's link, which died with it. The path is quoted for a shell when it needs
 * to be. */
static void print_dashboard_command(const char *db_path)
{
    int plain = db_path[0] != 0;
    for (const char *c = db_path; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+:=,@", *c))
            plain = 0;
    printf("dashboard: to look at this run, start `fednas dashboard --db ");
    if (plain)
        fputs(db_path, stdout);
    else {
        putchar('\'');
        for (const char *c = db_path; *c; c++)
            if (*c == '\'')
                fputs("'\\''", stdout);
            else
                putchar(*c);
        putchar('\'');
    }
    printf("` (it prints a link)\n");
    fflush(stdout);
}

/* Each run's folder (its keys) is named after its store, so that several stores can live in
 * one folder without their run 1s colliding: fednas.db -> fednas-runs/1. */
static void run_folder(const char *db_path, const char *dbdir, int64_t run_id, char *out, size_t cap)
{
    const char *base = strrchr(db_path, '/');
    base = base ? base + 1 : db_path;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, cap, "%s/%.*s-runs/%lld", dbdir, len, base, (long long)run_id);
}

/* A folder named for a run id that the store has just handed out belongs to no run of this
 * store: the store was deleted or replaced and its run folders were left behind. Its keys would
 * make the new run fail ("site site-1 is already in ...") or, worse, mix two runs' keys, so it
 * is set aside under a new name, with a notice; nothing in it is lost. */
static int set_aside_orphan(const char *run_dir, const char *db_path, err_t *err)
{
    struct stat st;
    if (lstat(run_dir, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return err_set(err, FN_EIO, "cannot check run folder %s: %s", run_dir, strerror(errno));
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32], to[PATH_MAX];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int i = 1; i <= 100; i++) {
        int n = i == 1 ? snprintf(to, sizeof to, "%s.orphan-%s", run_dir, stamp)
                       : snprintf(to, sizeof to, "%s.orphan-%s-%d", run_dir, stamp, i);
        if (n < 0 || n >= (int)sizeof to)
            return err_set(err, FN_EINVAL, "run folder path too long: %s", run_dir);
        if (lstat(to, &st) == 0)
            continue; /* set aside twice within a second */
        if (rename(run_dir, to) < 0)
            return err_set(err, FN_EIO, "run folder %s belongs to no run in %s, and moving it aside failed: %s",
                           run_dir, db_path, strerror(errno));
        fprintf(stderr,
                "fednas: notice: run folder %s belongs to no run in %s (was the store deleted?); "
                "moved it to %s\n",
                run_dir, db_path, to);
        return 0;
    }
    return err_set(err, FN_EIO, "run folder %s belongs to no run in %s, and %s.orphan-%s* are all taken", run_dir,
                   db_path, run_dir, stamp);
}

/* A new run: the experiment file, checked in full before anything is recorded. */
static int start_run(const serve_options_t *o, store_t *store, config_t *cfg, const char *dbdir, int64_t *run_id,
                     char *run_dir, size_t run_dir_len, char *keys_dir, size_t keys_len, err_t *err)
{
    int64_t exp_id;
    char *cfg_text = json_dumps(cfg->root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int rc = store_experiment_create(store, cfg->name, cfg_text, &exp_id, err);
    free(cfg_text);
    if (rc < 0)
        return rc;
    if ((rc = store_run_create(store, exp_id, cfg->rounds, cfg->clients.count, cfg->seed, NULL, run_id, err)) < 0)
        return rc;
    run_folder(o->db_path, dbdir, *run_id, run_dir, run_dir_len);
    if ((rc = set_aside_orphan(run_dir, o->db_path, err)) < 0)
        return rc;
    if (o->keys_dir)
        snprintf(keys_dir, keys_len, "%s", o->keys_dir);
    else
        snprintf(keys_dir, keys_len, "%s/keys", run_dir);
    if ((rc = fn_mkdirs(run_dir, 0700, err)) < 0)
        return rc;
    if (!o->keys_dir)
        rc = make_run_keys(keys_dir, cfg->clients.count, err);
    return rc;
}

/* The experiment's "compress" block on the run's final global model (its checkpoint: the
 * parameters, then the batch-norm statistics), written into the run folder (a relative "out" is
 * taken there, default "compress"); each stage's accuracy, agreement with the model's own
 * predictions and speed-up are stored as metrics of the last round (compress_KEY_accuracy, ...,
 * KEY as in the report). Ctrl-C during it ends the process: the run then reads as interrupted. */
static int compress_final(const config_t *cfg, const cli_compress_block_t *cb, store_t *store, int64_t run_id,
                          const char *run_dir)
{
    err_t err = {0};
    store_checkpoint_t ck;
    int round, status;
    engine_model_t *m = NULL;
    if (store_checkpoint_load(store, run_id, &ck, &round, &err) < 0) {
        err_wrap(&err, "compress: no final model: ");
        return cli_fail(&err);
    }
    int sh[3] = {1, 28, 28}; /* the block takes (fashion-)MNIST only (cli_compress_block_parse) */
    if (engine_model_create_shape(cfg->model, sh[0], sh[1], sh[2], 10, &m, &err) < 0) {
        status = cli_fail(&err);
        goto done;
    }
    size_t n = engine_model_num_federated(m);
    if (ck.params_len != n * sizeof(float)) {
        err_set(&err, FN_EINVAL, "compress: run %lld's checkpoint holds %zu floats, the model has %zu", (long long)run_id,
                ck.params_len / sizeof(float), n);
        status = cli_fail(&err);
        goto done;
    }
    char out[PATH_MAX + 256];
    const char *o = cb->out ? cb->out : "compress";
    if (o[0] == '/')
        snprintf(out, sizeof out, "%s", o);
    else
        snprintf(out, sizeof out, "%s/%s", run_dir, o);
    printf("\ncompress: the final global model (round %d) as the experiment's compress block says\n", round);
    fflush(stdout);
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old_int, old_term;
    sigaction(SIGINT, &dfl, &old_int);
    sigaction(SIGTERM, &dfl, &old_term);
    json_t *rep = NULL;
    status = cli_compress_block_run(cb, cfg->source, cfg->text, engine_model_arch(m), ck.params, n, sh, out, &rep);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    size_t i;
    json_t *stage;
    json_array_foreach(rep, i, stage) {
        const char *key = json_string_value(json_object_get(stage, "key"));
        static const char *const what[] = {"accuracy", "agreement", "speedup", "ms_per_batch"};
        for (int k = 0; k < 4 && key; k++) {
            char name[96];
            snprintf(name, sizeof name, "compress_%s_%s", key, what[k]);
            if (store_metric_insert(store, run_id, round, name, json_number_value(json_object_get(stage, what[k])), &err) < 0) {
                log_error("%s", err.msg);
                status = EXIT_FAILED;
            }
        }
    }
    if (rep)
        printf("compress: %s/report.json; stored as run %lld's compress_* metrics of round %d\n", out, (long long)run_id,
               round);
    json_decref(rep);
done:
    engine_model_free(m);
    store_checkpoint_free(&ck);
    return status;
}

int cli_serve(const serve_options_t *o)
{
    err_t err = {0};
    config_t *cfg = NULL;
    int status = EXIT_FAILED;
    store_t *store = NULL;
    server_t *server = NULL;
    cli_compress_block_t cblock = {0};
    web_t *web = NULL;
    int64_t run_id = 0;
    int rc;
    char dbdir[PATH_MAX], run_dir[PATH_MAX], keys_dir[PATH_MAX], url[256] = "";
    char dbcopy[PATH_MAX];
    fn_raise_open_files(); /* a descriptor a site: a thousand sites pass a 1024 default */
    snprintf(dbcopy, sizeof dbcopy, "%s", o->db_path);
    snprintf(dbdir, sizeof dbdir, "%s", dirname(dbcopy)); /* dirname may write into its argument */
    if (o->resume_run > 0) {
        char *text = NULL, source[64];
        int64_t exp_id;
        run_id = o->resume_run;
        if (store_open(o->db_path, 0, &store, &err) < 0 || store_run_reopen(store, run_id, &text, &exp_id, &err) < 0)
            goto out;
        snprintf(source, sizeof source, "experiment of run %lld", (long long)run_id);
        rc = config_load_string(text, source, &cfg, &err);
        free(text);
        if (rc < 0 || cli_compress_block_parse(cfg->source, cfg->text, cfg->root, 0, &cblock, &err) < 0)
            goto fail_run;
        run_folder(o->db_path, dbdir, run_id, run_dir, sizeof run_dir);
        if (o->keys_dir)
            snprintf(keys_dir, sizeof keys_dir, "%s", o->keys_dir);
        else
            snprintf(keys_dir, sizeof keys_dir, "%s/keys", run_dir);
    } else {
        /* everything checked before anything is recorded, the compress block included */
        if (config_load_file(o->config_path, &cfg, &err) < 0 || server_check_config(cfg, &err) < 0 ||
            cli_compress_block_parse(cfg->source, cfg->text, cfg->root, 0, &cblock, &err) < 0) {
            fprintf(stderr, "fednas: error: %s\n", err.msg);
            cli_compress_block_free(&cblock);
            config_free(cfg);
            return EXIT_USAGE;
        }
        if (fn_mkdirs(dbdir, 0755, &err) < 0 || store_open(o->db_path, 0, &store, &err) < 0)
            goto out;
        rc = start_run(o, store, cfg, dbdir, &run_id, run_dir, sizeof run_dir, keys_dir, sizeof keys_dir, &err);
        if (rc < 0)
            goto fail_run;
    }

    /* The dashboard stops a run by signalling the process that serves it. */
    if (store_run_set_pid(store, run_id, (int64_t)getpid(), &err) < 0)
        goto fail_run;

    server_options_t so = {.cfg = cfg, .bind = o->bind, .keys_dir = keys_dir, .store = store, .run_id = run_id,
                           .resume = o->resume_run > 0, .stop = &cli_stop};
    if (server_create(&so, &server, &err) < 0)
        goto fail_run;
    if (o->http_port >= 0) {
        web_options_t wo = {.db_path = o->db_path, .host = o->http_host, .port = o->http_port};
        if (web_start(&wo, &web, &err) < 0)
            goto fail_run;
        snprintf(url, sizeof url, "%s#run=%lld", web_url(web), (long long)run_id);
    }
    printf("fednas: %s run %lld of experiment \"%s\": %d rounds, %d clients\n", o->resume_run > 0 ? "resuming" : "starting",
           (long long)run_id, cfg->name, cfg->rounds, cfg->clients.count);
    printf("fednas: server listening on %s\n", server_endpoint(server));
    if (url[0])
        printf("fednas: dashboard at %s\n", url);
    printf("fednas: run store %s, run folder %s\n", o->db_path, run_dir);
    fflush(stdout);
    if (o->on_listening && o->on_listening(o->ctx, cfg, server_endpoint(server), keys_dir, &err) < 0)
        goto fail_run;

    server_summary_t sum;
    rc = server_run(server, &sum, &err);
    const char *st = rc == 0 ? "done" : (cli_stop ? "stopped" : "failed");
    print_summary(cfg, run_id, o->db_path, &sum, st);
    if (rc == 0)
        status = EXIT_OK;
    else
        fprintf(stderr, "fednas: error: %s\n", err.msg);
    if (o->on_ended)
        o->on_ended(o->ctx);
    /* The run is still "running" while its model is compressed: its process works on. */
    if (rc == 0 && cblock.recipe && !cli_stop)
        status = compress_final(cfg, &cblock, store, run_id, run_dir);
    err_t e2;
    if (store_run_finish(store, run_id, st, rc == 0 ? (sum.note[0] ? sum.note : NULL) : err.msg, &e2) < 0)
        log_error("%s", e2.msg);
    /* A run stopped with Ctrl-C stops its dashboard too; otherwise, when asked (an interactive
     * `fednas run`), the dashboard outlives the run, as NNI keeps its web UI, so the link keeps
     * working until the user is done with it. */
    if (web && o->keep_dashboard && !cli_stop) {
        /* The sockets, the round engine and the store handle are done with: a terminal closed
         * now (SIGHUP) leaves nothing half-written. The dashboard reads the store on its own. */
        server_free(server);
        server = NULL;
        store_close(store);
        store = NULL;
        printf("dashboard: %s (still up after the run; Ctrl-C stops it)\n", url);
        fflush(stdout);
        while (!cli_stop)
            usleep(100000);
    } else
        print_dashboard_command(o->db_path);
    goto done;

fail_run:
    store_run_finish(store, run_id, "failed", err.msg, NULL);
out:
    status = cli_fail(&err);
done:
    web_stop(web);
    server_free(server);
    store_close(store);
    cli_compress_block_free(&cblock);
    config_free(cfg);
    return status;
}
