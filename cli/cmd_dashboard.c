#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/util.h"
#include "web/web.h"

static const char *const k_help =
    "Usage: fednas dashboard [--db PATH] [--http PORT]\n"
    "\n"
    "Serves the dashboard for the runs in a run store until interrupted (Ctrl-C), to look at\n"
    "finished runs, or at runs whose server has its dashboard switched off.\n"
    "\n"
    "  --db PATH     run store (default: fednas.db)\n"
    "  --http PORT   port on 127.0.0.1 (default: 8080; 0 picks a free port)\n"
    "  -h, --help    this help\n";

int cmd_dashboard(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'}, {"http", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    web_options_t wo = {.db_path = "fednas.db", .port = 8080};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        switch (c) {
        case 'd': wo.db_path = optarg; break;
        case 'p':
            if (fn_parse_int(optarg, 0, 65535, &v) < 0)
                return cli_usage_error("dashboard", "--http expects a port number 0-65535 (got \"%s\")", optarg);
            wo.port = (int)v;
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("dashboard", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("dashboard", "unexpected argument \"%s\"", argv[optind]);
    log_set_tag("dashboard");
    cli_install_signals();
    err_t err = {0};
    web_t *web;
    if (web_start(&wo, &web, &err) < 0)
        return cli_fail(&err);
    printf("fednas: dashboard at http://127.0.0.1:%d/ for %s (Ctrl-C stops it)\n", web_port(web), wo.db_path);
    fflush(stdout);
    while (!cli_stop)
        usleep(100000);
    web_stop(web);
    return EXIT_OK;
}
