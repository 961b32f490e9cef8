/* tls_load.c: loading the civetweb/OpenSSL 3 shim (tls_shim.c) and initializing civetweb's
 * process-wide library state with TLS when the shim loaded. Reference-counted, because several
 * dashboards (tests) may run in one process and mg_init_library/mg_exit_library are global. */
#define _GNU_SOURCE
#include <civetweb.h>
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "web/web_internal.h"

/* The civetweb/OpenSSL 3 shim (DESIGN.md, "Known dependency pitfalls"):
 * libfednas-sslshim.so (SONAME libssl.so, built from web/tls_shim.c) sits next to the fednas
 * binary. Loaded RTLD_GLOBAL before mg_init_library(MG_FEATURES_TLS), it is what civetweb's
 * own dlopen("libssl.so") returns. Test and bench programs live one folder below the binary,
 * hence the second place to look. */
#define WEB_SHIM_NAME "libfednas-sslshim.so"
static void *g_shim;

static int load_shim(char *why, size_t cap)
{
    if (g_shim)
        return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(why, cap, "cannot read /proc/self/exe: %s", strerror(errno));
        return -1;
    }
    exe[n] = '\0';
    char *dir = dirname(exe);
    char path[PATH_MAX + 64];
    const char *const where[] = {"%s/" WEB_SHIM_NAME, "%s/../" WEB_SHIM_NAME};
    why[0] = '\0';
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        snprintf(path, sizeof path, where[i], dir);
        if (access(path, R_OK) != 0)
            continue;
        g_shim = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (g_shim)
            return 0;
        snprintf(why, cap, "cannot load %s: %s", path, dlerror());
        return -1;
    }
    snprintf(why, cap, "%s is not next to %s (it is built with fednas; copy it along with the binary)",
             WEB_SHIM_NAME, dir);
    return -1;
}

/* mg_init_library/mg_exit_library are process-wide; several servers (tests) may coexist. */
static pthread_mutex_t g_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_lib_users;
static int g_lib_tls; /* the library was initialized with TLS */

int web_lib_acquire(int tls, err_t *err)
{
    pthread_mutex_lock(&g_lib_lock);
    if (g_lib_users == 0) {
        char why[PATH_MAX + 128];
        g_lib_tls = 0;
        if (load_shim(why, sizeof why) == 0)
            g_lib_tls = (mg_init_library(MG_FEATURES_TLS) & MG_FEATURES_TLS) != 0;
        else
            mg_init_library(0);
        if (tls && !g_lib_tls) {
            mg_exit_library();
            pthread_mutex_unlock(&g_lib_lock);
            return err_set(err, FN_EIO, "web: HTTPS is not available: %s",
                           why[0] ? why : "civetweb could not initialize OpenSSL");
        }
    } else if (tls && !g_lib_tls) {
        pthread_mutex_unlock(&g_lib_lock);
        return err_set(err, FN_EIO, "web: HTTPS is not available (the TLS shim did not load)");
    }
    g_lib_users++;
    pthread_mutex_unlock(&g_lib_lock);
    return 0;
}

void web_lib_release(void)
{
    pthread_mutex_lock(&g_lib_lock);
    if (--g_lib_users == 0)
        mg_exit_library();
    pthread_mutex_unlock(&g_lib_lock);
}
