#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "crypto/keys.h"

static const char *const k_help =
    "Usage: fednas keys init DIR\n"
    "       fednas keys site DIR NAME\n"
    "\n"
    "init  makes the server's CURVE key pair (DIR/server.key, mode 0600; DIR/server.pub) and an\n"
    "      empty allow-list DIR/allowed_clients. Existing keys are kept.\n"
    "site  makes a key pair for site NAME, adds its public key to DIR/allowed_clients, and writes\n"
    "      its startup kit DIR/sites/NAME/ (site.key, server.pub): copy that folder to the site and\n"
    "      run `fednas client --kit FOLDER --connect tcp://SERVER:PORT` there.\n";

int cmd_keys(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(k_help, stdout);
        return EXIT_OK;
    }
    err_t err = {0};
    if (argc == 3 && strcmp(argv[1], "init") == 0) {
        if (keys_init_dir(argv[2], &err) < 0)
            return cli_fail(&err);
        printf("server keys in %s (public key: %s/server.pub)\n", argv[2], argv[2]);
        return EXIT_OK;
    }
    if (argc == 4 && strcmp(argv[1], "site") == 0) {
        if (keys_add_site(argv[2], argv[3], &err) < 0)
            return cli_fail(&err);
        printf("startup kit for site %s in %s/sites/%s\n", argv[3], argv[2], argv[3]);
        return EXIT_OK;
    }
    return cli_usage_error("keys", "expected `keys init DIR` or `keys site DIR NAME`");
}
