/* server: the aggregation server's round state machine and its message dispatch. Map:
 *   server_create / server_free   the pieces each concern owns (server/server_int.h)
 *   on_message and friends         a site's hello, refusal and disconnect here; updates go to
 *                                  server_collect.c, sa_* to server_secagg.c, eval_result to
 *                                  server_eval.c
 *   run_round                      one round, a phase per function, read top-down:
 *                                  round_open (sites, privacy budget, draw, model out),
 *                                  round_collect (updates, or the secure-aggregation phases),
 *                                  round_aggregate (enough arrived? aggregate, account privacy),
 *                                  round_commit (evaluate, checkpoint, metrics, progress line)
 *   server_run                     registration, then rounds until done, stopped or over budget */
#include "server/server.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"
#include "server/site_msg.h"

/* ---- shared by the concerns ---- */

int server_stopped(const server_t *s) { return s->opt.stop && *s->opt.stop; }

/* Receives and handles every message waiting, or waits up to timeout_ms for one. */
void server_pump(server_t *s, int timeout_ms) { sites_pump(s->sites, timeout_ms); }

/* Records what the server is doing now for the dashboard (runs.phase; web/ pushes a
 * round_phase event when it changes). A failed write is logged: the round goes on. */
void server_set_phase(server_t *s, int round, const char *phase)
{
    err_t e;
    if (store_run_set_phase(s->opt.store, s->opt.run_id, round, phase, &e) < 0)
        log_warn("%s", e.msg);
}

long long server_send(server_t *s, sites_site_t *site, json_t *hdr, const wire_frame_t *frames, int n)
{
    return sites_send(s->sites, site, s->opt.run_id, hdr, frames, n);
}

void server_add_train_stats(server_t *s, long long samples, double loss, double accuracy)
{
    /* Every path that stores training statistics (plain updates, secagg adverts) passes here:
     * a peer's numbers are checked before they reach the round's metrics. */
    if (samples < 1 || samples > FN_MAX_SAMPLES || !site_train_stats_ok(loss, accuracy))
        return;
    s->rnd.train_loss_sum += (double)samples * loss;
    s->rnd.train_acc_sum += (double)samples * accuracy;
    s->rnd.train_weight += (double)samples;
}

/* ---- messages ---- */

static void on_hello(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_hello(s->sites, msg, s->opt.run_id, json_pack("{s:i}", "rounds", s->cfg->rounds));
    if (!site)
        return;
    err_t e;
    if (store_client_upsert(s->opt.store, s->opt.run_id, site->id, site->name, site->public_z85, site->samples,
                            "joined", &e) < 0)
        log_error("%s", e.msg);
    /* A selected site that lost its connection mid-round gets the round's model again. */
    if (s->rnd.in_round && site->selected && !site->reported && sa_expects_model(s, site)) {
        site->lost = 0;
        long long sent = collect_send_train(s, site);
        if (sent > 0)
            s->rnd.bytes_down += sent;
    }
}

/* A site that cannot take part (a relay asked for a mode it cannot honour, or whose clients all
 * missed its deadline) says why: logged, and the round stops waiting for it. */
static void on_refuse(server_t *s, wire_msg_t *msg)
{
    sites_site_t *site = site_msg_of_round(s->sites, msg, s->opt.run_id, 1, s->rnd.round);
    if (!site)
        return;
    /* The reason is the peer's text: one line of printable ASCII in the log, at most 200 bytes. */
    char why[201] = "(no reason given)";
    const char *reason = wire_get_str(msg, "reason");
    if (reason) {
        size_t i = 0;
        for (; reason[i] && i < sizeof why - 1; i++)
            why[i] = reason[i] >= 0x20 && reason[i] < 0x7f ? reason[i] : '?';
        why[i] = '\0';
    }
    log_warn("site %s refused round %d: %s", site->name, s->rnd.round, why);
    if (s->rnd.in_round && site->selected && !site->reported)
        site->lost = 1;
    else if (s->ev.in_eval)
        site->eval_pending = 0;
}

/* A connection closed, stopped answering heartbeats or let its queue fill: the registry has
 * marked it gone. */
static void on_disconnect(void *owner, sites_site_t *site)
{
    server_t *s = owner;
    if (sa_selected_lost_after_masking(s, site)) {
        site->lost = 1; /* its masked input is in; it cannot answer the unmasking request */
        log_warn("site %s disconnected during round %d after sending its masked input", site->name, s->rnd.round);
    } else if (s->rnd.in_round && site->selected && !site->reported) {
        site->lost = 1;
        log_warn("site %s disconnected during round %d; the round goes on without it", site->name, s->rnd.round);
    } else {
        log_info("site %s disconnected", site->name);
    }
    store_client_status(s->opt.store, s->opt.run_id, site->id, "disconnected", NULL);
}

static int on_message(void *owner, wire_msg_t *msg)
{
    server_t *s = owner;
    if (strcmp(msg->type, "hello") == 0)
        on_hello(s, msg);
    else if (strcmp(msg->type, "update") == 0)
        collect_on_update(s, msg);
    else if (strcmp(msg->type, "eval_result") == 0)
        eval_on_result(s, msg);
    else if (strcmp(msg->type, "refuse") == 0)
        on_refuse(s, msg);
    else if (strncmp(msg->type, "sa_", 3) == 0)
        sa_on_message(s, msg);
    else
        return -1;
    return 0;
}

/* ---- setup ---- */

int server_create(const server_options_t *opt, server_t **out, err_t *err)
{
    *out = NULL;
    server_t *s = FN_CALLOC(1, sizeof *s);
    s->opt = *opt;
    s->cfg = opt->cfg;
    int rc;
    sites_options_t so = {.keys_dir = opt->keys_dir, .role = "server", .noun = "site",
                          .on_message = on_message, .on_disconnect = on_disconnect, .owner = s};
    if ((rc = sites_open(&so, &s->sites, err)) < 0 || (rc = server_parse_strategy(s->cfg, &s->col.scfg, err)) < 0 ||
        (rc = eval_load_test_set(s, err)) < 0)
        goto fail;
    /* A federated search's server holds the supernet (server_nas.c); its placeholder model is the
     * space's largest path, which sizes the messages it accepts. */
    size_t nas_m = 0;
    if (s->cfg->nas && (rc = server_nas_create(s, &nas_m, err)) < 0)
        goto fail;
    const json_t *arch = s->nas ? server_nas_ref_arch(s) : s->cfg->model;
    if ((rc = engine_model_create(arch, s->mod.input_dim, s->mod.classes, &s->mod.model, err)) < 0) {
        config_error_at(s->cfg, "model", err, "%s", err->msg);
        goto fail;
    }
    engine_model_init(s->mod.model, s->cfg->seed);
    s->mod.params = engine_model_params(s->mod.model);
    s->mod.m = engine_model_num_federated(s->mod.model); /* parameters, then batch-norm statistics */
    if (s->nas)
        server_nas_layout(s);
    s->mod.mean = FN_MALLOC(s->mod.m * sizeof *s->mod.mean);
    if ((rc = collect_init(s, err)) < 0)
        goto fail;
    uint32_t inst = 0;
    if (getrandom(&inst, sizeof inst, 0) != sizeof inst)
        inst = (uint32_t)getpid() ^ (uint32_t)(fn_now() * 1e6);
    s->instance = 1 + (int64_t)(inst & 0x3fffffff);
    if ((rc = dp_setup(s, err)) < 0 || (opt->resume && (rc = record_load_checkpoint(s, err)) < 0))
        goto fail;
    /* Larger than any legal message (the model plus headroom): a peer cannot make us buffer more.
     * Two I/O threads share CURVE encryption of the broadcast and decryption of the updates. */
    int64_t maxmsg = (int64_t)(nas_m > s->mod.m ? nas_m : s->mod.m) * 4 + WIRE_MAX_HEADER + 4096;
    if ((rc = sites_listen(s->sites, opt->bind, s->cfg->server.heartbeat, maxmsg, 2, err)) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    server_free(s);
    return rc;
}

const char *server_endpoint(const server_t *s) { return sites_endpoint(s->sites); }

void server_free(server_t *s)
{
    if (!s)
        return;
    sites_free(s->sites);
    secagg_round_free(s->sa.round);
    free(s->sa.excluded);
    collect_free(s);
    server_nas_free(s);
    dp_free(s);
    engine_model_free(s->mod.model);
    engine_dataset_free(&s->mod.test);
    engine_table_free(&s->mod.test_table);
    free(s->mod.mean);
    free(s);
}

/* ---- the round state machine ---- */

/* Waits until `want` sites are connected (or the timeout passes with at least min_fit). */
static int wait_for_sites(server_t *s, int want, err_t *err)
{
    if (sites_connected(s->sites, NULL) >= want)
        return 0;
    double deadline = fn_mono() + s->cfg->server.register_timeout;
    server_set_phase(s, s->rnd.round + 1, "waiting");
    log_info("waiting for %d sites at %s (%d connected)", want, server_endpoint(s), sites_connected(s->sites, NULL));
    while (sites_connected(s->sites, NULL) < want && fn_mono() < deadline && !server_stopped(s))
        server_pump(s, 200);
    if (server_stopped(s))
        return err_set(err, FN_ESTATE, "stopped while waiting for sites");
    int n = sites_connected(s->sites, NULL);
    if (n < s->cfg->clients.min_fit)
        return err_set(err, FN_ETIMEOUT,
                       "only %d of %d sites connected within %.0f s (at least %d needed); check that the clients can "
                       "reach %s and that their keys are on the allow-list",
                       n, want, s->cfg->server.register_timeout, s->cfg->clients.min_fit, server_endpoint(s));
    if (n < want)
        log_warn("going on with %d of %d sites", n, want);
    return 0;
}

/* Enough sites, the privacy budget, then the round begins: the draw, and the model to each
 * selected site (with secure aggregation, after the protocol's driver is set up). */
static int round_open(server_t *s, store_round_t *rec, err_t *err)
{
    const config_t *c = s->cfg;
    int want = c->clients.per_round ? c->clients.per_round : c->clients.min_fit;
    if (c->secagg.enabled && c->secagg.threshold > want) /* fewer cannot make a round */
        want = c->secagg.threshold;
    int rc = wait_for_sites(s, want, err);
    if (rc < 0 || (rc = dp_round_open(s, err)) < 0)
        return rc;
    s->rnd.round++;
    memset(rec, 0, sizeof *rec);
    rec->round = s->rnd.round;
    rec->started_at = fn_now();
    s->rnd.t0 = fn_mono();
    fedavg_reset(&s->col.agg);
    s->rnd.train_loss_sum = s->rnd.train_acc_sum = s->rnd.train_weight = 0;
    s->rnd.bytes_up = s->rnd.bytes_down = 0;
    s->rnd.in_round = 1;
    collect_snapshot(s);
    s->rnd.selected = collect_draw(s);
    if (s->nas && (rc = server_nas_open(s, err)) < 0) {
        s->rnd.in_round = 0; /* nothing was sent: the round did not begin */
        s->rnd.round--;
        return rc;
    }
    secagg_round_free(s->sa.round);
    s->sa.round = NULL;
    if (c->secagg.enabled && (rc = sa_round_begin(s, err)) < 0)
        return rc;
    for (int i = 0; i < sites_count(s->sites); i++) {
        sites_site_t *site = sites_at(s->sites, i);
        if (!site->selected)
            continue;
        long long sent = collect_send_train(s, site);
        if (sent >= 0)
            s->rnd.bytes_down += sent;
        else
            site->lost = 1;
    }
    return 0;
}

/* Until every selected site has answered or the deadline: updates, or the secure-aggregation
 * phases (each with its own deadline). ROUND_RETRY when secure aggregation aborted. */
static int round_collect(server_t *s, int rc, err_t *err)
{
    if (s->cfg->secagg.enabled) {
        if (rc == 0)
            rc = sa_round_phases(s, err);
    } else {
        server_set_phase(s, s->rnd.round, "training");
        double deadline = fn_mono() + s->cfg->server.round_timeout;
        while (sites_awaiting_updates(s->sites) > 0 && fn_mono() < deadline && !server_stopped(s))
            server_pump(s, 100);
    }
    s->rnd.in_round = 0;
    if (server_stopped(s)) {
        s->rnd.round--;
        return err_set(err, FN_ESTATE, "stopped during round %d", s->rnd.round + 1);
    }
    return s->cfg->secagg.enabled ? sa_round_finish(s, rc, err) : 0;
}

/* Enough updates? Then the strategy applies their aggregate, and privacy is accounted. */
static int round_aggregate(server_t *s, err_t *err)
{
    s->rnd.dropped = 0;
    for (int i = 0; i < sites_count(s->sites); i++) {
        const sites_site_t *site = sites_at(s->sites, i);
        if (site->selected && !site->reported) {
            s->rnd.dropped++;
            if (!site->lost)
                log_warn("site %s missed the deadline of round %d", site->name, s->rnd.round);
            store_client_status(s->opt.store, s->opt.run_id, site->id, "dropped", NULL);
        }
    }
    if (s->col.agg.count < s->cfg->clients.min_fit) {
        s->rnd.round--;
        return err_set(err, FN_ETIMEOUT, "round %d: only %d of %d updates arrived within %.0f s (at least %d needed)",
                       s->rnd.round + 1, s->col.agg.count, s->rnd.selected, s->cfg->server.round_timeout,
                       s->cfg->clients.min_fit);
    }
    double t = fn_mono();
    s->rnd.phase_s[0] = t - s->rnd.t0;
    server_set_phase(s, s->rnd.round, "aggregating");
    int rc = collect_aggregate(s, err);
    if (rc == 0)
        rc = dp_round_close(s, err);
    s->rnd.phase_s[1] = fn_mono() - t;
    return rc;
}

/* The new model measured, committed with its checkpoint, recorded and shown. */
static int round_commit(server_t *s, store_round_t *rec, err_t *err)
{
    double t = fn_mono();
    int rc = s->nas ? server_nas_score(s, &rec->test_loss, &rec->test_accuracy, err)
                    : eval_test_set(s, &rec->test_loss, &rec->test_accuracy, err);
    if (rc < 0)
        return rc;
    s->rnd.phase_s[2] = fn_mono() - t;
    rec->ended_at = fn_now();
    rec->selected = s->rnd.selected;
    rec->participants = s->col.agg.count;
    rec->dropped = s->rnd.dropped;
    rec->train_loss = s->rnd.train_weight > 0 ? s->rnd.train_loss_sum / s->rnd.train_weight : NAN;
    rec->train_accuracy = s->rnd.train_weight > 0 ? s->rnd.train_acc_sum / s->rnd.train_weight : NAN;
    rec->samples = (int64_t)s->rnd.train_weight;
    rec->bytes_down = s->rnd.bytes_down;
    rec->bytes_up = s->rnd.bytes_up;
    /* The round, its checkpoint and its metrics (epsilon, the sampling rate a resume replays)
     * in one transaction: a server killed in between leaves all of them or none. */
    if ((rc = store_tx_begin(s->opt.store, err)) == 0) {
        if ((rc = record_commit(s, rec, err)) == 0) {
            record_phase_metrics(s);
            sa_record(s);
            dp_record(s);
        }
        int rc2 = store_tx_end(s->opt.store, rc == 0, err);
        rc = rc < 0 ? rc : rc2;
    }
    if (rc < 0)
        return err_wrap(err,
                        "round %d was not committed; rounds 1-%d are safe in the store, and once it can be written "
                        "`fednas server --resume %lld` (or `fednas run --resume %lld`) continues after them: ",
                        rec->round, rec->round - 1, (long long)s->opt.run_id, (long long)s->opt.run_id);
    sa_round_end(s);
    double fed_acc = eval_federated(s);
    record_print(s, rec, fed_acc);
    return 0;
}

static int run_round(server_t *s, store_round_t *rec, err_t *err)
{
    int rc = round_open(s, rec, err);
    if (rc < 0 && s->rnd.in_round == 0)
        return rc; /* before the round began: too few sites, or the privacy budget */
    if ((rc = round_collect(s, rc, err)) != 0)
        return rc;
    if ((rc = round_aggregate(s, err)) < 0)
        return rc;
    return round_commit(s, rec, err);
}

int server_run(server_t *s, server_summary_t *sum, err_t *err)
{
    memset(sum, 0, sizeof *sum);
    sum->params = (int)s->mod.m;
    sum->best_round = -1;
    sum->first_round = s->rnd.round + 1;
    double t0 = fn_mono(), round_seconds = 0;
    /* Everyone expected, before the first round; later rounds need only their own selection. */
    int rc = wait_for_sites(s, s->cfg->clients.count, err);
    if (rc == 0)
        eval_recover(s);
    while (rc == 0 && s->rnd.round < s->cfg->rounds) {
        store_round_t rec;
        rc = run_round(s, &rec, err);
        if (rc == ROUND_RETRY) {
            rc = 0;
            if (s->sa.attempt >= SECAGG_MAX_ATTEMPTS)
                rc = err_set(err, FN_ETIMEOUT, "round %d: secure aggregation aborted %d times in a row; giving up",
                             s->rnd.round + 1, s->sa.attempt);
            continue;
        }
        if (rc < 0)
            break;
        sum->rounds_done = s->rnd.round;
        if (!isnan(rec.test_accuracy) && (rec.test_accuracy > sum->best_accuracy || sum->best_round < 0)) {
            sum->best_accuracy = rec.test_accuracy;
            sum->best_round = rec.round;
        }
        sum->final_accuracy = rec.test_accuracy;
        sum->final_loss = rec.test_loss;
        sum->bytes_down += rec.bytes_down;
        sum->bytes_up += rec.bytes_up;
        sum->selections += rec.selected;
        round_seconds += rec.ended_at - rec.started_at;
    }
    sum->clients = sites_count(s->sites);
    if (s->nas) /* the search's result, not the placeholder that sized the messages */
        sum->params = server_nas_best_params(s);
    dp_summary(s, sum);
    if (s->dp.budget_reached) {
        log_info("%s; ending the run", err->msg);
        snprintf(sum->note, sizeof sum->note, "%s", err->msg);
        sum->budget_reached = 1;
        rc = 0;
    }
    int ran = sum->rounds_done - sum->first_round + 1;
    sum->total_seconds = fn_mono() - t0;
    sum->mean_round_seconds = ran > 0 ? round_seconds / ran : 0;
    sites_send_end(s->sites, s->opt.run_id, rc == 0 ? "done" : err->msg);
    for (int i = 0; i < sites_count(s->sites); i++)
        store_client_status(s->opt.store, s->opt.run_id, sites_at(s->sites, i)->id, "finished", NULL);
    return rc;
}
