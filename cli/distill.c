/* distill: what `train --teacher` and the compress recipe's "distill" step share: reading a
 * model file (cli_read_model) and a teacher for knowledge distillation
 * (engine_train_config_t.teacher) that runs on the inference runtime (engine/infer.h) with batch
 * norm folded: the engine's eval-mode logits up to float rounding, at a fraction of the cost of
 * the autograd forward, which matters because the teacher runs on every training batch. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/jsonpos.h"
#include "engine/model.h"
#include "engine/data.h"
#include "engine/infer.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

/* Logits memo: most recipes show the teacher the same unaugmented samples every epoch, so the
 * logits of a sample are kept under a 64-bit hash of its pixels (open addressing; a collision
 * between two of some 10^5 distinct samples has odds near 10^-9). Augmented batches miss and are
 * computed; once full, the memo stops taking new samples. */
struct cli_teacher {
    engine_infer_t *plan;
    size_t params;
    int c, h, w, classes;
    uint64_t *keys; /* cap slots, 0: empty */
    float *vals;    /* cap x classes */
    size_t cap, used, hits, misses;
    float *xm, *lm; /* the misses of a batch, gathered */
    int *rows;
    uint64_t *hm;
    int mcap;
};

int cli_read_model(const char *path, json_t **arch, float **vec, size_t *n, int shape[3], err_t *err)
{
    engine_safetensors_t *st = NULL;
    *arch = NULL;
    *vec = NULL;
    if (engine_safetensors_open(path, &st, err) < 0)
        return err->code;
    int rc = 0;
    const char *a = engine_safetensors_meta(st, ENGINE_ST_META_ARCH);
    const engine_st_tensor_t *t = engine_safetensors_find(st, "params");
    json_error_t je;
    if (!a) {
        rc = err_set(err, FN_EINVAL, "%s: no fednas.arch metadata (write models with `fednas train --save`)", path);
    } else if (!(*arch = json_loads(a, 0, &je))) {
        rc = err_set(err, FN_EINVAL, "%s: metadata fednas.arch: %d:%d: %s", path, je.line, je.column, je.text);
    } else if (!t || t->dtype != ENGINE_ST_F32 || t->ndim != 1) {
        rc = err_set(err, FN_EINVAL, "%s: expected a tensor \"params\", F32 with one dimension", path);
    } else {
        *n = (size_t)t->shape[0];
        *vec = malloc((*n ? *n : 1) * sizeof **vec);
        rc = *vec ? engine_safetensors_read_f32(st, "params", *vec, *n, err) : err_set(err, FN_ENOMEM, "out of memory");
        const char *in = engine_safetensors_meta(st, "fednas.input");
        if (rc == 0 && in && sscanf(in, "[%d,%d,%d]", &shape[0], &shape[1], &shape[2]) != 3)
            rc = err_set(err, FN_EINVAL, "%s: metadata fednas.input: expected \"[c,h,w]\", not \"%s\"", path, in);
    }
    engine_safetensors_close(st);
    if (rc) {
        json_decref(*arch), free(*vec);
        *arch = NULL, *vec = NULL;
    }
    return rc;
}

int cli_teacher_open(const char *path, int c, int h, int w, int classes, size_t memo, cli_teacher_t **out, err_t *err)
{
    *out = NULL;
    json_t *arch = NULL;
    float *vec = NULL;
    size_t n = 0;
    int sh[3] = {c, h, w};
    int rc = cli_read_model(path, &arch, &vec, &n, sh, err);
    if (rc)
        return err_wrap(err, "the teacher: ");
    if (sh[0] != c || sh[1] != h || sh[2] != w) {
        rc = err_set(err, FN_EINVAL, "the teacher %s takes [%d,%d,%d] inputs; the student's data are [%d,%d,%d]", path,
                     sh[0], sh[1], sh[2], c, h, w);
        goto done;
    }
    engine_net_t *net = NULL;
    if ((rc = engine_net_create(arch, c, h, w, classes, &net, err)) < 0) {
        err_wrap(err, "the teacher %s: ", path);
        goto done;
    }
    size_t want = engine_net_num_params(net) + engine_net_num_buffers(net), params = engine_net_num_params(net);
    engine_net_free(net);
    if (n != want) {
        rc = err_set(err, FN_EINVAL, "the teacher %s: \"params\" has %zu floats, its architecture with %d classes needs %zu",
                     path, n, classes, want);
        goto done;
    }
    cli_teacher_t *t = calloc(1, sizeof *t);
    if (!t) {
        rc = err_set(err, FN_ENOMEM, "out of memory");
        goto done;
    }
    *t = (cli_teacher_t){.params = params, .c = c, .h = h, .w = w, .classes = classes};
    if (memo > 0) {
        size_t cap = 64;
        while (cap < 2 * memo)
            cap *= 2;
        t->keys = calloc(cap, sizeof *t->keys);
        t->vals = malloc(cap * (size_t)classes * sizeof *t->vals);
        if (!t->keys || !t->vals) { /* the memo only saves time: run without it */
            free(t->keys), free(t->vals);
            t->keys = NULL, t->vals = NULL;
        } else {
            t->cap = cap;
        }
    }
    if ((rc = engine_infer_create(arch, vec, n, c, h, w, classes, &t->plan, err)) < 0 ||
        (rc = engine_infer_fold(t->plan, err)) < 0) {
        err_wrap(err, "the teacher %s: ", path);
        cli_teacher_free(t);
        goto done;
    }
    *out = t;
done:
    json_decref(arch);
    free(vec);
    return rc;
}

static int run_plan(cli_teacher_t *t, const float *x, int n, float *logits, err_t *err)
{
    /* the runtime's scratch is sized for the largest batch so far: big batches go in slices */
    for (int b0 = 0; b0 < n; b0 += 256) {
        int nb = n - b0 < 256 ? n - b0 : 256;
        int rc = engine_infer_forward(t->plan, x + (size_t)b0 * t->c * t->h * t->w, nb, logits + (size_t)b0 * t->classes,
                                      0, err);
        if (rc)
            return rc;
    }
    return 0;
}

static uint64_t sample_hash(const float *x, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        h = (h ^ u) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

int cli_teacher_logits(void *ctx, const float *x, int n, float *logits, err_t *err)
{
    cli_teacher_t *t = ctx;
    if (!t->cap)
        return run_plan(t, x, n, logits, err);
    const size_t per = (size_t)t->c * t->h * t->w, C = (size_t)t->classes;
    if (n > t->mcap) {
        free(t->xm), free(t->lm), free(t->rows), free(t->hm);
        t->xm = malloc((size_t)n * per * sizeof *t->xm);
        t->lm = malloc((size_t)n * C * sizeof *t->lm);
        t->rows = malloc((size_t)n * sizeof *t->rows);
        t->hm = malloc((size_t)n * sizeof *t->hm);
        t->mcap = t->xm && t->lm && t->rows && t->hm ? n : 0;
        if (!t->mcap)
            return err_set(err, FN_ENOMEM, "out of memory");
    }
    int nm = 0;
    for (int i = 0; i < n; i++) {
        uint64_t h = sample_hash(x + (size_t)i * per, per);
        size_t s = (size_t)h & (t->cap - 1);
        while (t->keys[s] && t->keys[s] != h)
            s = (s + 1) & (t->cap - 1);
        if (t->keys[s] == h) {
            memcpy(logits + (size_t)i * C, t->vals + s * C, C * sizeof *logits);
            t->hits++;
            continue;
        }
        memcpy(t->xm + (size_t)nm * per, x + (size_t)i * per, per * sizeof *x);
        t->rows[nm] = i;
        t->hm[nm++] = h;
    }
    t->misses += (size_t)nm;
    if (nm == 0)
        return 0;
    int rc = run_plan(t, t->xm, nm, t->lm, err);
    if (rc)
        return rc;
    for (int k = 0; k < nm; k++) {
        memcpy(logits + (size_t)t->rows[k] * C, t->lm + (size_t)k * C, C * sizeof *logits);
        uint64_t h = t->hm[k];
        if (2 * (t->used + 1) > t->cap) /* full: keep the probes short */
            continue;
        size_t s = (size_t)h & (t->cap - 1);
        while (t->keys[s] && t->keys[s] != h)
            s = (s + 1) & (t->cap - 1);
        if (!t->keys[s]) {
            t->keys[s] = h;
            memcpy(t->vals + s * C, t->lm + (size_t)k * C, C * sizeof *t->vals);
            t->used++;
        }
    }
    return 0;
}

void cli_teacher_memo_stats(const cli_teacher_t *t, size_t *hits, size_t *misses)
{
    *hits = t->hits;
    *misses = t->misses;
}

size_t cli_teacher_num_params(const cli_teacher_t *t) { return t->params; }

int cli_teacher_accuracy(cli_teacher_t *t, const engine_source_t *src, double *acc, err_t *err)
{
    const int chunk = 256;
    size_t per = (size_t)t->c * t->h * t->w;
    float *x = malloc((size_t)chunk * per * sizeof *x), *lg = malloc((size_t)chunk * t->classes * sizeof *lg);
    uint8_t *y = malloc((size_t)chunk);
    int *idx = malloc((size_t)chunk * sizeof *idx), right = 0, rc = 0;
    if (!x || !lg || !y || !idx)
        rc = err_set(err, FN_ENOMEM, "out of memory");
    for (int b0 = 0; rc == 0 && b0 < src->count; b0 += chunk) {
        int nb = src->count - b0 < chunk ? src->count - b0 : chunk;
        for (int i = 0; i < nb; i++)
            idx[i] = b0 + i;
        engine_source_gather(src, idx, nb, x, y);
        if ((rc = run_plan(t, x, nb, lg, err)) < 0)
            break;
        for (int i = 0; i < nb; i++) {
            const float *r = lg + (size_t)i * t->classes;
            int best = 0;
            for (int k = 1; k < t->classes; k++)
                if (r[k] > r[best])
                    best = k;
            right += best == y[i];
        }
    }
    *acc = src->count > 0 ? (double)right / src->count : 0.0;
    free(x), free(lg), free(y), free(idx);
    return rc;
}

void cli_teacher_free(cli_teacher_t *t)
{
    if (!t)
        return;
    engine_infer_free(t->plan);
    free(t->keys), free(t->vals), free(t->xm), free(t->lm), free(t->rows), free(t->hm);
    free(t);
}

/* ---- the compress recipe's "distill" step ---- */

const char *cli_key_path(char *buf, size_t n, const char *at, const char *key)
{
    snprintf(buf, n, "%s%s%s", at, *at ? "." : "", key);
    return buf;
}

int cli_train_block(const char *src, const char *text, const char *prefix, const json_t *tr, engine_train_config_t *tc,
                    err_t *err)
{
    json_t *empty = json_object();
    int rc = engine_train_config_from_json(tr ? tr : empty, tc, err);
    json_decref(empty);
    if (!rc)
        return 0;
    /* "train.optimizer.momentum: message" -> file:line:col of PREFIX.train.optimizer.momentum */
    char msg[sizeof err->msg], path[160];
    snprintf(msg, sizeof msg, "%s", err->msg);
    const char *colon = strstr(msg, ": ");
    if (colon && strncmp(msg, "train", 5) == 0 && (size_t)(colon - msg) + strlen(prefix) + 2 < sizeof path) {
        snprintf(path, sizeof path, "%s.%.*s", prefix, (int)(colon - msg), msg);
        if (jsonpos_locate(text, path, 0, &(int){0}, &(int){0}) < 0)
            snprintf(path, sizeof path, "%s.train", prefix);
        return jsonpos_fail(err, src, text, path, 0, "%s", colon + 2);
    }
    snprintf(path, sizeof path, "%s.train", prefix);
    return jsonpos_fail(err, src, text, path, 0, "%s", msg);
}

int cli_distill_parse(const char *src, const char *text, const char *at, const json_t *d, cli_distill_t *out, err_t *err)
{
    char pb[160];
    static const char *const keys[] = {"student", "train", "temperature", "alpha", "train_samples", "seed", "baseline",
                                       NULL};
    memset(out, 0, sizeof *out);
    out->T = 4.0f, out->alpha = 0.9f, out->seed = 1, out->baseline = 1;
    if (!json_is_object(d))
        return jsonpos_fail(err, src, text, at, 0, "expected an object {\"student\":ARCH, \"train\":{...}, ...}");
    if (jsonpos_check_keys(err, src, text, d, at, keys) < 0)
        return err->code;
    const json_t *st = json_object_get(d, "student");
    if (!json_is_object(st))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "student"), 0,
                            "expected the student's architecture, e.g. {\"type\":\"mlp\",\"hidden\":[128]} (engine/nn.h)");
    const json_t *tr = json_object_get(d, "train");
    if (cli_train_block(src, text, at, tr, &out->tc, err) < 0)
        return err->code;
    const json_t *v;
    if ((v = json_object_get(d, "temperature")) && (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) <= 1e4)))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "temperature"), 0, "expected a number in (0, 1e4] (Hinton et al.: 2 to 20)");
    if (v)
        out->T = (float)json_number_value(v);
    if ((v = json_object_get(d, "alpha")) && (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) <= 1)))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "alpha"), 0, "expected a number in [0, 1]: the weight of the teacher's term");
    if (v)
        out->alpha = (float)json_number_value(v);
    if ((v = json_object_get(d, "train_samples")) && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 10000000))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "train_samples"), 0, "expected an integer >= 1 (absent: the whole training set)");
    if (v)
        out->samples = (int)json_integer_value(v);
    if ((v = json_object_get(d, "seed")) && (!json_is_integer(v) || json_integer_value(v) < 0))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "seed"), 0, "expected an integer >= 0");
    if (v)
        out->seed = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(d, "baseline")) && !json_is_boolean(v))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "baseline"), 0, "expected true or false");
    if (v)
        out->baseline = json_is_true(v);
    out->student = json_deep_copy(st);
    if (!json_object_get(d, "train") || !json_object_get(tr, "seed"))
        out->tc.seed = out->seed;
    return out->student ? 0 : err_set(err, FN_ENOMEM, "out of memory");
}

void cli_distill_free(cli_distill_t *d)
{
    json_decref(d->student);
    d->student = NULL;
}

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int cli_distill_run(const cli_distill_t *d, const char *teacher_path, const engine_source_t *trs,
                    const engine_source_t *tes, json_t **arch, float **vec, size_t *n, json_t **report, err_t *err)
{
    const int classes = trs->num_classes > tes->num_classes ? trs->num_classes : tes->num_classes;
    const int N = d->samples > 0 && d->samples < trs->count ? d->samples : trs->count;
    cli_teacher_t *t = NULL;
    engine_model_t *m = NULL;
    int *idx = malloc((size_t)N * sizeof *idx);
    double tacc = 0, acc[2] = {0, 0}, secs[2] = {0, 0};
    int rc = idx ? 0 : err_set(err, FN_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < N; i++) /* evenly spread over the training set */
        idx[i] = (int)((long)i * trs->count / N);
    if (rc == 0 && ((rc = cli_teacher_open(teacher_path, trs->channels, trs->height, trs->width, classes, (size_t)N, &t,
                                           err)) < 0 ||
                    (rc = cli_teacher_accuracy(t, tes, &tacc, err)) < 0))
        goto done;
    size_t sp = 0;
    for (int kd = d->baseline ? 0 : 1; rc == 0 && kd <= 1; kd++) {
        engine_model_free(m);
        m = NULL;
        if ((rc = engine_model_create_shape(d->student, trs->channels, trs->height, trs->width, classes, &m, err)) < 0) {
            err_wrap(err, "distill.student: ");
            break;
        }
        engine_model_init(m, d->seed);
        sp = engine_model_num_params(m);
        engine_train_config_t tc = d->tc;
        if (kd) {
            tc.teacher = cli_teacher_logits, tc.teacher_ctx = t;
            tc.distill_T = d->T, tc.distill_alpha = d->alpha;
        }
        double t0 = wall_now();
        engine_train_stats_t ts;
        if ((rc = engine_model_train_source(m, trs, idx, N, &tc, &ts, err)) < 0 ||
            (rc = engine_model_evaluate_source(m, tes, NULL, 0, NULL, &acc[kd], err)) < 0)
            break;
        secs[kd] = wall_now() - t0;
        printf("distill: student %s: %zu parameters, %d epochs on %d samples: test accuracy %.4f (%.1fs)\n",
               kd ? "distilled" : "alone", sp, tc.epochs, N, acc[kd], secs[kd]);
    }
    if (rc)
        goto done;
    printf("distill: teacher %zu parameters (%.1fx), test accuracy %.4f; T %g, alpha %g%s\n", cli_teacher_num_params(t),
           (double)cli_teacher_num_params(t) / (double)sp, tacc, (double)d->T, (double)d->alpha, "");
    if (d->baseline)
        printf("distill: the teacher adds %+.2f test points over the student alone (same recipe and seed)\n",
               100 * (acc[1] - acc[0]));
    *report = json_pack("{s:I,s:f,s:I,s:f,s:f,s:i,s:i,s:I,s:f,s:f}", "teacher_params", (json_int_t)cli_teacher_num_params(t),
                        "teacher_accuracy", tacc, "student_params", (json_int_t)sp, "temperature", (double)d->T, "alpha",
                        (double)d->alpha, "epochs", d->tc.epochs, "train_samples", N, "seed", (json_int_t)d->seed,
                        "student_distilled_accuracy", acc[1], "seconds", secs[1]);
    if (d->baseline && *report)
        json_object_set_new(*report, "student_alone_accuracy", json_real(acc[0]));
    json_decref(*arch);
    free(*vec);
    *arch = json_deep_copy(engine_model_arch(m));
    *n = engine_model_num_federated(m);
    *vec = malloc(*n * sizeof **vec);
    if (!*arch || !*vec || !*report) {
        rc = err_set(err, FN_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(*vec, engine_model_params(m), *n * sizeof **vec);
done:
    engine_model_free(m);
    cli_teacher_free(t);
    free(idx);
    return rc;
}
