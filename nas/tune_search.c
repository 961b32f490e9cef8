/* The tuning search: the NAS controller's loop (nas/controller.h) over the recipe sampler, then
 * the best recipe (and the experiment's own) retrained on all the training data and tested. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "nas/controller.h"
#include "nas/tune.h"
#include "nas/worker.h"

typedef struct tune_finals {
    const nas_tune_search_t *s;
    int64_t *best_seq;
    char *baseline; /* the experiment's own train block, as text */
} tune_finals_t;

/* Rank 1: the best evaluation (the highest rung reached, then validation accuracy, then the
 * earlier) with its recipe; rank 2 (cfg->baseline): the experiment's own recipe. One seed for
 * both, so that the recipes are compared on the same initialisation. */
static int tune_finals(void *ctx, const nas_ctl_t *c, nas_ctl_final_t *jobs, int max, err_t *err)
{
    tune_finals_t *f = ctx;
    const nas_tune_config_t *cfg = f->s->cfg;
    int64_t best;
    if (max < 2 || nas_ctl_top(c, 1, &best) < 1)
        return err_set(err, FN_EINVAL, "every trial failed (see the reasons with `fednas nas` on the dashboard or in "
                                       "nas_candidates): nothing to retrain");
    *f->best_seq = best;
    const char *recipe = NULL;
    const store_nas_candidate_t *r = nas_ctl_row(c, best, &recipe);
    jobs[0] = (nas_ctl_final_t){.seq = best,
                                .val_accuracy = r->val_accuracy,
                                .arch = f->s->arch,
                                .recipe = recipe,
                                .stored_recipe = recipe,
                                .seed_key = "",
                                .epochs = cfg->max_epochs,
                                .what = "the best recipe"};
    if (!cfg->baseline)
        return 1;
    f->baseline = json_dumps(f->s->base_train, JSON_COMPACT | JSON_REAL_PRECISION(8));
    FN_CHECK(f->baseline);
    jobs[1] = jobs[0];
    jobs[1].seq = -1;
    jobs[1].val_accuracy = -1;
    jobs[1].recipe = jobs[1].stored_recipe = f->baseline;
    snprintf(jobs[1].what, sizeof jobs[1].what, "the experiment's recipe");
    return 2;
}

int nas_tune_search_run(nas_tune_search_t *s, int64_t *best_seq, err_t *err)
{
    *best_seq = -1;
    tune_finals_t fin = {.s = s, .best_seq = best_seq};
    nas_ctl_opts_t o = {.workers = s->cfg->workers,
                        .retries = s->cfg->retries,
                        .seed = s->cfg->seed,
                        .store = s->store,
                        .run_id = s->run_id,
                        .command = "tune",
                        .budget = s->cfg->trials,
                        .unit = "trials",
                        .finals = tune_finals,
                        .finals_ctx = &fin,
                        .on_candidate = s->on_trial,
                        .on_final = s->on_final,
                        .cb_ctx = s->cb_ctx,
                        .stop = s->stop};
    int rc = nas_workers_start_local(s->cfg->workers, s->threads, s->data, &s->eval, &o.pool, err);
    if (rc == 0)
        rc = nas_tune_strategy_ctl(s->cfg, s->base_train, s->arch, &o.strategy, err);
    if (rc == 0)
        rc = nas_ctl_run(&o, err);
    nas_workers_close(o.pool);
    free(fin.baseline);
    return rc;
}
