#include "server/zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "common/log.h"
#include "common/util.h"

/* Seconds between two summary lines of one refused key. */
#define ZAP_LOG_INTERVAL 60.0

struct zap {
    void *sock;
    pthread_t thread;
    keys_allow_t allow;
    char path[4096];
    struct timespec mtime;
    off_t size;
    atomic_int refused;
    zap_limit_t limit; /* the handler thread's alone */
};

void zap_limit_init(zap_limit_t *l, double interval, zap_limit_report_fn report, void *arg)
{
    memset(l, 0, sizeof *l);
    l->interval = interval;
    l->report = report;
    l->arg = arg;
    l->window = -1e300;
}

void zap_limit_flush(zap_limit_t *l, double now, int force)
{
    for (int i = 0; i < l->used; i++)
        if (l->entry[i].pending > 0 && (force || now - l->entry[i].last >= l->interval)) {
            l->report(l->arg, l->entry[i].key, l->entry[i].pending, 1, now - l->entry[i].last);
            l->entry[i].pending = 0;
            l->entry[i].last = now;
        }
    if (l->others > 0 && (force || now - l->others_since >= l->interval)) {
        l->report(l->arg, NULL, l->others, l->other_keys, now - l->others_since);
        l->others = l->other_keys = 0;
    }
}

int zap_limit_note(zap_limit_t *l, const char *key, double now)
{
    zap_limit_flush(l, now, 0);
    int at = -1;
    for (int i = 0; i < l->used && at < 0; i++)
        if (strcmp(l->entry[i].key, key) == 0)
            at = i;
    if (at >= 0) {
        l->entry[at].touched = now;
        if (l->entry[at].pending == 0 && now - l->entry[at].last >= l->interval) {
            l->entry[at].last = now; /* quiet for an interval: logged in full again */
            return 1;
        }
        l->entry[at].pending++;
        return 0;
    }
    if (now - l->window >= l->interval) {
        l->window = now;
        l->new_lines = 0;
    }
    if (l->new_lines >= ZAP_LIMIT_NEW_KEYS) {
        if (l->others == 0)
            l->others_since = now;
        l->others++;
        l->other_keys++; /* keys seen past the limit are not tracked: each counts as new */
        return 0;
    }
    l->new_lines++;
    if (l->used < ZAP_LIMIT_KEYS) {
        at = l->used++;
    } else {
        at = 0;
        for (int i = 1; i < l->used; i++)
            if (l->entry[i].touched < l->entry[at].touched)
                at = i;
        if (l->entry[at].pending > 0)
            l->report(l->arg, l->entry[at].key, l->entry[at].pending, 1, now - l->entry[at].last);
    }
    snprintf(l->entry[at].key, sizeof l->entry[at].key, "%s", key);
    l->entry[at].last = l->entry[at].touched = now;
    l->entry[at].pending = 0;
    return 1;
}

static void zap_report(void *arg, const char *key, long count, long keys, double seconds)
{
    (void)arg;
    if (key)
        log_warn("refused %ld more connections in the last %.0f s from %s, not on the allow-list", count, seconds,
                 key);
    else
        log_warn("refused %ld more connections in the last %.0f s from %ld other keys not on the allow-list (past "
                 "%d new keys in %.0f s, refusals are counted, not logged one by one)",
                 count, seconds, keys, ZAP_LIMIT_NEW_KEYS, ZAP_LOG_INTERVAL);
}

/* Re-reads the allow-list when its file changed; a broken edit keeps the previous list. */
static void refresh(zap_t *z)
{
    struct stat sb;
    if (stat(z->path, &sb) != 0)
        return;
    if (sb.st_mtim.tv_sec == z->mtime.tv_sec && sb.st_mtim.tv_nsec == z->mtime.tv_nsec && sb.st_size == z->size)
        return;
    keys_allow_t fresh;
    err_t e;
    if (keys_allow_load(z->path, &fresh, &e) < 0) {
        log_error("keeping the previous allow-list: %s", e.msg);
    } else {
        if (z->mtime.tv_sec)
            log_info("allow-list %s reloaded: %d sites", z->path, fresh.count);
        keys_allow_free(&z->allow);
        z->allow = fresh;
    }
    z->mtime = sb.st_mtim;
    z->size = sb.st_size;
}

static int recv_str(void *sock, char *buf, size_t cap, size_t *len)
{
    int n = zmq_recv(sock, buf, cap, 0);
    if (n < 0)
        return -1;
    size_t got = (size_t)n < cap ? (size_t)n : cap;
    if (len)
        *len = got;
    if (buf && cap > 0 && got < cap)
        buf[got] = '\0';
    return 0;
}

static void *zap_main(void *arg)
{
    zap_t *z = arg;
    for (;;) {
        /* Wakes at least every second, to log the summaries that are due. */
        zmq_pollitem_t item = {z->sock, 0, ZMQ_POLLIN, 0};
        int ready = zmq_poll(&item, 1, 1000);
        zap_limit_flush(&z->limit, fn_mono(), 0);
        if (ready < 0 && zmq_errno() == ETERM)
            break; /* context shut down */
        if (ready <= 0)
            continue;
        char version[16] = "", request_id[256] = "", domain[256], address[256] = "", routing[256], mechanism[32] = "";
        unsigned char key[64];
        size_t idlen = 0, keylen = 0;
        if (recv_str(z->sock, version, sizeof version - 1, NULL) < 0)
            break; /* context shut down */
        recv_str(z->sock, request_id, sizeof request_id - 1, &idlen);
        recv_str(z->sock, domain, sizeof domain - 1, NULL);
        recv_str(z->sock, address, sizeof address - 1, NULL);
        recv_str(z->sock, routing, sizeof routing - 1, NULL);
        recv_str(z->sock, mechanism, sizeof mechanism - 1, NULL);
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(z->sock, ZMQ_RCVMORE, &more, &ml);
        if (more) {
            int n = zmq_recv(z->sock, key, sizeof key, 0);
            keylen = n > 0 ? (size_t)n : 0;
        }
        /* Drain any further credential frames. */
        for (;;) {
            ml = sizeof more;
            zmq_getsockopt(z->sock, ZMQ_RCVMORE, &more, &ml);
            if (!more)
                break;
            char junk[64];
            zmq_recv(z->sock, junk, sizeof junk, 0);
        }
        const char *name = NULL;
        char z85[KEYS_Z85_LEN + 1] = "";
        refresh(z);
        if (strcmp(mechanism, "CURVE") == 0 && keylen == 32 && zmq_z85_encode(z85, key, 32))
            name = keys_allow_find(&z->allow, z85);
        const char *status = name ? "200" : "400";
        if (name) {
            log_debug("admitted site %s from %s", name, address);
        } else {
            atomic_fetch_add(&z->refused, 1);
            /* Keyed by the key, or for a peer without one by its address (ZAP gives no port). */
            char id[64];
            if (z85[0])
                snprintf(id, sizeof id, "key %s", z85);
            else
                snprintf(id, sizeof id, "%.40s (no key)", address);
            if (zap_limit_note(&z->limit, id, fn_mono()))
                log_warn("refused a connection from %s: %s key %s is not on the allow-list (more refusals of it "
                         "are counted, and logged at most every %.0f s)",
                         address, mechanism, z85[0] ? z85 : "(none)", ZAP_LOG_INTERVAL);
        }
        zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(z->sock, request_id, idlen, ZMQ_SNDMORE);
        zmq_send(z->sock, status, 3, ZMQ_SNDMORE);
        const char *text = name ? "OK" : "key not allowed";
        zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(z->sock, name ? name : "", name ? strlen(name) : 0, ZMQ_SNDMORE);
        /* The key as metadata ("X-Key") on every message of the connection: the name alone
         * cannot tell an old connection from a new one after the name's key was replaced, and
         * the registry checks each message against the allow-list as it is now. */
        unsigned char meta[1 + 5 + 4 + KEYS_Z85_LEN];
        size_t mlen = 0;
        if (name) {
            meta[0] = 5;
            memcpy(meta + 1, "X-Key", 5);
            meta[6] = meta[7] = meta[8] = 0;
            meta[9] = KEYS_Z85_LEN;
            memcpy(meta + 10, z85, KEYS_Z85_LEN);
            mlen = sizeof meta;
        }
        zmq_send(z->sock, meta, mlen, 0);
    }
    zmq_close(z->sock);
    return NULL;
}

int zap_start(void *ctx, const char *allow_path, zap_t **out, err_t *err)
{
    zap_t *z = FN_CALLOC(1, sizeof *z);
    snprintf(z->path, sizeof z->path, "%s", allow_path);
    int rc = keys_allow_load(allow_path, &z->allow, err);
    if (rc < 0) {
        free(z);
        return rc;
    }
    refresh(z); /* records the file's time and size */
    zap_limit_init(&z->limit, ZAP_LOG_INTERVAL, zap_report, z);
    z->sock = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (!z->sock || zmq_bind(z->sock, "inproc://zeromq.zap.01") != 0) {
        rc = err_set(err, FN_EIO, "cannot start the authentication handler: %s", zmq_strerror(zmq_errno()));
        if (z->sock)
            zmq_close(z->sock);
        keys_allow_free(&z->allow);
        free(z);
        return rc;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        zmq_close(z->sock);
        keys_allow_free(&z->allow);
        free(z);
        return err_set(err, FN_EIO, "cannot start the authentication thread");
    }
    *out = z;
    return 0;
}

int zap_refused(const zap_t *z) { return atomic_load(&((zap_t *)z)->refused); }

void zap_join(zap_t *z)
{
    if (!z)
        return;
    pthread_join(z->thread, NULL);
    zap_limit_flush(&z->limit, fn_mono(), 1);
    keys_allow_free(&z->allow);
    free(z);
}
