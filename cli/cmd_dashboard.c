#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/util.h"
#include "web/web.h"

static const char *const k_help =
    "Usage: fednas dashboard [--db PATH] [--http PORT] [--host ADDR] [--tls-cert FILE --tls-key FILE]\n"
    "                        [--insecure-http]\n"
    "\n"
    "Serves the dashboard for the runs in a run store until interrupted (Ctrl-C), to look at\n"
    "finished runs, or at runs whose server has its dashboard switched off.\n"
    "\n"
    "The dashboard is HTTPS with a self-signed certificate made on first start in tls/ next to\n"
    "the run store (browsers ask once to accept it), and needs the access token in the printed\n"
    "URL. The admin link may launch, stop and resume runs; the viewer link only reads.\n"
    "\n"
    "  --db PATH         run store (default: fednas.db)\n"
    "  --http PORT       port (default: 8080; 0 picks a free port)\n"
    "  --host ADDR       address to listen on (default: 127.0.0.1; 0.0.0.0 for all interfaces)\n"
    "  --tls-cert FILE   certificate (chain) in PEM instead of the self-signed one\n"
    "  --tls-key FILE    its private key in PEM (unencrypted)\n"
    "  --insecure-http   plain HTTP instead of HTTPS (only on 127.0.0.1)\n"
    "  -h, --help        this help\n";

int cmd_dashboard(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},       {"http", required_argument, 0, 'p'},
                                         {"host", required_argument, 0, 'H'},     {"tls-cert", required_argument, 0, 'c'},
                                         {"tls-key", required_argument, 0, 'k'},  {"insecure-http", no_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
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
        case 'H': wo.host = optarg; break;
        case 'c': wo.tls_cert = optarg; break;
        case 'k': wo.tls_key = optarg; break;
        case 'i': wo.insecure_http = 1; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("dashboard", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("dashboard", "unexpected argument \"%s\"", argv[optind]);
    if (!wo.tls_cert != !wo.tls_key)
        return cli_usage_error("dashboard", "--tls-cert and --tls-key go together");
    if (wo.insecure_http && wo.tls_cert)
        return cli_usage_error("dashboard", "--insecure-http and --tls-cert exclude each other");
    log_set_tag("dashboard");
    cli_install_signals();
    err_t err = {0};
    web_t *web;
    if (web_start(&wo, &web, &err) < 0)
        return cli_fail(&err);
    printf("fednas: dashboard at %s for %s (Ctrl-C stops it)\n", web_url(web), wo.db_path);
    printf("fednas: read-only link for viewers: %s\n", web_viewer_url(web));
    fflush(stdout);
    while (!cli_stop)
        usleep(100000);
    web_stop(web);
    return EXIT_OK;
}
