/* site: the loop every site runs, whether it is a client agent (`fednas client`, one site) or
 * a simulation worker (many sites in one process sharing the data and one model). Each site
 * has its own link (common/link.h: monitor, heartbeats, registration, rejoin), its samples and
 * its round state; the loop dispatches the server's messages to the trainer. */
#ifndef FEDNAS_CLIENT_SITE_H
#define FEDNAS_CLIENT_SITE_H

#include "client/client.h"
#include "client/secagg_site.h"
#include "client/trainer.h"
#include "common/err.h"
#include "common/link.h"

typedef struct site {
    /* Set before site_open: the link's options (lo.name, when set, prefixes the site's log
     * lines) and the site's samples, indices into the data's source (the site owns idx). */
    link_options_t lo;
    int *idx, n;
    char tag[40];          /* "site-3: " before the site's own log lines, or "" */
    link_t *link;          /* NULL once the server ended the run for this site */
    secagg_site_t *sa;     /* this round's secure aggregation, when the server asks for it */
    trainer_feedback_t fb; /* error feedback of compressed updates, duplicate train messages */
    trainer_holdout_t ho;  /* samples held out of training for federated evaluation */
    double last_heard;     /* when the server last sent this site a message */
} site_t;

/* Reads the site's keys (lo.key_path, lo.server_key) and starts connecting and registering with
 * hello {"samples": n}. The link points at s->lo: s must not move until site_close. */
int site_open(site_t *s, err_t *err);
/* Runs sites[0..count) until the server has ended the run for each (0). A site's error ends the
 * loop: FN_EAUTH (refused key), FN_ETIMEOUT (a site cannot register within lo.connect_timeout,
 * or the server, once joined, has sent none of the sites anything for lo.idle_timeout),
 * FN_ESTATE (lo.stop raised). Malformed server messages are logged and ignored. */
int site_loop(site_t *sites, int count, trainer_t *trainer, const trainer_data_t *data, err_t *err);
void site_close(site_t *s);

/* The site's samples: part `shard` of assign (engine/partition.h), or all total samples when
 * assign is NULL (a real site's own data). */
int site_samples(site_t *s, const int *assign, int total, int shard, err_t *err);

#endif
