/* trainer: one site's part of a round, shared by the client agent and the simulation worker:
 * take the model a "train" message carries, train it on the site's samples, clip the change
 * when differential privacy asks for it, and send the change back as an "update". */
#ifndef FEDNAS_CLIENT_TRAINER_H
#define FEDNAS_CLIENT_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "common/err.h"
#include "common/wire.h"
#include "engine/idx.h"
#include "engine/model.h"

typedef struct trainer {
    engine_model_t *model; /* rebuilt when the round's architecture changes */
    char *arch_text;
    float *global;
} trainer_t;

/* What one round of local training produced. update points into the trainer's model (valid
 * until the next trainer call): the change to the weights, clipped when DP asked for it. */
typedef struct trainer_result {
    long long round;
    int samples;
    float *update;
    size_t m;
    double loss, accuracy, seconds;
} trainer_result_t;

/* Trains on the model in msg ("train") and fills *res; sends nothing. FN_EPROTO for a malformed
 * message. */
int trainer_compute(trainer_t *t, const engine_dataset_t *d, const int *idx, int n, wire_msg_t *msg,
                    trainer_result_t *res, err_t *err);
/* Sends res as a plain "update" (no secure aggregation). */
int trainer_send_update(const trainer_result_t *res, void *sock, int64_t run, err_t *err);

/* Runs the round in msg on samples idx[0..n) of d and sends the update on sock (a DEALER).
 * FN_EPROTO for a malformed message (ignore it), other errors are the site's own. */
int trainer_round(trainer_t *t, const engine_dataset_t *d, const int *idx, int n, void *sock, int64_t run,
                  wire_msg_t *msg, err_t *err);
void trainer_free(trainer_t *t);

/* The simulation's split of the training set (o->shards parts by o->partition); *assign is
 * NULL when o->shards is 0 (a real site keeps all its data). */
int client_partition(const client_options_t *o, const engine_dataset_t *d, int **assign, err_t *err);

#endif
