/* store_live: whether the run a store calls "running" still has a server. A server records its
 * pid with the run and holds the store open until it marks the run finished; one that was
 * SIGKILLed or OOM-killed leaves "running" behind. Every reader (`fednas runs`, the dashboard's
 * API, /metrics, its events, Stop and Resume) asks here and shows such a run as "interrupted". */
#ifndef FEDNAS_COMMON_STORE_LIVE_H
#define FEDNAS_COMMON_STORE_LIVE_H

#include <jansson.h>

#include "common/store.h"

/* Whether pid is a live process (a zombie counts as gone). */
int store_live_pid_alive(long pid);
/* Whether pid is the process serving the store at db_path (it holds the file open): 1 yes, 0
 * no (gone, a zombie, or the pid was reused by a process without the store open), -1 cannot
 * tell (another user's process). */
int store_live_serves(long pid, const char *db_path);
/* Rows (an array of run objects with "id" and "status", or one such object) that say "running"
 * whose server is gone get status "interrupted", a message saying how to resume, and no
 * "phase"; s is a handle on the store at db_path. Returns how many were marked. */
int store_live_mark_interrupted(store_t *s, const char *db_path, json_t *runs);
/* The same for store_summary_json's object: its "running" list loses such runs, and
 * runs_by_status counts them as "interrupted". */
void store_live_mark_summary(store_t *s, const char *db_path, json_t *summary);

#endif
