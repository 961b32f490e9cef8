/* kit: a site's startup kit (`fednas keys site`) as options of `fednas client` and `fednas relay`. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"

int cli_use_kit(const char *cmd, const char *kit, const char **endpoint, const char **key_path,
                const char **server_key)
{
    /* Static: the paths outlive this call in the options that point at them. */
    static char keybuf[PATH_MAX], srvbuf[PATH_MAX], kit_connect[512];
    if (!*endpoint) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/client.json", kit);
        json_error_t je;
        json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        const char *addr = json_string_value(json_object_get(j, "connect"));
        if (addr)
            snprintf(kit_connect, sizeof kit_connect, "%s", addr);
        json_decref(j);
        if (!kit_connect[0])
            return cli_usage_error(cmd, "%s has no server address (\"connect\"); pass --connect ENDPOINT", path);
        *endpoint = kit_connect;
    }
    snprintf(keybuf, sizeof keybuf, "%s/site.key", kit);
    snprintf(srvbuf, sizeof srvbuf, "%s/server.pub", kit);
    if (!*key_path)
        *key_path = keybuf;
    if (!*server_key)
        *server_key = srvbuf;
    const char *base = strrchr(kit, '/');
    log_set_tag(base && base[1] ? base + 1 : kit);
    return EXIT_OK;
}
