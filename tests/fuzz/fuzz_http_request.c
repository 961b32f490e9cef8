/* fuzz_http_request: whole HTTP requests against a running dashboard (web/web.h), which is the
 * smallest public entry that reaches the static request parsing of web/web.c (route matching
 * and the {id} segment, the token stripper of the login redirect, the Host and ".." checks,
 * token and cookie authentication) and the handlers' query parameters in web/api.c.
 *
 * The server runs in this process (plain HTTP on loopback) over a store holding one run with
 * rounds, clients and metrics. The input is sent as it is on a fresh TCP connection, then the
 * write side is shut and the whole answer read. Only the viewer token is known (VIEWER_TOKEN,
 * in the seeds and the dictionary); the admin token is random, so no input can launch, stop or
 * resume anything. Each request comes from another 127.x.y.z address, so the failed-login limit
 * (10 a minute per address) does not turn every later answer into a 429.
 * Checked: an answer arrives (the server neither hangs nor drops the connection without one)
 * and is HTTP; no 500; a redirect's Location is a local path, never "//host" or "/\host". */
#define _GNU_SOURCE /* nftw */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/store.h"
#include "web/web.h"

#define VIEWER_TOKEN "fuzzViewerToken_0123456789abcdef"
#define ANSWER_MAX (1 << 20)

static web_t *g_web;
static int g_port;
static unsigned g_addr = 1;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http_request: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static char g_dir[] = "/tmp/fednas-fuzz-http-XXXXXX";

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* At exit (libFuzzer exits after -max_total_time): stop the server, remove its store. */
static void cleanup(void)
{
    web_stop(g_web);
    g_web = NULL;
    nftw(g_dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char *dir = g_dir;
    static char db[256];
    if (!mkdtemp(dir))
        die("mkdtemp failed", strerror(errno));
    snprintf(db, sizeof db, "%s/runs.db", dir);
    store_t *s = NULL;
    err_t e = {0};
    int64_t exp_id = 0, run_id = 0;
    if (store_open(db, 0, &s, &e) != 0 ||
        store_experiment_create(s, "fuzz", "{\"name\":\"fuzz\",\"rounds\":3,\"dp\":{\"clip\":1,\"delta\":1e-5}}",
                                &exp_id, &e) != 0 ||
        store_run_create(s, exp_id, 3, 2, 42, dir, &run_id, &e) != 0 ||
        store_client_upsert(s, run_id, 0, "site-0", NULL, 600, "active", &e) != 0 ||
        store_client_upsert(s, run_id, 1, "site-1", NULL, 400, "dropped", &e) != 0)
        die("cannot make the store", e.msg);
    for (int i = 1; i <= 3; i++) {
        store_round_t r = {.round = i, .test_accuracy = 0.5 + 0.1 * i, .test_loss = 1.0 / i, .samples = 1000};
        if (store_round_insert(s, run_id, &r, &e) != 0 ||
            store_metric_insert(s, run_id, i, "epsilon", 0.4 * i, &e) != 0)
            die("cannot fill the store", e.msg);
    }
    store_close(s);
    web_options_t opt = {.db_path = db, .host = "127.0.0.1", .port = 0, .insecure_http = 1,
                         .viewer_token = VIEWER_TOKEN, .fednas_bin = "/bin/false"};
    if (web_start(&opt, &g_web, &e) != 0)
        die("web_start", e.msg);
    g_port = web_port(g_web);
    atexit(cleanup);
    return 0;
}

/* The next loopback source address, 127.0.0.2 .. 127.255.255.254. */
static struct sockaddr_in next_source(void)
{
    g_addr = g_addr % 0xfffffd + 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000000u | (g_addr + 1))};
    return a;
}

/* libFuzzer's timeout alarm (SIGALRM, installed without SA_RESTART) can interrupt any of the
 * calls below: each is retried, and an interrupted connect is finished by waiting for the socket to
 * become writable, then reading its outcome (a second connect() would answer EALREADY). */
static int connect_retrying(int fd, const struct sockaddr_in *dst)
{
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) == 0)
        return 0;
    if (errno != EINTR && errno != EINPROGRESS)
        return -1;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    while ((r = poll(&p, 1, 10000)) < 0 && errno == EINTR)
        ;
    if (r <= 0) {
        errno = r == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -1;
    errno = err;
    return err == 0 ? 0 : -1;
}

static size_t exchange(const uint8_t *data, size_t size, char *answer, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = next_source();
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0 || connect_retrying(fd, &dst) != 0)
        die("cannot connect to the dashboard", strerror(errno));
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server may close early on a request it refuses */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 10000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            die("no answer within 10 s", NULL);
        ssize_t n = recv(fd, answer + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == cap - 1)
            break;
    }
    close(fd);
    answer[got] = '\0';
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char answer[ANSWER_MAX];
    size_t got = exchange(data, size, answer, sizeof answer);
    if (got == 0)
        return 0; /* civetweb closes silently on some unparsable requests (and on an empty one) */
    if (strncmp(answer, "HTTP/", 5) != 0)
        die("the answer is not HTTP", answer);
    /* Known civetweb 1.15 finding (tests/fuzz/findings/civetweb-400-echoes-request-line, not
     * fednas code): for a request line with a bad version it answers 400 with a status line of
     * "HTTP/" + everything after the URI, bare newlines included, so the requester can inject
     * headers into its own answer. Such answers come before any fednas code runs: skip them. */
    int version_ok = strncmp(answer, "HTTP/1.1 ", 9) == 0 || strncmp(answer, "HTTP/1.0 ", 9) == 0;
    if (got < 13 || !version_ok || answer[9] < '1' || answer[9] > '5' || answer[12] != ' ')
        return 0;
    /* The first answer's status and headers (later pipelined answers and bodies may echo the
     * request, so they are not searched). */
    char *end = strstr(answer, "\r\n\r\n");
    if (end)
        *end = '\0';
    /* fednas's answers all carry the security headers; civetweb's own (the echo above, whose
     * injected lines could look like anything) do not. */
    if (!strstr(answer, "\nX-Content-Type-Options: nosniff"))
        return 0;
    if (strncmp(answer, "HTTP/1.1 500", 12) == 0 || strncmp(answer, "HTTP/1.0 500", 12) == 0)
        die("an internal server error", answer);
    for (const char *p = answer; (p = strstr(p, "\nLocation:")) != NULL; p += 10) {
        const char *v = p + 10;
        while (*v == ' ')
            v++;
        if (v[0] != '/' || v[1] == '/' || v[1] == '\\')
            die("a redirect off this site", answer);
    }
    return 0;
}
