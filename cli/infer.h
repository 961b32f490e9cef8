/* infer: the dynamic batcher behind `fednas serve`. HTTP threads submit requests (one or more
 * images each) and block; one inference thread owns the model and a graph, takes whole queued
 * requests up to max_batch images, runs them through the model without gradients and hands each
 * request its own rows of class probabilities. It waits for more requests only while the
 * queue is short of max_batch, and at most min(max_wait, an average batch's run time) after
 * the oldest queued request arrived: a lone request on an idle server goes at once after that
 * short wait, and requests that queued during the previous batch go without any. The batch
 * runs on the inference runtime (engine/infer.h: batch norm folded, ReLU and pools fused,
 * small-batch linear layers reading their weights once per pass, stride-1 convs on a direct
 * AVX-512 kernel) in one pass, split among the engine pool's threads (one plan each) only where
 * each gets at least 8 images (a part reads every linear layer's weights); a model the runtime
 * does not take runs on the engine in passes of the power-of-two size with the lowest measured
 * time per image (its conv's im2col columns may fall out of cache in a big pass). Each request
 * waits on its own semaphore, posted after the batcher lets go of its mutex, so a batch wakes
 * its requests only, once each. Counters and latency percentiles feed /metrics (Prometheus
 * text). */
#ifndef FEDNAS_CLI_INFER_H
#define FEDNAS_CLI_INFER_H

#include <stddef.h>

#include "common/err.h"
#include "engine/model.h"

#define INFER_INPUT 784
#define INFER_MAX_IMAGES 64 /* per request (bounds the body a client may send) */

typedef struct infer infer_t;

/* Takes ownership of m (freed on failure too). max_batch 1..1024 (1: every request alone, no waiting); max_wait_s
 * 0..1. int8_path: NULL, or the quantized model file m was read from (cli_model_is_int8): the
 * passes then run its int8 plans (engine_infer_load_int8), and a file they cannot load is an
 * error rather than a silent fp32 fallback. */
int infer_start(engine_model_t *m, int max_batch, double max_wait_s, const char *int8_path, infer_t **out, err_t *err);
void infer_stop(infer_t *q);
int infer_num_classes(const infer_t *q);

/* Runs n images (n * INFER_INPUT floats) and writes n * classes probabilities to probs;
 * *batch gets the size of the (first) batch they ran in. Blocks; thread-safe. */
int infer_run(infer_t *q, const float *x, int n, float *probs, int *batch, err_t *err);

/* A request is on its way (+1, as an HTTP thread starts reading its body) or will not come
 * after all (-1, a bad body); infer_run counts its own arrival. The batcher waits for company
 * only while some is on its way. */
void infer_expect(infer_t *q, int delta);

/* Counts a request answered with an HTTP status (latency in seconds, for 2xx only). */
void infer_note_response(infer_t *q, int status, double seconds);
/* The Prometheus text exposition of the counters (malloc'ed; NULL on out of memory). */
char *infer_metrics_text(infer_t *q);

#endif
