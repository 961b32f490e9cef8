/* server_eval: how the server measures the model: on its own test set (the IDX test split, or a
 * CSV table for tabular data), and by federated evaluation, where a sample of the sites
 * measures it on samples they hold out of training and the answers are averaged by samples. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "server/server_int.h"
#include "server/site_msg.h"

/* The server's test set: the IDX test split, or for tabular data the optional data.test CSV
 * (checked against data.features and data.classes). Without one the server evaluates nothing
 * itself and relies on federated evaluation. */
int eval_load_test_set(server_t *s, err_t *err)
{
    const config_t *c = s->cfg;
    server_dataset_dims(c, &s->mod.input_dim, &s->mod.classes);
    int rc;
    if (!c->data.csv) {
        if ((rc = engine_fmnist_load(c->data.path, "test", &s->mod.test, err)) < 0)
            return rc;
        s->mod.test_src = engine_source_from_dataset(&s->mod.test);
        s->mod.input_dim = s->mod.test.rows * s->mod.test.cols;
        s->mod.classes = s->mod.test.num_classes;
        s->mod.has_test = 1;
        return 0;
    }
    if (!c->data.test) {
        log_info("no test set (data.test): the model is measured by federated evaluation only");
        return 0;
    }
    if ((rc = engine_csv_load(c->data.test, &s->mod.test_table, err)) < 0)
        return config_error_at(c, "data.test", err, "%s", err->msg);
    if (s->mod.test_table.dim != c->data.features)
        return config_error_at(c, "data.test", err,
                               "%s has %d feature columns (and the label), but data.features is %d",
                               c->data.test, s->mod.test_table.dim, c->data.features);
    if (s->mod.test_table.num_classes > c->data.classes)
        return config_error_at(c, "data.test", err, "%s has label %d, but data.classes is %d (labels 0..%d)",
                               c->data.test, s->mod.test_table.num_classes - 1, c->data.classes, c->data.classes - 1);
    s->mod.test_src = engine_source_from_table(&s->mod.test_table);
    s->mod.has_test = 1;
    return 0;
}

/* What a site holds out of training for federated evaluation: a fraction, and a seed fixed for
 * the run and the site, so the split is the same every round (and after a resume). */
json_t *eval_holdout_info(const server_t *s, const sites_site_t *site)
{
    json_int_t seed = (json_int_t)(rng_derive(s->cfg->seed ^ 0x401d07ULL, (uint64_t)site->id) >> 1);
    return json_pack("{s:f, s:I}", "fraction", s->cfg->evaluate.holdout, "seed", seed);
}

/* The last round is always evaluated, so every run ends with a test accuracy. */
int eval_test_set(server_t *s, double *loss, double *acc, err_t *err)
{
    *loss = *acc = NAN;
    int every = s->cfg->server.evaluate_every;
    if (!((every > 0 && s->rnd.round % every == 0) || s->rnd.round == s->cfg->rounds))
        return 0;
    server_set_phase(s, s->rnd.round, "evaluating");
    if (!s->mod.has_test)
        return 0;
    return engine_model_evaluate_source(s->mod.model, &s->mod.test_src, NULL, 0, loss, acc, err);
}

/* A site's answer to "evaluate": its loss and accuracy on its held-out samples. */
void eval_on_result(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(s->sites, msg, s->opt.run_id, s->ev.in_eval, s->rnd.round);
    if (!site)
        return;
    site_eval_t ev;
    err_t e;
    if (!site->eval_pending) {
        log_warn("site %s: eval_result for round %d ignored (not asked for)", site->name, s->rnd.round);
        return;
    }
    if (site_msg_eval(msg, &ev, &e) < 0) {
        log_warn("site %s: malformed eval_result for round %d dropped: %s", site->name, s->rnd.round, e.msg);
        return;
    }
    site->eval_pending = 0;
    s->ev.answers++;
    s->ev.samples += (double)ev.samples;
    s->ev.loss_sum += (double)ev.samples * ev.loss;
    s->ev.acc_sum += (double)ev.samples * ev.accuracy;
}

/* Asks a clients_fraction sample of the connected sites (seeded by (seed, round), as the round's
 * draw) to measure the model; the answers that arrive within round_timeout are averaged. */
static int ask_sites(server_t *s)
{
    for (int i = 0; i < sites_count(s->sites); i++)
        sites_at(s->sites, i)->eval_pending = 0;
    int k, asked = 0;
    sites_site_t **cand = collect_draw_connected(s, 0, s->cfg->evaluate.clients_fraction, 0xe7a1ULL, &k);
    memset(&s->ev, 0, sizeof s->ev);
    s->ev.in_eval = 1;
    for (int i = 0; i < k; i++) {
        json_t *hdr = json_pack("{s:s, s:i, s:O, s:i, s:i}", "type", "evaluate", "round", s->rnd.round, "arch",
                                s->cfg->model, "input_dim", s->mod.input_dim, "num_classes", s->mod.classes);
        json_object_set_new(hdr, "holdout", eval_holdout_info(s, cand[i]));
        wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = s->mod.params, .count = s->mod.m};
        if (server_send(s, cand[i], hdr, &f, 1) >= 0) {
            cand[i]->eval_pending = 1;
            asked++;
        }
    }
    free(cand);
    double deadline = fn_mono() + s->cfg->server.round_timeout;
    while (sites_awaiting_eval(s->sites) > 0 && fn_mono() < deadline && !server_stopped(s))
        server_pump(s, 100);
    s->ev.in_eval = 0;
    sites_close_eval(s->sites, s->rnd.round);
    return asked;
}

/* The three federated-evaluation metrics of the round, in one transaction (all or none). */
static void record_federated(server_t *s, double loss, double acc)
{
    err_t e;
    int rc = store_tx_begin(s->opt.store, &e);
    if (rc == 0) {
        rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_accuracy", acc, &e);
        if (rc == 0)
            rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_loss", loss, &e);
        if (rc == 0)
            rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_samples", s->ev.samples, &e);
        int rc2 = store_tx_end(s->opt.store, rc == 0, &e);
        rc = rc < 0 ? rc : rc2;
    }
    if (rc < 0)
        log_error("round %d: its federated evaluation was not recorded: %s", s->rnd.round, e.msg);
}

/* Asks the sites and records their answers; the accuracy, NAN when none came. */
static double evaluate_and_record(server_t *s)
{
    server_set_phase(s, s->rnd.round, "federated_evaluation");
    int asked = ask_sites(s);
    if (s->ev.samples <= 0 || s->ev.answers == 0) {
        log_warn("round %d: no held-out results arrived from the %d sites asked to evaluate", s->rnd.round, asked);
        return NAN;
    }
    double loss = s->ev.loss_sum / s->ev.samples, acc = s->ev.acc_sum / s->ev.samples;
    record_federated(s, loss, acc);
    return acc;
}

/* Federated evaluation comes after the round's commit, not inside its transaction: the sites
 * are sent the new model, and under differential privacy a model may leave the server only
 * once its privacy cost is committed (a server killed after sending it but before the commit
 * would have released a model no accountant charged). A server killed between the commit and
 * this record leaves a committed round without its federated metrics: eval_recover, on resume,
 * evaluates that round's model (the checkpoint) again. */
static int due(const server_t *s)
{
    return s->cfg->evaluate.enabled && s->rnd.round > 0 && s->rnd.round % s->cfg->evaluate.every == 0;
}

double eval_federated(server_t *s)
{
    if (s->nas) /* the candidates were scored before the commit: the round's best */
        return server_nas_fed_acc(s);
    if (!due(s) || server_stopped(s))
        return NAN;
    return evaluate_and_record(s);
}

void eval_recover(server_t *s)
{
    err_t e;
    if (s->nas || !s->opt.resume || !due(s) || server_stopped(s) ||
        store_metric_get(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_accuracy", NULL, &e) != FN_ENOTFOUND)
        return;
    log_info("round %d was committed without its federated evaluation (the server stopped in between): its model "
             "is evaluated again", s->rnd.round);
    double acc = evaluate_and_record(s);
    if (!isnan(acc))
        log_info("round %d: federated evaluation recovered: accuracy %.4f", s->rnd.round, acc);
}
