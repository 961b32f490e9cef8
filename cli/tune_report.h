/* tune_report: what `fednas tune` leaves in the run folder: best.json (the experiment with the
 * best recipe as its train block, runnable by `fednas train`), report.json and report.md (the
 * trials table, the best recipe, validation and test accuracy against the experiment's own). */
#ifndef FEDNAS_CLI_TUNE_REPORT_H
#define FEDNAS_CLI_TUNE_REPORT_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"
#include "nas/eval.h"
#include "nas/tune.h"

typedef struct cli_tune_report {
    const char *db;
    int64_t run_id;
    const char *source; /* the experiment file (NULL: a resumed run) */
    const json_t *root; /* the experiment as stored */
    const nas_tune_config_t *cfg;
    const nas_data_t *data;
    int64_t best_seq;
    double seconds; /* wall time of this session */
} cli_tune_report_t;

/* Writes the three files into dir (created), from the run's rows in the store; msg gets a
 * one-line summary. */
int cli_tune_report_write(store_t *st, const cli_tune_report_t *r, const char *dir, char *msg, size_t msg_cap, err_t *err);

#endif
