#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

#define CMD "server"
#include "common/log.h"
#include "common/util.h"

static const char *const k_help =
    "Usage: fednas server CONFIG --keys DIR [--bind ENDPOINT] [--db PATH] [--http PORT|off]\n"
    "       fednas server --resume RUN --keys DIR [--bind ENDPOINT] [--db PATH] [--http PORT|off]\n"
    "\n"
    "Runs the aggregation server for the experiment in CONFIG and waits for clients.count client\n"
    "agents (`fednas client`) at partner sites to join. Only sites whose public keys are in\n"
    "DIR/allowed_clients get in; DIR/server.key is the server's key pair (`fednas keys init DIR`).\n"
    "\n"
    "  --keys DIR        the server's key folder (required)\n"
    "  --resume RUN      continue run RUN of the store from its last committed round (after a\n"
    "                    crash or a kill); clients reconnect and rejoin by themselves\n"
    "  --bind ENDPOINT   where clients connect (default: tcp://127.0.0.1:5555)\n"
    "  --db PATH         run store (SQLite), created if missing (default: fednas.db)\n"
    "  --http PORT|off   dashboard port on 127.0.0.1 (default: 8080; 0 picks a free port)\n"
    "  -h, --help        this help\n";

int cmd_server(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},   {"http", required_argument, 0, 'p'},
                                         {"bind", required_argument, 0, 'b'}, {"keys", required_argument, 0, 'k'},
                                         {"resume", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    serve_options_t so = {.db_path = "fednas.db", .bind = "tcp://127.0.0.1:5555", .http_port = 8080};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        switch (c) {
        case 'd': so.db_path = optarg; break;
        case 'b': so.bind = optarg; break;
        case 'k': so.keys_dir = optarg; break;
        case 'p':
            if (strcmp(optarg, "off") == 0)
                so.http_port = -1;
            else if (fn_parse_int(optarg, 0, 65535, &v) == 0)
                so.http_port = (int)v;
            else
                return cli_usage_error("server", "--http expects a port number 0-65535 or \"off\" (got \"%s\")",
                                       optarg);
            break;
        case 'r':
            if (fn_parse_int(optarg, 1, 1L << 62, &v) < 0)
                return cli_usage_error(CMD, "--resume expects a run id (see `fednas runs`), got \"%s\"", optarg);
            so.resume_run = v;
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("server", "unknown option");
        }
    }
    if (so.resume_run ? optind != argc : optind != argc - 1)
        return cli_usage_error("server", so.resume_run ? "--resume takes the experiment from the run store; give no file"
                                                       : "expected one experiment file");
    if (!so.keys_dir)
        return cli_usage_error("server", "--keys DIR is required (make one with `fednas keys init DIR`)");
    so.config_path = so.resume_run ? NULL : argv[optind];
    log_set_tag("server");
    cli_install_signals();
    return cli_serve(&so);
}
