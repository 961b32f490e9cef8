/* server_nas: the federated search's round (Zhu and Jin's real-time federated evolutionary NAS
 * on the weight-sharing supernet, nas/fedsuper.h). Each round:
 *   open       the strategy proposes the round's candidates (evolution: the population's next
 *              individuals; NSGA-II: until a generation is complete); each is a path of the
 *              supernet; the round's drawn sites are shuffled and dealt out among the candidates
 *              ("double sampling": every candidate trains on a random subset of the sites);
 *   train      each site gets its candidate's architecture and slice as the "train" message's
 *              model and returns the change like any update (sites need nothing new);
 *   aggregate  each supernet element moves by the mean change of the sites that trained it;
 *   score      every candidate is measured on the same draw of sites' held-out samples
 *              (federated evaluation) and told to the strategy with its parameter count (the
 *              communication cost: a site moves 8 bytes per federated value of its path a round);
 *   commit     the round's candidates go to the NAS tables and the supernet to the checkpoint in
 *              the round's transaction; the round's best is tested on the server's test set.
 * When the search budget (nas.budget candidates) is spent, the remaining rounds train and score
 * the best architecture found, on every drawn site. A resumed run loads the supernet and replays
 * the stored asks and tells into a new strategy (nas/strategy.h: the same proposals follow). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/store_nas.h"
#include "common/util.h"
#include "crypto/dp.h"
#include "engine/nn.h"
#include "nas/config.h"
#include "nas/fedsuper.h"
#include "nas/strategy.h"
#include "server/server_int.h"
#include "server/site_msg.h"


/* ---- setup ---- */

static int parse(const config_t *cfg, nas_config_t *nc, err_t *err)
{
    int rc = nas_config_parse(cfg->nas, cfg->source, cfg->text, "nas", cfg->seed, nc, err);
    if (rc)
        return rc;
    int input_dim, classes;
    server_dataset_dims(cfg, &input_dim, &classes);
    int side = (int)lround(sqrt((double)input_dim));
    nc->space.classes = classes;
    if (side * side == input_dim) {
        nc->space.in_c = 1;
        nc->space.in_h = nc->space.in_w = side;
    } else {
        nc->space.in_c = nc->space.in_h = 1;
        nc->space.in_w = input_dim;
    }
    return 0;
}

int server_nas_check(const config_t *cfg, err_t *err)
{
    nas_config_t nc;
    int rc = parse(cfg, &nc, err);
    if (rc)
        return rc;
    if (cfg->dp.enabled && cfg->secagg.enabled)
        return config_error_at(cfg, "dp", err,
                               "a federated search takes central differential privacy only, not distributed noise "
                               "with secure aggregation yet; remove the \"dp\" or the \"secure_aggregation\" block");
    if (cfg->dp.enabled && cfg->dp.adaptive)
        return config_error_at(cfg, "dp.adaptive", err,
                               "a federated search clips to a fixed bound; remove \"adaptive\"");
    if (cfg->compression.enabled)
        return config_error_at(cfg, "compression", err,
                               "a federated search sends each site a path of its own; remove the \"compression\" "
                               "block");
    if (!cfg->evaluate.enabled)
        return config_error_at(cfg, "nas", err,
                               "a federated search scores its candidates on the sites' held-out samples: add an "
                               "\"evaluate\" block, e.g. \"evaluate\": {\"holdout\": 0.1, \"clients_fraction\": 1}");
    if (nc.strategy.kind == NAS_STRATEGY_ASHA)
        return config_error_at(cfg, "nas.strategy.name", err,
                               "a federated search trains every candidate for one round; use \"evolution\", "
                               "\"nsga2\" or \"random\"");
    strategy_config_t sc;
    if ((rc = server_parse_strategy(cfg, &sc, err)) < 0)
        return rc;
    if (sc.kind != STRATEGY_FEDAVG)
        return config_error_at(cfg, "strategy.name", err,
                               "a federated search averages each supernet weight over the sites that trained it "
                               "(FedAvg); remove \"strategy\" or set its name to \"fedavg\"");
    return 0;
}

/* Creates every supernet tensor at its largest shape up front (so secure aggregation's layout is
 * fixed, and a run with and without it starts from the same weights), by cutting paths that reach
 * them all, and finds the largest path among them, which sizes the messages the server accepts. */
static int largest_arch(const nas_space_t *sp, nas_fedsuper_t *fs, size_t *stats, json_t **out, size_t *m,
                        err_t *err)
{
    *stats = 0;
    *out = NULL;
    *m = 0;
    int maxw = 0;
    for (int i = 0; i < sp->nwidths; i++)
        maxw = sp->widths[i] > maxw ? sp->widths[i] : maxw;
    int nops = sp->kind == NAS_SPACE_MACRO ? sp->nops : sp->nedge_ops;
    /* Macro: each op at every depth, with and without batch norm where the space searches it,
     * after each op at depth 0 too (a pool keeps its input's channels, so a pool's batch norm is
     * widest after the widest convolution). */
    int leads = sp->kind == NAS_SPACE_MACRO ? nops + 1 : 1;
    for (int k = 0; k < 2 * nops * leads; k++) {
        int lead = k / (2 * nops) - 1, bn = (k / nops) % 2;
        if (sp->kind == NAS_SPACE_MACRO && ((bn && sp->batchnorm == NAS_BN_OFF) || (!bn && sp->batchnorm == NAS_BN_ON)))
            continue;
        if (sp->kind == NAS_SPACE_CELL && bn)
            continue;
        nas_genome_t g;
        memset(&g, 0, sizeof g);
        g.kind = sp->kind;
        if (sp->kind == NAS_SPACE_MACRO) {
            g.nlayers = sp->layers;
            for (int l = 0; l < sp->layers; l++)
                g.layer[l] = (nas_macro_layer_t){.op = sp->ops[l == 0 && lead >= 0 ? lead : k % nops], .width = maxw,
                                                 .bn = bn, .reduce = l < sp->reductions};
        } else {
            for (int e = 0; e < NAS_CELL_EDGES; e++)
                g.edge[e] = sp->edge_ops[k % nops];
            g.width = maxw;
            for (int i = 0; i < sp->ncells; i++)
                g.cells = sp->cells[i] > g.cells ? sp->cells[i] : g.cells;
        }
        err_t e;
        json_t *arch;
        engine_model_t *mod;
        if (nas_genome_validate(sp, &g, &e) || nas_genome_decode(sp, &g, &arch, &e))
            continue;
        if (fs) { /* every tensor at its largest shape (secure aggregation's fixed layout) */
            nas_fedsuper_path_t *p;
            if (nas_fedsuper_path(fs, &g, &p, err) < 0) {
                json_decref(arch);
                return err->code;
            }
            *stats = p->m - p->np > *stats ? p->m - p->np : *stats;
            nas_fedsuper_path_free(p);
        }
        if (engine_model_create_shape(arch, sp->in_c, sp->in_h, sp->in_w, sp->classes, &mod, &e)) {
            json_decref(arch);
            continue;
        }
        size_t n = engine_model_num_federated(mod);
        engine_model_free(mod);
        if (n > *m) {
            json_decref(*out);
            *out = arch;
            *m = n;
        } else {
            json_decref(arch);
        }
    }
    if (!*out)
        return err_set(err, FN_EINVAL, "nas.space: no uniform architecture of the space builds");
    return 0;
}

static void round_clear(server_nas_t *n)
{
    for (int i = 0; i < n->nc; i++) {
        nas_fedsuper_path_free(n->c[i].path);
        if (n->c[i].bc && atomic_fetch_sub(&n->c[i].bc->refs, 1) == 1)
            free(n->c[i].bc);
    }
    n->nc = 0;
    n->best = -1;
}

void server_nas_free(server_t *s)
{
    server_nas_t *n = s->nas;
    if (!n)
        return;
    round_clear(n);
    free(n->c);
    free(n->site_cand);
    free(n->sa_zero);
    free(n->dp_sum);
    free(n->dp_tmp);
    free(n->dp_clip);
    nas_strategy_free(n->strat);
    nas_fedsuper_free(n->fs);
    json_decref(n->ref_arch);
    free(n);
    s->nas = NULL;
}

int server_nas_create(server_t *s, size_t *max_m, err_t *err)
{
    server_nas_t *n = FN_CALLOC(1, sizeof *n);
    s->nas = n;
    n->best = -1;
    int rc = server_nas_check(s->cfg, err);
    if (rc == 0)
        rc = parse(s->cfg, &n->cfg, err);
    if (rc == 0)
        rc = nas_strategy_create(&n->cfg, n->cfg.seed, &n->strat, err);
    if (rc == 0)
        rc = nas_fedsuper_create(&n->cfg.space, rng_derive(n->cfg.seed, 0xfed5u), &n->fs, err);
    n->secagg = s->cfg->secagg.enabled;
    if (rc == 0)
        rc = largest_arch(&n->cfg.space, n->fs, &n->sa_stats, &n->ref_arch, max_m, err);
    if (rc)
        return rc;
    switch (n->cfg.strategy.kind) {
    case NAS_STRATEGY_NSGA2:
        n->per_round = n->cfg.strategy.mu > n->cfg.strategy.lambda ? n->cfg.strategy.mu : n->cfg.strategy.lambda;
        break;
    default:
        n->per_round = n->cfg.strategy.population > 0 ? n->cfg.strategy.population : n->cfg.workers;
    }
    if (n->per_round < 1)
        n->per_round = 1;
    n->sa_params = nas_fedsuper_num_params(n->fs);
    if (s->cfg->dp.enabled) {
        size_t full = n->sa_params + (size_t)n->per_round * n->sa_stats;
        n->dp_sum = FN_CALLOC(full, sizeof *n->dp_sum);
        n->dp_tmp = FN_CALLOC(n->sa_params, sizeof *n->dp_tmp);
        n->dp_clip = FN_CALLOC(*max_m, sizeof *n->dp_clip);
        n->dp_clip_cap = *max_m;
    }
    if (n->secagg) {
        size_t full = n->sa_params + (size_t)n->per_round * n->sa_stats;
        *max_m = full > *max_m ? full : *max_m;
        log_info("federated search under secure aggregation: every site masks %zu values (%zu supernet parameters, "
                 "%d x %zu statistics); values outside a site's path are zeros",
                 full, n->sa_params, n->per_round, n->sa_stats);
    }
    n->c = FN_CALLOC((size_t)n->per_round, sizeof *n->c);
    if (!s->opt.resume) {
        store_nas_run_t r = {.split_seed = n->cfg.seed, .budget = n->cfg.budget, .workers = s->cfg->clients.count,
                             .threads = 1};
        snprintf(r.strategy, sizeof r.strategy, "%s", nas_strategy_name(n->cfg.strategy.kind));
        snprintf(r.device, sizeof r.device, "federated");
        rc = store_nas_run_create(s->opt.store, s->opt.run_id, &r, err);
    }
    log_info("federated search: %s, %d candidates a round, budget %d, largest path %zu values",
             nas_strategy_name(n->cfg.strategy.kind), n->per_round, n->cfg.budget, *max_m);
    return rc;
}

const json_t *server_nas_ref_arch(const server_t *s) { return s->nas->ref_arch; }

void server_nas_layout(server_t *s)
{
    server_nas_t *n = s->nas;
    if (!n->secagg)
        return;
    s->mod.m = n->sa_params + (size_t)n->per_round * n->sa_stats;
    n->sa_zero = FN_CALLOC(s->mod.m, sizeof *n->sa_zero);
    s->mod.params = n->sa_zero;
}

int server_nas_best_params(server_t *s)
{
    nas_proposal_t p;
    nas_result_t r;
    err_t e;
    return nas_strategy_best(s->nas->strat, &p, &r, &e) < 0 ? 0 : (int)r.params;
}

/* ---- open: candidates, their paths and slices, and the deal of sites ---- */

static int add_candidate(server_t *s, const nas_proposal_t *p, int64_t seq, err_t *err)
{
    server_nas_t *n = s->nas;
    server_nas_cand_t *c = &n->c[n->nc];
    memset(c, 0, sizeof *c);
    c->prop = *p;
    c->seq = seq;
    int rc = nas_fedsuper_path(n->fs, &p->genome, &c->path, err);
    if (rc)
        return err_wrap(err, "round %d, candidate %d: ", s->rnd.round, p->id);
    c->flops = engine_net_flops_per_sample(engine_model_net(c->path->model));
    n->nc++;
    return 0;
}

static int ask_round(server_t *s, err_t *err)
{
    server_nas_t *n = s->nas;
    while (n->nc < n->per_round && nas_strategy_asked(n->strat) < n->cfg.budget) {
        nas_proposal_t p;
        int rc = nas_strategy_ask(n->strat, &p, err);
        if (rc == NAS_ASK_WAIT)
            break;
        if (rc < 0 || (rc = add_candidate(s, &p, n->next_seq++, err)) < 0)
            return rc;
    }
    if (n->nc == 0) { /* the budget is spent: the best architecture found trains on */
        nas_proposal_t p;
        nas_result_t r;
        int rc = nas_strategy_best(n->strat, &p, &r, err);
        if (rc < 0)
            return err_wrap(err, "round %d: the search budget is spent and no candidate succeeded: ", s->rnd.round);
        if ((rc = add_candidate(s, &p, -1, err)) < 0)
            return rc;
    }
    return 0;
}

static int cmp_site_id(const void *a, const void *b)
{
    return (*(sites_site_t *const *)a)->id - (*(sites_site_t *const *)b)->id;
}

int server_nas_open(server_t *s, err_t *err)
{
    server_nas_t *n = s->nas;
    nas_fedsuper_discard(n->fs); /* anything a failed attempt left */
    if (n->dp_sum)
        memset(n->dp_sum, 0, (n->sa_params + (size_t)n->per_round * n->sa_stats) * sizeof *n->dp_sum);
    int rc = 0;
    if (n->nc > 0 && n->open_round == s->rnd.round) {
        /* Secure aggregation aborted this round and runs it again: the same candidates (the
         * strategy asked for them once), dealt anew among the sites now connected. */
        for (int i = 0; i < n->nc; i++) {
            server_nas_cand_t *c = &n->c[i];
            if (c->bc && atomic_fetch_sub(&c->bc->refs, 1) == 1)
                free(c->bc);
            c->bc = NULL;
            c->trainers = c->answers = 0;
            c->train_loss_sum = c->train_weight = 0;
        }
    } else {
        round_clear(n);
        if ((rc = ask_round(s, err)) < 0)
            return rc;
        n->open_round = s->rnd.round;
    }
    if ((n->secagg || n->dp_sum) && nas_fedsuper_num_params(n->fs) != n->sa_params)
        return err_set(err, FN_ESTATE,
                       "round %d: a candidate's path reaches supernet weights (%zu values now) that the secure "
                       "aggregation layout (%zu) did not plan for; this is a bug in the layout (server_nas.c)",
                       s->rnd.round, nas_fedsuper_num_params(n->fs), n->sa_params);
    for (int i = 0; i < n->nc; i++) /* every path's statistics fit its slot in the fixed layout */
        if ((n->secagg || n->dp_sum) && n->c[i].path->m - n->c[i].path->np > n->sa_stats)
            return err_set(err, FN_ESTATE,
                           "round %d: a candidate has %zu batch-norm statistics, more than the %zu the layout "
                           "planned for; this is a bug in the layout (server_nas.c)",
                           s->rnd.round, (size_t)(n->c[i].path->m - n->c[i].path->np), n->sa_stats);
    for (int i = 0; i < n->nc; i++) {
        server_nas_cand_t *c = &n->c[i];
        c->bc = FN_MALLOC(sizeof *c->bc + c->path->m * sizeof(float));
        atomic_init(&c->bc->refs, 1);
        nas_fedsuper_slice(n->fs, c->path, c->bc->data);
    }
    int count = sites_count(s->sites), k = 0;
    if (count > n->nsites) {
        n->site_cand = realloc(n->site_cand, (size_t)count * sizeof *n->site_cand);
        FN_CHECK(n->site_cand);
        n->nsites = count;
    }
    sites_site_t **sel = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *sel);
    for (int i = 0; i < count; i++) {
        n->site_cand[i] = -1;
        if (sites_at(s->sites, i)->selected)
            sel[k++] = sites_at(s->sites, i);
    }
    /* The deal: the selected sites (by id: registration order varies between runs) shuffled by
     * (seed, round), then dealt out one each in turn, so every candidate gets floor or ceil of
     * k / candidates sites. */
    qsort(sel, (size_t)k, sizeof *sel, cmp_site_id);
    rng_t r;
    rng_seed(&r, rng_derive(s->cfg->seed ^ 0xdea1ULL, (uint64_t)s->rnd.round));
    for (int i = k - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)(i + 1));
        sites_site_t *t = sel[i];
        sel[i] = sel[j];
        sel[j] = t;
    }
    for (int i = 0; i < k; i++) {
        n->site_cand[sites_index(s->sites, sel[i])] = i % n->nc;
        n->c[i % n->nc].trainers++;
    }
    free(sel);
    if (k < n->nc)
        log_warn("round %d: %d candidates and only %d sites: %d candidates are scored without training this round",
                 s->rnd.round, n->nc, k, n->nc - k);
    return 0;
}

/* The candidate a site trains this round, or NULL (not dealt one: a site that joined after the
 * deal, which then sits the round out). */
static server_nas_cand_t *site_cand(const server_t *s, const sites_site_t *site)
{
    const server_nas_t *n = s->nas;
    int i = sites_index(s->sites, site);
    if (i < 0 || i >= n->nsites || n->site_cand[i] < 0 || n->site_cand[i] >= n->nc)
        return NULL;
    return &n->c[n->site_cand[i]];
}

int server_nas_train_model(server_t *s, const sites_site_t *site, const json_t **arch, broadcast_t **bc, size_t *m)
{
    server_nas_cand_t *c = site_cand(s, site);
    if (!c)
        return -1;
    *arch = c->path->arch;
    *bc = c->bc;
    *m = c->path->m;
    return 0;
}

size_t server_nas_site_m(const server_t *s, const sites_site_t *site)
{
    const server_nas_cand_t *c = site_cand(s, site);
    return c ? c->path->m : 0;
}

int server_nas_add(server_t *s, const sites_site_t *site, const site_update_t *u, err_t *err)
{
    server_nas_t *n = s->nas;
    server_nas_cand_t *c = site_cand(s, site);
    if (!c)
        return err_set(err, FN_EINVAL, "no candidate was dealt to this site in round %d", s->rnd.round);
    int rc;
    if (n->dp_sum) {
        /* DP-FedAvg: the update clipped to C, unweighted, into the round's sum (noised once at
         * aggregation); its statistics in its candidate's slot. */
        double norm;
        if (c->path->m > n->dp_clip_cap) { /* a path longer than the largest planned one */
            free(n->dp_clip);
            n->dp_clip = FN_MALLOC(c->path->m * sizeof *n->dp_clip);
            n->dp_clip_cap = c->path->m;
        }
        memcpy(n->dp_clip, u->values, c->path->m * sizeof *n->dp_clip);
        if ((rc = dp_clip_l2(n->dp_clip, c->path->m, s->dp.clip.clip, &norm, err)) < 0)
            return rc;
        nas_fedsuper_scatter(n->fs, c->path, n->dp_clip, n->dp_tmp);
        for (size_t k = 0; k < n->sa_params; k++)
            n->dp_sum[k] += n->dp_tmp[k];
        float *slot = n->dp_sum + n->sa_params + (size_t)(c - n->c) * n->sa_stats;
        for (size_t k = c->path->np; k < c->path->m; k++)
            slot[k - c->path->np] += n->dp_clip[k];
    } else {
        rc = nas_fedsuper_add(n->fs, c->path, u->values, (double)u->samples, err);
    }
    if (rc == 0) {
        s->col.agg.count++; /* the round's arrivals, as plain updates count them */
        if (site_train_stats_ok(u->loss, u->accuracy) && !isnan(u->loss)) {
            c->train_loss_sum += (double)u->samples * u->loss;
            c->train_weight += (double)u->samples;
        }
    }
    return rc;
}

json_t *server_nas_scatter_info(const server_t *s, const sites_site_t *site)
{
    const server_nas_t *n = s->nas;
    const server_nas_cand_t *c = site_cand(s, site);
    if (!n->secagg || !c)
        return NULL;
    int64_t *off = FN_CALLOC((size_t)(c->path->nt > 0 ? c->path->nt : 1), sizeof *off);
    int64_t(*shape)[4] = FN_CALLOC((size_t)(c->path->nt > 0 ? c->path->nt : 1), sizeof *shape);
    nas_fedsuper_layout_of(n->fs, c->path, off, shape);
    json_t *t = json_array();
    for (int i = 0; i < c->path->nt; i++)
        json_array_append_new(t, json_pack("[I, I, I, I, I]", (json_int_t)off[i], (json_int_t)shape[i][0],
                                           (json_int_t)shape[i][1], (json_int_t)shape[i][2], (json_int_t)shape[i][3]));
    free(off);
    free(shape);
    int64_t stats = c->path->m > c->path->np ? (int64_t)(n->sa_params + (size_t)(c - n->c) * n->sa_stats) : -1;
    return json_pack("{s:I, s:o, s:I}", "length", (json_int_t)s->mod.m, "tensors", t, "stats", (json_int_t)stats);
}

/* Secure aggregation: s->mod.mean holds the decoded sum of the survivors' scattered changes;
 * each value is divided by the survivors that trained a path reading it. */
static int aggregate_sum(server_t *s, err_t *err)
{
    server_nas_t *n = s->nas;
    int count = sites_count(s->sites), k = 0;
    const nas_fedsuper_path_t **paths = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *paths);
    double *per = FN_CALLOC((size_t)n->nc, sizeof *per);
    for (int i = 0; i < count; i++) {
        sites_site_t *site = sites_at(s->sites, i);
        server_nas_cand_t *c = site->selected && site->reported ? site_cand(s, site) : NULL;
        if (c) {
            paths[k++] = c->path;
            per[c - n->c] += 1;
        }
    }
    int rc = 0;
    if ((uint32_t)k != s->sa.summed)
        rc = err_set(err, FN_ESTATE, "round %d: %u masked inputs were summed but %d sites sent theirs", s->rnd.round,
                     s->sa.summed, k);
    if (rc == 0)
        rc = nas_fedsuper_add_sum(n->fs, paths, k, s->mod.mean, err);
    for (int i = 0; rc == 0 && i < n->nc; i++)
        if (per[i] > 0)
            rc = nas_fedsuper_add_stats_sum(n->fs, n->c[i].path, s->mod.mean + n->sa_params + (size_t)i * n->sa_stats,
                                            per[i], err);
    for (int i = 0; i < n->nc; i++)
        n->c[i].trainers = (int)per[i]; /* the survivors, as the store reports them */
    free(paths);
    free(per);
    return rc;
}

/* Central DP: Gaussian noise of std z C on every value of the sum (one user's clipped update
 * moves the sum by at most C in L2), then each value divided by the number of sites dealt a path
 * reading it: a count the server fixed before the round, whatever arrives (DP-FedAvg's fixed
 * denominator, per parameter), so the division is post-processing of the noised sum. */
static int aggregate_dp(server_t *s, err_t *err)
{
    server_nas_t *n = s->nas;
    size_t full = n->sa_params + (size_t)n->per_round * n->sa_stats;
    int rc = dp_add_gaussian_noise(n->dp_sum, full, s->dp.z_updates * s->dp.clip.clip, err);
    int count = sites_count(s->sites), k = 0;
    const nas_fedsuper_path_t **paths = FN_MALLOC((size_t)(count > 0 ? count : 1) * sizeof *paths);
    double *per = FN_CALLOC((size_t)n->nc, sizeof *per);
    for (int i = 0; i < count; i++) {
        server_nas_cand_t *c = sites_at(s->sites, i)->selected ? site_cand(s, sites_at(s->sites, i)) : NULL;
        if (c) {
            paths[k++] = c->path;
            per[c - n->c] += 1;
        }
    }
    if (rc == 0)
        rc = nas_fedsuper_add_sum(n->fs, paths, k, n->dp_sum, err);
    for (int i = 0; rc == 0 && i < n->nc; i++)
        if (per[i] > 0)
            rc = nas_fedsuper_add_stats_sum(n->fs, n->c[i].path, n->dp_sum + n->sa_params + (size_t)i * n->sa_stats,
                                            per[i], err);
    memset(n->dp_sum, 0, full * sizeof *n->dp_sum);
    free(paths);
    free(per);
    return rc;
}

int server_nas_aggregate(server_t *s, err_t *err)
{
    if (s->nas->dp_sum) {
        int rc = aggregate_dp(s, err);
        if (rc < 0) {
            nas_fedsuper_discard(s->nas->fs);
            return rc;
        }
    } else if (s->sa.round) {
        int rc = aggregate_sum(s, err);
        if (rc < 0) {
            nas_fedsuper_discard(s->nas->fs); /* the round is not committed */
            return rc;
        }
    }
    size_t changed = nas_fedsuper_apply(s->nas->fs);
    log_debug("round %d: %zu supernet values changed", s->rnd.round, changed);
    return 0;
}

