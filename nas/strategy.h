/* strategy: search strategies behind one ask/tell interface: random search, regularized
 * (aging) evolution, NSGA-II and ASHA (specs/nas.md). The controller asks for candidates,
 * evaluates them on its workers, and tells the results back, in any order. */
#ifndef FEDNAS_NAS_STRATEGY_H
#define FEDNAS_NAS_STRATEGY_H

#include "common/err.h"
#include "nas/config.h"
#include "nas/genome.h"

/* Determinism: a strategy's state is a pure function of its config, its seed and the sequence
 * of ask/tell calls (with the values told). The controller resumes a search by creating the
 * strategy again with the same seed and replaying the stored asks and tells in their original
 * order: every replayed ask returns the proposal it returned the first time (check its hash).
 * No clock, no global state, no other randomness.
 *
 * Choices specs/nas.md leaves open (ours):
 *  - evolution: the first P asks are random; a child joins the population when its result is
 *    told ok (then the oldest leaves if there are more than P); a failed genome never joins, so
 *    failures leave the population short until children fill it. Asks before any ok result
 *    (more workers than P) are random. The S sampled are distinct members.
 *  - nsga2: the first mu asks are random; offspring come in generations of lambda, and a
 *    generation starts only when every result of the one before is in (NAS_ASK_WAIT meanwhile).
 *    Failed candidates take no part in survival. Crossover (probability "crossover") is uniform
 *    over layers / edges, followed by one mutation.
 *  - asha: a failed result counts among those that finished its rung (it raises n) but ranks
 *    last and is never promoted; ties in accuracy go to the earlier evaluation. */

typedef struct nas_strategy nas_strategy_t;

/* ask returns 0 with a proposal, or NAS_ASK_WAIT when the strategy cannot propose before an
 * outstanding result is told (NSGA-II at the end of a generation); tell one, then ask again. */
#define NAS_ASK_WAIT 1
/* The search's budget is spent: nothing more to ask, ever (the controller's interface,
 * nas/controller.h). */
#define NAS_ASK_DONE 2

typedef struct nas_proposal {
    int id;                     /* candidate number (0, 1, ...); an ASHA promotion keeps the id */
    nas_genome_t genome;
    char hash[NAS_HASH_LEN];    /* canonical hash: the cache key */
    char parent[NAS_HASH_LEN];  /* the parent's hash; "" for a random genome */
    int parent_id;              /* the parent's id; -1 for a random genome */
    char mutation[128];         /* "random", "layer 2 op conv3x3 -> maxpool3x3", "promote rung 0 -> 1" */
    int rung;                   /* ASHA rung (0 otherwise) */
    double epochs;              /* the evaluation's budget: total training epochs (may be a fraction) */
    int promotion;              /* 1: ASHA re-evaluates candidate id at a higher rung */
} nas_proposal_t;

typedef enum { NAS_RESULT_OK = 0, NAS_RESULT_FAILED = 1 } nas_result_status_t;

typedef struct nas_result {
    nas_result_status_t status;
    double val_acc;     /* validation accuracy in [0, 1] */
    double params;      /* trainable parameters */
    double flops;       /* forward FLOPs per sample */
    double latency_ms;  /* median batch-64 forward latency */
} nas_result_t;

int nas_strategy_create(const nas_config_t *cfg, uint64_t seed, nas_strategy_t **out, err_t *err);
void nas_strategy_free(nas_strategy_t *s);

int nas_strategy_ask(nas_strategy_t *s, nas_proposal_t *out, err_t *err);
/* p: the proposal as asked (id and rung identify it). FN_ESTATE when it was never asked or
 * was already told; FN_EINVAL for a result out of range. Failed candidates stay in the
 * history but never become parents, survivors or promotions. */
int nas_strategy_tell(nas_strategy_t *s, const nas_proposal_t *p, const nas_result_t *r, err_t *err);

/* Counters: proposals asked, results told, and told results that were ok. */
int nas_strategy_asked(const nas_strategy_t *s);
int nas_strategy_told(const nas_strategy_t *s);
/* The best evaluation in the history (highest validation accuracy; ASHA: at the highest rung
 * reached, then accuracy). FN_ENOTFOUND before any ok result. */
int nas_strategy_best(const nas_strategy_t *s, nas_proposal_t *p, nas_result_t *r, err_t *err);

/* The strategy of cfg (seeded with cfg->seed) behind the controller's interface
 * (nas/controller.h): proposals come with their genome and model JSON; it says NAS_ASK_DONE once
 * cfg->budget is spent (evaluations, or for ASHA epochs in units of cfg->epochs). */
struct nas_ctl_strategy;
int nas_strategy_ctl(const nas_config_t *cfg, struct nas_ctl_strategy *out, err_t *err);

#endif
