#include "server/zap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "common/log.h"

struct zap {
    void *sock;
    pthread_t thread;
    keys_allow_t allow;
    char path[4096];
    struct timespec mtime;
    off_t size;
    atomic_int refused;
};

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
            log_warn("refused a connection from %s: %s key %s is not on the allow-list", address, mechanism,
                     z85[0] ? z85 : "(none)");
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
    keys_allow_free(&z->allow);
    free(z);
}
