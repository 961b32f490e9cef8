#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/store.h"
#include "common/store_live.h"

static const char *const k_help =
    "Usage: fednas runs [--db PATH] [--json]\n"
    "\n"
    "Lists the runs in a run store, newest first.\n"
    "\n"
    "  --db PATH   run store (default: fednas.db)\n"
    "  --json      print JSON (the same as the dashboard's /api/runs)\n"
    "  -h, --help  this help\n";

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : -1;
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *db = "fednas.db";
    int as_json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'j': as_json = 1; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("runs", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("runs", "unexpected argument \"%s\"", argv[optind]);
    err_t err = {0};
    store_t *s;
    json_t *runs;
    if (store_open(db, 1, &s, &err) < 0)
        return cli_fail(&err);
    int rc = store_runs_json(s, &runs, &err);
    if (rc == 0) /* "running" whose server was killed: "interrupted" (as the dashboard shows it) */
        store_live_mark_interrupted(s, db, runs);
    store_close(s);
    if (rc < 0)
        return cli_fail(&err);
    if (as_json) {
        char *text = json_dumps(runs, JSON_INDENT(2));
        puts(text);
        free(text);
    } else {
        printf("%-5s %-24s %-11s %-9s %-9s %-19s\n", "RUN", "EXPERIMENT", "STATUS", "ROUNDS", "BEST ACC", "STARTED");
        size_t i;
        json_t *r;
        json_array_foreach(runs, i, r)
        {
            char rounds[32], best[16] = "-", when[32];
            snprintf(rounds, sizeof rounds, "%d/%d", (int)num(r, "rounds_done"), (int)num(r, "rounds_planned"));
            if (num(r, "best_accuracy") >= 0)
                snprintf(best, sizeof best, "%.2f%%", 100 * num(r, "best_accuracy"));
            time_t t = (time_t)num(r, "started_at");
            struct tm tm;
            localtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            printf("%-5lld %-24.24s %-11s %-9s %-9s %-19s\n", (long long)num(r, "id"),
                   json_string_value(json_object_get(r, "experiment")),
                   json_string_value(json_object_get(r, "status")), rounds, best, when);
        }
        if (json_array_size(runs) == 0)
            printf("(no runs yet: try `fednas run experiments/quickstart.json`)\n");
    }
    json_decref(runs);
    return EXIT_OK;
}
