/* trainer: one site's part of a round, shared by the client agent and the simulation worker:
 * take the model a "train" message carries, train it on the site's samples, clip the change
 * when differential privacy asks for it, and send the change back as an "update". */
#ifndef FEDNAS_CLIENT_TRAINER_H
#define FEDNAS_CLIENT_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "common/err.h"
#include "common/update.h"
#include "common/wire.h"
#include "engine/data.h"
#include "engine/idx.h"
#include "engine/model.h"

/* A site's own training data: a folder of IDX files (the Fashion-MNIST layout) or a CSV file
 * of numeric features with the integer label in the last column (a hospital's or a bank's
 * table). src is the view the engine trains on, whichever it is. */
typedef struct trainer_data {
    char path[4096];
    int csv;               /* 1: a CSV table, 0: IDX images */
    engine_dataset_t idx;  /* the IDX set (empty for a CSV) */
    engine_table_t table;  /* the CSV rows (empty for IDX) */
    engine_source_t src;
    int first_line;        /* CSV: the file line of the first data row (after a header) */
} trainer_data_t;

/* A path ending in ".csv" (any case) is a CSV file, anything else an IDX folder ("train" split).
 * Errors name the file (and for a CSV the line and column). */
int trainer_data_load(trainer_data_t *d, const char *path, err_t *err);
/* Checks that the data fits the model a message describes: features per sample and labels below
 * classes. A CSV's errors name the file, the line and what the experiment expects (FN_EINVAL). */
int trainer_data_check(const trainer_data_t *d, long long features, long long classes, err_t *err);
void trainer_data_free(trainer_data_t *d);

typedef struct trainer {
    engine_model_t *model; /* rebuilt when the round's architecture changes */
    char *arch_text;
    float *global;
    /* The site's data. When set it is what the trainer trains and evaluates on, and the
     * engine_dataset_t the functions below take is ignored (it may be empty, e.g. for a CSV
     * site); when NULL they use that IDX set. */
    const trainer_data_t *data;
} trainer_t;

/* Trains on the model in msg ("train") and fills *res; sends nothing. FN_EPROTO for a malformed
 * message. */
int trainer_compute(trainer_t *t, const engine_dataset_t *d, const int *idx, int n, wire_msg_t *msg,
                    update_result_t *res, err_t *err);
/* A site's memory between rounds: the error feedback of its compressed updates (ef), and the
 * last round it answered: a train message can arrive twice when the link drops with it unread
 * (the rejoin makes the server send it again), and a site trains each round once. One per site
 * (a simulation worker keeps one per simulated site); zero-initialise it. */
typedef struct trainer_feedback {
    update_feedback_t ef;
    long long answered_instance, answered_run, answered_round;
} trainer_feedback_t;
void trainer_feedback_free(trainer_feedback_t *fb);

/* A site's held-out samples for federated evaluation: a split of its own indices, shuffled
 * with the seed the server gives in "holdout" {"fraction", "seed"} (the same every round, so a
 * held-out sample is never trained on). The first floor(fraction * n) of the shuffle are held
 * out (at most n - 1); the rest, in their original order, are trained on. */
typedef struct trainer_holdout {
    double fraction;
    uint64_t seed;
    const int *src; /* the indices it was made from */
    int nsrc;
    int *train, ntrain, *held, nheld;
} trainer_holdout_t;
/* The samples to train on for msg: the split its "holdout" asks for (made once and kept), the
 * split made earlier when msg has none (e.g. a secure-aggregation message), or all of idx.
 * FN_EPROTO for a malformed "holdout". */
int trainer_holdout_split(trainer_holdout_t *h, const wire_msg_t *msg, const int *idx, int n, const int **tidx,
                          int *tn, err_t *err);
void trainer_holdout_free(trainer_holdout_t *h);
/* Answers an "evaluate" message: loads its model, measures loss and accuracy on the site's
 * held-out samples and sends "eval_result" {samples, loss, accuracy} (samples 0 when none are
 * held out). FN_EPROTO for a malformed message. */
int trainer_evaluate(trainer_t *t, const engine_dataset_t *d, trainer_holdout_t *h, const int *idx, int n, void *sock,
                     int64_t run, wire_msg_t *msg, err_t *err);

/* Runs the round in msg on samples idx[0..n) of d and sends the update on sock (a DEALER).
 * FN_EPROTO for a malformed message (ignore it), other errors are the site's own. */
int trainer_round(trainer_t *t, const engine_dataset_t *d, const int *idx, int n, void *sock, int64_t run,
                  wire_msg_t *msg, trainer_feedback_t *fb, err_t *err);
void trainer_free(trainer_t *t);

/* The simulation's split of the training set (o->shards parts by o->partition); *assign is
 * NULL when o->shards is 0 (a real site keeps all its data). */
int client_partition(const client_options_t *o, const engine_source_t *src, int **assign, err_t *err);

#endif
