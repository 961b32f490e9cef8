/* update: the "update" message a site sends upward after a round (the change to the weights,
 * its example count, loss and accuracy), plain or compressed as the round's train message asks,
 * with error feedback. Client agents and simulated sites send their own; a relay sends its
 * clients' aggregate the same way, so the server reads one format. */
#ifndef FEDNAS_COMMON_UPDATE_H
#define FEDNAS_COMMON_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/wire.h"

/* What one round produced. update is the caller's: the change to the weights (clipped when DP
 * asked for it). loss and accuracy may be NaN (not reported: left out of the header). */
typedef struct update_result {
    long long round;
    int samples;
    float *update;
    size_t m;
    double loss, accuracy, seconds;
} update_result_t;

/* Sends res as a plain "update" of run on sock (a DEALER). */
int update_send(const update_result_t *res, void *sock, int64_t run, err_t *err);

/* The error feedback (Stich et al. 2018): what compression left out of the updates so far,
 * added to the next one; reset when the model changes size. Zero-initialise it. */
typedef struct update_feedback {
    float *residual;
    size_t m;
} update_feedback_t;
void update_feedback_free(update_feedback_t *fb);

/* Sends res as an "update" compressed as the train message's "compression" object says
 * ({"quantize": 8, "topk": FRACTION, "error_feedback": true}; frames as in common/compress.h),
 * or uncompressed when it has none. seed drives the stochastic rounding; fb (may be NULL when
 * error feedback is off) is the sender's memory. FN_EPROTO for a malformed compression object. */
int update_send_compressed(const update_result_t *res, const wire_msg_t *train, uint64_t seed,
                           update_feedback_t *fb, void *sock, int64_t run, err_t *err);

#endif
