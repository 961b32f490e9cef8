/* `fednas client`: a client agent for one site, or a simulation worker for many (--simulate). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "client/client.h"
#include "common/log.h"
#include "common/util.h"

static const char *const k_help =
    "Usage: fednas client --kit DIR [--connect ENDPOINT] [OPTIONS]\n"
    "       fednas client --connect ENDPOINT --key FILE --server-key FILE [OPTIONS]\n"
    "\n"
    "Runs a client agent: connects to the server, registers, trains on this site's data each\n"
    "round and sends back its update. The data never leaves the site.\n"
    "\n"
    "  --kit DIR               the site's startup kit (`fednas keys site`): DIR/site.key,\n"
    "                          DIR/server.pub and DIR/client.json with the server's address\n"
    "  --connect ENDPOINT      the server, e.g. tcp://server.example.org:5555 (default: the kit's)\n"
    "  --key FILE              this site's key pair (instead of --kit)\n"
    "  --server-key FILE       the server's public key, pinned (instead of --kit)\n"
    "  --data PATH             this site's data: a folder of IDX files (default:\n"
    "                          " CONFIG_DEFAULT_DATA_PATH "), or a CSV file of numeric\n"
    "                          features with the integer label last (experiments with\n"
    "                          \"dataset\": \"csv\"; a first line that is not numeric is a header)\n"
    "  --shard K/N             simulation: train on part K (0-based) of N of the training set\n"
    "  --simulate A-B/N        simulation worker: sites A+1..B+1 on parts A..B of N, with the\n"
    "                          kits in --kits DIR (DIR/site-K); used by `fednas run`\n"
    "  --kits DIR              the folder of site kits for --simulate\n"
    "  --partition iid|dirichlet  how the parts are drawn (default: iid)\n"
    "  --alpha A               Dirichlet concentration (default: 0.5)\n"
    "  --min-size N            Dirichlet: fewest samples per part (default: 10)\n"
    "  --seed S                partition seed (default: 1; every site must use the same)\n"
    "  --connect-timeout SEC   give up when the server has not answered for SEC (default: 120)\n"
    "  --idle-timeout SEC      give up when a joined server is silent for SEC (default: 3600)\n"
    "  -h, --help              this help\n";

int cmd_client(int argc, char **argv)
{
    static const struct option opts[] = {
        {"connect", required_argument, 0, 'c'},    {"kit", required_argument, 0, 'K'},
        {"key", required_argument, 0, 'k'},        {"server-key", required_argument, 0, 's'},
        {"data", required_argument, 0, 'd'},       {"shard", required_argument, 0, 'S'},
        {"partition", required_argument, 0, 'P'},  {"alpha", required_argument, 0, 'a'},
        {"min-size", required_argument, 0, 'm'},   {"seed", required_argument, 0, 'e'},
        {"connect-timeout", required_argument, 0, 'T'}, {"idle-timeout", required_argument, 0, 'I'},
        {"simulate", required_argument, 0, 'Z'}, {"kits", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    client_options_t o = {.data_dir = CONFIG_DEFAULT_DATA_PATH, .alpha = 0.5, .min_size = 10, .partition_seed = 1,
                          .link = {.connect_timeout = 120, .idle_timeout = 3600, .stop = &cli_stop}};
    const char *kit = NULL, *kits = NULL;
    int sim_first = -1, sim_last = -1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        char *end;
        switch (c) {
        case 'c': o.link.endpoint = optarg; break;
        case 'K': kit = optarg; break;
        case 'k': o.link.key_path = optarg; break;
        case 's': o.link.server_key = optarg; break;
        case 'd': o.data_dir = optarg; break;
        case 'S': {
            int k, n, len = 0;
            if (sscanf(optarg, "%d/%d%n", &k, &n, &len) != 2 || optarg[len] || n < 1 || k < 0 || k >= n)
                return cli_usage_error("client", "--shard expects K/N with 0 <= K < N (got \"%s\")", optarg);
            o.shard = k;
            o.shards = n;
            break;
        }
        case 'P':
            if (strcmp(optarg, "iid") == 0)
                o.partition = CONFIG_PARTITION_IID;
            else if (strcmp(optarg, "dirichlet") == 0)
                o.partition = CONFIG_PARTITION_DIRICHLET;
            else
                return cli_usage_error("client", "--partition expects iid or dirichlet (got \"%s\")", optarg);
            break;
        case 'a':
            o.alpha = strtod(optarg, &end);
            if (*end || !(o.alpha > 0))
                return cli_usage_error("client", "--alpha expects a positive number (got \"%s\")", optarg);
            break;
        case 'm':
            if (fn_parse_int(optarg, 1, 1000000, &v) < 0)
                return cli_usage_error("client", "--min-size expects an integer >= 1 (got \"%s\")", optarg);
            o.min_size = (int)v;
            break;
        case 'e': {
            unsigned long long s = strtoull(optarg, &end, 10);
            if (*end || !*optarg)
                return cli_usage_error("client", "--seed expects a non-negative integer (got \"%s\")", optarg);
            o.partition_seed = s;
            break;
        }
        case 'T':
            if (cli_parse_seconds(optarg, &o.link.connect_timeout) < 0)
                return cli_usage_error("client", "--connect-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'I':
            if (cli_parse_seconds(optarg, &o.link.idle_timeout) < 0)
                return cli_usage_error("client", "--idle-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'Z': {
            int a, b, n, len = 0;
            if (sscanf(optarg, "%d-%d/%d%n", &a, &b, &n, &len) != 3 || optarg[len] || a < 0 || b < a || b >= n)
                return cli_usage_error("client", "--simulate expects A-B/N with 0 <= A <= B < N (got \"%s\")", optarg);
            sim_first = a;
            sim_last = b;
            o.shards = n;
            break;
        }
        case 'D': kits = optarg; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("client", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("client", "unexpected argument \"%s\"", argv[optind]);
    if (sim_first >= 0) {
        if (!kits || !o.link.endpoint)
            return cli_usage_error("client", "--simulate needs --kits DIR and --connect ENDPOINT");
        log_set_tag("sim");
        cli_install_signals();
        err_t err = {0};
        int rc = client_simulate(&o, kits, sim_first, sim_last - sim_first + 1, &err);
        return rc == 0 ? EXIT_OK : cli_fail(&err);
    }
    if (kit) {
        int rc = cli_use_kit("client", kit, &o.link.endpoint, &o.link.key_path, &o.link.server_key);
        if (rc != EXIT_OK)
            return rc;
    } else {
        log_set_tag("client");
    }
    if (!o.link.endpoint)
        return cli_usage_error("client", "--connect ENDPOINT is required (or a --kit whose client.json names it)");
    if (!o.link.key_path || !o.link.server_key)
        return cli_usage_error("client", "give --kit DIR, or both --key FILE and --server-key FILE");
    cli_install_signals();
    err_t err = {0};
    int rc = client_run(&o, &err);
    return rc == 0 ? EXIT_OK : cli_fail(&err);
}
