/* cli: the `fednas` command. Each sub-command is one file with a `cmd_NAME(argc, argv)` entry
 * (argv[0] is the sub-command) that parses its arguments and calls the modules; serve.c holds
 * what `run` and `server` share: the run store, the run's keys, the dashboard and the summary;
 * kit.c what `client` and `relay` share: reading a site's startup kit. */
#ifndef FEDNAS_CLI_CLI_H
#define FEDNAS_CLI_CLI_H

#include <signal.h>

#include "common/config.h"
#include "common/err.h"
#include "engine/model.h"

/* Exit statuses, documented in `fednas --help`. */
enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,      /* the run or command failed */
    EXIT_USAGE = 2,       /* bad arguments or an invalid experiment file */
    EXIT_REFUSED = 3,     /* the server refused this site's key */
    EXIT_UNREACHABLE = 4, /* the server could not be reached */
};

int cmd_run(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_relay(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_dashboard(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_privacy(int argc, char **argv);
int cmd_nas(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tune(int argc, char **argv);

/* MODEL for `profile` and `serve` (cli/model_spec.c): a .safetensors model file, an
 * architecture (or experiment) JSON file, or a built-in architecture name ("cnn"); inputs
 * 1x28x28, 10 classes. Architectures without a file get the deterministic init (seed 1). */
struct engine_model;
int cli_load_model(const char *spec, struct engine_model **out, err_t *err);
/* 1 when spec is a quantized model file (`fednas compress`'s model.int8.safetensors: metadata
 * fednas.quant "int8"). cli_load_model reads one as the fp32 model of its int8 weights times
 * their scales; `serve` runs its int8 plans. */
int cli_model_is_int8(const char *spec);

/* Knowledge distillation (cli/distill.c). cli_read_model reads a `train --save` file: its
 * architecture, "params" vector (parameters + buffers) and input shape (fednas.input; shape is
 * left as it is when absent). A teacher is such a model run on the inference runtime with batch
 * norm folded; cli_teacher_logits is an engine_train_config_t.teacher callback (ctx: the
 * teacher). Errors name the file and what to fix. */
typedef struct cli_teacher cli_teacher_t;
struct engine_source;
int cli_read_model(const char *path, json_t **arch, float **vec, size_t *n, int shape[3], err_t *err);
/* memo: samples whose logits are kept (e.g. the training set's size; 0: none): a sample seen
 * again (the same pixels, as in every unaugmented epoch) costs a hash, not a forward pass. */
int cli_teacher_open(const char *path, int c, int h, int w, int classes, size_t memo, cli_teacher_t **out, err_t *err);
void cli_teacher_memo_stats(const cli_teacher_t *t, size_t *hits, size_t *misses);
int cli_teacher_logits(void *ctx, const float *x, int n, float *logits, err_t *err);
size_t cli_teacher_num_params(const cli_teacher_t *t);
/* Test accuracy of the teacher over all of src. */
int cli_teacher_accuracy(cli_teacher_t *t, const struct engine_source *src, double *acc, err_t *err);
void cli_teacher_free(cli_teacher_t *t);

/* The compress recipe's "distill" step: {"student": ARCH, "train": a train block (engine/model.h),
 * "temperature": 4, "alpha": 0.9, "train_samples": N (absent: all), "seed": 1, "baseline": true}.
 * cli_distill_parse checks the block at path AT of text (errors name src:line:col and the key
 * path, AT.*);
 * cli_distill_run trains the student from its seed with the teacher at teacher_path (and, with
 * baseline, the same student alone with the same recipe and seed first), then replaces
 * *arch, *vec, *n with the distilled student and sets *report (teacher and student parameters
 * and test accuracies, the recipe). */
typedef struct cli_distill {
    json_t *student;
    engine_train_config_t tc;
    float T, alpha;
    int samples, baseline;
    uint64_t seed;
} cli_distill_t;
int cli_distill_parse(const char *src, const char *text, const char *at, const json_t *d, cli_distill_t *out, err_t *err);
int cli_distill_run(const cli_distill_t *d, const char *teacher_path, const struct engine_source *trs,
                    const struct engine_source *tes, json_t **arch, float **vec, size_t *n, json_t **report, err_t *err);
void cli_distill_free(cli_distill_t *d);
/* "AT.KEY" (just KEY when AT is empty) into buf. */
const char *cli_key_path(char *buf, size_t n, const char *at, const char *key);
/* A recipe step's "train" block (NULL: the defaults) into tc; errors at src:line:col of
 * PREFIX.train.KEY. */
int cli_train_block(const char *src, const char *text, const char *prefix, const json_t *tr, engine_train_config_t *tc,
                    err_t *err);

/* A compress recipe (cli/cmd_compress.c) at path AT of text (src names the file in errors):
 * cli_compress_check validates it (FN_EINVAL naming src:line:col and AT.KEY);
 * cli_compress_model runs it on a model file, writing into out_dir; returns an exit status.
 * report (may be NULL) gets the stages (as DIR/report.json: stage, key, accuracy, agreement,
 * ms_per_batch, speedup), or NULL when the recipe failed. */
int cli_compress_check(const char *src, const char *text, const char *at, const json_t *recipe, err_t *err);
int cli_compress_model(const char *model_path, const char *src, const char *text, const char *at, const json_t *recipe,
                       const char *out_dir, json_t **report);

/* An experiment's "compress" block (cli/compress_block.c), the one implementation behind
 * `fednas train` and `fednas run` / `fednas server`: the block of cfg (an experiment) checked
 * with its positions in text (need_out: "out" is required), made into a recipe with the
 * experiment's data; b->recipe stays NULL when there is no block. cli_compress_block_run saves
 * the model (arch, vec of n floats, input sh) as out_dir/model.safetensors and runs the recipe
 * there; returns an exit status (report as cli_compress_model). */
typedef struct cli_compress_block {
    json_t *recipe;
    const char *out; /* the block's "out" (points into cfg), NULL when absent */
} cli_compress_block_t;
int cli_compress_block_parse(const char *src, const char *text, const json_t *cfg, int need_out,
                             cli_compress_block_t *b, err_t *err);
int cli_compress_block_run(const cli_compress_block_t *b, const char *src, const char *text, const json_t *arch,
                           const float *vec, size_t n, const int sh[3], const char *out_dir, json_t **report);
void cli_compress_block_free(cli_compress_block_t *b);

/* The compress recipe's "qat" step (cli/qat.c): {"train": a train block, "train_samples": 6000,
 * "observer_momentum": 0.01}. cli_qat_run fine-tunes the plan's model with quantization-aware
 * training (engine/qat.h) and returns a new plan quantized with the tracked ranges. */
typedef struct cli_qat {
    engine_train_config_t tc;
    int samples;
    double momentum;
} cli_qat_t;
struct engine_infer;
int cli_qat_parse(const char *src, const char *text, const char *at, const json_t *q, cli_qat_t *out, err_t *err);
int cli_qat_run(const cli_qat_t *q, const struct engine_infer *from, const struct engine_source *trs, const int sh[3],
                int classes, struct engine_infer **out, err_t *err);

/* Prints "fednas: error: MESSAGE" and returns the exit status for the error code. */
int cli_fail(const err_t *err);
/* Prints "fednas CMD: MESSAGE" and a hint to use --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A count of seconds: a number > 0 and at most 1e7 that takes the whole argument (0, or -1 when
 * it is not one). */
int cli_parse_seconds(const char *s, double *out);
/* An integer in [lo, hi] that takes the whole argument (0, or -1 when it is not one). */
int cli_parse_int(const char *s, int lo, int hi, int *out);

/* A site's startup kit (`fednas keys site`), for `client` and `relay`: fills what the command
 * line left NULL (the server's address from DIR/client.json, DIR/site.key, DIR/server.pub) and
 * tags the log lines with the kit's name. EXIT_OK, or a usage error's status for a kit that
 * names no address when none was given. */
int cli_use_kit(const char *cmd, const char *kit, const char **endpoint, const char **key_path,
                const char **server_key);

/* SIGINT/SIGTERM set this; the server and client loops watch it. */
extern volatile sig_atomic_t cli_stop;
void cli_install_signals(void);

typedef struct serve_options {
    const char *config_path; /* NULL when resuming: the experiment comes from the store */
    long long resume_run;    /* > 0: continue this run from its last committed round */
    const char *db_path;
    const char *bind;     /* ZeroMQ endpoint */
    const char *keys_dir; /* NULL: make fresh keys for every site in the run directory */
    int http_port;        /* -1: no dashboard */
    const char *http_host;
    /* Called once the server listens, before registration (fednas run starts its clients here). */
    int (*on_listening)(void *ctx, const config_t *cfg, const char *endpoint, const char *keys_dir, err_t *err);
    /* Called once the run has ended and its summary is out (fednas run reaps its clients here). */
    void (*on_ended)(void *ctx);
    void *ctx;
    /* Keep the dashboard serving after the run ends, until SIGINT/SIGTERM, and say so in the
     * last line; otherwise the last line is the `fednas dashboard` command. */
    int keep_dashboard;
} serve_options_t;

/* Loads the experiment, records the run, serves it to completion and prints the summary.
 * Returns an exit status. */
int cli_serve(const serve_options_t *o);
/* `fednas run` under mpirun / srun (cli/run_mpi.c): *handled 0 when not launched as several ranks
 * (the caller runs as usual); else rank 0 serves so and ranks > 0 simulate the sites. */
int cli_run_mpi(serve_options_t *so, int bind_given, int *handled);

#endif
