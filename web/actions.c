/* actions.c: the admin actions. The dashboard never runs federated learning itself (web/ does
 * not call into server/): launch and resume start `fednas run ... --http off` as a detached
 * process (double fork, own session, output to a log file in the state folder) on the same
 * run store, and stop sends SIGTERM to the process serving a run, which finishes the round in
 * flight, marks the run stopped and exits. The pid recorded with a run is trusted only while
 * that process holds the store open (common/store_live.h): a server that was killed leaves its
 * run "running" with a pid that may be reused; such a run is shown as "interrupted" and may be
 * resumed, and its stale pid is never signalled. */
#define _GNU_SOURCE /* close_range */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/store.h"
#include "common/store_live.h"
#include "common/util.h"
#include "web/web_internal.h"

#define LAUNCH_MAX_BYTES (256 * 1024)
#define APPEAR_WAIT_MS 5000

static int admin_only(const web_req_t *rq)
{
    return web_send_error(rq, 403, "this action needs the admin token; the viewer link is read-only");
}

/* Starts argv detached, stdout and stderr appended to log_path. Returns the process id, or -1. */
static long spawn_detached(char *const argv[], const char *log_path)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t first = fork();
    if (first < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (first == 0) {
        setsid();
        pid_t second = fork();
        if (second != 0) {
            long v = second;
            (void)!write(p[1], &v, sizeof v);
            _exit(0);
        }
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (in < 0 || out < 0)
            _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        close_range(3, ~0U, 0); /* civetweb's sockets, the store, ... */
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    long pid = -1;
    if (read(p[0], &pid, sizeof pid) != (ssize_t)sizeof pid)
        pid = -1;
    close(p[0]);
    waitpid(first, NULL, 0);
    return pid;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The last lines of a log file, for an error answer. */
static json_t *log_tail(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    err_t e = {0};
    if (fn_read_file(path, &data, &len, &e) != 0)
        return json_string("");
    size_t from = len > 2000 ? len - 2000 : 0;
    json_t *s = json_stringn(data + from, len - from);
    free(data);
    return s ? s : json_string("(the log is not UTF-8)");
}

static int64_t max_run_id(const char *db)
{
    store_t *s = NULL;
    err_t e = {0};
    json_t *runs = NULL;
    int64_t id = 0;
    if (store_open(db, 1, &s, &e) == 0 && store_runs_json(s, &runs, &e) == 0)
        id = json_integer_value(json_object_get(json_array_get(runs, 0), "id")); /* newest first */
    json_decref(runs);
    store_close(s);
    return id;
}

/* Waits for the child to create a run (returns its id), to die (-1), or for the time to pass (0). */
static int64_t wait_for_run(const char *db, int64_t before, long pid)
{
    for (int waited = 0; waited < APPEAR_WAIT_MS; waited += 100) {
        int64_t now = max_run_id(db);
        if (now > before)
            return now;
        if (!store_live_pid_alive(pid))
            return max_run_id(db) > before ? max_run_id(db) : -1;
        sleep_ms(100);
    }
    return 0;
}

static int launch(const web_req_t *rq)
{
    if (rq->role != WEB_ROLE_ADMIN)
        return admin_only(rq);
    char *body;
    size_t len;
    int rc = web_read_body(rq, LAUNCH_MAX_BYTES, &body, &len);
    if (rc != 0)
        return rc;
    json_error_t je;
    json_t *cfg = json_loadb(body, len, 0, &je);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        free(body);
        if (len == 0)
            return web_send_error(rq, 400, "the body must be an experiment config (a JSON object); it is empty");
        return web_send_error(rq, 400, "the body must be an experiment config (a JSON object): line %d, column %d: %s",
                              je.line, je.column, cfg ? "not an object" : je.text);
    }
    json_decref(cfg);

    char dir[4096 + 16], stem[4096 + 64], cfg_path[4096 + 80], log_path[4096 + 80], rnd[13];
    err_t e = {0};
    snprintf(dir, sizeof dir, "%s/launch", web_state_dir(rq->w));
    if (fn_mkdirs(dir, 0700, &e) < 0 || web_random_hex(rnd, 6) < 0) {
        free(body);
        return web_send_error(rq, 500, "cannot create %s: %s", dir, e.msg);
    }
    snprintf(stem, sizeof stem, "%s/%lld-%s", dir, (long long)time(NULL), rnd);
    snprintf(cfg_path, sizeof cfg_path, "%s.json", stem);
    snprintf(log_path, sizeof log_path, "%s.log", stem);
    int fd = open(cfg_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, body, len) == (ssize_t)len;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    free(body);
    if (!ok)
        return web_send_error(rq, 500, "cannot write %s: %s", cfg_path, strerror(errno));

    int64_t before = max_run_id(rq->db_path);
    char *argv[] = {(char *)web_fednas_bin(rq->w), "run", cfg_path, "--db", (char *)rq->db_path, "--http", "off", NULL};
    long pid = spawn_detached(argv, log_path);
    if (pid <= 0)
        return web_send_error(rq, 500, "cannot start %s: %s", argv[0], strerror(errno));
    log_info("web: launched %s run %s (pid %ld, log %s)", argv[0], cfg_path, pid, log_path);
    int64_t run = wait_for_run(rq->db_path, before, pid);
    if (run < 0)
        return web_send_json(rq, 422,
                             json_pack("{s:s, s:o, s:s, s:s}", "error", "fednas run exited without starting a run",
                                       "log_tail", log_tail(log_path), "config", cfg_path, "log", log_path));
    if (run > 0) {
        web_children_note(rq->w, run, pid);
        return web_send_json(rq, 201, json_pack("{s:I, s:I, s:s, s:s}", "run_id", (json_int_t)run, "pid",
                                                (json_int_t)pid, "config", cfg_path, "log", log_path));
    }
    return web_send_json(rq, 202, json_pack("{s:s, s:I, s:s, s:s}", "handle", rnd, "pid", (json_int_t)pid, "config",
                                            cfg_path, "log", log_path));
}

int web_api_runs(const web_req_t *rq);

int web_api_runs_collection(const web_req_t *rq)
{
    return rq->post ? launch(rq) : web_api_runs(rq);
}

static int parse_run_id(const web_req_t *rq, int64_t *id)
{
    long long v;
    if (web_parse_u64(rq->id, rq->id_len, INT64_MAX, &v) < 0)
        return web_send_error(rq, 400, "run id \"%.*s\" is not a run number", rq->id_len > 40 ? 40 : (int)rq->id_len,
                              rq->id);
    *id = v;
    return 0;
}

/* The run's pid (store, else a process this dashboard started) and status. */
static int run_process(const web_req_t *rq, int64_t id, long *pid, char status[16])
{
    store_t *s = NULL;
    err_t e = {0};
    if (store_open(rq->db_path, 1, &s, &e) < 0)
        return web_send_error(rq, 503, "%s", e.msg);
    int64_t p = 0;
    int rc = store_run_pid(s, id, &p, status, &e);
    store_close(s);
    if (rc == FN_ENOTFOUND)
        return web_send_error(rq, 404, "%s", e.msg);
    if (rc < 0)
        return web_send_error(rq, 500, "%s", e.msg);
    *pid = p > 0 ? (long)p : web_children_pid(rq->w, id);
    return 0;
}

int web_api_stop(const web_req_t *rq)
{
    if (rq->role != WEB_ROLE_ADMIN)
        return admin_only(rq);
    int64_t id = 0;
    int rc = parse_run_id(rq, &id);
    if (rc)
        return rc;
    long pid = 0;
    char status[16];
    if ((rc = run_process(rq, id, &pid, status)) != 0)
        return rc;
    if (strcmp(status, "running") != 0)
        return web_send_error(rq, 409, "run %lld is %s, not running", (long long)id, status);
    if (pid <= 0)
        return web_send_error(rq, 409, "the process serving run %lld is not known to this dashboard; stop it where it "
                                       "runs (Ctrl-C)",
                              (long long)id);
    /* A pidfd pins the process: the identity checked below is the one signalled, even if the
     * server exits and its pid is reused in between. */
    int pfd = -1;
#ifdef SYS_pidfd_open
    pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#endif
    int serves = store_live_serves(pid, rq->db_path);
    if (serves == 0) {
        if (pfd >= 0)
            close(pfd);
        log_warn("web: stop run %lld: pid %ld no longer serves %s; not signalled", (long long)id, pid, rq->db_path);
        return web_send_json(rq, 409,
                             json_pack("{s:s, s:I, s:s}", "error",
                                       "the server of this run is gone (killed?): the run is interrupted; resume it to "
                                       "continue from its last committed round",
                                       "run_id", (json_int_t)id, "status", "interrupted"));
    }
    int sent;
#ifdef SYS_pidfd_send_signal
    if (pfd >= 0)
        sent = serves > 0 ? (int)syscall(SYS_pidfd_send_signal, pfd, SIGTERM, NULL, 0) : -1;
    else
#endif
        sent = serves > 0 ? kill((pid_t)pid, SIGTERM) : -1;
    int err_no = serves > 0 ? errno : EPERM;
    if (pfd >= 0)
        close(pfd);
    if (sent != 0)
        return web_send_error(rq, 409, "cannot signal process %ld of run %lld: %s", pid, (long long)id,
                              strerror(err_no));
    log_info("web: stop run %lld: SIGTERM to pid %ld", (long long)id, pid);
    return web_send_json(rq, 202, json_pack("{s:I, s:I, s:s}", "run_id", (json_int_t)id, "pid", (json_int_t)pid,
                                            "signal", "SIGTERM"));
}

int web_api_resume(const web_req_t *rq)
{
    if (rq->role != WEB_ROLE_ADMIN)
        return admin_only(rq);
    int64_t id = 0;
    int rc = parse_run_id(rq, &id);
    if (rc)
        return rc;
    long pid = 0;
    char status[16];
    if ((rc = run_process(rq, id, &pid, status)) != 0)
        return rc;
    /* A pid that no longer serves the store (reused after the server was killed) does not
     * block a resume. */
    if (strcmp(status, "running") == 0 && store_live_serves(pid, rq->db_path) != 0)
        return web_send_error(rq, 409, "run %lld is running (pid %ld)", (long long)id, pid);
    char dir[4096 + 16], log_path[4096 + 64], idstr[24], rnd[13];
    err_t e = {0};
    snprintf(dir, sizeof dir, "%s/launch", web_state_dir(rq->w));
    if (fn_mkdirs(dir, 0700, &e) < 0 || web_random_hex(rnd, 6) < 0)
        return web_send_error(rq, 500, "cannot create %s: %s", dir, e.msg);
    snprintf(log_path, sizeof log_path, "%s/resume-%lld-%s.log", dir, (long long)id, rnd);
    snprintf(idstr, sizeof idstr, "%lld", (long long)id);
    char *argv[] = {(char *)web_fednas_bin(rq->w), "run", "--resume", idstr, "--db", (char *)rq->db_path, "--http",
                    "off", NULL};
    long child = spawn_detached(argv, log_path);
    if (child <= 0)
        return web_send_error(rq, 500, "cannot start %s: %s", argv[0], strerror(errno));
    /* A refused resume (finished run, missing checkpoint) exits at once: say why. */
    for (int waited = 0; waited < 1500 && store_live_pid_alive(child); waited += 100)
        sleep_ms(100);
    if (!store_live_pid_alive(child))
        return web_send_json(rq, 422, json_pack("{s:s, s:o, s:s}", "error", "fednas run --resume exited", "log_tail",
                                                log_tail(log_path), "log", log_path));
    web_children_note(rq->w, id, child);
    return web_send_json(rq, 202, json_pack("{s:I, s:I, s:s}", "run_id", (json_int_t)id, "pid", (json_int_t)child,
                                            "log", log_path));
}
