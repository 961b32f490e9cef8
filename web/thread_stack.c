/* thread_stack.c: civetweb's thread stacks, and only civetweb's.
 *
 * Debian's civetweb 1.15 is built with a fixed 100 KiB thread stack (it calls
 * pthread_attr_setstacksize(attr, 102400) before creating each of its threads), and glibc
 * carves each thread's static TLS out of that stack. OpenBLAS, linked into fednas, has 60 KiB
 * of TLS, which leaves civetweb's workers about 40 KiB: a TLS handshake or a store query then
 * overflows it (SIGSEGV in a worker, seen first in vfprintf). civetweb has no option or
 * callback that sets the stack size (init_thread runs inside the new thread, too late), so
 * fednas interposes pthread_attr_setstacksize: libcivetweb.so's call resolves to the
 * definition below.
 *
 * The raise is scoped: it applies only on a thread inside a web_stack_raise(1) ...
 * web_stack_raise(0) window, which web_start opens around mg_start2. In civetweb 1.15 every
 * server thread (master and workers) is created by mg_start2 on the calling thread (checked in
 * the disassembly of Debian's libcivetweb.so.1.15.0: its only other thread starters are
 * mg_start_thread and the WebSocket client, which fednas does not use). Any other thread of the
 * process (OpenBLAS's, ZeroMQ's, the engine pool's) gets exactly the size it asks for, even
 * while a dashboard starts on another thread. web.c's init_thread callback measures every
 * civetweb thread's stack (web_stack_of_this_thread) and warns when one is still small. */
#define _GNU_SOURCE /* RTLD_NEXT, pthread_getattr_np */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "web/web_internal.h"

static _Thread_local int t_raise;

void web_stack_raise(int on)
{
    t_raise = on;
}

int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size)
{
    typedef int (*setstacksize_fn)(pthread_attr_t *, size_t);
    static void *real; /* threads may race here: each stores the same pointer */
    void *fn = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
        if (!fn)
            return EINVAL;
        __atomic_store_n(&real, fn, __ATOMIC_RELEASE);
    }
    setstacksize_fn f;
    memcpy(&f, &fn, sizeof f);
    return f(attr, t_raise && size < WEB_MIN_STACK ? WEB_MIN_STACK : size);
}

size_t web_stack_of_this_thread(void)
{
    pthread_attr_t a;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return 0;
    pthread_attr_getstacksize(&a, &size);
    pthread_attr_destroy(&a);
    return size;
}
