/* schedule: learning-rate schedules as pure functions of the step (or epoch) index t, so a
 * value can be checked by hand and a resumed run continues exactly: constant, step,
 * multi-step, exponential, cosine, linear decay, polynomial and one-cycle (PyTorch's formulas),
 * each optionally preceded by a linear warmup. */
#ifndef FEDNAS_ENGINE_SCHEDULE_H
#define FEDNAS_ENGINE_SCHEDULE_H

#include "common/err.h"

typedef enum engine_schedule_type {
    ENGINE_SCHED_CONSTANT = 0,
    ENGINE_SCHED_STEP,        /* lr * gamma^floor(t / step_size) */
    ENGINE_SCHED_MULTISTEP,   /* lr * gamma^(number of milestones <= t) */
    ENGINE_SCHED_EXPONENTIAL, /* lr * gamma^t */
    ENGINE_SCHED_COSINE,      /* min_lr + (lr - min_lr) * (1 + cos(pi * t / total)) / 2, t clamped to total */
    ENGINE_SCHED_LINEAR,      /* lr + (min_lr - lr) * t / total */
    ENGINE_SCHED_POLYNOMIAL,  /* (lr - min_lr) * (1 - t / total)^power + min_lr */
    ENGINE_SCHED_ONECYCLE,    /* PyTorch OneCycleLR (cosine): lr is the peak; starts at lr/div_factor,
                                 ends at lr/(div_factor*final_div_factor); the rise takes pct_start of total */
    ENGINE_SCHED_COUNT
} engine_schedule_type_t;

#define ENGINE_SCHED_MAX_MILESTONES 16

typedef struct engine_schedule {
    engine_schedule_type_t type;
    int per_step; /* 1: t counts optimizer steps; 0: t counts epochs (the default) */
    double lr;
    long step_size;
    double gamma;
    long milestones[ENGINE_SCHED_MAX_MILESTONES];
    int num_milestones;
    long total; /* cosine, linear, polynomial, one-cycle: length in units of t */
    double min_lr, power;
    double pct_start, div_factor, final_div_factor;
    long warmup;         /* t < warmup: the value is multiplied by (t + 1) / (warmup + 1) */
} engine_schedule_t;

/* A constant schedule at lr with the other fields at PyTorch's defaults (gamma 0.1, power 1,
 * pct_start 0.3, div_factor 25, final_div_factor 1e4). */
engine_schedule_t engine_schedule_constant(double lr);
int engine_schedule_type_parse(const char *name);
const char *engine_schedule_type_name(engine_schedule_type_t t);
/* FN_EINVAL (naming the field) when a field the type needs is missing or out of range. */
int engine_schedule_check(const engine_schedule_t *s, err_t *err);
double engine_schedule_lr(const engine_schedule_t *s, long t);

#endif
