/* sim: a simulation worker (client_simulate in client/client.h): many sites in one process. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <zmq.h>

#include "client/client.h"
#include "client/site.h"
#include "client/trainer.h"
#include "common/log.h"
#include "common/util.h"

/* One process, many sites: each virtual site has its own key pair, its own CURVE connection and
 * its own shard, so the server sees exactly what it would see from separate machines; the sites
 * share the data set in memory, one model and one ZeroMQ context, and train one after another. */
typedef struct sim_site { /* what the sites' link options point at */
    char name[32], key_path[PATH_MAX], server_key[PATH_MAX];
} sim_site_t;

int client_simulate(const client_options_t *o, const char *kits_dir, int first, int count, err_t *err)
{
    if (o->shards < 1 || first < 0 || count < 1 || first + count > o->shards)
        return err_set(err, FN_EINVAL, "simulated sites %d..%d do not fit in %d shards", first, first + count - 1,
                       o->shards);
    trainer_data_t data;
    int *assign = NULL, rc;
    if ((rc = trainer_data_load(&data, o->data_dir, err)) < 0)
        return rc;
    if ((rc = client_partition(o, &data.src, &assign, err)) < 0) {
        trainer_data_free(&data);
        return rc;
    }
    /* About four descriptors a site (its TCP connection, its sockets' mailboxes). */
    long files = fn_raise_open_files();
    if (files > 0 && files < 4L * count + 64)
        log_warn("simulating %d sites may need %d open files; `ulimit -n` allows %ld", count, 4 * count + 64, files);
    void *ctx = zmq_ctx_new();
    /* Each site holds three sockets (its DEALER and the two ends of its monitor); ZeroMQ's
     * default of 1023 sockets a context stopped a worker at 341 sites. */
    if (!ctx || zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 3 * count + 16) != 0) {
        if (ctx)
            zmq_ctx_term(ctx);
        trainer_data_free(&data);
        free(assign);
        return err_set(err, FN_EIO, "cannot make a ZeroMQ context for %d sites: %s", count,
                       zmq_strerror(zmq_errno()));
    }
    sim_site_t *v = FN_CALLOC((size_t)count, sizeof *v);
    site_t *sites = FN_CALLOC((size_t)count, sizeof *sites);
    for (int i = 0; rc == 0 && i < count; i++) {
        int k = first + i;
        snprintf(v[i].name, sizeof v[i].name, "site-%d", k + 1);
        snprintf(v[i].key_path, sizeof v[i].key_path, "%s/site-%d/site.key", kits_dir, k + 1);
        snprintf(v[i].server_key, sizeof v[i].server_key, "%s/site-%d/server.pub", kits_dir, k + 1);
        sites[i].lo = o->link;
        sites[i].lo.ctx = ctx;
        sites[i].lo.name = v[i].name;
        sites[i].lo.key_path = v[i].key_path;
        sites[i].lo.server_key = v[i].server_key;
        rc = site_samples(&sites[i], assign, data.src.count, k, err);
        if (rc == 0)
            rc = site_open(&sites[i], err);
    }
    free(assign);
    trainer_t trainer = {.data = &data};
    if (rc == 0) {
        log_info("simulating sites %d..%d on %s", first + 1, first + count, o->link.endpoint);
        rc = site_loop(sites, count, &trainer, &data, err);
    }
    for (int i = 0; i < count; i++)
        site_close(&sites[i]);
    zmq_ctx_term(ctx);
    trainer_free(&trainer);
    trainer_data_free(&data);
    free(sites);
    free(v);
    return rc;
}
