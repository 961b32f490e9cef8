/* static.c: serves the UI embedded at build time (web/static/ -> cmake/embed.cmake ->
 * web_assets.c in the build directory). Lookups are exact matches against that table, so no
 * path can name anything else. Assets revalidate on every load (ETag + no-cache): a rebuilt
 * binary shows its new page at once, an unchanged one answers 304. */
#include <string.h>

#include "web/web_internal.h"

const web_asset_t *web_asset_find(const char *path)
{
    if (!path)
        return NULL;
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < web_assets_count; i++)
        if (strcmp(web_assets[i].path, path) == 0)
            return &web_assets[i];
    return NULL;
}

int web_static_serve(const web_req_t *rq)
{
    const web_asset_t *a = web_asset_find(rq->path);
    if (!a)
        return web_send_error(rq, 404, "not found: %.200s", rq->path);
    const char *inm = web_header(rq, "If-None-Match");
    if (inm && (strstr(inm, a->etag) || strcmp(inm, "*") == 0))
        return web_send(rq, 304, NULL, NULL, 0, "no-cache", a->etag);
    return web_send(rq, 200, a->content_type, a->data, a->len, "no-cache", a->etag);
}
