/* fednas compress: turns a trained model into an inference artifact (engine/infer.h):
 * batch-norm folding and ReLU fusion, then INT8 post-training quantization calibrated on
 * training samples; reports test accuracy, prediction agreement and batch inference speed of
 * each stage against the engine's own eval forward, measured in the same run. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "common/jsonpos.h"
#include "engine/data.h"
#include "engine/graph.h"
#include "engine/idx.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

static const char *const k_help =
    "Usage: fednas compress MODEL.safetensors --recipe RECIPE.json --out DIR\n"
    "\n"
    "MODEL is a file from `fednas train --save` (tensor \"params\", metadata fednas.arch and\n"
    "fednas.input). RECIPE (every key optional except data; unknown keys are errors):\n"
    "  {\"data\": {\"dataset\":\"fashion-mnist\"|\"mnist\", \"path\":DIR},\n"
    "   \"distill\": {\"student\":ARCH, \"train\":{...}, \"temperature\":4, \"alpha\":0.9,\n"
    "               \"train_samples\":N, \"seed\":1, \"baseline\":true}   first step: MODEL teaches the\n"
    "               student (engine/nn.h architecture; \"train\" as in an experiment), which the\n"
    "               later steps then compress; baseline also trains it alone (DIR/distill.json)\n"
    "   \"fold\": true,                      fold batch norm into conv/linear, fuse ReLU\n"
    "   \"prune\": {\"sparsity\":0.5, \"schedule\":\"linear\"|\"exponential\"|\"cubic\", \"steps\":3,\n"
    "             \"finetune_samples\":6000, \"lr\":0.01}   L1 channel pruning, each step fine-tuned\n"
    "             for one pass over that many training samples (up to 60000)\n"
    "   \"quantize\": {\"calibrator\":\"minmax\"|\"percentile\"|\"entropy\", \"percentile\":99.99,\n"
    "                \"calibration_samples\":1000, \"kernel\":\"auto\"|\"ref\"|\"avx2\"|\"vnni\"|\"amx\"},\n"
    "                                       (absent: no quantization)\n"
    "   \"qat\": {\"train\":{...}, \"train_samples\":6000, \"observer_momentum\":0.01}   quantization-\n"
    "               aware fine-tuning, exported with its tracked ranges (DIR/model.qat.int8.safetensors)\n"
    "   \"eval_samples\": 10000,              test samples for accuracy and agreement\n"
    "   \"bench\": {\"batch\":64, \"iters\":10}}   timed forward passes per stage (0: no timing)\n"
    "Writes DIR/folded.safetensors (fp32, loads in the engine like any model), DIR/arch.json,\n"
    "DIR/model.int8.safetensors (int8 weights, per-channel weight scales, activation scales and\n"
    "zero points) and DIR/report.json. Timing is process CPU time per batch, best of 3 interleaved\n"
    "turns; run with OPENBLAS_NUM_THREADS=1 FEDNAS_THREADS=1 for one-core numbers.\n";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    const char *path, *text, *at; /* at: the recipe's path in text ("" or "compress") */
} recipe_src_t;

static int rfail(const recipe_src_t *r, err_t *err, const char *rel, const char *fmt, const char *detail)
{
    int line = 1, col = 1;
    char jpath[160];
    snprintf(jpath, sizeof jpath, "%s%s%s", r->at, *r->at && *rel ? "." : "", rel);
    jsonpos_locate(r->text, jpath, 0, &line, &col);
    return err_set(err, FN_EINVAL, "%s:%d:%d: %s: %s%s", r->path, line, col, jpath, fmt, detail ? detail : "");
}

static int check_keys(const recipe_src_t *r, const json_t *o, const char *where, const char *const *allowed, err_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char p[160];
            snprintf(p, sizeof p, "%s%s%s%s%s", r->at, *r->at && *where ? "." : "", where,
                     *r->at || *where ? "." : "", k);
            int line = 1, col = 1;
            jsonpos_locate(r->text, p, 1, &line, &col);
            return err_set(err, FN_EINVAL, "%s:%d:%d: %s: unknown key", r->path, line, col, p);
        }
    }
    return 0;
}

typedef struct {
    const char *dataset, *data_path;
    int fold, quantize, calib_n, eval_n, bench_batch, bench_iters;
    int prune, prune_steps, finetune_n;
    double sparsity, prune_lr;
    engine_prune_schedule_t schedule;
    engine_calib_t calib;
    double percentile;
    engine_qgemm_impl_t kernel;
    int distill, qat;
    cli_distill_t kd;
    cli_qat_t qt;
} recipe_t;

static int int_key(const recipe_src_t *r, const json_t *o, const char *key, const char *jpath, int lo, int hi, int *out,
                   err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char d[64];
        snprintf(d, sizeof d, "%d..%d", lo, hi);
        return rfail(r, err, jpath, "expected an integer in ", d);
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_recipe(const recipe_src_t *r, const json_t *j, recipe_t *c, err_t *err)
{
    static const char *const top[] = {"data", "distill", "fold", "prune", "quantize", "qat", "eval_samples", "bench", NULL};
    static const char *const pk[] = {"sparsity", "schedule", "steps", "finetune_samples", "lr", NULL};
    static const char *const dk[] = {"dataset", "path", NULL};
    static const char *const qk[] = {"calibrator", "percentile", "calibration_samples", "kernel", NULL};
    static const char *const bk[] = {"batch", "iters", NULL};
    *c = (recipe_t){.data_path = ENGINE_FMNIST_DEFAULT_DIR, .fold = 1, .calib_n = 1000, .eval_n = 10000,
                    .bench_batch = 64, .bench_iters = 10, .percentile = 99.99, .kernel = ENGINE_QGEMM_AUTO,
                    .prune_steps = 3, .finetune_n = 6000, .sparsity = 0.5, .prune_lr = 0.01, .schedule = ENGINE_PRUNE_CUBIC};
    if (!json_is_object(j))
        return rfail(r, err, "", "expected a JSON object", NULL);
    if (check_keys(r, j, "", top, err) < 0)
        return err->code;
    const json_t *d = json_object_get(j, "data");
    if (!json_is_object(d))
        return rfail(r, err, "data", "expected {\"dataset\":\"fashion-mnist\",\"path\":DIR}", NULL);
    if (check_keys(r, d, "data", dk, err) < 0)
        return err->code;
    c->dataset = json_string_value(json_object_get(d, "dataset"));
    if (!c->dataset || (strcmp(c->dataset, "fashion-mnist") && strcmp(c->dataset, "mnist")))
        return rfail(r, err, "data.dataset", "expected \"fashion-mnist\" or \"mnist\"", NULL);
    if (json_object_get(d, "path")) {
        if (!json_is_string(json_object_get(d, "path")))
            return rfail(r, err, "data.path", "expected a directory name", NULL);
        c->data_path = json_string_value(json_object_get(d, "path"));
    }
    const json_t *f = json_object_get(j, "fold");
    if (f && !json_is_boolean(f))
        return rfail(r, err, "fold", "expected true or false", NULL);
    c->fold = !f || json_is_true(f);
    if (int_key(r, j, "eval_samples", "eval_samples", 1, 1000000, &c->eval_n, err) < 0)
        return err->code;
    const json_t *pr = json_object_get(j, "prune");
    if (pr) {
        if (!json_is_object(pr))
            return rfail(r, err, "prune", "expected an object", NULL);
        if (check_keys(r, pr, "prune", pk, err) < 0)
            return err->code;
        c->prune = 1;
        const json_t *v = json_object_get(pr, "sparsity");
        if (v && (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) < 1)))
            return rfail(r, err, "prune.sparsity", "expected a number in [0, 1): the share of channels removed", NULL);
        if (v)
            c->sparsity = json_number_value(v);
        v = json_object_get(pr, "lr");
        if (v && (!json_is_number(v) || !(json_number_value(v) > 0)))
            return rfail(r, err, "prune.lr", "expected a number > 0", NULL);
        if (v)
            c->prune_lr = json_number_value(v);
        v = json_object_get(pr, "schedule");
        const char *sc = v ? json_string_value(v) : "cubic";
        if (!sc || (strcmp(sc, "linear") && strcmp(sc, "exponential") && strcmp(sc, "cubic")))
            return rfail(r, err, "prune.schedule", "expected \"linear\", \"exponential\" or \"cubic\"", NULL);
        c->schedule = strcmp(sc, "linear") == 0 ? ENGINE_PRUNE_LINEAR
                      : strcmp(sc, "exponential") == 0 ? ENGINE_PRUNE_EXPONENTIAL : ENGINE_PRUNE_CUBIC;
        if (int_key(r, pr, "steps", "prune.steps", 1, 100, &c->prune_steps, err) < 0 ||
            int_key(r, pr, "finetune_samples", "prune.finetune_samples", 0, 60000, &c->finetune_n, err) < 0)
            return err->code;
    }
    const json_t *q = json_object_get(j, "quantize");
    if (q) {
        if (!json_is_object(q))
            return rfail(r, err, "quantize", "expected an object", NULL);
        if (check_keys(r, q, "quantize", qk, err) < 0)
            return err->code;
        c->quantize = 1;
        const json_t *cal = json_object_get(q, "calibrator");
        const char *cs = cal ? json_string_value(cal) : "minmax";
        if (!cs || (strcmp(cs, "minmax") && strcmp(cs, "percentile") && strcmp(cs, "entropy")))
            return rfail(r, err, "quantize.calibrator", "expected \"minmax\", \"percentile\" or \"entropy\"", NULL);
        c->calib = strcmp(cs, "minmax") == 0 ? ENGINE_CALIB_MINMAX
                   : strcmp(cs, "percentile") == 0 ? ENGINE_CALIB_PERCENTILE : ENGINE_CALIB_ENTROPY;
        const json_t *pc = json_object_get(q, "percentile");
        if (pc) {
            if (!json_is_number(pc) || !(json_number_value(pc) > 0 && json_number_value(pc) <= 100))
                return rfail(r, err, "quantize.percentile", "expected a number in (0, 100]", NULL);
            c->percentile = json_number_value(pc);
        }
        if (int_key(r, q, "calibration_samples", "quantize.calibration_samples", 1, 60000, &c->calib_n, err) < 0)
            return err->code;
        const json_t *k = json_object_get(q, "kernel");
        if (k) {
            const char *ks = json_string_value(k);
            static const char *const names[] = {"ref", "avx2", "vnni", "amx", "auto"};
            int found = -1;
            for (int i = 0; ks && i < 5; i++)
                if (strcmp(ks, names[i]) == 0)
                    found = i;
            if (found < 0)
                return rfail(r, err, "quantize.kernel", "expected \"auto\", \"ref\", \"avx2\", \"vnni\" or \"amx\"", NULL);
            c->kernel = (engine_qgemm_impl_t)found;
        }
    }
    const json_t *kd = json_object_get(j, "distill");
    if (kd) {
        char at[160];
        if (cli_distill_parse(r->path, r->text, cli_key_path(at, sizeof at, r->at, "distill"), kd, &c->kd, err) < 0)
            return err->code;
        c->distill = 1;
    }
    const json_t *qt = json_object_get(j, "qat");
    if (qt) {
        char at[160];
        if (cli_qat_parse(r->path, r->text, cli_key_path(at, sizeof at, r->at, "qat"), qt, &c->qt, err) < 0)
            return err->code;
        c->qat = 1;
    }
    const json_t *b = json_object_get(j, "bench");
    if (b) {
        if (!json_is_object(b))
            return rfail(r, err, "bench", "expected {\"batch\":64,\"iters\":10}", NULL);
        if (check_keys(r, b, "bench", bk, err) < 0 ||
            int_key(r, b, "batch", "bench.batch", 1, 4096, &c->bench_batch, err) < 0 ||
            int_key(r, b, "iters", "bench.iters", 0, 100000, &c->bench_iters, err) < 0)
            return err->code;
    }
    return 0;
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

typedef int (*fwd_fn)(void *ctx, const float *x, int B, float *logits, err_t *err);

typedef struct {
    engine_net_t *net;
    engine_graph_t *g;
    int sh[3], classes;
} eng_ctx_t;

static int eng_fwd(void *vc, const float *x, int B, float *logits, err_t *err)
{
    eng_ctx_t *c = vc;
    engine_graph_reset(c->g);
    int64_t shape[4] = {B, c->sh[0], c->sh[1], c->sh[2]};
    engine_tensor_t *xt = engine_graph_view(c->g, (void *)x, NULL, ENGINE_F32, 4, shape);
    engine_tensor_t *y = engine_net_forward(c->net, c->g, xt, 0);
    if (!y || engine_graph_error(c->g, err) < 0)
        return err->code ? err->code : err_set(err, FN_EINVAL, "engine forward failed");
    memcpy(logits, engine_tensor_f32(y), (size_t)B * c->classes * sizeof *logits);
    return 0;
}

typedef struct {
    engine_infer_t *p;
    int int8;
} inf_ctx_t;

static int inf_fwd(void *vc, const float *x, int B, float *logits, err_t *err)
{
    inf_ctx_t *c = vc;
    return engine_infer_forward(c->p, x, B, logits, c->int8, err);
}

typedef struct {
    const char *name, *key; /* key: the stage's stable name in report.json and run metrics */
    double acc, agree, ms;
    fwd_fn f;
    void *ctx;
} stage_t;

/* Accuracy on x/y [N] and agreement with ref predictions (NULL: this becomes the reference,
 * saved in pred). */
static int run_stage(stage_t *s, fwd_fn f, void *ctx, const float *x, const uint8_t *y, int N, size_t per,
                     int classes, int *pred, const int *ref, err_t *err)
{
    float *lg = malloc((size_t)64 * classes * sizeof *lg);
    if (!lg)
        return err_set(err, FN_ENOMEM, "out of memory");
    int right = 0, same = 0, rc = 0;
    for (int b0 = 0; b0 < N && rc == 0; b0 += 64) {
        int nb = N - b0 < 64 ? N - b0 : 64;
        if ((rc = f(ctx, x + (size_t)b0 * per, nb, lg, err)) < 0)
            break;
        for (int i = 0; i < nb; i++) {
            int k = argmax(lg + (size_t)i * classes, classes);
            right += k == y[b0 + i];
            if (ref)
                same += k == ref[b0 + i];
            else
                pred[b0 + i] = k;
        }
    }
    s->ms = INFINITY; /* until timed (never, with bench.iters 0) */
    s->acc = (double)right / N;
    s->agree = ref ? (double)same / N : 1.0;
    s->f = f;
    s->ctx = ctx;
    free(lg);
    return rc;
}

/* Process CPU time: on a shared, oversubscribed machine wall time mostly measures the wait for
 * a core; the CPU time the passes burn is what compression changes (all stages run on this
 * thread with OPENBLAS_NUM_THREADS=1 and FEDNAS_THREADS=1). */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* CPU milliseconds per batch of bb: the stages take turns (reps rounds of iters passes each) and
 * each keeps its best round, so a load change on a shared machine hits them alike. */
static int time_stages(stage_t *st, int ns, const float *x, int bb, int iters, int reps, int classes, err_t *err)
{
    float *lg = malloc((size_t)bb * classes * sizeof *lg);
    if (!lg)
        return err_set(err, FN_ENOMEM, "out of memory");
    for (int i = 0; i < ns; i++)
        st[i].ms = INFINITY;
    int rc = 0;
    for (int r = 0; r < reps && rc == 0; r++)
        for (int i = 0; i < ns && rc == 0; i++) {
            if ((rc = st[i].f(st[i].ctx, x, bb, lg, err)) < 0) /* warm-up: scratch buffers, caches */
                break;
            double t0 = cpu_now();
            for (int it = 0; it < iters && rc == 0; it++)
                rc = st[i].f(st[i].ctx, x, bb, lg, err);
            double ms = (cpu_now() - t0) * 1e3 / iters;
            if (ms < st[i].ms)
                st[i].ms = ms;
        }
    free(lg);
    return rc;
}

static int write_params(const char *path, const json_t *arch, const float *v, size_t n, const int sh[3], err_t *err)
{
    char *a = json_dumps(arch, JSON_COMPACT), shape[64];
    snprintf(shape, sizeof shape, "[%d,%d,%d]", sh[0], sh[1], sh[2]);
    engine_st_kv_t meta[2] = {{ENGINE_ST_META_ARCH, a ? a : "{}"}, {"fednas.input", shape}};
    int rc = engine_safetensors_save_vector(path, "params", v, n, meta, 2, err);
    free(a);
    return rc;
}

/* Prunes in R->prune_steps steps along the schedule; after each, fine-tunes the smaller model on
 * R->finetune_n training samples (SGD, momentum 0.9, batch 64, one pass) on the engine. */
static int prune_finetune(engine_infer_t **plan, const recipe_t *R, const engine_source_t *trs, const int sh[3],
                          int classes, err_t *err)
{
    int n = R->finetune_n < trs->count ? R->finetune_n : trs->count;
    int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (!idx)
        return err_set(err, FN_ENOMEM, "out of memory");
    int rc = 0;
    double prev = 0;
    for (int t = 1; t <= R->prune_steps && rc == 0; t++) {
        double s = engine_prune_schedule(R->schedule, R->sparsity, t, R->prune_steps);
        /* the schedule counts from the original widths; each step keeps a share of the current */
        if ((rc = engine_infer_prune(*plan, (1 - s) / (1 - prev), err)) < 0)
            break;
        prev = s;
        json_t *a = NULL;
        float *v = NULL;
        size_t nv = 0;
        engine_model_t *m = NULL;
        if ((rc = engine_infer_export(*plan, &a, &v, &nv, err)) < 0)
            break;
        if (n > 0 && (rc = engine_model_create_shape(a, sh[0], sh[1], sh[2], classes, &m, err)) == 0) {
            memcpy(engine_model_params(m), v, nv * sizeof *v);
            engine_train_config_t tc;
            engine_train_config_default(&tc);
            tc.batch_size = 64;
            tc.optim.lr = (float)R->prune_lr;
            tc.optim.momentum = 0.9f;
            tc.seed = 1000 + (uint64_t)t;
            for (int i = 0; i < n; i++) /* a different stretch of the training set each step */
                idx[i] = (int)(((long)(t - 1) * n + i) % trs->count);
            engine_train_stats_t ts;
            double t0 = now();
            if ((rc = engine_model_train_source(m, trs, idx, n, &tc, &ts, err)) == 0) {
                memcpy(v, engine_model_params(m), nv * sizeof *v);
                printf("prune step %d/%d: sparsity %.3f, %zu floats; fine-tuned on %d samples in %.1fs (train acc %.4f)\n",
                       t, R->prune_steps, s, nv, n, now() - t0, ts.accuracy);
            }
        }
        if (rc == 0) {
            engine_infer_t *np = NULL;
            /* folded again: the export spells the fused ReLU and pool out as layers */
            if ((rc = engine_infer_create(a, v, nv, sh[0], sh[1], sh[2], classes, &np, err)) == 0 &&
                (rc = engine_infer_fold(np, err)) == 0) {
                engine_infer_free(*plan);
                *plan = np;
            } else
                engine_infer_free(np);
        }
        engine_model_free(m);
        json_decref(a);
        free(v);
    }
    free(idx);
    return rc;
}

int cmd_compress(int argc, char **argv)
{
    static const struct option opts[] = {{"recipe", required_argument, 0, 'r'},
                                         {"out", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *recipe_path = NULL, *out_dir = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': recipe_path = optarg; break;
        case 'o': out_dir = optarg; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("compress", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("compress", "expected one MODEL file");
    if (!recipe_path || !out_dir)
        return cli_usage_error("compress", "--recipe and --out are required");
    err_t err = {0};
    char *text = NULL;
    json_t *rj = NULL;
    int rc = EXIT_OK;
    FILE *fp = fopen(recipe_path, "rb");
    if (!fp) {
        err_set(&err, FN_ENOTFOUND, "%s: cannot open the recipe", recipe_path);
        return cli_fail(&err);
    }
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    text = calloc((size_t)(len > 0 ? len : 0) + 1, 1);
    if (!text || (len > 0 && fread(text, 1, (size_t)len, fp) != (size_t)len)) {
        err_set(&err, FN_EIO, "%s: cannot read the recipe", recipe_path);
        rc = cli_fail(&err);
    }
    fclose(fp);
    json_error_t je;
    if (rc == EXIT_OK && !(rj = json_loads(text, 0, &je))) {
        err_set(&err, FN_EINVAL, "%s:%d:%d: %s", recipe_path, je.line, je.column, je.text);
        cli_fail(&err);
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_OK)
        rc = cli_compress_model(argv[optind], recipe_path, text, "", rj, out_dir, NULL);
    json_decref(rj);
    free(text);
    return rc;
}

int cli_compress_check(const char *src, const char *text, const char *at, const json_t *recipe, err_t *err)
{
    recipe_t R = {0};
    recipe_src_t rs = {src, text, at};
    int rc = parse_recipe(&rs, recipe, &R, err);
    cli_distill_free(&R.kd);
    return rc;
}

int cli_compress_model(const char *model_path, const char *recipe_path, const char *text, const char *at,
                       const json_t *rj, const char *out_dir, json_t **report)
{
    err_t err = {0};
    int rc = EXIT_OK;
    json_t *arch = NULL, *farch = NULL, *kdrep = NULL;
    float *vec = NULL, *fvec = NULL, *xte = NULL, *xcal = NULL;
    uint8_t *yte = NULL, *ycal = NULL;
    int *idx = NULL, *ref = NULL;
    engine_dataset_t te = {0}, tr = {0};
    engine_infer_t *plan = NULL, *plan0 = NULL, *pplan = NULL, *qplan = NULL;
    eng_ctx_t ec = {0}, ef = {0};
    size_t nv = 0, nf = 0;
    recipe_t R = {0};
    recipe_src_t rs = {recipe_path, text, at};
    if (report)
        *report = NULL;
    if (parse_recipe(&rs, rj, &R, &err) < 0) {
        rc = EXIT_USAGE;
        goto fail;
    }
    int sh[3] = {1, 28, 28};
    if (cli_read_model(model_path, &arch, &vec, &nv, sh, &err) < 0)
        goto fail;
    if (engine_fmnist_load(R.data_path, "test", &te, &err) < 0 || engine_fmnist_load(R.data_path, "train", &tr, &err) < 0)
        goto fail;
    engine_source_t tes = engine_source_from_dataset(&te), trs = engine_source_from_dataset(&tr);
    if (R.distill) { /* the student replaces the model for every later step */
        if (cli_distill_run(&R.kd, model_path, &trs, &tes, &arch, &vec, &nv, &kdrep, &err) < 0)
            goto fail;
        mkdir(out_dir, 0755);
        char kp[4096];
        snprintf(kp, sizeof kp, "%s/distill.json", out_dir);
        if (json_dump_file(kdrep, kp, JSON_INDENT(1)) < 0) {
            err_set(&err, FN_EIO, "%s: cannot write", kp);
            goto fail;
        }
    }
    int classes = tes.num_classes > trs.num_classes ? tes.num_classes : trs.num_classes;
    size_t per = (size_t)tes.channels * tes.height * tes.width;
    if (per != (size_t)sh[0] * sh[1] * sh[2]) {
        err_set(&err, FN_EINVAL, "%s: the model takes [%d,%d,%d], the data set has %zu values per sample", model_path,
                sh[0], sh[1], sh[2], per);
        goto fail;
    }
    int N = R.eval_n < tes.count ? R.eval_n : tes.count, NC = R.calib_n < trs.count ? R.calib_n : trs.count;
    int nidx = N > NC ? N : NC;
    idx = malloc((size_t)nidx * sizeof *idx);
    xte = malloc((size_t)N * per * sizeof *xte), yte = malloc((size_t)N);
    xcal = malloc((size_t)NC * per * sizeof *xcal), ycal = malloc((size_t)NC);
    ref = malloc((size_t)N * sizeof *ref);
    if (!idx || !xte || !yte || !xcal || !ycal || !ref) {
        err_set(&err, FN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < nidx; i++)
        idx[i] = i;
    engine_source_gather(&tes, idx, N, xte, yte);
    /* Calibration: evenly spread training samples (the first ones of an IDX file are in no
     * particular class order, but spreading costs nothing). */
    for (int i = 0; i < NC; i++)
        idx[i] = (int)((long)i * trs.count / NC);
    engine_source_gather(&trs, idx, NC, xcal, ycal);

    stage_t st[8];
    int ns = 0, bb = R.bench_batch, it = R.bench_iters;
    if (engine_net_create(arch, sh[0], sh[1], sh[2], classes, &ec.net, &err) < 0)
        goto fail;
    if (nv != engine_net_num_params(ec.net) + engine_net_num_buffers(ec.net)) {
        err_set(&err, FN_EINVAL, "%s: \"params\" has %zu floats, the architecture needs %zu", model_path, nv,
                engine_net_num_params(ec.net) + engine_net_num_buffers(ec.net));
        goto fail;
    }
    memcpy(engine_net_params(ec.net), vec, nv * sizeof *vec);
    ec.g = engine_graph_create((size_t)64 << 20, 1);
    engine_graph_set_grad(ec.g, 0);
    memcpy(ec.sh, sh, sizeof sh);
    ec.classes = classes;
    st[ns].name = "engine fp32 (original)", st[ns].key = "engine";
    if (run_stage(&st[ns++], eng_fwd, &ec, xte, yte, N, per, classes, ref, NULL, &err) < 0)
        goto fail;
    if (engine_infer_create(arch, vec, nv, sh[0], sh[1], sh[2], classes, &plan0, &err) < 0 ||
        engine_infer_create(arch, vec, nv, sh[0], sh[1], sh[2], classes, &plan, &err) < 0)
        goto fail;
    inf_ctx_t ic0 = {plan0, 0}, ic = {plan, 0}, icq = {plan, 1};
    st[ns].name = "runtime fp32 (unfolded)", st[ns].key = "unfolded";
    if (run_stage(&st[ns++], inf_fwd, &ic0, xte, yte, N, per, classes, NULL, ref, &err) < 0)
        goto fail;
    if (R.fold) {
        if (engine_infer_fold(plan, &err) < 0)
            goto fail;
        st[ns].name = "runtime fp32 folded+fused", st[ns].key = "folded";
        if (run_stage(&st[ns++], inf_fwd, &ic, xte, yte, N, per, classes, NULL, ref, &err) < 0)
            goto fail;
    }
    engine_infer_t *fin = plan; /* the plan written out and quantized */
    inf_ctx_t icp = {NULL, 0}, icqat = {NULL, 1};
    if (R.prune) {
        json_t *a = NULL;
        float *v = NULL;
        size_t n = 0;
        int prc = engine_infer_export(plan, &a, &v, &n, &err);
        if (prc == 0)
            prc = engine_infer_create(a, v, n, sh[0], sh[1], sh[2], classes, &pplan, &err);
        json_decref(a);
        free(v);
        if (prc < 0 || prune_finetune(&pplan, &R, &trs, sh, classes, &err) < 0)
            goto fail;
        static char pname[64];
        snprintf(pname, sizeof pname, "runtime fp32 pruned %.0f%%", R.sparsity * 100);
        st[ns].name = pname, st[ns].key = "pruned";
        icp.p = pplan;
        if (run_stage(&st[ns++], inf_fwd, &icp, xte, yte, N, per, classes, NULL, ref, &err) < 0)
            goto fail;
        fin = pplan;
        icq.p = pplan;
    }
    mkdir(out_dir, 0755);
    char path[4096];
    if (R.fold) { /* the folded model on the engine itself: what folding saves there */
        if (engine_infer_export(plan, &farch, &fvec, &nf, &err) < 0 ||
            engine_net_create(farch, sh[0], sh[1], sh[2], classes, &ef.net, &err) < 0)
            goto fail;
        memcpy(engine_net_params(ef.net), fvec, nf * sizeof *fvec);
        json_decref(farch);
        free(fvec);
        farch = NULL, fvec = NULL;
        ef.g = engine_graph_create((size_t)64 << 20, 1);
        engine_graph_set_grad(ef.g, 0);
        memcpy(ef.sh, sh, sizeof sh);
        ef.classes = classes;
        st[ns].name = "engine fp32 folded", st[ns].key = "engine_folded";
        if (run_stage(&st[ns++], eng_fwd, &ef, xte, yte, N, per, classes, NULL, ref, &err) < 0)
            goto fail;
    }
    if (engine_infer_export(fin, &farch, &fvec, &nf, &err) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/folded.safetensors", out_dir);
    if (write_params(path, farch, fvec, nf, sh, &err) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/arch.json", out_dir);
    if (json_dump_file(farch, path, JSON_INDENT(1)) < 0) {
        err_set(&err, FN_EIO, "%s: cannot write", path);
        goto fail;
    }
    if (R.quantize) {
        if (engine_infer_set_qgemm(fin, R.kernel, &err) < 0)
            goto fail;
        double t0 = now();
        if (engine_infer_quantize(fin, xcal, NC, R.calib, R.percentile, &err) < 0)
            goto fail;
        printf("calibrated on %d training samples in %.1fs\n", NC, now() - t0);
        static char qname[64];
        snprintf(qname, sizeof qname, "runtime int8 (%s)", engine_qgemm_name(R.kernel == ENGINE_QGEMM_AUTO
                                                                                 ? engine_qgemm_best() : R.kernel));
        st[ns].name = qname, st[ns].key = "int8";
        if (run_stage(&st[ns++], inf_fwd, &icq, xte, yte, N, per, classes, NULL, ref, &err) < 0)
            goto fail;
        snprintf(path, sizeof path, "%s/model.int8.safetensors", out_dir);
        if (engine_infer_save_int8(fin, path, &err) < 0)
            goto fail;
    }
    if (R.qat) { /* from the same plan PTQ started from */
        if (cli_qat_run(&R.qt, fin, &trs, sh, classes, &qplan, &err) < 0 ||
            engine_infer_set_qgemm(qplan, R.kernel, &err) < 0)
            goto fail;
        static char qatname[64];
        snprintf(qatname, sizeof qatname, "runtime int8 QAT (%s)",
                 engine_qgemm_name(R.kernel == ENGINE_QGEMM_AUTO ? engine_qgemm_best() : R.kernel));
        st[ns].name = qatname, st[ns].key = "qat_int8";
        icqat.p = qplan;
        if (run_stage(&st[ns++], inf_fwd, &icqat, xte, yte, N, per, classes, NULL, ref, &err) < 0)
            goto fail;
        snprintf(path, sizeof path, "%s/model.qat.int8.safetensors", out_dir);
        if (engine_infer_save_int8(qplan, path, &err) < 0)
            goto fail;
    }
    if (it > 0 && bb <= N && time_stages(st, ns, xte, bb, it, 3, classes, &err) < 0)
        goto fail;
    printf("%-28s %9s %9s %12s %8s   (%d test samples; batch %d, best of 3 turns of %d passes)\n", "stage",
           "accuracy", "agree", "cpu ms/batch", "speedup", N, bb, it);
    json_t *rep = json_array();
    for (int i = 0; i < ns; i++) {
        double sp = st[i].ms > 0 && isfinite(st[i].ms) ? st[0].ms / st[i].ms : 0;
        if (!isfinite(st[i].ms))
            st[i].ms = 0;
        printf("%-28s %9.4f %9.4f %12.2f %7.2fx\n", st[i].name, st[i].acc, st[i].agree, st[i].ms, sp);
        json_array_append_new(rep, json_pack("{s:s,s:s,s:f,s:f,s:f,s:f}", "stage", st[i].name, "key", st[i].key,
                                             "accuracy", st[i].acc, "agreement", st[i].agree, "ms_per_batch", st[i].ms,
                                             "speedup", sp));
    }
    snprintf(path, sizeof path, "%s/report.json", out_dir);
    if (json_dump_file(rep, path, JSON_INDENT(1)) < 0) {
        json_decref(rep);
        err_set(&err, FN_EIO, "%s: cannot write", path);
        goto fail;
    }
    if (report)
        *report = rep;
    else
        json_decref(rep);
    printf("wrote %s/{folded.safetensors,arch.json%s,report.json}\n", out_dir, R.quantize ? ",model.int8.safetensors" : "");
    if (R.qat)
        printf("wrote %s/model.qat.int8.safetensors\n", out_dir);
    goto done;
fail:
    rc = rc == EXIT_OK ? cli_fail(&err) : (cli_fail(&err), rc);
done:
    engine_infer_free(plan);
    engine_infer_free(plan0);
    engine_infer_free(pplan);
    engine_infer_free(qplan);
    engine_graph_free(ec.g);
    engine_net_free(ec.net);
    engine_graph_free(ef.g);
    engine_net_free(ef.net);
    engine_dataset_free(&te);
    engine_dataset_free(&tr);
    json_decref(arch), json_decref(farch), json_decref(kdrep);
    cli_distill_free(&R.kd);
    free(vec), free(fvec), free(xte), free(xcal), free(yte), free(ycal), free(idx), free(ref);
    return rc;
}
