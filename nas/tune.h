/* tune: hyperparameter tuning of an experiment's training recipe with the NAS machinery: a
 * search space over the "train" block (learning rate, batch size, accumulation, optimizer,
 * momentum, weight decay, schedule and warmup, label smoothing), random or evolutionary
 * sampling, ASHA early stopping over epochs, trials evaluated by the NAS workers (nas/worker.h)
 * on the search's train/validation split and stored as NAS candidates (recipe JSON as genome).
 *
 * Choices of ours (Optuna / Ray Tune users will recognise them):
 *  - a trial is one sampled recipe; with ASHA it is first trained for the lowest rung's epochs,
 *    and promoted (retrained from scratch: nothing is checkpointed) to eta times more epochs
 *    when it is in the top 1/eta of the trials finished at its rung; the top rung is the
 *    experiment's own train.epochs;
 *  - floats are rounded to 4 significant digits when sampled, so the recipe JSON and its hash
 *    are canonical and a repeated recipe is served from the cache;
 *  - the search is the NAS controller's loop (nas/controller.h): results are told in an order
 *    fixed by the asks and their epochs (not by the workers' timing), so a search is a pure
 *    function of its seed and settings and a killed one resumes by replay, while a long ASHA
 *    evaluation does not hold up the short ones behind it. */
#ifndef FEDNAS_NAS_TUNE_H
#define FEDNAS_NAS_TUNE_H

#include <jansson.h>
#include <signal.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "nas/controller.h"
#include "nas/eval.h"

typedef enum {
    NAS_TUNE_P_LR = 0,
    NAS_TUNE_P_BATCH_SIZE,
    NAS_TUNE_P_ACCUMULATE,
    NAS_TUNE_P_OPTIMIZER,
    NAS_TUNE_P_MOMENTUM,
    NAS_TUNE_P_NESTEROV,
    NAS_TUNE_P_WEIGHT_DECAY,
    NAS_TUNE_P_SCHEDULE,
    NAS_TUNE_P_WARMUP,
    NAS_TUNE_P_LABEL_SMOOTHING,
    NAS_TUNE_NPARAMS
} nas_tune_param_t;

#define NAS_TUNE_MAX_CHOICES 16
#define NAS_TUNE_MAX_RUNGS 8

typedef enum { NAS_TUNE_DOM_FIXED = 0, NAS_TUNE_DOM_CHOICE, NAS_TUNE_DOM_UNIFORM, NAS_TUNE_DOM_LOG_UNIFORM } nas_tune_dom_kind_t;

/* One parameter's domain; optimizer and schedule values are engine enum values, booleans 0/1. */
typedef struct nas_tune_dom {
    nas_tune_dom_kind_t kind;
    int n;
    double choice[NAS_TUNE_MAX_CHOICES]; /* FIXED: choice[0] */
    double lo, hi;
} nas_tune_dom_t;

typedef enum { NAS_TUNE_SAMPLER_RANDOM = 0, NAS_TUNE_SAMPLER_EVOLUTION = 1 } nas_tune_sampler_t;

typedef struct nas_tune_config {
    nas_tune_dom_t space[NAS_TUNE_NPARAMS];
    nas_tune_sampler_t sampler;
    int population, sample; /* evolution: population P, tournament size S */
    int asha;               /* 1: ASHA early stopping over epochs */
    int eta;
    double min_epochs;
    int nrungs;
    double rungs[NAS_TUNE_MAX_RUNGS]; /* epochs of each rung; the last is max_epochs */
    double max_epochs;            /* the experiment's train.epochs */
    int trials, workers, retries;
    uint64_t seed;
    int enqueue_default; /* 1: trial 0 is the experiment's own recipe */
    int baseline;        /* 1: the experiment's own recipe is retrained beside the best (report) */
} nas_tune_config_t;

/* One recipe: a value per parameter; NAN for a parameter that does not apply (momentum under
 * Adam, nesterov outside SGD). */
typedef struct nas_tune_recipe {
    double v[NAS_TUNE_NPARAMS];
} nas_tune_recipe_t;

/* Parses the "tune" block (NULL: all defaults) of an experiment whose parsed train block is
 * base_train (the defaults derive from it). source/text/prefix locate errors as
 * "FILE:LINE:COL: tune.space.lr: message"; unknown keys are errors. */
int nas_tune_config_parse(const json_t *block, const json_t *base_train, const char *source, const char *text,
                      const char *prefix, uint64_t default_seed, nas_tune_config_t *out, err_t *err);
/* The ASHA rungs (or the one full budget) from max_epochs, eta and min_epochs; called by the
 * parser, again after an override of max_epochs. */
int nas_tune_config_rungs(nas_tune_config_t *c, err_t *err);
const char *nas_tune_param_name(nas_tune_param_t p);
/* "random+asha", "evolution", ... */
void nas_tune_config_describe(const nas_tune_config_t *c, char *buf, size_t n);

/* The recipe of base_train (the experiment's own), in the space's terms. */
void nas_tune_recipe_from_train(const json_t *base_train, nas_tune_recipe_t *r);
/* Canonical recipe JSON {"lr":0.0123,"batch_size":64,...} (the genome) and its sha256 hex. */
json_t *nas_tune_recipe_json(const nas_tune_recipe_t *r);
int nas_tune_recipe_parse(const json_t *j, nas_tune_recipe_t *r, err_t *err);
void nas_tune_recipe_hash(const nas_tune_recipe_t *r, char out[65]);
/* base_train with the recipe applied: a complete "train" block for engine_train_config_from_json
 * and for best.json. */
json_t *nas_tune_recipe_train(const nas_tune_recipe_t *r, const json_t *base_train, double epochs);
/* A short text: "lr 0.0123 bs 64 sgd m0.9 wd 1e-4 cosine w1". */
void nas_tune_recipe_describe(const nas_tune_recipe_t *r, char *buf, size_t n);

/* ---- the sampler + early stopping (ask / tell, deterministic in its seed) ----------------- */
typedef struct nas_tune_strategy nas_tune_strategy_t;

typedef struct nas_tune_proposal {
    int trial;   /* trial number (an ASHA promotion repeats it) */
    int rung;
    double epochs;
    nas_tune_recipe_t recipe;
    char hash[65];
    int parent;  /* evolution: the parent's trial; -1 */
    char mutation[64];
} nas_tune_proposal_t;

#define NAS_TUNE_ASK_WAIT 1 /* nothing to propose until an outstanding result is told */
#define NAS_TUNE_ASK_DONE 2 /* every trial is sampled and nothing is left to promote */

int nas_tune_strategy_create(const nas_tune_config_t *c, const nas_tune_recipe_t *base, nas_tune_strategy_t **out, err_t *err);
void nas_tune_strategy_free(nas_tune_strategy_t *s);
int nas_tune_strategy_ask(nas_tune_strategy_t *s, nas_tune_proposal_t *p, err_t *err);
/* ok 0: the evaluation failed (it is never promoted nor a parent). */
int nas_tune_strategy_tell(nas_tune_strategy_t *s, const nas_tune_proposal_t *p, int ok, double val_acc, err_t *err);
/* The sampler of c behind the controller's interface (nas/controller.h): a proposal's genome is
 * its recipe JSON, its model `arch` (the experiment's, as JSON text), its job recipe the train
 * block base_train with the recipe applied (train.epochs c->max_epochs; the job's epochs say how
 * many are run). base_train and arch must outlive it. */
int nas_tune_strategy_ctl(const nas_tune_config_t *c, const json_t *base_train, const char *arch,
                          nas_ctl_strategy_t *out, err_t *err);

/* ---- the search ------------------------------------------------------------------------- */
typedef struct nas_tune_search {
    const nas_tune_config_t *cfg;
    const nas_data_t *data;
    const json_t *base_train; /* the experiment's train block */
    const char *arch;         /* the experiment's model block, as JSON text */
    nas_eval_opts_t eval;     /* the base recipe for the workers (each job carries its own) */
    int threads;
    store_t *store;
    int64_t run_id;
    /* Called (may be NULL) when a trial's evaluation is told (p: told so far and the best
     * validation accuracy), and when rank 1 (the best recipe) or 2 (the experiment's own) has
     * been retrained (recipe: its train block). */
    void (*on_trial)(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p);
    void (*on_final)(void *ctx, const store_nas_final_t *f, const char *recipe);
    void *cb_ctx;
    volatile sig_atomic_t *stop;
} nas_tune_search_t;

/* Runs (or resumes: stored rows are replayed) the search, then retrains on all the training
 * data and tests: rank 1 the best recipe, rank 2 the experiment's own (cfg->baseline). Rank
 * rows are stored in nas_final with the recipe's train block as "recipe". *best_seq: the best
 * evaluation's seq (-1 when none succeeded). FN_ESTATE when *stop interrupted it. */
int nas_tune_search_run(nas_tune_search_t *s, int64_t *best_seq, err_t *err);

#endif
