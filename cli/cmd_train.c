/* `fednas train CONFIG`: centralized training of an experiment's model on its whole data set,
 * with a progress bar and per-epoch test accuracy: the baseline a federated run compares to.
 * Federated keys of the experiment (rounds, clients, server, ...) are ignored. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/jsonpos.h"
#include "common/rng.h"
#include "common/util.h"
#include "engine/data.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

static const char *const k_help =
    "Usage: fednas train CONFIG [--epochs N] [--save MODEL.safetensors] [--quiet]\n"
    "                    [--teacher MODEL.safetensors [--temperature 4] [--alpha 0.9]]\n"
    "\n"
    "Trains the experiment's model centrally on the whole training set and reports the test\n"
    "accuracy after every epoch: the baseline for a federated run.\n"
    "\n"
    "CONFIG is an experiment JSON. It reads \"seed\", \"model\" (see engine/nn.h), \"data\" and\n"
    "\"train\"; federated keys (rounds, clients, server, ...) are ignored.\n"
    "  data:  {\"dataset\":\"fashion-mnist\"|\"mnist\", \"path\":DIR}   IDX files in DIR\n"
    "         {\"dataset\":\"csv\", \"train\":FILE, \"test\":FILE}        features..., label per line\n"
    "  train: {\"epochs\":10, \"batch_size\":64, \"lr\":0.01,\n"
    "          \"optimizer\":{\"type\":\"sgd|rmsprop|adam|adamw\",\"momentum\":0.9,\"nesterov\":false,\n"
    "                       \"weight_decay\":0,\"betas\":[0.9,0.999],\"eps\":1e-8},\n"
    "          \"schedule\":{\"type\":\"constant|step|multistep|exponential|cosine|linear|polynomial|onecycle\",\n"
    "                      \"unit\":\"epoch|step\",\"warmup\":0,...},\n"
    "          \"clip_norm\":0, \"accumulate\":1, \"label_smoothing\":0, \"prefetch\":2,\n"
    "          \"augment\":{\"random_crop\":{\"padding\":4}, \"hflip\":true, \"random_erasing\":{\"p\":0.5},\n"
    "                     \"mosaic\":{\"p\":0.5}, \"mixup\":{\"alpha\":0.2}, \"cutmix\":{\"alpha\":1.0,\"p\":0.5}}}\n"
    "         With mosaic, MixUp or CutMix the labels become soft: the train loss is the soft-target\n"
    "         cross-entropy and train acc counts the dominant (argmax) label; test numbers always use\n"
    "         the true labels.\n"
    "\n"
    "  --epochs N  override train.epochs\n"
    "  --quiet     no progress bar, only the per-epoch lines\n"
    "  --save FILE write the trained model (\"params\": parameters + buffers, metadata fednas.arch\n"
    "              and fednas.input [c,h,w]): the input of `fednas compress`\n"
    "  --teacher FILE  knowledge distillation (Hinton et al. 2015) from a `--save` model trained on\n"
    "              the same data: the loss becomes alpha * T^2 * KL(softmax(teacher/T) ||\n"
    "              softmax(student/T)) + (1 - alpha) * cross-entropy; the teacher sees every\n"
    "              (augmented) batch the student trains on, run with batch norm folded\n"
    "  --temperature T  the distillation temperature, in (0, 1e4] (default 4)\n"
    "  --alpha A   the weight of the distillation term, in [0, 1] (default 0.9)\n"
    "  -h, --help  this help\n"
    "\n"
    "Threads: FEDNAS_THREADS sets the engine's pool (default: all cores), the only parallelism\n"
    "in training: each pool thread runs its own single-threaded OpenBLAS products, so\n"
    "OPENBLAS_NUM_THREADS changes neither speed nor results. Results are reproducible for a\n"
    "fixed FEDNAS_THREADS and seed.\n";

typedef struct {
    int quiet, tty, epochs;
    double t_epoch, last_draw;
} progress_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_time(double s, char *buf, size_t n)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void on_step(void *ctx, int epoch, int done, int total, double loss)
{
    progress_t *p = ctx;
    if (p->quiet || !p->tty)
        return;
    double t = now();
    if (done < total && t - p->last_draw < 0.2)
        return;
    p->last_draw = t;
    double el = t - p->t_epoch, rate = el > 0 ? done / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate + (double)(p->epochs - epoch - 1) * total / rate : -1;
    char bar[31], etas[32];
    int fill = (int)(30.0 * done / total);
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fmt_time(eta, etas, sizeof etas);
    fprintf(stderr, "\r epoch %d/%d [%s] %6d/%d  %6.0f samples/s  loss %.4f  ETA %s   ", epoch + 1, p->epochs, bar,
            done, total, rate, loss, etas);
    fflush(stderr);
}

typedef struct {
    progress_t pr;
    engine_model_t *m;
    const engine_source_t *test;
    double best;
    int failed;
    err_t err;
} run_ctx_t;

static void on_epoch(void *ctx, int epoch, const engine_train_stats_t *s)
{
    run_ctx_t *r = ctx;
    double tl = 0, ta = 0;
    if (engine_model_evaluate_source(r->m, r->test, NULL, 0, &tl, &ta, &r->err) < 0) {
        r->failed = 1;
        return;
    }
    if (ta > r->best)
        r->best = ta;
    if (r->pr.tty && !r->pr.quiet)
        fprintf(stderr, "\r%*s\r", 110, "");
    printf("epoch %2d/%d  train loss %.4f  train acc %.4f  test loss %.4f  test acc %.4f  lr %.3g  %.1fs  %.0f samples/s\n",
           epoch + 1, r->pr.epochs, s->loss, s->accuracy, tl, ta, s->lr, s->seconds,
           s->seconds > 0 ? s->samples / s->seconds : 0.0);
    fflush(stdout);
    r->pr.t_epoch = now();
}

static int str_key(const json_t *o, const char *key, const char **out, err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return err_set(err, FN_EINVAL, "data.%s: expected a string", key);
    *out = json_string_value(v);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"epochs", required_argument, 0, 'e'}, {"quiet", no_argument, 0, 'q'}, {"save", required_argument, 0, 's'},
        {"teacher", required_argument, 0, 't'}, {"temperature", required_argument, 0, 'T'},
        {"alpha", required_argument, 0, 'a'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, epochs_override = 0, quiet = 0;
    const char *save_path = NULL, *teacher_path = NULL;
    double kd_T = 4.0, kd_alpha = 0.9;
    int kd_flags = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            epochs_override = atoi(optarg);
            if (epochs_override < 1)
                return cli_usage_error("train", "--epochs needs an integer >= 1, not \"%s\"", optarg);
            break;
        case 'q': quiet = 1; break;
        case 's': save_path = optarg; break;
        case 't': teacher_path = optarg; break;
        case 'T':
        case 'a': {
            char *end = NULL;
            double v = strtod(optarg, &end);
            int ok = end && end != optarg && *end == 0 && (c == 'T' ? v > 0 && v <= 1e4 : v >= 0 && v <= 1);
            if (!ok)
                return cli_usage_error("train", c == 'T' ? "--temperature needs a number in (0, 1e4], not \"%s\""
                                                         : "--alpha needs a number in [0, 1], not \"%s\"", optarg);
            *(c == 'T' ? &kd_T : &kd_alpha) = v;
            kd_flags = 1;
            break;
        }
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("train", "unknown option");
        }
    }
    if (kd_flags && !teacher_path)
        return cli_usage_error("train", "--temperature and --alpha need --teacher");
    if (optind != argc - 1)
        return cli_usage_error("train", optind < argc ? "expected one CONFIG file, got more" : "missing the CONFIG file");
    const char *path = argv[optind];
    err_t err = {0};
    json_error_t je;
    char *text = NULL;
    size_t tlen = 0;
    if (fn_read_file(path, &text, &tlen, &err) < 0)
        return cli_fail(&err);
    json_t *cfg = json_loads(text, 0, &je);
    if (!cfg) {
        err_set(&err, FN_EINVAL, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        cli_fail(&err);
        free(text);
        return EXIT_USAGE;
    }
    static const char *const known[] = {"name", "description", "seed", "data", "model", "train", "compress", NULL};
    static const char *const ignored[] = {"rounds", "clients", "server", "strategy", "privacy", "secagg", "nas", "tune", NULL};
    const char *key;
    json_t *val;
    int rc = EXIT_OK;
    json_object_foreach(cfg, key, val) {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(key, known[i]) == 0;
        for (int i = 0; ignored[i]; i++)
            ok |= strcmp(key, ignored[i]) == 0;
        if (!ok) {
            err_set(&err, FN_EINVAL, "%s: unknown key \"%s\"", path, key);
            cli_fail(&err);
            json_decref(cfg);
            free(text);
            return EXIT_USAGE;
        }
    }
    engine_train_config_t tc;
    const json_t *train = json_object_get(cfg, "train"), *data = json_object_get(cfg, "data"),
                 *model = json_object_get(cfg, "model");
    if (!train || !data || !model) {
        err_set(&err, FN_EINVAL, "%s: needs \"data\", \"model\" and \"train\"", path);
        cli_fail(&err);
        json_decref(cfg);
        free(text);
        return EXIT_USAGE;
    }
    if (engine_train_config_from_json(train, &tc, &err) < 0) {
        err_wrap(&err, "%s: ", path);
        cli_fail(&err);
        json_decref(cfg);
        free(text);
        return EXIT_USAGE;
    }
    /* "compress": a compress recipe (without "data": the experiment's) plus "out": DIR, run on
     * the trained model; checked now, before any training */
    cli_compress_block_t cblock;
    if (cli_compress_block_parse(path, text, cfg, 1, &cblock, &err) < 0) {
        cli_fail(&err);
        json_decref(cfg);
        free(text);
        return EXIT_USAGE;
    }
    const json_t *seed = json_object_get(cfg, "seed");
    if (json_is_integer(seed) && !json_object_get(train, "seed"))
        tc.seed = (uint64_t)json_integer_value(seed);
    if (epochs_override)
        tc.epochs = epochs_override;

    engine_dataset_t tr_idx = {0}, te_idx = {0};
    engine_table_t tr_tab = {0}, te_tab = {0};
    engine_source_t trs, tes;
    engine_model_t *m = NULL;
    cli_teacher_t *teacher = NULL;
    const char *ds = NULL;
    if (!json_is_object(data) || str_key(data, "dataset", &ds, &err) < 0) {
        if (!ds)
            err_set(&err, FN_EINVAL, "%s: data.dataset: expected \"fashion-mnist\", \"mnist\" or \"csv\"", path);
        rc = EXIT_USAGE;
        goto fail;
    }
    double t_load = now();
    if (strcmp(ds, "csv") == 0) {
        const char *a, *b;
        if (str_key(data, "train", &a, &err) < 0 || str_key(data, "test", &b, &err) < 0) {
            rc = EXIT_USAGE;
            goto fail;
        }
        if (engine_csv_load(a, &tr_tab, &err) < 0 || engine_csv_load(b, &te_tab, &err) < 0)
            goto fail;
        if (tr_tab.dim != te_tab.dim) {
            err_set(&err, FN_EINVAL, "%s has %d features but %s has %d", a, tr_tab.dim, b, te_tab.dim);
            goto fail;
        }
        trs = engine_source_from_table(&tr_tab);
        tes = engine_source_from_table(&te_tab);
    } else if (strcmp(ds, "fashion-mnist") == 0 || strcmp(ds, "mnist") == 0) {
        const char *dir = ENGINE_FMNIST_DEFAULT_DIR;
        if (json_object_get(data, "path") && str_key(data, "path", &dir, &err) < 0) {
            rc = EXIT_USAGE;
            goto fail;
        }
        if (engine_fmnist_load(dir, "train", &tr_idx, &err) < 0 || engine_fmnist_load(dir, "test", &te_idx, &err) < 0)
            goto fail;
        trs = engine_source_from_dataset(&tr_idx);
        tes = engine_source_from_dataset(&te_idx);
    } else {
        err_set(&err, FN_EINVAL, "%s: data.dataset: unknown \"%s\"; expected \"fashion-mnist\", \"mnist\" or \"csv\"",
                path, ds);
        rc = EXIT_USAGE;
        goto fail;
    }
    int classes = trs.num_classes > tes.num_classes ? trs.num_classes : tes.num_classes;
    if (engine_model_create_shape(model, trs.channels, trs.height, trs.width, classes, &m, &err) < 0) {
        err_wrap(&err, "%s: ", path);
        rc = EXIT_USAGE;
        goto fail;
    }
    engine_model_init(m, tc.seed);
    printf("fednas train: %s: %d training and %d test samples (%dx%dx%d, %d classes), loaded in %.1fs\n", path, trs.count,
           tes.count, trs.channels, trs.height, trs.width, classes, now() - t_load);
    printf("model %s: %zu parameters, %.1f MFLOP per sample forward; %s lr %g, batch %d, %d epochs, schedule %s\n",
           json_string_value(json_object_get(model, "type")), engine_model_num_params(m),
           engine_net_flops_per_sample(engine_model_net(m)) / 1e6, engine_optim_type_name(tc.optim.type),
           (double)tc.optim.lr, tc.batch_size, tc.epochs, engine_schedule_type_name(tc.schedule.type));
    if (teacher_path) {
        double tacc = 0;
        if (cli_teacher_open(teacher_path, trs.channels, trs.height, trs.width, classes, (size_t)trs.count, &teacher, &err) < 0 ||
            cli_teacher_accuracy(teacher, &tes, &tacc, &err) < 0)
            goto fail;
        tc.teacher = cli_teacher_logits;
        tc.teacher_ctx = teacher;
        tc.distill_T = (float)kd_T;
        tc.distill_alpha = (float)kd_alpha;
        printf("distillation: teacher %s, %zu parameters (%.1fx the student's), test accuracy %.4f; T %g, alpha %g\n",
               teacher_path, cli_teacher_num_params(teacher),
               (double)cli_teacher_num_params(teacher) / (double)engine_model_num_params(m), tacc, kd_T, kd_alpha);
    }
    const json_t *aug = json_object_get(train, "augment");
    if (aug) {
        char *atext = json_dumps(aug, JSON_COMPACT | JSON_REAL_PRECISION(6));
        printf("augment %s%s\n", atext ? atext : "?",
               engine_augment_mixes_labels(&tc.aug) ? " (soft labels: train loss/acc are against the mixed targets)" : "");
        free(atext);
    }
    fflush(stdout);

    run_ctx_t r = {.pr = {.quiet = quiet, .tty = isatty(2), .epochs = tc.epochs, .t_epoch = now()}, .m = m, .test = &tes};
    tc.on_step = on_step;
    tc.on_epoch = on_epoch;
    tc.cb_ctx = &r;
    engine_train_stats_t st;
    double t0 = now();
    if (engine_model_train_source(m, &trs, NULL, 0, &tc, &st, &err) < 0)
        goto fail;
    if (r.failed) {
        err = r.err;
        goto fail;
    }
    double total = now() - t0, tl, ta;
    if (engine_model_evaluate_source(m, &tes, NULL, 0, &tl, &ta, &err) < 0)
        goto fail;
    engine_model_memory_t mem;
    engine_model_memory(m, &mem);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("done: test accuracy %.4f (best %.4f), test loss %.4f, %.1fs training (%.0f samples/s)\n", ta, r.best, tl,
           total, st.samples / total);
    printf("memory: parameters %.1f MB, gradients %.1f MB, optimizer %.1f MB, activations peak %.1f MB, conv scratch "
           "%.1f MB, batches %.1f MB; peak RSS %.1f MB\n",
           mem.params / 1e6, mem.grads / 1e6, mem.optimizer / 1e6, mem.activations_peak / 1e6, mem.scratch_peak / 1e6,
           mem.batches / 1e6, ru.ru_maxrss / 1024.0);
    if (teacher) {
        size_t hits = 0, misses = 0;
        cli_teacher_memo_stats(teacher, &hits, &misses);
        printf("distillation: the teacher ran on %zu samples; %zu more came from its memo of logits\n", misses, hits);
    }
    if (save_path) {
        char *arch = json_dumps(engine_model_arch(m), JSON_COMPACT), shape[64];
        snprintf(shape, sizeof shape, "[%d,%d,%d]", trs.channels, trs.height, trs.width);
        engine_st_kv_t meta[2] = {{ENGINE_ST_META_ARCH, arch ? arch : "{}"}, {"fednas.input", shape}};
        int src = engine_safetensors_save_vector(save_path, "params", engine_model_params(m),
                                                 engine_model_num_federated(m), meta, 2, &err);
        free(arch);
        if (src < 0)
            goto fail;
        printf("saved %s\n", save_path);
    }
    if (cblock.recipe) {
        int sh[3] = {trs.channels, trs.height, trs.width};
        rc = cli_compress_block_run(&cblock, path, text, engine_model_arch(m), engine_model_params(m),
                                    engine_model_num_federated(m), sh, cblock.out, NULL);
    }
    goto done;
fail:
    if (rc == EXIT_OK)
        rc = cli_fail(&err);
    else
        cli_fail(&err);
done:
    cli_teacher_free(teacher);
    engine_model_free(m);
    engine_dataset_free(&tr_idx);
    engine_dataset_free(&te_idx);
    engine_table_free(&tr_tab);
    engine_table_free(&te_tab);
    cli_compress_block_free(&cblock);
    json_decref(cfg);
    free(text);
    return rc;
}
