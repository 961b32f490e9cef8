#include "cli/tune_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_nas.h"
#include "common/util.h"

/* A growing text buffer for report.md. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->p = realloc(b->p, b->cap);
        FN_CHECK(b->p);
    }
}

static void recipe_text(const char *genome, char *out, size_t n)
{
    json_error_t je;
    json_t *g = json_loads(genome ? genome : "", 0, &je);
    nas_tune_recipe_t r;
    err_t err = {0};
    snprintf(out, n, "?");
    if (g && nas_tune_recipe_parse(g, &r, &err) == 0)
        nas_tune_recipe_describe(&r, out, n);
    json_decref(g);
}

static int write_json(const char *dir, const char *name, const json_t *j, err_t *err)
{
    char p[1300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    FN_CHECK(text);
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    FN_CHECK(text);
    text[len] = '\n';
    text[len + 1] = 0;
    int rc = fn_write_file(p, text, len + 1, 0644, err);
    free(text);
    return rc;
}

int cli_tune_report_write(store_t *st, const cli_tune_report_t *r, const char *dir, char *msg, size_t msg_cap, err_t *err)
{
    store_nas_candidate_t *c = NULL;
    int n = 0, rc = fn_mkdirs(dir, 0755, err);
    if (rc == 0)
        rc = store_nas_candidates_load(st, r->run_id, &c, &n, err);
    if (rc < 0)
        return rc;
    store_nas_final_t f[3];
    int have[3] = {0};
    char *arch[3] = {0}, *recipe[3] = {0};
    float *w[3] = {0};
    for (int k = 1; k <= 2; k++) {
        rc = store_nas_final_get(st, r->run_id, k, &f[k], &arch[k], &recipe[k], &w[k], err);
        have[k] = rc == 0;
        rc = 0;
    }
    const store_nas_candidate_t *best = r->best_seq >= 0 && r->best_seq < n ? &c[r->best_seq] : NULL;
    json_error_t je;
    json_t *best_train = have[1] ? json_loads(recipe[1], 0, &je) : NULL;
    if (!best || !best_train) {
        rc = err_set(err, FN_ESTATE, "run %lld: the best recipe was not retrained (see the log)", (long long)r->run_id);
        goto out;
    }
    double load[3] = {-1, -1, -1};
    if (getloadavg(load, 3) < 0)
        load[0] = load[1] = load[2] = -1;
    char best_desc[256];
    recipe_text(best->genome, best_desc, sizeof best_desc);
    if (have[2])
        snprintf(msg, msg_cap, "best trial %lld (%s): validation %.4f at %g epochs, test %.4f after retraining; the "
                               "experiment's own recipe: test %.4f",
                 (long long)best->cand_id, best_desc, best->val_accuracy, best->budget, f[1].test_accuracy,
                 f[2].test_accuracy);
    else
        snprintf(msg, msg_cap, "best trial %lld (%s): validation %.4f at %g epochs, test %.4f after retraining",
                 (long long)best->cand_id, best_desc, best->val_accuracy, best->budget, f[1].test_accuracy);

    /* best.json: the experiment, its train block the best recipe, without the tune block */
    json_t *bj = json_deep_copy(r->root);
    json_object_del(bj, "tune");
    json_object_set(bj, "train", best_train);
    const json_t *nm = json_object_get(r->root, "name");
    char name[200], desc[512];
    snprintf(name, sizeof name, "%s-tuned", json_is_string(nm) ? json_string_value(nm) : "experiment");
    json_object_set_new(bj, "name", json_string(name));
    snprintf(desc, sizeof desc, "The training recipe `fednas tune` found (run %lld of %s, trial %lld): validation "
                                "%.4f, test %.4f after retraining on all training images%s. Run with `fednas train`.",
             (long long)r->run_id, r->db, (long long)best->cand_id, best->val_accuracy, f[1].test_accuracy,
             have[2] ? " (the hand-written recipe's test accuracy in report.md)" : "");
    json_object_set_new(bj, "description", json_string(desc));
    rc = write_json(dir, "best.json", bj, err);
    json_decref(bj);
    if (rc < 0)
        goto out;

    /* report.json and report.md */
    char strat[32];
    nas_tune_config_describe(r->cfg, strat, sizeof strat);
    json_t *rj = json_object(), *trials = json_array();
    sbuf_t md = {0};
    sb_printf(&md, "# fednas tune: run %lld\n\n", (long long)r->run_id);
    sb_printf(&md, "Experiment %s%s, run store `%s`. Strategy %s, %d trials, epochs per rung:", json_is_string(nm) ? json_string_value(nm) : "?",
              r->source ? "" : " (resumed)", r->db, strat, r->cfg->trials);
    for (int k = 0; k < r->cfg->nrungs; k++)
        sb_printf(&md, " %g", r->cfg->rungs[k]);
    sb_printf(&md, ". Data: %d training / %d validation images (split seed %llu) for the trials; %d training and %d test "
                   "images for the retraining.\n\n",
              r->data->n_train, r->data->n_val, (unsigned long long)r->data->split_seed, r->data->n_all, r->data->n_test);
    sb_printf(&md, "## Result\n\n| recipe | validation | test (retrained on all) |\n|---|---|---|\n");
    sb_printf(&md, "| best: trial %lld, %s | %.4f (%g epochs) | %.4f |\n", (long long)best->cand_id, best_desc,
              best->val_accuracy, best->budget, f[1].test_accuracy);
    if (have[2])
        sb_printf(&md, "| the experiment's own | - | %.4f |\n", f[2].test_accuracy);
    sb_printf(&md, "\nWall time of this session %.1f s; load average at the end %.2f %.2f %.2f.\n\n", r->seconds, load[0],
              load[1], load[2]);
    sb_printf(&md, "Best train block (best.json):\n\n```json\n%s\n```\n\n", recipe[1]);
    sb_printf(&md, "## Trials (in ask order)\n\n| row | trial | rung | epochs | status | validation | seconds | worker | "
                   "recipe | how |\n|---|---|---|---|---|---|---|---|---|---|\n");
    double total_s = 0;
    for (int i = 0; i < n; i++) {
        char d[256];
        recipe_text(c[i].genome, d, sizeof d);
        int ok = strcmp(c[i].status, "done") == 0;
        if (c[i].cached_from < 0)
            total_s += c[i].seconds;
        sb_printf(&md, "| %lld | %lld | %d | %g | %s | %s%.4f | %.1f | %s | %s | %s |\n", (long long)c[i].seq,
                  (long long)c[i].cand_id, c[i].rung, c[i].budget, c[i].status, ok ? "" : "~", ok ? c[i].val_accuracy : 0.0,
                  c[i].seconds, c[i].worker, d, ok ? c[i].mutation : c[i].reason);
        json_t *g = json_loads(c[i].genome, 0, &je);
        json_t *t = json_pack("{s:I, s:I, s:i, s:f, s:s, s:o, s:f, s:s, s:s}", "seq", (json_int_t)c[i].seq, "trial",
                              (json_int_t)c[i].cand_id, "rung", c[i].rung, "epochs", c[i].budget, "status", c[i].status,
                              "recipe", g ? g : json_null(), "seconds", c[i].seconds, "worker", c[i].worker, "how",
                              ok ? c[i].mutation : c[i].reason);
        json_object_set_new(t, "val_accuracy", ok ? json_real(c[i].val_accuracy) : json_null());
        json_array_append_new(trials, t);
    }
    sb_printf(&md, "\nTraining time summed over the evaluations: %.1f s.\n", total_s);
    json_object_set_new(rj, "run", json_integer(r->run_id));
    json_object_set_new(rj, "db", json_string(r->db));
    json_object_set_new(rj, "strategy", json_string(strat));
    json_object_set_new(rj, "trials_planned", json_integer(r->cfg->trials));
    json_t *rungs = json_array();
    for (int k = 0; k < r->cfg->nrungs; k++)
        json_array_append_new(rungs, json_real(r->cfg->rungs[k]));
    json_object_set_new(rj, "rungs", rungs);
    json_object_set_new(rj, "data", json_pack("{s:i, s:i, s:i, s:i, s:I}", "train", r->data->n_train, "validation",
                                              r->data->n_val, "retrain", r->data->n_all, "test", r->data->n_test,
                                              "split_seed", (json_int_t)r->data->split_seed));
    json_t *bo = json_pack("{s:I, s:I, s:f, s:f, s:f, s:O}", "trial", (json_int_t)best->cand_id, "seq",
                           (json_int_t)best->seq, "epochs", best->budget, "val_accuracy", best->val_accuracy,
                           "test_accuracy", f[1].test_accuracy, "train", best_train);
    json_object_set_new(bo, "recipe", json_loads(best->genome, 0, &je));
    json_object_set_new(rj, "best", bo);
    if (have[2]) {
        json_t *b2 = json_loads(recipe[2], 0, &je);
        json_object_set_new(rj, "baseline", json_pack("{s:f, s:f, s:o}", "test_accuracy", f[2].test_accuracy,
                                                      "seconds", f[2].seconds, "train", b2 ? b2 : json_null()));
    }
    json_object_set_new(rj, "wall_seconds", json_real(r->seconds));
    json_object_set_new(rj, "train_seconds_sum", json_real(total_s));
    json_object_set_new(rj, "loadavg", json_pack("[f, f, f]", load[0], load[1], load[2]));
    json_object_set_new(rj, "trials", trials);
    rc = write_json(dir, "report.json", rj, err);
    json_decref(rj);
    if (rc == 0) {
        char p[1300];
        snprintf(p, sizeof p, "%s/report.md", dir);
        rc = fn_write_file(p, md.p, md.n, 0644, err);
    }
    free(md.p);
out:
    json_decref(best_train);
    for (int k = 1; k <= 2; k++) {
        free(arch[k]);
        free(recipe[k]);
        free(w[k]);
    }
    store_nas_candidates_free(c, n);
    return rc;
}
