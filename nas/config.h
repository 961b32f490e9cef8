/* nas config: the experiment's "nas" block (search space, strategy, controller settings),
 * validated in full like every fednas config: errors read "FILE:LINE:COL: nas.space.widths:
 * message" and unknown keys are errors. The result is a plain struct with no pointers. */
#ifndef FEDNAS_NAS_CONFIG_H
#define FEDNAS_NAS_CONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

#define NAS_MAX_LAYERS 32  /* macro space: layer slots */
#define NAS_MAX_CHOICES 16 /* entries of a widths / cells_per_stage list */
#define NAS_CELL_NODES 4   /* NAS-Bench-201 cell: node 0 the input, node 3 the output */
#define NAS_CELL_EDGES 6   /* edges (0,1) (0,2) (1,2) (0,3) (1,3) (2,3), in this order */
#define NAS_MAX_OBJECTIVES 4
#define NAS_MAX_POPULATION 4096 /* evolution P, nsga2 mu and lambda */

typedef enum { NAS_SPACE_MACRO = 0, NAS_SPACE_CELL = 1 } nas_space_kind_t;

/* Macro-space operations (JSON names in brackets). Convolutions are 'same' padded, stride 1. */
typedef enum {
    NAS_OP_CONV3 = 0,   /* "conv3x3" */
    NAS_OP_CONV5,       /* "conv5x5" */
    NAS_OP_SEP3,        /* "sepconv3x3": depthwise 3x3 then pointwise 1x1 */
    NAS_OP_SEP5,        /* "sepconv5x5" */
    NAS_OP_DIL3,        /* "dilconv3x3": 3x3, dilation 2 */
    NAS_OP_MAXPOOL3,    /* "maxpool3x3": stride 1, keeps channels (width unused) */
    NAS_OP_AVGPOOL3,    /* "avgpool3x3": stride 1, keeps channels (width unused) */
    NAS_OP_IDENTITY,    /* "identity": the layer is skipped (width and batch norm unused) */
    NAS_MACRO_OP_COUNT
} nas_macro_op_t;

/* Cell edge operations (NAS-Bench-201). */
typedef enum {
    NAS_EDGE_NONE = 0,  /* "none": no edge */
    NAS_EDGE_SKIP,      /* "skip" */
    NAS_EDGE_CONV1,     /* "conv1x1": ReLU, conv 1x1, BN */
    NAS_EDGE_CONV3,     /* "conv3x3": ReLU, conv 3x3, BN */
    NAS_EDGE_AVGPOOL3,  /* "avgpool3x3": stride 1 */
    NAS_EDGE_OP_COUNT
} nas_edge_op_t;

typedef enum { NAS_BN_OFF = 0, NAS_BN_ON = 1, NAS_BN_SEARCH = 2 } nas_bn_mode_t;

typedef struct nas_space {
    nas_space_kind_t kind;
    /* the data the candidates see (defaults 1x28x28, 10 classes: Fashion-MNIST; the
     * controller overrides them for other data sets before creating a strategy) */
    int in_c, in_h, in_w, classes;
    int nwidths;
    int widths[NAS_MAX_CHOICES]; /* macro: per-layer channel choices; cell: stem channels C */
    /* macro ("type": "macro") */
    int layers;                  /* layer slots */
    int nops;
    nas_macro_op_t ops[NAS_MACRO_OP_COUNT]; /* the allowed operations */
    nas_bn_mode_t batchnorm;     /* batch norm after each op: never, always, or searched */
    int reductions;              /* 2x2 max-pool reductions; where they go is searched */
    /* cell ("type": "cell") */
    int nedge_ops;
    nas_edge_op_t edge_ops[NAS_EDGE_OP_COUNT]; /* the allowed edge operations */
    int ncells;
    int cells[NAS_MAX_CHOICES];  /* cells-per-stage choices (N) */
    int stages;                  /* stages of N cells; a strided residual block between them */
} nas_space_t;

typedef enum { NAS_STRATEGY_RANDOM = 0, NAS_STRATEGY_EVOLUTION, NAS_STRATEGY_NSGA2, NAS_STRATEGY_ASHA } nas_strategy_kind_t;
/* Objectives, all minimised internally: 1 - validation accuracy, parameters, FLOPs, latency. */
typedef enum { NAS_OBJ_VAL_ACC = 0, NAS_OBJ_PARAMS, NAS_OBJ_FLOPS, NAS_OBJ_LATENCY, NAS_OBJ_COUNT } nas_objective_t;
typedef enum { NAS_EVAL_STANDALONE = 0, NAS_EVAL_WEIGHT_SHARING = 1 } nas_evaluation_t;

typedef struct nas_config {
    nas_space_t space;
    struct {
        nas_strategy_kind_t kind;
        int population, sample;   /* evolution: P and S */
        int mu, lambda;           /* nsga2 */
        int nobjectives;
        nas_objective_t objectives[NAS_MAX_OBJECTIVES];
        double crossover;         /* nsga2: probability an offspring is a crossover before its mutation */
        double r;                 /* asha: rung budgets r, r*eta, ... <= max_epochs, in epochs (0.25 works) */
        int eta;
        double max_epochs;
    } strategy;
    /* controller settings (read by the controller; validated here) */
    int budget;             /* candidate evaluations (asha: epochs consumed / epochs) */
    double epochs;          /* epochs per candidate (not asha); a fraction (0.25, 1.5) is a short proxy */
    int workers;            /* evaluation processes */
    int retries;            /* re-runs of a failed evaluation before it counts as failed */
    uint64_t seed;          /* the search's seed (defaults to the experiment's) */
    int top_k;              /* best architectures retrained from scratch after the search */
    int retrain_epochs;
    int batch_size;
    double lr;
    nas_evaluation_t evaluation;
    char device[16];        /* "cpu" */
} nas_config_t;

/* Parses the whole "nas" block. text is the file's text and source its name (both for
 * positions in messages; text may be NULL, then positions are 1:1); prefix is the block's
 * path in the document ("nas"). default_seed is used when the block has no "seed". */
int nas_config_parse(const json_t *nas_block, const char *source, const char *text, const char *prefix,
                     uint64_t default_seed, nas_config_t *out, err_t *err);

/* Names for messages and JSON ("conv3x3", "skip", "evolution", "params", ...); NULL if out of range. */
const char *nas_macro_op_name(nas_macro_op_t op);
const char *nas_edge_op_name(nas_edge_op_t op);
const char *nas_strategy_name(nas_strategy_kind_t k);
const char *nas_objective_name(nas_objective_t o);
/* Name to value; -1 when unknown. */
int nas_macro_op_from_name(const char *s);
int nas_edge_op_from_name(const char *s);

#endif
