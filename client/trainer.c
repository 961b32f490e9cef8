#include "client/trainer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "crypto/dp.h"
#include "engine/partition.h"

/* The samples to train or evaluate on: the trainer's own data when it has some (a CSV site),
 * else the IDX set d; checked against the model the message describes. */
static int site_source(const trainer_t *t, const engine_dataset_t *d, long long input_dim, long long classes,
                       engine_source_t *src, err_t *err)
{
    if (t->data) {
        *src = t->data->src;
        return trainer_data_check(t->data, input_dim, classes, err);
    }
    if (input_dim != (long long)d->rows * d->cols)
        return err_set(err, FN_EINVAL, "the model expects %lld inputs but this site's samples have %d x %d", input_dim,
                       d->rows, d->cols);
    *src = engine_source_from_dataset(d);
    return 0;
}

int trainer_compute(trainer_t *a, const engine_dataset_t *d, const int *idx, int n, wire_msg_t *msg,
                    update_result_t *res, err_t *err)
{
    memset(res, 0, sizeof *res);
    long long round = wire_get_int(msg, "round", -1), seed = wire_get_int(msg, "seed", 0);
    long long input_dim = wire_get_int(msg, "input_dim", -1), classes = wire_get_int(msg, "num_classes", -1);
    json_t *arch = json_object_get(msg->header, "arch");
    json_t *train = json_object_get(msg->header, "train"), *mu = json_object_get(msg->header, "prox_mu");
    size_t count = 0;
    const float *global = wire_frame_data(msg, 0, WIRE_F32, &count);
    if (round < 1 || !json_is_object(arch) || !json_is_object(train) || !global || input_dim < 1 || classes < 2 ||
        classes > 65536 || (mu && !(json_is_number(mu) && json_number_value(mu) >= 0)))
        return err_set(err, FN_EPROTO, "malformed train message (round %lld)", round);
    /* The experiment's "train" block (optimizer, schedule, epochs...), checked by the server
     * already; a site that cannot read it reports the message as malformed. */
    engine_train_config_t tc;
    err_t te;
    if (engine_train_config_from_json(train, &tc, &te) < 0)
        return err_set(err, FN_EPROTO, "round %lld: %s", round, te.msg);
    tc.seed = (uint64_t)seed;
    engine_source_t src;
    int src_rc = site_source(a, d, input_dim, classes, &src, err);
    if (src_rc < 0)
        return src_rc;
    char *text = json_dumps(arch, JSON_SORT_KEYS | JSON_COMPACT);
    if (!a->model || strcmp(text, a->arch_text) != 0) {
        engine_model_free(a->model);
        a->model = NULL;
        free(a->arch_text);
        a->arch_text = text;
        int rc = engine_model_create(arch, (int)input_dim, (int)classes, &a->model, err);
        if (rc < 0)
            return rc;
        free(a->global);
        a->global = FN_MALLOC(engine_model_num_federated(a->model) * sizeof(float));
    } else {
        free(text);
    }
    size_t m = engine_model_num_federated(a->model);
    if (count != m)
        return err_set(err, FN_EPROTO, "train message carries %zu parameters, the model has %zu", count, m);
    float *w = engine_model_params(a->model);
    memcpy(w, global, m * sizeof *w);
    memcpy(a->global, global, m * sizeof *w);
    engine_train_stats_t st = {0};
    double t0 = fn_mono();
    if (mu) { /* FedProx: the proximal term pulls towards this round's global model */
        tc.prox_mu = (float)json_number_value(mu);
        tc.prox_anchor = a->global;
    }
    int trc = engine_model_train_source(a->model, &src, idx, n, &tc, &st, err);
    if (trc < 0)
        return trc;
    /* The update is the change to the weights; the server averages changes. */
    for (size_t i = 0; i < m; i++)
        w[i] -= a->global[i];
    /* Under differential privacy the site clips its own update before it leaves (the server
     * clips again, so the guarantee does not rest on this). */
    json_t *clip = json_object_get(msg->header, "clip");
    double norm = 0;
    if (clip) {
        if (!json_is_number(clip) || !(json_number_value(clip) > 0))
            return err_set(err, FN_EPROTO, "malformed clip bound in round %lld", round);
        int rc = dp_clip_l2(w, m, json_number_value(clip), &norm, err);
        if (rc < 0)
            return rc;
    }
    res->round = round;
    res->samples = n;
    res->update = w;
    res->m = m;
    res->loss = st.loss;
    res->accuracy = st.accuracy;
    res->seconds = fn_mono() - t0;
    return 0;
}

void trainer_feedback_free(trainer_feedback_t *fb)
{
    update_feedback_free(&fb->ef);
    memset(fb, 0, sizeof *fb);
}

int trainer_round(trainer_t *a, const engine_dataset_t *d, const int *idx, int n, void *sock, int64_t run,
                  wire_msg_t *msg, trainer_feedback_t *fb, err_t *err)
{
    long long round = wire_get_int(msg, "round", -1), msg_run = wire_get_int(msg, "run", run);
    long long instance = wire_get_int(msg, "instance", 0); /* 0: not sent, never a duplicate */
    if (fb && instance > 0 && round >= 1 && instance == fb->answered_instance && msg_run == fb->answered_run &&
        round == fb->answered_round) {
        log_info("round %lld: the train message came again (after a reconnect); this site already answered it",
                 round);
        return 0;
    }
    update_result_t res;
    int rc = trainer_compute(a, d, idx, n, msg, &res, err);
    if (rc < 0)
        return rc;
    uint64_t seed = (uint64_t)wire_get_int(msg, "seed", 0);
    rc = update_send_compressed(&res, msg, seed, fb ? &fb->ef : NULL, sock, run, err);
    if (rc == 0 && fb) {
        fb->answered_instance = instance;
        fb->answered_run = msg_run;
        fb->answered_round = round;
    }
    return rc;
}

static int cmp_int(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    return a < b ? -1 : a > b;
}

int trainer_holdout_split(trainer_holdout_t *h, const wire_msg_t *msg, const int *idx, int n, const int **tidx,
                          int *tn, err_t *err)
{
    *tidx = idx;
    *tn = n;
    json_t *ho = json_object_get(msg->header, "holdout");
    if (!ho) {
        if (h->train && h->src == idx && h->nsrc == n) {
            *tidx = h->train;
            *tn = h->ntrain;
        }
        return 0;
    }
    json_t *f = json_object_get(ho, "fraction"), *sd = json_object_get(ho, "seed");
    if (!json_is_number(f) || !(json_number_value(f) > 0 && json_number_value(f) < 1) || !json_is_integer(sd) ||
        json_integer_value(sd) < 0)
        return err_set(err, FN_EPROTO, "malformed holdout in a %s message", msg->type);
    double fraction = json_number_value(f);
    uint64_t seed = (uint64_t)json_integer_value(sd);
    if (!h->train || h->fraction != fraction || h->seed != seed || h->src != idx || h->nsrc != n) {
        trainer_holdout_free(h);
        int *all = FN_MALLOC((size_t)(n > 0 ? n : 1) * sizeof *all);
        memcpy(all, idx, (size_t)n * sizeof *all);
        rng_t r;
        rng_seed(&r, seed);
        rng_shuffle_int(&r, all, n);
        int nheld = (int)floor(fraction * n);
        if (nheld > n - 1)
            nheld = n > 0 ? n - 1 : 0;
        h->held = FN_MALLOC((size_t)(nheld > 0 ? nheld : 1) * sizeof *h->held);
        memcpy(h->held, all, (size_t)nheld * sizeof *all);
        h->nheld = nheld;
        h->ntrain = n - nheld;
        h->train = FN_MALLOC((size_t)(h->ntrain > 0 ? h->ntrain : 1) * sizeof *h->train);
        memcpy(h->train, all + nheld, (size_t)h->ntrain * sizeof *all);
        qsort(h->train, (size_t)h->ntrain, sizeof *h->train, cmp_int);
        free(all);
        h->fraction = fraction;
        h->seed = seed;
        h->src = idx;
        h->nsrc = n;
        log_debug("holding out %d of %d samples for federated evaluation", nheld, n);
    }
    *tidx = h->train;
    *tn = h->ntrain;
    return 0;
}

void trainer_holdout_free(trainer_holdout_t *h)
{
    free(h->train);
    free(h->held);
    memset(h, 0, sizeof *h);
}

int trainer_evaluate(trainer_t *t, const engine_dataset_t *d, trainer_holdout_t *h, const int *idx, int n, void *sock,
                     int64_t run, wire_msg_t *msg, err_t *err)
{
    long long round = wire_get_int(msg, "round", -1);
    long long input_dim = wire_get_int(msg, "input_dim", -1), classes = wire_get_int(msg, "num_classes", -1);
    json_t *arch = json_object_get(msg->header, "arch");
    size_t count = 0;
    const float *params = wire_frame_data(msg, 0, WIRE_F32, &count);
    const int *tidx;
    int tn, rc;
    if (round < 1 || !json_is_object(arch) || !params || input_dim < 1 || classes < 2 || classes > 65536 ||
        !json_object_get(msg->header, "holdout"))
        return err_set(err, FN_EPROTO, "malformed evaluate message (round %lld)", round);
    if ((rc = trainer_holdout_split(h, msg, idx, n, &tidx, &tn, err)) < 0)
        return rc;
    engine_source_t src;
    if ((rc = site_source(t, d, input_dim, classes, &src, err)) < 0)
        return rc;
    char *text = json_dumps(arch, JSON_SORT_KEYS | JSON_COMPACT);
    if (!t->model || strcmp(text, t->arch_text) != 0) {
        /* The same bookkeeping as trainer_compute: the model is rebuilt for a new architecture. */
        engine_model_free(t->model);
        t->model = NULL;
        free(t->arch_text);
        t->arch_text = text;
        if ((rc = engine_model_create(arch, (int)input_dim, (int)classes, &t->model, err)) < 0)
            return rc;
        free(t->global);
        t->global = FN_MALLOC(engine_model_num_federated(t->model) * sizeof(float));
    } else {
        free(text);
    }
    size_t m = engine_model_num_federated(t->model);
    if (count != m)
        return err_set(err, FN_EPROTO, "evaluate message carries %zu parameters, the model has %zu", count, m);
    memcpy(engine_model_params(t->model), params, m * sizeof *params);
    double loss = 0, acc = 0;
    if (h->nheld > 0 && (rc = engine_model_evaluate_source(t->model, &src, h->held, h->nheld, &loss, &acc, err)) < 0)
        return rc;
    json_t *hdr = json_pack("{s:s, s:I, s:I, s:i, s:f, s:f}", "type", "eval_result", "run", (json_int_t)run, "round",
                            (json_int_t)round, "samples", h->nheld, "loss", loss, "accuracy", acc);
    long long sent = wire_send(sock, NULL, 0, hdr, NULL, 0, 0, err);
    json_decref(hdr);
    if (sent < 0)
        return (int)sent;
    log_debug("round %lld: held-out loss %.4f accuracy %.4f on %d samples", round, loss, acc, h->nheld);
    return 0;
}

void trainer_free(trainer_t *t)
{
    engine_model_free(t->model);
    free(t->arch_text);
    free(t->global);
    memset(t, 0, sizeof *t);
}

int client_partition(const client_options_t *o, const engine_source_t *d, int **assign, err_t *err)
{
    *assign = NULL;
    if (o->shards <= 0)
        return 0;
    int *a = FN_MALLOC((size_t)d->count * sizeof *a);
    int rc;
    if (o->partition == CONFIG_PARTITION_DIRICHLET)
        rc = engine_partition_dirichlet(d->labels, d->count, d->num_classes, o->shards, o->alpha, o->min_size,
                                        o->partition_seed, a, err);
    else
        rc = engine_partition_iid(d->count, o->shards, o->partition_seed, a, err);
    if (rc < 0) {
        free(a);
        return rc;
    }
    *assign = a;
    return 0;
}

/* ---- the site's data ---- */

static int blank_line(const char *line, ssize_t len)
{
    for (ssize_t i = 0; i < len; i++)
        if (!isspace((unsigned char)line[i]))
            return 0;
    return 1;
}

/* The file line of data row `row` (0-based): the row-th non-blank line from first_line on.
 * Only for error messages, so the file is read again rather than line numbers kept per row. */
static int csv_row_line(const char *path, int first_line, int row)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return first_line + row;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, seen = -1, found = first_line + row;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (lineno < first_line || blank_line(line, len))
            continue;
        if (++seen == row) {
            found = lineno;
            break;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* The line of the first data row: the first non-blank line, or the one after it when
 * engine_csv_load took that line as a header (then the file has one more non-blank line than rows). */
static int csv_first_line(const char *path, int rows)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, first = 0, second = 0, nonblank = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (blank_line(line, len))
            continue;
        nonblank++;
        if (nonblank == 1)
            first = lineno;
        else if (nonblank == 2)
            second = lineno;
    }
    free(line);
    fclose(f);
    return nonblank > rows && second ? second : (first ? first : 1);
}

static int is_csv_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISREG(st.st_mode);
    size_t n = strlen(path);
    return n >= 4 && strcasecmp(path + n - 4, ".csv") == 0;
}

int trainer_data_load(trainer_data_t *d, const char *path, err_t *err)
{
    memset(d, 0, sizeof *d);
    if (!path || !*path)
        return err_set(err, FN_EINVAL, "no data given: pass --data with a folder of IDX files or a CSV file");
    snprintf(d->path, sizeof d->path, "%s", path);
    int rc;
    if (is_csv_path(path)) {
        d->csv = 1;
        if ((rc = engine_csv_load(path, &d->table, err)) < 0)
            return rc;
        d->src = engine_source_from_table(&d->table);
        d->first_line = csv_first_line(path, d->table.count);
        log_debug("%s: %d rows of %d features, labels 0..%d", path, d->table.count, d->table.dim,
                  d->table.num_classes - 1);
        return 0;
    }
    if ((rc = engine_fmnist_load(path, "train", &d->idx, err)) < 0)
        return rc;
    d->src = engine_source_from_dataset(&d->idx);
    return 0;
}

int trainer_data_check(const trainer_data_t *d, long long features, long long classes, err_t *err)
{
    long long have = (long long)d->src.channels * d->src.height * d->src.width;
    if (!d->csv) {
        if (features != have)
            return err_set(err, FN_EINVAL,
                           "the model expects %lld inputs but this site's images in %s have %lld pixels; the "
                           "experiment's data set does not match this site's data",
                           features, d->path, have);
        return 0;
    }
    if (features != have)
        return err_set(err, FN_EINVAL,
                       "%s:%d: %lld columns (%lld features and the label), but the experiment's model takes %lld "
                       "features (data.features); give this site a CSV with %lld feature columns and the label last",
                       d->path, d->first_line, have + 1, have, features, features);
    for (int i = 0; i < d->table.count; i++)
        if (d->table.labels[i] >= classes)
            return err_set(err, FN_EINVAL,
                           "%s:%d: label %d is out of range: the experiment has %lld classes (data.classes), so "
                           "labels must be integers 0..%lld",
                           d->path, csv_row_line(d->path, d->first_line, i), d->table.labels[i], classes,
                           classes - 1);
    return 0;
}

void trainer_data_free(trainer_data_t *d)
{
    engine_dataset_free(&d->idx);
    engine_table_free(&d->table);
    memset(d, 0, sizeof *d);
}
