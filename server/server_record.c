/* server_record: what the server keeps and shows of its rounds: the checkpoint each round commits
 * with it (the parameters, then each optimizer state vector; its meta says which) and loads on
 * resume, the per-round phase timings, and the progress line on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"

int record_load_checkpoint(server_t *s, err_t *err)
{
    if (s->nas)
        return server_nas_resume(s, err);
    store_checkpoint_t ck;
    int round, rc = store_checkpoint_load(s->opt.store, s->opt.run_id, &ck, &round, err);
    if (rc == FN_ENOTFOUND) {
        /* Killed before its first round was committed: the run starts over from the model its
         * seed gives, which is the one it had. Distributed DP still replays any sum of round 1
         * the sites were asked to unmask. */
        log_info("resuming run %lld after round 0 (none was committed)", (long long)s->opt.run_id);
        return s->cfg->dp.enabled ? dp_replay(s, 0, err) : 0;
    }
    if (rc < 0)
        return rc;
    json_t *meta = json_loads(ck.meta, 0, NULL);
    const char *strategy = json_string_value(json_object_get(meta, "strategy"));
    int nstate = strategy_state_count(s->col.strategy);
    if (ck.params_len != s->mod.m * sizeof(float) || ck.state_len != (size_t)nstate * s->mod.m * sizeof(float) ||
        !strategy || strcmp(strategy, strategy_name(s->col.scfg.kind)) != 0) {
        rc = err_set(err, FN_EINVAL,
                     "the checkpoint of run %lld (round %d, %zu bytes, strategy %s) does not fit this experiment "
                     "(%zu parameters, strategy %s)",
                     (long long)s->opt.run_id, round, ck.params_len, strategy ? strategy : "?", s->mod.m,
                     strategy_name(s->col.scfg.kind));
    } else {
        memcpy(s->mod.params, ck.params, ck.params_len);
        for (int i = 0; i < nstate; i++)
            memcpy(strategy_state(s->col.strategy, i), (const float *)ck.state + (size_t)i * s->mod.m, s->mod.m * sizeof(float));
        strategy_set_steps(s->col.strategy, json_integer_value(json_object_get(meta, "steps")));
        s->rnd.round = round;
        if (s->cfg->dp.enabled) {
            /* Every round so far was one step at (q, z): replaying rebuilds the accountant. */
            json_t *clip = json_object_get(meta, "clip");
            if (json_is_number(clip))
                s->dp.clip.clip = json_number_value(clip);
            rc = dp_replay(s, round, err);
        }
        log_info("resuming run %lld after round %d", (long long)s->opt.run_id, round);
    }
    json_decref(meta);
    store_checkpoint_free(&ck);
    return rc;
}

int record_commit(server_t *s, const store_round_t *rec, err_t *err)
{
    if (s->nas)
        return server_nas_commit(s, rec, err);
    int nstate = strategy_state_count(s->col.strategy);
    float *state = NULL;
    if (nstate) {
        state = FN_MALLOC((size_t)nstate * s->mod.m * sizeof *state);
        for (int i = 0; i < nstate; i++)
            memcpy(state + (size_t)i * s->mod.m, strategy_state(s->col.strategy, i), s->mod.m * sizeof *state);
    }
    json_t *names = json_array();
    for (int i = 0; i < nstate; i++)
        json_array_append_new(names, json_string(strategy_state_name(s->col.strategy, i)));
    json_t *meta = json_pack("{s:s, s:I, s:o, s:I}", "strategy", strategy_name(s->col.scfg.kind), "steps",
                             (json_int_t)strategy_steps(s->col.strategy), "vectors", names, "params", (json_int_t)s->mod.m);
    if (s->cfg->dp.enabled)
        json_object_set_new(meta, "clip", json_real(s->dp.clip.clip));
    char *text = json_dumps(meta, JSON_COMPACT);
    store_checkpoint_t ck = {s->mod.params, s->mod.m * sizeof(float), state, (size_t)nstate * s->mod.m * sizeof(float), text};
    int rc = store_round_commit(s->opt.store, s->opt.run_id, rec, &ck, err);
    free(text);
    json_decref(meta);
    free(state);
    return rc;
}


void record_phase_metrics(server_t *s)
{
    static const char *const names[] = {"phase_collect_s", "phase_aggregate_s", "phase_evaluate_s"};
    err_t e;
    for (int p = 0; p < 3; p++)
        if (store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, names[p], s->rnd.phase_s[p], &e) < 0)
            log_error("%s", e.msg);
}

void record_print(const server_t *s, const store_round_t *rec, double fed_acc)
{
    if (s->opt.quiet)
        return;
    char eval[64] = "test acc       -  test loss      -";
    if (!isnan(rec->test_accuracy))
        snprintf(eval, sizeof eval, "test acc %6.2f%%  test loss %.4f", 100 * rec->test_accuracy, rec->test_loss);
    char priv[48] = "", fed[40] = "";
    if (s->cfg->dp.enabled)
        snprintf(priv, sizeof priv, "  eps %.3f", s->dp.epsilon);
    if (!isnan(fed_acc))
        snprintf(fed, sizeof fed, "  fed acc %6.2f%%", 100 * fed_acc);
    printf("round %3d/%-3d  %s%s  train loss %.4f  clients %d/%d%s  %.2f s\n", s->rnd.round, s->cfg->rounds, eval, fed,
           rec->train_loss, rec->participants, rec->selected, priv, fn_mono() - s->rnd.t0);
    fflush(stdout);
}
