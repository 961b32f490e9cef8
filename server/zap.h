/* zap: the ZeroMQ authentication handler (ZAP, RFC 27) that admits only CURVE clients whose
 * public key is on the allow-list, and names each connection after its site so that every
 * message the server receives carries the authenticated site name as its User-Id. */
#ifndef FEDNAS_SERVER_ZAP_H
#define FEDNAS_SERVER_ZAP_H

#include "common/err.h"
#include "crypto/keys.h"

typedef struct zap zap_t;

/* Binds inproc://zeromq.zap.01 in ctx and serves it from a thread, admitting the keys listed in
 * the allow-list file. The file is read again whenever it changes, so sites added with
 * `fednas keys site` get in without a restart. Start it before the server socket accepts. */
int zap_start(void *ctx, const char *allow_path, zap_t **out, err_t *err);
/* How many handshakes were refused so far. */
int zap_refused(const zap_t *z);
/* Call after zmq_ctx_shutdown(ctx): joins the thread (and logs what its log limit still holds). */
void zap_join(zap_t *z);

/* The log limit on refusals (of a handshake here, of a message from a revoked key in sites.c):
 * a peer refused in a loop must not flood the log. Per key, the first refusal is logged, then
 * at most one summary line with the count every `interval` seconds while refusals go on. New
 * keys get at most ZAP_LIMIT_NEW_KEYS first lines an interval (a fresh key costs an attacker
 * nothing); the rest are counted together. At most ZAP_LIMIT_KEYS keys are tracked; the one
 * refused longest ago makes room (its count is reported first). Not thread-safe: one per thread. */
#define ZAP_LIMIT_KEYS 64
#define ZAP_LIMIT_NEW_KEYS 20
/* Told each summary: `count` refusals of `key` (NULL: of keys past the new-key limit, `keys`
 * of them) since its last line, `seconds` ago. */
typedef void (*zap_limit_report_fn)(void *arg, const char *key, long count, long keys, double seconds);
typedef struct zap_limit {
    double interval;
    zap_limit_report_fn report;
    void *arg;
    struct {
        char key[64];
        double last;    /* when its last line (first refusal or summary) was logged */
        double touched; /* its latest refusal */
        long pending;   /* refusals since that line */
    } entry[ZAP_LIMIT_KEYS];
    int used;
    double window; /* when the current new-key interval began */
    int new_lines; /* first lines logged in it */
    long others, other_keys; /* refusals of keys past the new-key limit, not yet reported */
    double others_since;
} zap_limit_t;
void zap_limit_init(zap_limit_t *l, double interval, zap_limit_report_fn report, void *arg);
/* A refusal of key at time now (fn_mono): 1 when the caller should log it in full, 0 when it
 * was counted for a later summary. Reports the summaries that are due first. */
int zap_limit_note(zap_limit_t *l, const char *key, double now);
/* Reports the summaries due at now (every one with a count, when force: at shutdown). */
void zap_limit_flush(zap_limit_t *l, double now, int force);

#endif
