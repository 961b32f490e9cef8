/* events_nas.c: NAS candidate events for the WebSocket, polled by events.c's poller after each
 * commit it notices (the same read-only store handle, the same 200 ms period).
 *
 * The controller writes a candidate row several times (queued, running, done or failed, then
 * again when the strategy is told), always with INSERT OR REPLACE, which gives the new row a
 * rowid above every existing one. So the rows written since the last poll are exactly those
 * with a rowid above the last one seen, and the poll costs one indexed range query. Each row's
 * status is compared with the last one sent for it, so a rewrite that changes nothing the page
 * shows (the tell position) sends nothing:
 *   candidate_added     a row appeared (queued, or done at once from the hash cache)
 *   candidate_started   its status became running (again, for a retry)
 *   candidate_finished  its status became done or failed
 * each {"type", "run_id", "status", "previous", "candidate": {the REST API's candidate fields,
 * genome included}}. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store.h"
#include "common/store_nas.h"
#include "web/web_internal.h"

/* Pages of rows per query, so one burst of writes cannot hold the poller long. */
#define NAS_EVENT_PAGE 500
#define NAS_STR_(x) #x
#define NAS_STR(x) NAS_STR_(x)

struct web_events_nas {
    int64_t last_rowid;
    json_t *seen; /* "run/seq" -> last status sent (or recorded at the baseline) */
};

void web_events_nas_free(web_events_nas_t *n)
{
    if (!n)
        return;
    json_decref(n->seen);
    free(n);
}

static const char *event_of(const char *status, const char *previous)
{
    if (!previous)
        return "candidate_added";
    if (strcmp(status, "running") == 0)
        return "candidate_started";
    if (strcmp(status, "done") == 0 || strcmp(status, "failed") == 0)
        return "candidate_finished";
    return NULL; /* back to queued: nothing the page draws */
}

void web_events_nas_poll(web_events_nas_t **state, store_t *s, int baseline,
                         void (*send)(web_events_t *ev, json_t *msg), web_events_t *ev)
{
    web_events_nas_t *n = *state;
    if (!n) {
        if (!(n = calloc(1, sizeof *n)) || !(n->seen = json_object())) {
            free(n);
            return;
        }
        *state = n;
    }
    if (!baseline) { /* nobody was listening: start again from what is there now */
        n->last_rowid = 0;
        json_object_clear(n->seen);
    }
    sqlite3 *db = store_sqlite(s);
    for (;;) {
        sqlite3_stmt *st;
        /* A store from before the NAS tables has none: nothing to send, nothing to log. */
        if (sqlite3_prepare_v2(db,
                               "SELECT rowid AS row_id, run_id, " WEB_NAS_CANDIDATE_COLUMNS ", genome "
                               "FROM nas_candidates WHERE rowid > ? ORDER BY rowid LIMIT " NAS_STR(NAS_EVENT_PAGE),
                               -1, &st, NULL) != SQLITE_OK)
            return;
        sqlite3_bind_int64(st, 1, n->last_rowid);
        json_t *rows = json_array();
        if (web_nas_rows_json(st, rows, 1) < 0) {
            json_decref(rows);
            return;
        }
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) {
            n->last_rowid = json_integer_value(json_object_get(row, "row_id"));
            json_int_t run = json_integer_value(json_object_get(row, "run_id"));
            char key[48];
            snprintf(key, sizeof key, "%lld/%lld", (long long)run,
                     (long long)json_integer_value(json_object_get(row, "seq")));
            const char *st_now = json_string_value(json_object_get(row, "status"));
            json_t *old = json_object_get(n->seen, key);
            const char *prev = json_string_value(old);
            if (!st_now || (prev && strcmp(prev, st_now) == 0))
                continue;
            const char *type = event_of(st_now, prev);
            json_t *was = prev ? json_string(prev) : json_null();
            json_object_set_new(n->seen, key, json_string(st_now));
            if (!baseline || !type) {
                json_decref(was);
                continue;
            }
            json_t *cand = json_deep_copy(row);
            json_object_del(cand, "row_id");
            json_object_del(cand, "run_id");
            send(ev, json_pack("{s:s, s:I, s:s, s:o, s:o}", "type", type, "run_id", run, "status", st_now,
                               "previous", was, "candidate", cand));
        }
        size_t got = json_array_size(rows);
        json_decref(rows);
        if (got < NAS_EVENT_PAGE)
            break;
    }
}
