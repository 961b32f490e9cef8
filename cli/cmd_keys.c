#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/util.h"
#include "crypto/keys.h"

static const char *const k_help =
    "Usage: fednas keys init DIR\n"
    "       fednas keys site DIR NAME [--connect ENDPOINT]\n"
    "\n"
    "init  makes the server's CURVE key pair (DIR/server.key, mode 0600; DIR/server.pub) and an\n"
    "      empty allow-list DIR/allowed_clients. Existing keys are kept.\n"
    "site  makes a key pair for site NAME, adds its public key to DIR/allowed_clients, and writes\n"
    "      its startup kit DIR/sites/NAME/: site.key, server.pub and client.json (the server's\n"
    "      address given with --connect, e.g. tcp://fl.example.org:5555). Copy that folder to the\n"
    "      site and run `fednas client --kit FOLDER --data DATA` there.\n";

/* The kit's client settings: what a site needs besides its keys. */
static int write_client_json(const char *dir, const char *name, const char *connect, err_t *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sites/%s/client.json", dir, name);
    json_t *o = json_pack("{s:s, s:s}", "site", name, "format", "fednas-kit-v1");
    if (connect)
        json_object_set_new(o, "connect", json_string(connect));
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    int rc = fn_write_file(path, text, strlen(text), 0644, err);
    free(text);
    return rc;
}

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
    if ((argc == 4 || (argc == 6 && strcmp(argv[4], "--connect") == 0)) && strcmp(argv[1], "site") == 0) {
        const char *connect = argc == 6 ? argv[5] : NULL;
        if (connect && strncmp(connect, "tcp://", 6) != 0)
            return cli_usage_error("keys", "--connect expects tcp://HOST:PORT (got \"%s\")", connect);
        if (keys_add_site(argv[2], argv[3], &err) < 0 || write_client_json(argv[2], argv[3], connect, &err) < 0)
            return cli_fail(&err);
        printf("startup kit for site %s in %s/sites/%s\n", argv[3], argv[2], argv[3]);
        return EXIT_OK;
    }
    return cli_usage_error("keys", "expected `keys init DIR` or `keys site DIR NAME [--connect ENDPOINT]`");
}
