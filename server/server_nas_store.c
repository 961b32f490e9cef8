/* server_nas_store: the federated search's scoring, commit and resume (server/server_nas.c has
 * the round; server/server_int.h the state): every candidate measured by federated evaluation on
 * the same sites, told to the strategy, written to the NAS tables with the round and its supernet
 * checkpoint, and on resume the strategy rebuilt by replaying the stored rounds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/store_nas.h"
#include "common/util.h"
#include "engine/nn.h"
#include "server/server_int.h"
/* ---- score: every candidate on the same sites' held-out samples ---- */

/* One candidate measured by the sites in draw (those that missed an earlier wave's deadline this
 * round are left out: an answer arriving late would be counted for the wrong candidate). */
static void score_one(server_t *s, server_nas_cand_t *c, const int *draw, int k, uint8_t *late, int nlate)
{
    float *v = FN_MALLOC(c->path->m * sizeof *v);
    nas_fedsuper_slice(s->nas->fs, c->path, v);
    for (int i = 0; i < sites_count(s->sites); i++)
        sites_at(s->sites, i)->eval_pending = 0;
    memset(&s->ev, 0, sizeof s->ev);
    s->ev.in_eval = 1;
    for (int i = 0; i < k; i++) {
        sites_site_t *site = sites_at(s->sites, draw[i]); /* by index: the registry may grow meanwhile */
        if (late[draw[i]] || !site->connected)
            continue;
        json_t *hdr = json_pack("{s:s, s:i, s:O, s:i, s:i}", "type", "evaluate", "round", s->rnd.round, "arch",
                                c->path->arch, "input_dim", s->mod.input_dim, "num_classes", s->mod.classes);
        json_object_set_new(hdr, "holdout", eval_holdout_info(s, site));
        wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = v, .count = c->path->m};
        long long sent = server_send(s, site, hdr, &f, 1);
        if (sent >= 0) {
            site->eval_pending = 1;
            s->rnd.bytes_down += sent;
        }
    }
    /* A site still pending at half the deadline is late for the rest of the round, whether or
     * not it answers before the deadline: one site answering each candidate just in time would
     * otherwise hold the round thread for candidates x round_timeout. */
    double t0 = fn_mono(), half = t0 + s->cfg->server.round_timeout / 2, deadline = t0 + s->cfg->server.round_timeout;
    while (sites_awaiting_eval(s->sites) > 0 && fn_mono() < half && !server_stopped(s))
        server_pump(s, 100);
    for (int i = 0; i < nlate; i++)
        if (sites_at(s->sites, i)->eval_pending && !late[i]) {
            late[i] = 1;
            log_warn("round %d: site %s has not scored candidate %d within half the round timeout: it is not asked "
                     "to score the round's other candidates", s->rnd.round, sites_at(s->sites, i)->name, c->prop.id);
        }
    while (sites_awaiting_eval(s->sites) > 0 && fn_mono() < deadline && !server_stopped(s))
        server_pump(s, 100);
    s->ev.in_eval = 0;
    sites_close_eval(s->sites, s->rnd.round);
    c->answers = s->ev.answers;
    c->samples = s->ev.samples;
    c->acc = s->ev.samples > 0 ? s->ev.acc_sum / s->ev.samples : NAN;
    c->loss = s->ev.samples > 0 ? s->ev.loss_sum / s->ev.samples : NAN;
    free(v);
}

static double cand_params(const server_nas_cand_t *c) { return (double)c->path->np; }

/* Scores the round's candidates, tells the strategy, and tests the best on the server's test
 * set (when this round is one the server evaluates). */
int server_nas_score(server_t *s, double *test_loss, double *test_acc, err_t *err)
{
    server_nas_t *n = s->nas;
    *test_loss = *test_acc = NAN;
    server_set_phase(s, s->rnd.round, "federated_evaluation");
    int rc0 = dp_mark_release(s, err); /* the noised supernet's paths leave the server next */
    if (rc0 < 0)
        return err_wrap(err, "round %d: the release of its noised supernet could not be recorded: ", s->rnd.round);
    int k;
    sites_site_t **cand = collect_draw_connected(s, 0, s->cfg->evaluate.clients_fraction, 0xe7a1ULL, &k);
    int count = sites_count(s->sites), *draw = FN_MALLOC((size_t)(k > 0 ? k : 1) * sizeof *draw);
    for (int i = 0; i < k; i++)
        draw[i] = sites_index(s->sites, cand[i]);
    free(cand);
    /* sites that join while scoring are never asked: late[] covers the registry as it is now */
    uint8_t *late = FN_CALLOC((size_t)(count > 0 ? count : 1), 1);
    for (int i = 0; i < n->nc && !server_stopped(s); i++)
        score_one(s, &n->c[i], draw, k, late, count);
    free(draw);
    free(late);
    if (server_stopped(s))
        return err_set(err, FN_ESTATE, "stopped while scoring the candidates of round %d", s->rnd.round);
    n->best = -1;
    for (int i = 0; i < n->nc; i++) {
        server_nas_cand_t *c = &n->c[i];
        if (c->answers > 0 && c->samples > 0 && (n->best < 0 || c->acc > n->c[n->best].acc))
            n->best = i;
        if (c->seq < 0)
            continue;
        nas_result_t r = {.status = c->answers > 0 && c->samples > 0 ? NAS_RESULT_OK : NAS_RESULT_FAILED,
                          .val_acc = c->answers > 0 && c->samples > 0 ? c->acc : 0, .params = cand_params(c),
                          .flops = c->flops};
        int rc = nas_strategy_tell(n->strat, &c->prop, &r, err);
        if (rc < 0)
            return err_wrap(err, "round %d, candidate %d: ", s->rnd.round, c->prop.id);
        n->tells++;
        log_info("round %d candidate %d (%.12s, %.0f params, %d sites): fed acc %.4f", s->rnd.round, c->prop.id,
                 c->path->hash, cand_params(c), c->trainers, c->acc);
    }
    int every = s->cfg->server.evaluate_every;
    int due = (every > 0 && s->rnd.round % every == 0) || s->rnd.round == s->cfg->rounds;
    if (n->best < 0 || !due || !s->mod.has_test)
        return 0;
    server_nas_cand_t *b = &n->c[n->best];
    nas_fedsuper_slice(n->fs, b->path, engine_model_params(b->path->model));
    return engine_model_evaluate_source(b->path->model, &s->mod.test_src, NULL, 0, test_loss, test_acc, err);
}

/* The round's federated metrics are its best candidate's (written by server_nas_commit). */
double server_nas_fed_acc(server_t *s)
{
    server_nas_t *n = s->nas;
    return n->best < 0 ? NAN : n->c[n->best].acc;
}

/* The best candidate's federated metrics, in the round's transaction. */
static int put_fed_metrics(server_t *s, err_t *err)
{
    const server_nas_t *n = s->nas;
    if (n->best < 0)
        return 0;
    const server_nas_cand_t *b = &n->c[n->best];
    int rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_accuracy", b->acc, err);
    if (rc == 0)
        rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_loss", b->loss, err);
    if (rc == 0)
        rc = store_metric_insert(s->opt.store, s->opt.run_id, s->rnd.round, "fed_eval_samples", b->samples, err);
    return rc;
}

/* ---- commit: the supernet as the checkpoint, the candidates in the NAS tables ---- */

static int put_candidate(server_t *s, const server_nas_cand_t *c, int64_t tell_seq, double now, err_t *err)
{
    const server_nas_t *n = s->nas;
    json_t *gj = NULL;
    int rc = nas_genome_to_json(&n->cfg.space, &c->prop.genome, &gj, err);
    if (rc < 0)
        return rc;
    char *genome = json_dumps(gj, JSON_COMPACT | JSON_SORT_KEYS), *arch = json_dumps(c->path->arch, JSON_COMPACT);
    json_decref(gj);
    int ok = c->answers > 0 && c->samples > 0;
    store_nas_candidate_t r = {.seq = c->seq, .cand_id = c->prop.id, .rung = c->prop.rung, .genome = genome,
                               .arch = arch, .parent = c->prop.parent_id, .budget = s->cfg->train.epochs,
                               .attempts = 1, .cached_from = -1, .tell_seq = tell_seq,
                               .queued_at = now, .started_at = now, .ended_at = now, .has_metrics = ok,
                               .val_accuracy = c->acc, .val_loss = c->loss,
                               .train_loss = c->train_weight > 0 ? c->train_loss_sum / c->train_weight : NAN,
                               .flops = c->flops, .params = (int64_t)c->path->np, .threads = 1};
    snprintf(r.hash, sizeof r.hash, "%s", c->prop.hash);
    snprintf(r.mutation, sizeof r.mutation, "%s", c->prop.mutation);
    snprintf(r.status, sizeof r.status, "%s", ok ? "done" : "failed");
    snprintf(r.worker, sizeof r.worker, "round %d", s->rnd.round);
    if (!ok)
        snprintf(r.reason, sizeof r.reason, "no site answered its federated evaluation in round %d", s->rnd.round);
    else
        snprintf(r.reason, sizeof r.reason, "trained by %d sites; scored on %.0f held-out samples of %d sites",
                 c->trainers, c->samples, c->answers);
    rc = store_nas_candidate_put(s->opt.store, s->opt.run_id, &r, err);
    free(genome);
    free(arch);
    return rc;
}

/* The best architecture so far as the search's result (rank 1), with its supernet weights and
 * its test accuracy: `fednas nas export` writes it for a FedAvg retraining. */
static int put_final(server_t *s, err_t *err)
{
    server_nas_t *n = s->nas;
    nas_proposal_t p;
    nas_result_t r;
    if (nas_strategy_best(n->strat, &p, &r, err) < 0)
        return 0; /* no candidate succeeded: nothing to report */
    nas_fedsuper_path_t *path;
    int rc = nas_fedsuper_path(n->fs, &p.genome, &path, err);
    if (rc < 0)
        return rc;
    float *w = engine_model_params(path->model);
    nas_fedsuper_slice(n->fs, path, w);
    double loss = NAN, acc = NAN;
    if (s->mod.has_test)
        rc = engine_model_evaluate_source(path->model, &s->mod.test_src, NULL, 0, &loss, &acc, err);
    char *arch = json_dumps(path->arch, JSON_COMPACT);
    char recipe[160];
    snprintf(recipe, sizeof recipe, "{\"federated\":true,\"supernet_rounds\":%d}", s->rnd.round);
    int64_t seq = -1;
    for (int i = 0; i < n->nc; i++)
        if (strcmp(n->c[i].prop.hash, p.hash) == 0 && n->c[i].seq >= 0)
            seq = n->c[i].seq;
    store_nas_final_t f = {.rank = 1, .seq = seq >= 0 ? seq : p.id, .arch = arch, .recipe = recipe,
                           .test_accuracy = acc, .test_loss = loss, .val_accuracy = r.val_acc, .flops = r.flops,
                           .params = (int64_t)path->np, .weights = w, .n_weights = path->m};
    if (rc == 0)
        rc = store_nas_final_put(s->opt.store, s->opt.run_id, &f, err);
    free(arch);
    nas_fedsuper_path_free(path);
    return rc;
}

int server_nas_commit(server_t *s, const store_round_t *rec, err_t *err)
{
    server_nas_t *n = s->nas;
    void *blob;
    size_t len;
    int rc = nas_fedsuper_save(n->fs, &blob, &len, err);
    if (rc < 0)
        return rc;
    char meta[160];
    snprintf(meta, sizeof meta, "{\"strategy\":\"fedavg\",\"federated_nas\":true,\"supernet_values\":%zu}",
             nas_fedsuper_size(n->fs));
    store_checkpoint_t ck = {blob, len, NULL, 0, meta};
    rc = store_round_commit(s->opt.store, s->opt.run_id, rec, &ck, err);
    free(blob);
    if (rc == 0)
        rc = put_fed_metrics(s, err);
    double now = fn_now();
    int64_t tell = n->tells - n->nc;
    for (int i = 0; rc == 0 && i < n->nc; i++)
        if (n->c[i].seq >= 0)
            rc = put_candidate(s, &n->c[i], tell++, now, err);
    if (rc == 0 && s->rnd.round == s->cfg->rounds)
        rc = put_final(s, err);
    return rc;
}

/* ---- resume: the supernet from the checkpoint, the strategy by replaying the stored rounds ---- */

static int replay(server_t *s, int committed, err_t *err)
{
    server_nas_t *n = s->nas;
    store_nas_candidate_t *c = NULL;
    int nc = 0;
    int rc = store_nas_candidates_load(s->opt.store, s->opt.run_id, &c, &nc, err);
    if (rc < 0)
        return rc;
    for (int r = 1; rc == 0 && r <= committed; r++) {
        char tag[32];
        snprintf(tag, sizeof tag, "round %d", r);
        nas_proposal_t *asked = FN_CALLOC((size_t)(nc > 0 ? nc : 1), sizeof *asked);
        int *row = FN_CALLOC((size_t)(nc > 0 ? nc : 1), sizeof *row), na = 0;
        for (int i = 0; rc == 0 && i < nc; i++) {
            if (strcmp(c[i].worker, tag) != 0)
                continue;
            if ((rc = nas_strategy_ask(n->strat, &asked[na], err)) != 0 || strcmp(asked[na].hash, c[i].hash) != 0) {
                rc = err_set(err, FN_ESTATE,
                             "resuming the search: candidate %lld of round %d is not what the strategy proposes again "
                             "(was the experiment's \"nas\" block changed?)",
                             (long long)c[i].seq, r);
                break;
            }
            row[na++] = i;
        }
        /* tells in their recorded order */
        for (int t = 0; rc == 0 && t < na; t++) {
            int best = -1;
            for (int j = 0; j < na; j++)
                if (row[j] >= 0 && (best < 0 || c[row[j]].tell_seq < c[row[best]].tell_seq))
                    best = j;
            const store_nas_candidate_t *x = &c[row[best]];
            nas_result_t res = {.status = strcmp(x->status, "done") == 0 ? NAS_RESULT_OK : NAS_RESULT_FAILED,
                                .val_acc = x->has_metrics ? x->val_accuracy : 0, .params = (double)x->params,
                                .flops = x->flops};
            rc = nas_strategy_tell(n->strat, &asked[best], &res, err);
            row[best] = -1;
            n->tells++;
        }
        free(asked);
        free(row);
    }
    for (int i = 0; i < nc; i++)
        if (c[i].seq >= n->next_seq)
            n->next_seq = c[i].seq + 1;
    store_nas_candidates_free(c, nc);
    return rc;
}

int server_nas_resume(server_t *s, err_t *err)
{
    store_checkpoint_t ck;
    int round, rc = store_checkpoint_load(s->opt.store, s->opt.run_id, &ck, &round, err);
    if (rc == FN_ENOTFOUND) {
        log_info("resuming federated search %lld after round 0 (none was committed)", (long long)s->opt.run_id);
        return s->cfg->dp.enabled ? dp_replay(s, 0, err) : 0;
    }
    if (rc < 0)
        return rc;
    rc = nas_fedsuper_load(s->nas->fs, ck.params, ck.params_len, err);
    store_checkpoint_free(&ck);
    if (rc < 0)
        return err_wrap(err, "the checkpoint of run %lld (round %d): ", (long long)s->opt.run_id, round);
    if ((rc = replay(s, round, err)) < 0)
        return rc;
    s->rnd.round = round;
    if (s->cfg->dp.enabled && (rc = dp_replay(s, round, err)) < 0) /* the accountant, round by round */
        return rc;
    log_info("resuming federated search %lld after round %d (%d candidates asked, %lld told)",
             (long long)s->opt.run_id, round, nas_strategy_asked(s->nas->strat), (long long)s->nas->tells);
    return 0;
}
