/* config: the experiment file that `fednas run` and `fednas server` take, loaded with jansson
 * and validated in full before anything starts. Errors read
 * "FILE:LINE:COL: clients.count: expected an integer >= 1 (got 0)"; unknown keys are errors. */
#ifndef FEDNAS_COMMON_CONFIG_H
#define FEDNAS_COMMON_CONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

typedef enum { CONFIG_PARTITION_IID = 0, CONFIG_PARTITION_DIRICHLET = 1 } config_partition_t;

typedef struct config {
    char source[512]; /* file name used in messages */
    char *text;       /* the file as read, for locating values */
    json_t *root;     /* the whole document (stored with the run) */

    const char *name;
    uint64_t seed;
    int rounds;
    struct {
        const char *dataset; /* "fashion-mnist", "mnist" or "csv" */
        const char *path;    /* directory of IDX files; for csv the table `fednas run` splits among its
                              * simulated sites ("" when absent: partner sites bring their own) */
        int csv;             /* tabular data: each site's own CSV file, numeric features, label last */
        int features;        /* csv: feature columns per row (the model's input size) */
        int classes;         /* csv: labels are integers 0..classes-1 */
        const char *test;    /* csv: the server's test table, or NULL (then federated evaluation only) */
        config_partition_t partition;
        double alpha;  /* Dirichlet concentration */
        int min_size;  /* Dirichlet: least samples per client */
    } data;
    const json_t *model; /* architecture description, checked by the engine */
    const json_t *nas;   /* the "nas" block (a search), or NULL; checked by nas_config_parse */
    struct {
        int count;       /* clients to start (fednas run) or wait for (fednas server) */
        int per_round;   /* clients selected each round (0: use fraction) */
        double fraction; /* of the connected clients, when per_round is 0 (default 1) */
        int min_fit;     /* fewest updates that make a round */
        int workers;     /* fednas run: simulate the sites in this many processes (0: one each) */
    } clients;
    const json_t *strategy; /* {"name": "fedavg", ...}: checked by the server's strategy module */
    const json_t *train_json; /* the "train" object as written, for the engine's optimizer options */
    struct {
        int epochs;
        int batch_size;
        double lr;
    } train;
    struct {
        int enabled;            /* a "dp" block is present: user-level DP-FedAvg */
        double clip;            /* C: L2 bound on each client's update (the start value if adaptive) */
        double noise_multiplier;/* z: noise std on the sum is z * C; < 0 when to be calibrated */
        double delta;
        double target_epsilon;  /* the budget (0: none, only reported) */
        int adaptive;           /* adaptive quantile clipping (Andrew et al. 2021) */
        double quantile, clip_lr, count_noise; /* gamma, eta_C, sigma_b (< 0: expected clients / 20) */
    } dp;
    /* Secure aggregation (crypto/secagg.h): the server learns only the sum of the updates, so
     * the mean is unweighted (every client weighs the same, whatever its sample count). */
    struct {
        int enabled;    /* a "secure_aggregation" block is present */
        int plus;       /* mode "secagg+": SecAgg+ neighbour graph instead of all pairs */
        int threshold;  /* t: clients that must survive each phase (0: the library default for n) */
        double clip;    /* L2 clip of each update before encoding (= dp.clip when dp is on) */
        int bits;       /* ring Z_2^bits, 8..32 */
        int neighbours; /* SecAgg+ k (0: chosen from dropout and corruption, secagg_plan_plus) */
        double dropout;    /* expected fraction of a round's clients that drop (default 0.1) */
        double corruption; /* fraction that may collude with the server (default 0.05) */
    } secagg;
    struct {
        double round_timeout;    /* seconds a round waits for updates */
        double register_timeout; /* seconds the server waits for clients to join */
        double heartbeat;        /* seconds between transport heartbeats; a peer silent for 3 is gone */
        int evaluate_every;      /* evaluate the global model on the test set every N rounds (0: never) */
        double phase_timeout;    /* secure aggregation: seconds each phase after the advert waits */
    } server;
    /* Update compression on the plain uplink (common/compress.h); not with secure aggregation. */
    struct {
        int enabled;        /* a "compression" block is present */
        int quantize;       /* 0 (off) or 8: 8-bit stochastic quantization per chunk */
        double topk;        /* 0 (off) or the fraction of coordinates kept */
        int error_feedback; /* sites carry what compression dropped into their next update */
    } compression;
    /* Federated evaluation on the sites' held-out samples (they never train on them). */
    struct {
        int enabled;             /* an "evaluate" block is present */
        double clients_fraction; /* of the connected sites asked each evaluation round */
        int every;               /* evaluate after every N-th round */
        double holdout;          /* fraction of each site's samples kept out of training */
    } evaluate;
} config_t;

#define CONFIG_DEFAULT_DATA_PATH "/usr/share/datasets/fashion-mnist"

/* Exit status of `fednas` for a configuration that does not load or validate. */
#define CONFIG_EXIT_INVALID 2

int config_load_file(const char *path, config_t **out, err_t *err);
int config_load_string(const char *text, const char *source, config_t **out, err_t *err);
void config_free(config_t *c);

/* Formats an error about the value at json_path as "SOURCE:LINE:COL: PATH: message"
 * (for checks made outside this module, such as the engine's model validation). */
int config_error_at(const config_t *c, const char *json_path, err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
