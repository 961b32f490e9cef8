/* site_msg: what the aggregation server and the relay both read from the sites below them, decoded
 * and checked in one place before either decides what a message means for its round: the hello
 * and its welcome, a training update (plain, or compressed as common/compress.h encodes it), an
 * evaluation answer, and whether a message belongs to the round in progress. */
#ifndef FEDNAS_SERVER_SITE_MSG_H
#define FEDNAS_SERVER_SITE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/compress.h"
#include "common/err.h"
#include "common/wire.h"
#include "server/sites.h"

/* A checked update: m values, the sample count it claims and its training statistics. */
typedef struct site_update {
    const float *values; /* in the message, in owned (copied to be aligned) or in the caller's buffer */
    long long samples;   /* in [1, FN_MAX_SAMPLES] */
    double loss, accuracy; /* NAN when the site sent none that site_train_stats_ok accepts */
    void *owned;
} site_update_t;

/* A checked evaluation answer. */
typedef struct site_eval {
    long long samples; /* in [0, FN_MAX_SAMPLES] */
    double loss, accuracy;
} site_eval_t;

/* Data of count 4-byte values that may be read as such: ZeroMQ may pack the small frames of one
 * message into a shared buffer at any offset (a "scales" frame after an odd count of uint8
 * codes, a small update), so a misaligned one is copied into *owned (freed by the caller). */
const void *site_msg_aligned4(const void *p, size_t count, void **owned);

/* A hello: the site registered (or its route refreshed) and welcomed into run, the welcome
 * carrying extra's fields too (consumed; may be NULL). NULL when there is nothing to answer (a
 * bad or repeated hello, logged by sites_hello) or the welcome could not be sent. */
sites_site_t *site_msg_hello(sites_t *s, const wire_msg_t *msg, int64_t run, json_t *extra);

/* The site a message about a round comes from, when it is about the round open now (run and
 * round equal, open set); its route is refreshed. NULL, logged as "NOUN NAME: TYPE for run R
 * round N ignored (now: ...)", otherwise. */
sites_site_t *site_msg_of_round(sites_t *s, const wire_msg_t *msg, int64_t run, int open, long long round);

/* An update of m values. spec NULL or asking for nothing: one float32 frame; otherwise the
 * frames the spec names, decoded into decoded (m values, scratch m more). */
int site_msg_update(const wire_msg_t *msg, size_t m, const compress_spec_t *spec, float *scratch, float *decoded,
                    site_update_t *u, err_t *err);
void site_update_release(site_update_t *u);
/* Bounds the weight of u to the samples its site registered with at hello: FedAvg weighs an
 * update by the count it claims, so an unchecked claim (up to FN_MAX_SAMPLES) would let one site
 * outweigh all others. A larger claim is logged and weighed as the registered count. */
void site_update_bound(const sites_t *s, const sites_site_t *site, site_update_t *u);

/* Training statistics a peer reports, before anything stores or averages them: a loss that is
 * a finite number in [0, SITE_MAX_LOSS] (cross-entropy is never negative) and an accuracy in
 * [0, 1]. 1 when both are. */
#define SITE_MAX_LOSS 1e6
int site_train_loss_ok(double loss);
int site_train_accuracy_ok(double accuracy);
int site_train_stats_ok(double loss, double accuracy);

/* An evaluation answer's numbers, and the message carrying them. */
int site_eval_check(long long samples, double loss, double accuracy, err_t *err);
int site_msg_eval(const wire_msg_t *msg, site_eval_t *ev, err_t *err);

#endif
