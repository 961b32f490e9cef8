#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "common/util.h"
#include "server/relay.h"

static const char *const k_help =
    "Usage: fednas relay --kit DIR --keys DIR [--bind ENDPOINT] [--connect ENDPOINT] [OPTIONS]\n"
    "\n"
    "Runs a relay: the aggregation tier between a region's client agents and the server\n"
    "(hierarchical aggregation). To the server the relay is one site; to its clients it is a\n"
    "server. Each round it forwards the model to its connected clients, waits for their updates\n"
    "and sends one update upward: their example-weighted mean, weighted by their total example\n"
    "count, so FedAvg over relays equals FedAvg over all the clients. Secure aggregation,\n"
    "differential privacy and the median, trimmed-mean and Krum strategies need each site's own\n"
    "update: the relay refuses such experiments (it tells the server why and exits with 1).\n"
    "\n"
    "Keys: on the server, `fednas keys site KEYS relay-eu --connect tcp://SERVER:5555` makes the\n"
    "relay's startup kit (the relay is a site there). On the relay, `fednas keys init RKEYS` makes\n"
    "its own key pair and allow-list, and `fednas keys site RKEYS hospital-a --connect\n"
    "tcp://RELAY:6000` a kit per client, which runs `fednas client --kit hospital-a --data ...`.\n"
    "\n"
    "  --kit DIR               the relay's startup kit from the server (site.key, server.pub,\n"
    "                          client.json with the server's address)\n"
    "  --keys DIR              the relay's own key folder: server.key and allowed_clients\n"
    "  --bind ENDPOINT         where its clients connect (default: tcp://127.0.0.1:6000; port *\n"
    "                          picks a free one)\n"
    "  --connect ENDPOINT      the server (default: the kit's)\n"
    "  --clients N             clients to wait for before joining the server (default: every\n"
    "                          site on the relay's allow-list)\n"
    "  --register-timeout SEC  how long to wait for them; then go on with those connected, at\n"
    "                          least one (default: 120)\n"
    "  --round-timeout SEC     how long a round waits for the clients' updates; late and dead\n"
    "                          clients are dropped (default and most: 0.8 x the server's\n"
    "                          round_timeout, so the aggregate arrives in time)\n"
    "  --heartbeat SEC         transport heartbeats to the clients; 3 missed = gone (default: 5)\n"
    "  --connect-timeout SEC   give up when the server has not answered for SEC (default: 120)\n"
    "  --idle-timeout SEC      give up when a joined server is silent for SEC (default: 3600)\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit status: 0 when the server ended the run, 1 on failure or a refused experiment, 2 bad\n"
    "arguments, 3 the server refused the relay's key, 4 the server could not be reached.\n";

int cmd_relay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"kit", required_argument, 0, 'K'},           {"keys", required_argument, 0, 'k'},
        {"bind", required_argument, 0, 'b'},          {"connect", required_argument, 0, 'c'},
        {"clients", required_argument, 0, 'n'},       {"register-timeout", required_argument, 0, 'R'},
        {"round-timeout", required_argument, 0, 'r'}, {"heartbeat", required_argument, 0, 'H'},
        {"connect-timeout", required_argument, 0, 'T'}, {"idle-timeout", required_argument, 0, 'I'},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
    relay_options_t o = {.bind = "tcp://127.0.0.1:6000", .register_timeout = 120, .heartbeat = 5,
                         .stop = &cli_stop};
    o.up = (link_options_t){.connect_timeout = 120, .idle_timeout = 3600, .stop = &cli_stop};
    const char *kit = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        switch (c) {
        case 'K': kit = optarg; break;
        case 'k': o.keys_dir = optarg; break;
        case 'b': o.bind = optarg; break;
        case 'c': o.up.endpoint = optarg; break;
        case 'n':
            if (fn_parse_int(optarg, 1, 100000, &v) < 0)
                return cli_usage_error("relay", "--clients expects an integer in [1, 100000] (got \"%s\")", optarg);
            o.clients = (int)v;
            break;
        case 'R':
            if (cli_parse_seconds(optarg, &o.register_timeout) < 0)
                return cli_usage_error("relay", "--register-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'r':
            if (cli_parse_seconds(optarg, &o.round_timeout) < 0)
                return cli_usage_error("relay", "--round-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'H':
            if (cli_parse_seconds(optarg, &o.heartbeat) < 0 || o.heartbeat < 0.1)
                return cli_usage_error("relay", "--heartbeat expects seconds >= 0.1 (got \"%s\")", optarg);
            break;
        case 'T':
            if (cli_parse_seconds(optarg, &o.up.connect_timeout) < 0)
                return cli_usage_error("relay", "--connect-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'I':
            if (cli_parse_seconds(optarg, &o.up.idle_timeout) < 0)
                return cli_usage_error("relay", "--idle-timeout expects seconds > 0 (got \"%s\")", optarg);
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("relay", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("relay", "unexpected argument \"%s\"", argv[optind]);
    if (!kit)
        return cli_usage_error("relay", "--kit DIR is required: the relay's startup kit from the server "
                                        "(`fednas keys site KEYS NAME` on the server)");
    if (!o.keys_dir)
        return cli_usage_error("relay", "--keys DIR is required: the relay's own key folder (make it with "
                                        "`fednas keys init DIR`, and its clients' kits with `fednas keys site DIR NAME`)");
    int rc = cli_use_kit("relay", kit, &o.up.endpoint, &o.up.key_path, &o.up.server_key);
    if (rc != EXIT_OK)
        return rc;
    cli_install_signals();
    err_t err = {0};
    relay_t *r;
    if (relay_create(&o, &r, &err) < 0)
        return cli_fail(&err);
    printf("relay listening on %s for its clients; server %s\n", relay_endpoint(r), o.up.endpoint);
    fflush(stdout);
    rc = relay_run(r, &err);
    relay_free(r);
    if (rc == 0)
        return EXIT_OK;
    /* A refused experiment is a failure of the run, not bad arguments to this command. */
    if (rc == FN_EINVAL) {
        fprintf(stderr, "fednas: error: %s\n", err.msg);
        return EXIT_FAILED;
    }
    return cli_fail(&err);
}
