#include "common/store_live.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A zombie counts as gone: a detached server is reaped by init, or by nobody in a container
 * whose first process does not reap. */
int store_live_pid_alive(long pid)
{
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return 0;
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = '\0';
    const char *rp = strrchr(st, ')');
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* The server opens the store before it records its pid and keeps it open until it has marked
 * the run finished, so a pid recorded by a server that was SIGKILLed or OOM-killed, then reused
 * by an unrelated process, fails the second test. The open file is compared by device and
 * inode, so the store's path may be spelled differently here and there. A server in another
 * pid namespace (another container) than the reader looks gone: with WAL, SQLite needs both on
 * one host anyway. */
int store_live_serves(long pid, const char *db_path)
{
    if (pid <= 0)
        return 0;
    if (kill((pid_t)pid, 0) != 0)
        return errno == EPERM ? -1 : 0;
    if (!store_live_pid_alive(pid))
        return 0;
    struct stat db;
    if (stat(db_path, &db) != 0)
        return 0;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%ld/fd", pid);
    DIR *d = opendir(dir);
    if (!d)
        return errno == EACCES || errno == EPERM ? -1 : 0;
    int found = 0;
    for (struct dirent *de; !found && (de = readdir(d)) != NULL;) {
        char fd_path[64 + 256];
        struct stat sb;
        snprintf(fd_path, sizeof fd_path, "%s/%s", dir, de->d_name);
        found = de->d_name[0] != '.' && stat(fd_path, &sb) == 0 && sb.st_dev == db.st_dev && sb.st_ino == db.st_ino;
    }
    closedir(d);
    return found;
}

/* Whether the run says "running" but its recorded server is gone; fills its pid. pid 0 (a
 * server from before pids were recorded, or not yet recorded) cannot tell: not gone. */
static int gone(store_t *s, const char *db_path, int64_t run_id, int64_t *pid)
{
    char status[16];
    err_t e = {0};
    *pid = 0;
    return store_run_pid(s, run_id, pid, status, &e) == 0 && strcmp(status, "running") == 0 && *pid > 0 &&
           store_live_serves((long)*pid, db_path) == 0;
}

int store_live_mark_interrupted(store_t *s, const char *db_path, json_t *runs)
{
    json_t *one = json_is_object(runs) ? runs : NULL;
    size_t n = one ? 1 : json_array_size(runs);
    int marked = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *row = one ? one : json_array_get(runs, i);
        const char *st = json_string_value(json_object_get(row, "status"));
        int64_t pid;
        if (!st || strcmp(st, "running") != 0 ||
            !gone(s, db_path, json_integer_value(json_object_get(row, "id")), &pid))
            continue;
        char msg[160];
        snprintf(msg, sizeof msg, "interrupted: the server process (pid %lld) is gone; resume the run to continue "
                 "from its last committed round", (long long)pid);
        json_object_set_new(row, "status", json_string("interrupted"));
        json_object_set_new(row, "message", json_string(msg));
        json_object_del(row, "phase");
        marked++;
    }
    return marked;
}

void store_live_mark_summary(store_t *s, const char *db_path, json_t *summary)
{
    json_t *running = json_object_get(summary, "running"), *by = json_object_get(summary, "runs_by_status");
    int moved = 0;
    for (size_t i = 0; i < json_array_size(running);) {
        int64_t pid;
        if (gone(s, db_path, json_integer_value(json_object_get(json_array_get(running, i), "id")), &pid)) {
            json_array_remove(running, i);
            moved++;
        } else {
            i++;
        }
    }
    if (!moved || !json_is_object(by))
        return;
    json_int_t r = json_integer_value(json_object_get(by, "running"));
    json_object_set_new(by, "running", json_integer(r > moved ? r - moved : 0));
    json_object_set_new(by, "interrupted", json_integer(json_integer_value(json_object_get(by, "interrupted")) + moved));
}
