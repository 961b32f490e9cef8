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
/* Call after zmq_ctx_shutdown(ctx): joins the thread. */
void zap_join(zap_t *z);

#endif
