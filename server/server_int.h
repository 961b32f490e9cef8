/* server_int: the aggregation server's insides, shared by the files that each keep one of its
 * concerns (not a public header: server/server.h is). The state is grouped by concern:
 *   server.c          the round state machine (registration, then per round: open, collect,
 *                     aggregate, evaluate, commit) and the message dispatch
 *   server_check.c    what the experiment asks of the server, checked before anything starts
 *   server_collect.c  the model broadcast, the draw of sites, plain updates and their aggregate
 *   server_dp.c       differential privacy: setup, per-round accounting, replay on resume
 *   server_secagg.c   secure aggregation: the four phases and an aborted round's retry
 *   server_eval.c     the server's test set and federated evaluation on the sites
 *   server_record.c   checkpoints, per-round metrics and the progress line
 *   server_nas.c      a federated search's round: candidates, deal, paths out, per-parameter
 *                     aggregation (plain, secure, central DP); server_nas_store.c: scoring,
 *                     the NAS tables, checkpoint and resume
 * A new kind of round (federated NAS) adds its own file and sub-struct; DP and secure
 * aggregation are reached only through the functions below. */
#ifndef FEDNAS_SERVER_SERVER_INT_H
#define FEDNAS_SERVER_SERVER_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/compress.h"
#include "crypto/dp.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "nas/config.h"
#include "nas/fedsuper.h"
#include "nas/strategy.h"
#include "server/fedavg.h"
#include "server/secagg_round.h"
#include "server/server.h"
#include "server/sites.h"
#include "server/strategy.h"

/* The model a round broadcasts: one copy shared by every "train" message, freed when ZeroMQ has
 * sent the last of them (the I/O thread drops references), so sending costs no copy per site. */
typedef struct broadcast {
    atomic_int refs;
    float data[];
} broadcast_t;

/* Robust strategies keep each site's update, by the site's index in the registry. */
typedef struct kept_update {
    float *update;
    double weight;
} kept_update_t;

/* The model, the vector the round aggregates into, and the server's own test set. */
typedef struct server_model {
    engine_model_t *model;
    float *params;
    size_t m;           /* federated values: parameters, then batch-norm statistics */
    float *mean;        /* the round's aggregate (or, under secure aggregation, the decoded sum) */
    broadcast_t *bcast; /* this round's model, while messages may still hold it */
    int input_dim, classes;
    engine_dataset_t test;     /* the IDX test split */
    engine_table_t test_table; /* or a CSV one (tabular data) */
    engine_source_t test_src;  /* whichever it is; evaluated only when has_test */
    int has_test;
} server_model_t;

/* Updates as they arrive and the strategy that applies them. */
typedef struct server_collect {
    fedavg_t agg;
    strategy_config_t scfg;
    strategy_t *strategy;
    kept_update_t *kept; /* robust strategies: each site's update, by registry index */
    int nkept;
    compress_spec_t cspec; /* a compressed uplink is decoded into `decoded` first */
    float *decoded, *cscratch;
} server_collect_t;

/* Differential privacy (user-level DP-FedAvg): central noise, or with secure aggregation
 * distributed noise the sites add (crypto/dp.h DDGauss). */
typedef struct server_dp {
    double z;          /* noise multiplier the run is accounted with */
    double z_updates;  /* the one applied to the updates (lower when adaptive clipping spends some) */
    double q;          /* sampling rate: expected cohort / clients */
    double q_round;    /* this round's: higher when fewer sites are connected */
    double expected;   /* expected cohort size, the fixed denominator */
    dp_accountant_t acct;
    dp_adaptive_clip_t clip;
    float *scratch;    /* a clipped copy of an incoming update */
    long long below;   /* updates whose norm was <= C this round (adaptive clipping) */
    int budget_reached; /* the next round would exceed the privacy budget */
    /* The round's multiplier accounted, the participant count distributed noise assumed, and
     * the multiplier the committed sum actually carries. */
    double z_round;
    uint32_t ddp_assumed;
    double ddp_z_summed;
    /* Distributed DP: this round's sums the server asked the sites to unmask (each is charged
     * when asked for and recorded as "dp_releases", so a retried, stopped or crashed round is
     * never a free look at a noised sum). */
    int releases, releases_round;
    double epsilon;   /* after the last committed round */
    double clip_used; /* the clip of the last committed round (adaptive clipping moves it after) */
} server_dp_t;

/* Secure aggregation: the round's driver, the attempt of this round (an aborted round is run
 * again with fresh keys), and what the finished phases took. */
typedef struct server_sa {
    secagg_round_t *round;
    int attempt;
    double phase_s[4];
    uint32_t summed;
    double clip; /* the L2 bound each site clips its input to */
    /* Sites left out of this round's later attempts by the dispute-pair rule (secagg_round.h:
     * accusations), cleared when the round ends; and the n whose parameters were last logged. */
    uint32_t *excluded, n_excluded, cap_excluded;
    uint32_t logged_n;
    /* Distributed DP: this attempt's sum was charged (1), or charging it failed (-1, with
     * charge_err) and no unmask request went out. Reset as each masked phase closes. */
    int charge;
    err_t charge_err;
} server_sa_t;

/* The round in progress: its number, what it has seen, how long each phase took. */
typedef struct server_round {
    int round; /* last round completed (or, during a round, the current one) */
    int in_round;
    int selected, dropped;
    double t0;
    double train_loss_sum, train_acc_sum, train_weight;
    long long bytes_up, bytes_down;
    /* Seconds spent collecting updates (training, or the secure-aggregation phases),
     * aggregating (and noising), and evaluating on the server's test set. */
    double phase_s[3];
} server_round_t;

/* Federated evaluation after the current round: answers summed, weighted by samples. */
typedef struct server_eval {
    int in_eval;
    double loss_sum, acc_sum, samples;
    int answers;
} server_eval_t;

struct server {
    server_options_t opt;
    const config_t *cfg;
    sites_t *sites; /* the connected sites and the ROUTER socket they reach us on */
    /* Random per server process, in every train message: a site that gets the same (instance,
     * run, round) twice (a copy re-sent after a reconnect) trains once, while a resumed server,
     * a new instance, gets fresh updates for the round it repeats. */
    int64_t instance;
    server_model_t mod;
    server_collect_t col;
    server_dp_t dp;
    server_sa_t sa;
    server_round_t rnd;
    server_eval_t ev;
    struct server_nas *nas; /* a federated search (server_nas.c), or NULL */
};

/* run_round's answer when secure aggregation aborted the round: nothing was committed and the
 * round runs again (fresh keys, a new round id, the sites still connected), at most
 * SECAGG_MAX_ATTEMPTS times in a row. */
#define ROUND_RETRY 1
#define SECAGG_MAX_ATTEMPTS 8

/* server.c */
int server_stopped(const server_t *s);
void server_pump(server_t *s, int timeout_ms);
void server_set_phase(server_t *s, int round, const char *phase);
long long server_send(server_t *s, sites_site_t *site, json_t *hdr, const wire_frame_t *frames, int n);
/* Adds a site's reported training loss and accuracy (NAN: none) to the round's, by samples. */
void server_add_train_stats(server_t *s, long long samples, double loss, double accuracy);

/* server_check.c */
int server_cohort_size(int per_round, double fraction, int n);
void server_dataset_dims(const config_t *cfg, int *input_dim, int *classes);
int server_parse_strategy(const config_t *cfg, strategy_config_t *sc, err_t *err);

/* server_collect.c */
int collect_init(server_t *s, err_t *err);
void collect_free(server_t *s);
int collect_draw(server_t *s);                  /* selects the round's sites; returns how many */
sites_site_t **collect_draw_connected(server_t *s, int per_round, double fraction, uint64_t salt, int *k);
void collect_snapshot(server_t *s);            /* the round's broadcast copy of the model */
long long collect_send_train(server_t *s, sites_site_t *site);
void collect_on_update(server_t *s, wire_msg_t *msg);
int collect_aggregate(server_t *s, err_t *err); /* into the model, by the strategy */

/* server_dp.c (each a no-op, returning 0, when the experiment has no "dp" block) */
int dp_setup(server_t *s, err_t *err);
int dp_replay(server_t *s, int committed, err_t *err);
int dp_round_open(server_t *s, err_t *err);    /* the round's sampling rate; FN_ESTATE past the budget */
int dp_clip_add(server_t *s, const float *update, err_t *err); /* clipped, weight 1 */
int dp_noise_mean(server_t *s, err_t *err);    /* the noised fixed-denominator mean into mean */
int dp_charge_release(server_t *s, const dp_ddp_plan_t *plan, err_t *err);
int dp_mark_release(server_t *s, err_t *err);   /* central DP: a noised model is about to leave, stored */
int dp_round_close(server_t *s, err_t *err);   /* charges the round, epsilon, adaptive clip */
void dp_record(server_t *s);
void dp_summary(server_t *s, server_summary_t *sum);
void dp_free(server_t *s);

/* server_secagg.c */
int sa_round_begin(server_t *s, err_t *err);   /* a driver over the selected sites, before "train" */
int sa_round_phases(server_t *s, err_t *err);  /* the four phases; s->mod.mean holds the sum */
int sa_round_finish(server_t *s, int rc, err_t *err); /* 0, or ROUND_RETRY after an abort */
void sa_on_message(server_t *s, wire_msg_t *msg);
json_t *sa_train_info(const server_t *s, const sites_site_t *site); /* NULL without a driver */
int sa_expects_model(const server_t *s, const sites_site_t *site); /* may a rejoining site train */
int sa_selected_lost_after_masking(const server_t *s, const sites_site_t *site);
void sa_record(server_t *s);
void sa_round_end(server_t *s);                /* frees the driver, after the round was recorded */
/* The largest L2 norm the decoded sum of `summed` clipped inputs can have (coord_error: the
 * encoding's error bound per coordinate of the sum; plan: distributed DP noise, or NULL), and
 * the projection of a longer sum onto that ball (1 when it scaled sum, its norm in *norm). */
double sa_sum_bound(uint32_t summed, size_t m, double clip, double coord_error, const dp_ddp_plan_t *plan);
int sa_project_sum(float *sum, size_t m, double bound, double *norm);

/* server_eval.c */
int eval_load_test_set(server_t *s, err_t *err);
json_t *eval_holdout_info(const server_t *s, const sites_site_t *site);
int eval_test_set(server_t *s, double *loss, double *acc, err_t *err);
double eval_federated(server_t *s);            /* accuracy, NAN when none or not this round */
void eval_recover(server_t *s); /* on resume: the last committed round's federated evaluation, when missing */
void eval_on_result(server_t *s, wire_msg_t *msg);

/* server_nas.c, server_nas_store.c: a federated search (an experiment with "nas" and "clients"
 * blocks). Each function is called only when s->nas is set, except create and check. */
/* One candidate of the round: its path, its slice, who trains it and how it scored. */
typedef struct server_nas_cand {
    nas_proposal_t prop;
    nas_fedsuper_path_t *path;
    broadcast_t *bc;      /* its slice this round, shared by its train messages */
    int64_t seq;          /* its row in the NAS tables (-1: the incumbent, not a new candidate) */
    int trainers;         /* sites it was dealt */
    double acc, loss, samples, flops;
    int answers;
    double train_loss_sum, train_weight; /* its trainers' reported loss, by samples */
} server_nas_cand_t;

struct server_nas {
    nas_config_t cfg;
    nas_strategy_t *strat;
    nas_fedsuper_t *fs;
    int per_round;     /* candidates a round asks for */
    server_nas_cand_t *c;
    int nc;
    int *site_cand;    /* by registry index: the candidate a site trains this round (-1: none) */
    int nsites;
    int64_t next_seq, tells;
    int best;          /* this round's best candidate (by federated accuracy), -1 before scoring */
    int open_round;    /* the round the candidates were asked for (a retried round keeps them) */
    json_t *ref_arch;  /* the largest path: the server's placeholder model, sizing its messages */
    /* Secure aggregation: every site masks one vector: the whole supernet's parameters (created
     * up front, so the length is fixed), then a slot of statistics per candidate of the round. */
    int secagg;
    size_t sa_params, sa_stats; /* the parameters, and a slot's length (the largest path's statistics) */
    float *sa_zero;             /* the server's "model" vector of that length (never broadcast) */
    /* Central DP: the round's sum of clipped, scattered updates in the same layout, noised once. */
    float *dp_sum, *dp_tmp, *dp_clip;
    size_t dp_clip_cap; /* dp_clip's length in floats */
};
typedef struct server_nas server_nas_t;
struct site_update;
int server_nas_check(const config_t *cfg, err_t *err);
int server_nas_create(server_t *s, size_t *max_m, err_t *err); /* max_m: the largest path's values */
const json_t *server_nas_ref_arch(const server_t *s);          /* the server's placeholder model */
int server_nas_best_params(server_t *s);
void server_nas_layout(server_t *s); /* under secure aggregation, the length every site masks */
json_t *server_nas_scatter_info(const server_t *s, const sites_site_t *site); /* NULL without */                       /* the best candidate's, 0 before one */
void server_nas_free(server_t *s);
int server_nas_open(server_t *s, err_t *err);                  /* the round's candidates and deal */
int server_nas_train_model(server_t *s, const sites_site_t *site, const json_t **arch, broadcast_t **bc, size_t *m);
size_t server_nas_site_m(const server_t *s, const sites_site_t *site); /* 0: no candidate dealt */
int server_nas_add(server_t *s, const sites_site_t *site, const struct site_update *u, err_t *err);
int server_nas_aggregate(server_t *s, err_t *err);
int server_nas_score(server_t *s, double *test_loss, double *test_acc, err_t *err);
double server_nas_fed_acc(server_t *s);
int server_nas_commit(server_t *s, const store_round_t *rec, err_t *err);
int server_nas_resume(server_t *s, err_t *err);

/* server_record.c */
int record_load_checkpoint(server_t *s, err_t *err);
int record_commit(server_t *s, const store_round_t *rec, err_t *err);
void record_phase_metrics(server_t *s);
void record_print(const server_t *s, const store_round_t *rec, double fed_acc);

#endif
