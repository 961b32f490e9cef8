/* qat: the compress recipe's "qat" step: quantization-aware fine-tuning (engine/qat.h) of the
 * model a plan holds (after folding and pruning), exported to the int8 runtime with the ranges
 * the fine-tuning tracked, so that the int8 model computes what the fine-tuning optimised. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/jsonpos.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/qat.h"

int cli_qat_parse(const char *src, const char *text, const char *at, const json_t *q, cli_qat_t *out, err_t *err)
{
    char pb[160];
    static const char *const keys[] = {"train", "train_samples", "observer_momentum", NULL};
    memset(out, 0, sizeof *out);
    out->samples = 6000, out->momentum = 0.01;
    if (!json_is_object(q))
        return jsonpos_fail(err, src, text, at, 0, "expected an object {\"train\":{...}, \"train_samples\":6000}");
    if (jsonpos_check_keys(err, src, text, q, at, keys) < 0)
        return err->code;
    const json_t *tr = json_object_get(q, "train");
    if (cli_train_block(src, text, at, tr, &out->tc, err) < 0)
        return err->code;
    if (!tr) { /* fine-tuning defaults: one pass, a small learning rate */
        out->tc.batch_size = 64;
        out->tc.optim.lr = 0.001f;
        out->tc.optim.momentum = 0.9f;
    }
    const json_t *v;
    if ((v = json_object_get(q, "train_samples")) && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 10000000))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "train_samples"), 0, "expected an integer >= 1");
    if (v)
        out->samples = (int)json_integer_value(v);
    if ((v = json_object_get(q, "observer_momentum")) && (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) <= 1)))
        return jsonpos_fail(err, src, text, cli_key_path(pb, sizeof pb, at, "observer_momentum"), 0,
                            "expected a number in (0, 1]: the weight of each batch in the tracked ranges");
    if (v)
        out->momentum = json_number_value(v);
    return 0;
}

int cli_qat_run(const cli_qat_t *q, const engine_infer_t *from, const engine_source_t *trs, const int sh[3], int classes,
                engine_infer_t **out, err_t *err)
{
    *out = NULL;
    json_t *arch = NULL;
    float *vec = NULL;
    size_t nv = 0;
    engine_model_t *m = NULL;
    engine_qat_t *qa = NULL;
    const int N = q->samples < trs->count ? q->samples : trs->count;
    int *idx = malloc((size_t)N * sizeof *idx), rc;
    if (!idx)
        return err_set(err, FN_ENOMEM, "out of memory");
    if ((rc = engine_infer_export(from, &arch, &vec, &nv, err)) < 0 ||
        (rc = engine_model_create_shape(arch, sh[0], sh[1], sh[2], classes, &m, err)) < 0)
        goto done;
    if (engine_model_num_federated(m) != engine_model_num_params(m)) {
        rc = err_set(err, FN_EINVAL, "qat: the model still has batch norm; fold it first (\"fold\": true)");
        goto done;
    }
    memcpy(engine_model_params(m), vec, nv * sizeof *vec);
    if ((rc = engine_qat_attach(m, (float)q->momentum, &qa, err)) < 0)
        goto done;
    for (int i = 0; i < N; i++) /* evenly spread over the training set */
        idx[i] = (int)((long)i * trs->count / N);
    engine_train_stats_t ts;
    if ((rc = engine_qat_train(qa, trs, idx, N, &q->tc, &ts, err)) < 0)
        goto done;
    int na = 0;
    const float *lo, *hi;
    engine_qat_ranges(qa, &na, &lo, &hi);
    printf("qat: fine-tuned %d epochs on %d samples with fake quantization (train acc %.4f, %.1fs); %d input ranges tracked\n",
           q->tc.epochs, N, ts.accuracy, ts.seconds, na);
    /* folded like the plan PTQ quantizes (the export spells fused ReLUs and pools out) */
    if ((rc = engine_infer_create(arch, engine_model_params(m), nv, sh[0], sh[1], sh[2], classes, out, err)) < 0 ||
        (rc = engine_infer_fold(*out, err)) < 0 || (rc = engine_infer_quantize_ranges(*out, lo, hi, na, err)) < 0) {
        engine_infer_free(*out);
        *out = NULL;
    }
done:
    engine_qat_free(qa);
    engine_model_free(m);
    json_decref(arch);
    free(vec);
    free(idx);
    return rc;
}
