/* web: the server's life cycle: bad options, a taken port, a fixed port reused after stop, a
 * store that does not exist yet (503), and civetweb's thread stacks (thread_stack.c). */
#define _GNU_SOURCE /* nftw, mkdtemp, memmem */
#include "web_test.h"

#include <arpa/inet.h>
#include <dirent.h>
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
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/util.h"
#include "crypto/tls.h"
#include "web/web_internal.h" /* web_civetweb_min_stack, web_stack_raise, WEB_MIN_STACK */

static void test_port_in_use(void **state)
{
    fixture_t *f = *state;
    web_options_t opt = {.db_path = f->db, .host = "127.0.0.1", .port = f->port};
    web_t *w2 = (web_t *)0x1;
    err_t e = {0};
    assert_int_equal(web_start(&opt, &w2, &e), FN_EADDRINUSE);
    assert_null(w2);
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    if (!strstr(e.msg, port) || !strstr(e.msg, "already in use") || !strstr(e.msg, "--http"))
        fail_msg("unexpected message: %s", e.msg);
    /* The first server is unharmed. */
    resp_t r;
    assert_int_equal(http_get(f->port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* Debian's civetweb asks for 100 KiB stacks, too small next to OpenBLAS's TLS: its threads get
 * WEB_MIN_STACK instead (thread_stack.c), and only they: pthread_attr_setstacksize elsewhere in
 * the process gives what is asked, unless the calling thread is inside mg_start2. */
static void test_civetweb_stacks(void **state)
{
    fixture_t *f = *state;
    size_t min = web_civetweb_min_stack(f->web); /* every civetweb thread reports at its start */
    if (min < WEB_MIN_STACK)
        fail_msg("a civetweb thread has a %zu-byte stack, less than %d", min, WEB_MIN_STACK);
    pthread_attr_t a;
    size_t got = 0;
    assert_int_equal(pthread_attr_init(&a), 0);
    assert_int_equal(pthread_attr_setstacksize(&a, 128 * 1024), 0);
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, 128 * 1024);
    web_stack_raise(1); /* as web_start does around mg_start2 */
    assert_int_equal(pthread_attr_setstacksize(&a, 128 * 1024), 0);
    web_stack_raise(0);
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, WEB_MIN_STACK);
    assert_int_equal(pthread_attr_setstacksize(&a, 4 * WEB_MIN_STACK), 0); /* larger asks are kept */
    assert_int_equal(pthread_attr_getstacksize(&a, &got), 0);
    assert_int_equal(got, 4 * WEB_MIN_STACK);
    pthread_attr_destroy(&a);
}

static void test_bad_options(void **state)
{
    (void)state;
    web_t *w = NULL;
    err_t e = {0};
    web_options_t opt = {.db_path = "/tmp/x.db", .port = -1};
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_null(w);
    opt.port = 70000;
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    opt.port = 0;
    opt.host = "example.com";
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "example.com"));
    opt.host = "127.0.0.1";
    opt.db_path = NULL;
    assert_int_equal(web_start(&opt, &w, &e), FN_EINVAL);
    assert_int_equal(web_start(NULL, &w, &e), FN_EINVAL);
    web_stop(NULL);
}

static void test_missing_store_is_503(void **state)
{
    (void)state;
    web_t *w = NULL;
    err_t e = {0};
    char dir[] = "/tmp/fednas-test-web503-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_options_t opt = {.db_path = "/nonexistent/fednas-web-test/runs.db", .host = "localhost", .port = 0,
                         .state_dir = dir};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    /* The token comes from web_url: https://127.0.0.1:PORT/?token=<64 hex>. */
    const char *url = web_url(w);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "https://127.0.0.1:%d/?token=", port);
    assert_true(strncmp(url, prefix, strlen(prefix)) == 0);
    const char *tok = url + strlen(prefix);
    assert_int_equal(strlen(tok), 64);
    assert_int_equal(strspn(tok, "0123456789abcdef"), 64);
    assert_string_not_equal(strstr(web_viewer_url(w), "token=") + 6, tok);
    login(port, tok, g_auth, sizeof g_auth, g_csrf, sizeof g_csrf);
    resp_t r;
    assert_int_equal(http_get(port, "/api/runs", &r), 0);
    assert_json_error(&r, 503, "does not exist");
    resp_free(&r);
    assert_int_equal(http_get(port, "/api/runs/1/rounds", &r), 0);
    assert_json_error(&r, 503, NULL);
    resp_free(&r);
    assert_int_equal(http_get(port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(http_get(port, "/", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    g_auth[0] = '\0';
    /* Stopped means closed. */
    assert_int_not_equal(http_get(port, "/healthz", &r), 0);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_fixed_port_reuse_after_stop(void **state)
{
    (void)state;
    /* Start on port 0, note the port, stop, and start again on that port explicitly. */
    web_t *w = NULL;
    err_t e = {0};
    char dir[] = "/tmp/fednas-test-webport-XXXXXX";
    assert_non_null(mkdtemp(dir));
    web_options_t opt = {.db_path = "/tmp/none.db", .port = 0, .state_dir = dir};
    assert_int_equal(web_start(&opt, &w, &e), 0);
    int port = web_port(w);
    web_stop(w);
    opt.port = port;
    if (web_start(&opt, &w, &e) != 0)
        fail_msg("restart on port %d: %s", port, e.msg);
    assert_int_equal(web_port(w), port);
    resp_t r;
    assert_int_equal(http_get(port, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    web_stop(w);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest served[] = {
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_civetweb_stacks),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_missing_store_is_503),
        cmocka_unit_test(test_fixed_port_reuse_after_stop),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("test_web_server served", served, fixture_up, fixture_down);
    failed += cmocka_run_group_tests_name("test_web_server alone", alone, NULL, NULL);
    return failed;
}
