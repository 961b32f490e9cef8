/* util.c: the small shared helpers of common/util.h (time, files, number parsing, comparators). */
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double fn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double fn_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int fn_mkdirs(const char *path, int mode, err_t *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return err_set(err, FN_EINVAL, "path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST)
                return err_set(err, FN_EIO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

int fn_read_file(const char *path, char **data, size_t *len, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, errno == ENOENT ? FN_ENOTFOUND : FN_EIO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = FN_MALLOC(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return err_set(err, FN_ENOMEM, "out of memory reading %s", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(err, FN_EIO, "error reading %s", path);
    }
    buf[n] = '\0';
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

/* Writes a temporary file next to path and renames it over path, so readers see the old or
 * the new file, never half of one. The temporary file is created O_EXCL | O_NOFOLLOW with mode
 * 0600 (in a shared directory, a link or file planted at its name is never written through,
 * and nobody can open it while the secret is written), then given the caller's mode. Its name
 * is PATH.tmp.PID, or PATH.tmp.PID.N when something already sits there. */
int fn_write_file(const char *path, const void *data, size_t len, int mode, err_t *err)
{
    char tmp[PATH_MAX];
    int fd = -1;
    for (unsigned attempt = 0; fd < 0 && attempt < 100; attempt++) {
        int n = attempt == 0 ? snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid())
                             : snprintf(tmp, sizeof tmp, "%s.tmp.%d.%u", path, (int)getpid(), attempt);
        if (n >= (int)sizeof tmp)
            return err_set(err, FN_EINVAL, "path too long: %s", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return err_set(err, FN_EIO, "cannot create %s: %s", tmp, strerror(errno));
    }
    if (fd < 0)
        return err_set(err, FN_EIO, "cannot create a temporary file next to %s: 100 names are taken", path);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return err_set(err, FN_EIO, "cannot write %s: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    /* The caller's mode exactly: the umask must not widen or narrow key files. */
    int bad = fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0;
    int e = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (!bad && rename(tmp, path) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return err_set(err, FN_EIO, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

int fn_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return FN_EINVAL;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return FN_EINVAL;
    *out = v;
    return 0;
}

int fn_self_exe(char *buf, size_t len, err_t *err)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return err_set(err, FN_EIO, "cannot find the fednas executable: %s", strerror(errno));
    buf[n] = '\0';
    return 0;
}

int fn_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

long fn_raise_open_files(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}
