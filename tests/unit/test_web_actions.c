/* web: the admin actions: launch refusals (a viewer, no CSRF, oversized or bad configs, the
 * real fednas refusing a config) and launch, stop and resume against a stand-in fednas, with a
 * viewer's resume refused. */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include "web_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/util.h"
#include "crypto/tls.h"

/* Admin actions: role, CSRF, size and shape of the body; a real `fednas run` of a bad config
 * is reported with its error. */
static void test_launch_refusals(void **state)
{
    fixture_t *f = *state;
    char vcookie[256], vcsrf[80], extra[1024];
    login(f->port, VIEWER_TOKEN, vcookie, sizeof vcookie, vcsrf, sizeof vcsrf);
    resp_t r;
    static const char body[] = "{\"name\":\"x\"}";
    snprintf(extra, sizeof extra, "%sX-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", vcookie, vcsrf,
             sizeof body - 1, body);
    assert_int_equal(http_anon(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    snprintf(extra, sizeof extra, "%sX-CSRF-Token: %s\r\nContent-Length: 0\r\n", vcookie, vcsrf);
    assert_int_equal(http_anon(f->port, "POST", "/api/runs/1/stop", extra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    /* Admin without CSRF. */
    snprintf(extra, sizeof extra, "Content-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 403, "CSRF");
    resp_free(&r);
    /* Oversized: refused from Content-Length before reading. */
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 10000000\r\n", g_csrf);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 413, "limit");
    resp_free(&r);
    static const char *const bad[] = {"", "[1,2]", "{\"name\":", "\"text\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, strlen(bad[i]),
                 bad[i]);
        assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
        assert_json_error(&r, 400, "experiment config");
        resp_free(&r);
    }
    /* A config fednas refuses: the real binary exits 2 and the answer carries its message. */
    static const char invalid[] = "{\"name\":\"bad\",\"rounds\":\"many\"}";
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, sizeof invalid - 1,
             invalid);
    assert_int_equal(http_request(f->port, "POST", "/api/runs", extra, &r), 0);
    assert_json_error(&r, 422, "exited");
    json_t *j = body_json(&r);
    const char *tail = json_string_value(json_object_get(j, "log_tail"));
    if (!tail || !strstr(tail, "rounds"))
        fail_msg("log tail does not name the bad key: %s", tail ? tail : "(none)");
    json_decref(j);
    resp_free(&r);
    /* Stop and resume of runs that are absent or not running. */
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 0\r\n", g_csrf);
    assert_int_equal(http_request(f->port, "POST", "/api/runs/999/stop", extra, &r), 0);
    assert_json_error(&r, 404, NULL);
    resp_free(&r);
    assert_int_equal(http_request(f->port, "POST", "/api/runs/abc/stop", extra, &r), 0);
    assert_json_error(&r, 400, NULL);
    resp_free(&r);
    char path[64];
    snprintf(path, sizeof path, "/api/runs/%lld/stop", (long long)f->run_id);
    assert_int_equal(http_request(f->port, "POST", path, extra, &r), 0);
    assert_json_error(&r, 409, "not known"); /* running, but no pid recorded */
    resp_free(&r);
    assert_int_equal(http_request(f->port, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    resp_free(&r);
}

/* Issue 12: a server killed with SIGKILL (or by the OOM killer) leaves its run "running" with
 * its pid; after that pid is reused by an unrelated process (here a sleep of ours, which does
 * not hold the store open), Stop must not signal it: 409, the process lives on, and the run
 * shows as "interrupted" (list and detail), so it can be resumed. A pid that does serve the
 * store (this process: the fixture's writer holds it open) still shows "running". */
static void test_stop_reused_pid(void **state)
{
    fixture_t *f = *state;
    /* Until its exec the child holds this process's descriptors, the store's among them, and so
     * passes for the run's server: wait for the exec (the close-on-exec pipe reads EOF). */
    int ex[2];
    assert_int_equal(pipe2(ex, O_CLOEXEC), 0);
    pid_t other = fork();
    assert_true(other >= 0);
    if (other == 0) {
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    close(ex[1]);
    char b;
    while (read(ex[0], &b, 1) < 0 && errno == EINTR)
        ;
    close(ex[0]);
    err_t e = {0};
    assert_int_equal(store_run_set_pid(f->writer, f->run_id, (int64_t)other, &e), 0);
    char extra[256], path[64];
    resp_t r;
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 0\r\n", g_csrf);
    snprintf(path, sizeof path, "/api/runs/%lld/stop", (long long)f->run_id);
    assert_int_equal(http_request(f->port, "POST", path, extra, &r), 0);
    assert_json_error(&r, 409, "interrupted");
    resp_free(&r);
    usleep(200000);
    int wst;
    assert_int_equal(waitpid(other, &wst, WNOHANG), 0); /* not signalled */

    snprintf(path, sizeof path, "/api/runs/%lld", (long long)f->run_id);
    assert_int_equal(http_request(f->port, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "interrupted");
    json_decref(j);
    resp_free(&r);
    assert_int_equal(http_request(f->port, "GET", "/api/runs", NULL, &r), 0);
    j = body_json(&r);
    json_t *row;
    size_t i;
    int seen = 0;
    json_array_foreach(j, i, row) if (json_integer_value(json_object_get(row, "id")) == f->run_id)
    {
        assert_string_equal(json_string_value(json_object_get(row, "status")), "interrupted");
        seen = 1;
    }
    assert_true(seen);
    json_decref(j);
    resp_free(&r);

    /* This process holds the store open: it is taken for the run's server. */
    assert_int_equal(store_run_set_pid(f->writer, f->run_id, (int64_t)getpid(), &e), 0);
    assert_int_equal(http_request(f->port, "GET", path, NULL, &r), 0);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "running");
    json_decref(j);
    resp_free(&r);
    assert_int_equal(store_run_set_pid(f->writer, f->run_id, 0, &e), 0);
    kill(other, SIGKILL);
    waitpid(other, &wst, 0);
}

/* ---- a tiny WebSocket client over TLS ---------------------------------------------------- */

static int proc_gone(long pid)
{
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    FILE *fp = fopen(p, "r");
    if (!fp)
        return 1;
    size_t n = fread(st, 1, sizeof st - 1, fp);
    fclose(fp);
    st[n] = '\0';
    const char *rp = strrchr(st, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X'); /* a zombie nobody reaps is gone too */
}

/* Launch, stop and resume against a stand-in for fednas: a script that records its arguments,
 * registers a run in the store with sqlite3 and then sleeps (exec keeps its pid). */
static void test_launch_stop_resume(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-weblaunch-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], script[128], args[128];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    snprintf(script, sizeof script, "%s/fake-fednas", dir);
    snprintf(args, sizeof args, "%s/args.txt", dir);
    err_t e = {0};
    store_t *st;
    assert_int_equal(store_open(db, 0, &st, &e), 0);
    FILE *fp = fopen(script, "w");
    assert_non_null(fp);
    fprintf(fp,
            "#!/bin/sh\n"
            "echo \"$@\" >> '%s'\n"
            "case \"$2\" in --resume) exec sleep 30;; esac\n"
            "sqlite3 '%s' \"INSERT INTO experiments(name, config, created_at) VALUES ('fake', '{}', 0); "
            "INSERT INTO runs(experiment_id, status, rounds_planned, clients_planned, seed, started_at, pid) "
            "VALUES (last_insert_rowid(), 'running', 1, 1, 1, 0, $$);\" || exit 3\n"
            "exec sleep 30 3<'%s'\n", /* holds the store open, as the real server does */
            args, db, db);
    fclose(fp);
    chmod(script, 0700);

    web_t *w = NULL;
    web_options_t opt = {.db_path = db, .admin_token = ADMIN_TOKEN, .viewer_token = VIEWER_TOKEN, .fednas_bin = script};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    login(port, ADMIN_TOKEN, g_auth, sizeof g_auth, g_csrf, sizeof g_csrf);
    char extra[1024];
    static const char body[] = "{\"name\":\"fake\",\"rounds\":1}";
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: %zu\r\n\r\n%s", g_csrf, sizeof body - 1, body);
    resp_t r;
    assert_int_equal(http_request(port, "POST", "/api/runs", extra, &r), 0);
    if (r.status != 201)
        fail_msg("launch: %d %s", r.status, r.body);
    json_t *j = body_json(&r);
    int64_t run = json_integer_value(json_object_get(j, "run_id"));
    long pid = (long)json_integer_value(json_object_get(j, "pid"));
    const char *cfg = json_string_value(json_object_get(j, "config"));
    assert_true(run >= 1 && pid > 1);
    /* The posted config was written (0600) in the state folder and handed to `fednas run`. */
    struct stat sb;
    assert_int_equal(stat(cfg, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char *a;
    size_t alen;
    assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
    char want[512];
    snprintf(want, sizeof want, "run %s --db %s --http off", cfg, db);
    if (!strstr(a, want))
        fail_msg("arguments \"%s\" lack \"%s\"", a, want);
    free(a);
    json_decref(j);
    resp_free(&r);

    char path[64];
    snprintf(extra, sizeof extra, "X-CSRF-Token: %s\r\nContent-Length: 0\r\n", g_csrf);
    snprintf(path, sizeof path, "/api/runs/%lld/resume", (long long)run);
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    assert_json_error(&r, 409, "running"); /* alive: no second server on one run */
    resp_free(&r);
    snprintf(path, sizeof path, "/api/runs/%lld/stop", (long long)run);
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    for (int i = 0; i < 50 && !proc_gone(pid); i++)
        usleep(100000);
    assert_true(proc_gone(pid));

    /* A viewer may not resume, with a valid session and CSRF token or with its bearer token,
     * though the run could be resumed now (the admin does so below): 403 and nothing started. */
    snprintf(path, sizeof path, "/api/runs/%lld/resume", (long long)run);
    char vcookie[256], vcsrf[80], vextra[512];
    login(port, VIEWER_TOKEN, vcookie, sizeof vcookie, vcsrf, sizeof vcsrf);
    snprintf(vextra, sizeof vextra, "%sX-CSRF-Token: %s\r\nContent-Length: 0\r\n", vcookie, vcsrf);
    assert_int_equal(http_anon(port, "POST", path, vextra, &r), 0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    assert_int_equal(http_anon(port, "POST", path, "Authorization: Bearer " VIEWER_TOKEN "\r\nContent-Length: 0\r\n", &r),
                     0);
    assert_json_error(&r, 403, "admin");
    resp_free(&r);
    assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
    if (strstr(a, "--resume"))
        fail_msg("a viewer's refused resume started fednas: %s", a);
    free(a);
    char launch_dir[160];
    snprintf(launch_dir, sizeof launch_dir, "%s/launch", dir);
    DIR *ld = opendir(launch_dir);
    for (struct dirent *de; ld && (de = readdir(ld)) != NULL;)
        if (strncmp(de->d_name, "resume-", 7) == 0)
            fail_msg("a viewer's refused resume left %s/%s", launch_dir, de->d_name);
    if (ld)
        closedir(ld);

    /* The store still says running (the stand-in never finishes it); its process is gone, so
     * resume starts `fednas run --resume ID`. */
    assert_int_equal(http_request(port, "POST", path, extra, &r), 0);
    if (r.status != 202)
        fail_msg("resume: %d %s", r.status, r.body);
    j = body_json(&r);
    long pid2 = (long)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    resp_free(&r);
    /* 202 comes back once the process is started, not once it has run: the stand-in writes its
     * arguments when the machine gets to it (a loaded one may take a while). */
    snprintf(want, sizeof want, "run --resume %lld --db %s --http off", (long long)run, db);
    int found = 0;
    for (int i = 0; i < 200 && !found; i++) {
        assert_int_equal(fn_read_file(args, &a, &alen, &e), 0);
        found = strstr(a, want) != NULL;
        free(a);
        if (!found)
            usleep(50000);
    }
    if (!found)
        fail_msg("the resumed stand-in did not record \"%s\" within 10 s", want);
    kill((pid_t)pid2, SIGTERM);

    web_stop(w);
    g_auth[0] = '\0';
    store_close(st);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_launch_refusals),
        cmocka_unit_test(test_stop_reused_pid),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_launch_stop_resume),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("test_web_actions served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("test_web_actions alone", alone, NULL, NULL);
    return failed;
}
