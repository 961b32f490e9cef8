/* secagg_site: one site's side of a secure-aggregation round (crypto/secagg.h; the server side
 * is server/secagg_round.h, which documents the messages). Instead of sending its update the
 * site clips it to C, encodes it into Z_2^bits (scale f = secagg_choose_scale(n, C, bits),
 * stochastic rounding) and runs the four phases: sa_advert, then answers sa_keys with
 * sa_shares, sa_relay with sa_masked, sa_unmask_req with sa_unmask. State lives per site per
 * round; a new "train" replaces it, an error aborts it (the site then sends nothing more).
 * Under differential privacy (a "dp" object in the round's parameters) the site encodes with
 * crypto/dp.h's distributed discrete Gaussian instead: the same clip C, the plan's scale,
 * conditional rounding, and its share of the noise added before masking. */
#ifndef FEDNAS_CLIENT_SECAGG_SITE_H
#define FEDNAS_CLIENT_SECAGG_SITE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "client/trainer.h"
#include "common/err.h"
#include "common/wire.h"
#include "crypto/secagg.h"

typedef struct secagg_site secagg_site_t;

/* Reads a train message's "secagg" object (made by secagg_round_info) into p (its ids in a
 * malloc'd *ids the caller frees), this site's id, the clip bound and the scale, which the site
 * recomputes rather than trusts (from the noise plan when there is a "dp" object {"sigma",
 * "assumed"}). FN_EPROTO when anything is missing or out of range. */
int secagg_site_parse(const json_t *info, secagg_params_t *p, uint32_t **ids, uint32_t *self, double *clip,
                      double *scale, err_t *err);

/* Encodes update[0..m) and makes the round's keys; *advert = the ADVERT message. */
int secagg_site_begin(const json_t *info, const float *update, size_t m, secagg_site_t **out, secagg_buf_t *advert,
                      err_t *err);
/* One phase message from the server ("sa_keys", "sa_relay" or "sa_unmask_req"); *reply_type and
 * *reply are what to send back. FN_EPROTO for a message of the wrong type or round; the library's
 * errors otherwise (the round is then over for this site). FN_EAUTH when share ciphertexts in the
 * relay failed to authenticate: the site is aborted, and *reply_type = "sa_accuse" with *reply the
 * ACCUSE naming their senders, the one message it still sends this round. */
int secagg_site_step(secagg_site_t *s, const char *type, const uint8_t *data, size_t len, const char **reply_type,
                     secagg_buf_t *reply, err_t *err);
uint64_t secagg_site_round_id(const secagg_site_t *s);
/* 1 once the site answered the unmasking request: nothing more to do this round. */
int secagg_site_done(const secagg_site_t *s);
void secagg_site_free(secagg_site_t *s);

/* The agents' glue (client.c, sim.c): handles msg when it belongs to secure aggregation, i.e. a
 * "train" with a "secagg" object (trains with t, then begins the round and sends sa_advert) or
 * an sa_* message (answers it). Returns 1 when handled, 0 when msg is not secagg business, < 0
 * on errors: FN_EPROTO for a bad message (log it and go on), others are the site's own. */
int secagg_site_on_message(secagg_site_t **state, trainer_t *t, const engine_dataset_t *d, const int *idx, int n,
                           void *sock, int64_t run, wire_msg_t *msg, err_t *err);

#endif
