/* host_guard.c: the DNS-rebinding guard. A dashboard bound to a loopback address answers only
 * requests whose Host names an IP literal or localhost; see web_host_allowed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "web/web_internal.h"

/* DNS-rebinding guard for a loopback server: a page on evil.example whose name later resolves
 * to 127.0.0.1 must not read the API. Browsers always send the name they used in Host, so
 * only IP literals and localhost are accepted. No Host (HTTP/1.0 tools) is fine. */
int web_host_allowed(const char *host)
{
    if (!host || !*host)
        return 1;
    char name[256];
    size_t n;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end)
            return 0;
        n = (size_t)(end - host - 1);
        if (n >= sizeof name)
            return 0;
        memcpy(name, host + 1, n);
        name[n] = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, name, &a6) == 1;
    }
    n = strcspn(host, ":");
    if (n >= sizeof name)
        return 0;
    memcpy(name, host, n);
    name[n] = '\0';
    if (n > 0 && name[n - 1] == '.')
        name[--n] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1 || strcasecmp(name, "localhost") == 0)
        return 1;
    return n > 10 && strcasecmp(name + n - 10, ".localhost") == 0;
}
