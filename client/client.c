/* client: the agent at a partner site (client/client.h): its data, one site, the site loop. */
#include "client/client.h"

#include <stdlib.h>

#include "client/site.h"
#include "client/trainer.h"
#include "common/log.h"

int client_run(const client_options_t *opt, err_t *err)
{
    trainer_data_t data;
    int rc = trainer_data_load(&data, opt->data_dir, err);
    if (rc < 0)
        return rc;
    trainer_t trainer = {.data = &data};
    site_t s = {.lo = opt->link};
    int *assign = NULL;
    if ((rc = client_partition(opt, &data.src, &assign, err)) == 0)
        rc = site_samples(&s, assign, data.src.count, opt->shard, err);
    free(assign);
    if (rc == 0)
        rc = site_open(&s, err);
    if (rc == 0) {
        log_info("training on %d samples of %s", s.n, opt->data_dir);
        rc = site_loop(&s, 1, &trainer, &data, err);
    }
    site_close(&s);
    trainer_free(&trainer);
    trainer_data_free(&data);
    return rc;
}
