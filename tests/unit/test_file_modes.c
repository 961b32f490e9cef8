/* test_file_modes: files that hold secrets or run data are private whatever the umask: the run
 * store and its -wal and -shm files are 0600, and fn_write_file never follows a link planted
 * at its temporary path (nor leaves the temporary file readable by others while it writes). */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include <dirent.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/store.h"
#include "common/util.h"

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int mode_of(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return -1;
    return (int)(sb.st_mode & 07777);
}

/* With a permissive umask (022 or even 0), the store and its WAL files are still 0600: they
 * hold experiment configs, client names and models. */
static void test_store_modes(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-modes-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], wal[140], shm[140];
    snprintf(db, sizeof db, "%s/runs.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    snprintf(shm, sizeof shm, "%s-shm", db);
    mode_t old = umask(0);
    err_t e = {0};
    store_t *s = NULL;
    assert_int_equal(store_open(db, 0, &s, &e), 0);
    int64_t exp_id = 0;
    assert_int_equal(store_experiment_create(s, "modes", "{}", &exp_id, &e), 0); /* writes the WAL */
    umask(old);
    assert_int_equal(mode_of(db), 0600);
    assert_int_equal(mode_of(wal), 0600);
    assert_int_equal(mode_of(shm), 0600);
    store_close(s);
    /* A store that exists with a wider mode (made by an older fednas) is narrowed on open. */
    assert_int_equal(chmod(db, 0644), 0);
    assert_int_equal(store_open(db, 0, &s, &e), 0);
    assert_int_equal(mode_of(db), 0600);
    store_close(s);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A symbolic link planted at the temporary name fn_write_file uses first (PATH.tmp.PID) must
 * not be followed: the link's target keeps its content and the file lands at PATH. */
static void test_write_file_no_follow(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-test-wf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], tmp[160], victim[128];
    snprintf(path, sizeof path, "%s/key.pub", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    snprintf(victim, sizeof victim, "%s/victim", dir);
    FILE *f = fopen(victim, "w");
    assert_non_null(f);
    fputs("precious", f);
    fclose(f);
    assert_int_equal(symlink(victim, tmp), 0);

    err_t e = {0};
    assert_int_equal(fn_write_file(path, "new", 3, 0644, &e), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(fn_read_file(victim, &data, &len, &e), 0);
    assert_string_equal(data, "precious");
    free(data);
    assert_int_equal(fn_read_file(path, &data, &len, &e), 0);
    assert_string_equal(data, "new");
    free(data);
    assert_int_equal(mode_of(path), 0644); /* the caller's mode, not the umask's */
    /* The planted link is left alone (not ours to remove), and no temporary file is left. */
    struct stat sb;
    assert_int_equal(lstat(tmp, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        n += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 3); /* victim, the link, key.pub */

    /* A private file is written 0600 even under umask 0. */
    mode_t old = umask(0);
    char priv[140];
    snprintf(priv, sizeof priv, "%s/key.secret", dir);
    assert_int_equal(fn_write_file(priv, "s", 1, 0600, &e), 0);
    umask(old);
    assert_int_equal(mode_of(priv), 0600);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_modes),
        cmocka_unit_test(test_write_file_no_follow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
