#include "engine/schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[ENGINE_SCHED_COUNT] = {"constant", "step",   "multistep",  "exponential",
                                                      "cosine",   "linear", "polynomial", "onecycle"};

engine_schedule_t engine_schedule_constant(double lr)
{
    engine_schedule_t s = {.type = ENGINE_SCHED_CONSTANT, .lr = lr, .gamma = 0.1, .power = 1.0, .pct_start = 0.3,
                           .div_factor = 25.0, .final_div_factor = 1e4};
    return s;
}

int engine_schedule_type_parse(const char *name)
{
    for (int i = 0; i < ENGINE_SCHED_COUNT; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *engine_schedule_type_name(engine_schedule_type_t t) { return (unsigned)t < ENGINE_SCHED_COUNT ? names[t] : "?"; }

int engine_schedule_check(const engine_schedule_t *s, err_t *err)
{
    if ((unsigned)s->type >= ENGINE_SCHED_COUNT)
        return err_set(err, FN_EINVAL, "schedule.type: unknown (%d)", (int)s->type);
    if (!(s->lr > 0.0) || !isfinite(s->lr))
        return err_set(err, FN_EINVAL, "lr: %g; expected a finite value > 0", s->lr);
    if (s->warmup < 0)
        return err_set(err, FN_EINVAL, "schedule.warmup: %ld; expected >= 0", s->warmup);
    switch (s->type) {
    case ENGINE_SCHED_STEP:
        if (s->step_size < 1)
            return err_set(err, FN_EINVAL, "schedule.step_size: %ld; type \"step\" needs an integer >= 1", s->step_size);
        /* fall through */
    case ENGINE_SCHED_MULTISTEP:
    case ENGINE_SCHED_EXPONENTIAL:
        if (!(s->gamma > 0.0 && s->gamma <= 1.0))
            return err_set(err, FN_EINVAL, "schedule.gamma: %g; expected 0 < gamma <= 1", s->gamma);
        break;
    case ENGINE_SCHED_COSINE:
    case ENGINE_SCHED_LINEAR:
    case ENGINE_SCHED_POLYNOMIAL:
    case ENGINE_SCHED_ONECYCLE:
        if (s->total < 1)
            return err_set(err, FN_EINVAL, "schedule.total: %ld; type \"%s\" needs its length >= 1", s->total,
                           names[s->type]);
        if (s->min_lr < 0.0 || s->min_lr > s->lr)
            return err_set(err, FN_EINVAL, "schedule.min_lr: %g; expected 0 <= min_lr <= lr", s->min_lr);
        if (s->type == ENGINE_SCHED_POLYNOMIAL && !(s->power > 0.0))
            return err_set(err, FN_EINVAL, "schedule.power: %g; expected > 0", s->power);
        if (s->type == ENGINE_SCHED_ONECYCLE &&
            (!(s->pct_start > 0.0 && s->pct_start < 1.0) || !(s->div_factor >= 1.0) || !(s->final_div_factor >= 1.0)))
            return err_set(err, FN_EINVAL, "schedule: one-cycle needs 0 < pct_start < 1, div_factor >= 1 and "
                                           "final_div_factor >= 1");
        break;
    default:
        break;
    }
    for (int i = 1; i < s->num_milestones; i++)
        if (s->milestones[i] <= s->milestones[i - 1])
            return err_set(err, FN_EINVAL, "schedule.milestones: must increase (%ld after %ld)", s->milestones[i],
                           s->milestones[i - 1]);
    return 0;
}

static double cos_anneal(double start, double end, double pct) { return end + (start - end) / 2.0 * (1.0 + cos(M_PI * pct)); }

double engine_schedule_lr(const engine_schedule_t *s, long t)
{
    if (t < 0)
        t = 0;
    double lr = s->lr, T = (double)s->total, tc = (double)(t < s->total ? t : s->total);
    switch (s->type) {
    case ENGINE_SCHED_CONSTANT:
        break;
    case ENGINE_SCHED_STEP:
        lr = s->lr * pow(s->gamma, (double)(t / s->step_size));
        break;
    case ENGINE_SCHED_MULTISTEP: {
        int k = 0;
        for (int i = 0; i < s->num_milestones; i++)
            k += s->milestones[i] <= t;
        lr = s->lr * pow(s->gamma, k);
        break;
    }
    case ENGINE_SCHED_EXPONENTIAL:
        lr = s->lr * pow(s->gamma, (double)t);
        break;
    case ENGINE_SCHED_COSINE:
        lr = cos_anneal(s->lr, s->min_lr, tc / T);
        break;
    case ENGINE_SCHED_LINEAR:
        lr = s->lr + (s->min_lr - s->lr) * tc / T;
        break;
    case ENGINE_SCHED_POLYNOMIAL:
        lr = (s->lr - s->min_lr) * pow(1.0 - tc / T, s->power) + s->min_lr;
        break;
    case ENGINE_SCHED_ONECYCLE: {
        double init = s->lr / s->div_factor, fin = init / s->final_div_factor;
        double up = s->pct_start * T - 1.0, last = T - 1.0;
        if (t <= up || up <= 0.0)
            lr = up > 0.0 ? cos_anneal(init, s->lr, (double)t / up) : s->lr;
        else
            lr = cos_anneal(s->lr, fin, last > up ? ((double)(t < s->total ? t : s->total - 1) - up) / (last - up) : 1.0);
        break;
    }
    default:
        break;
    }
    if (t < s->warmup)
        lr *= (double)(t + 1) / (double)(s->warmup + 1);
    return lr;
}
