/* store_schema: the run store's migrations (internal to common/store*.c). Migration i brings
 * PRAGMA user_version from i to i+1; store.c runs the missing ones in order on open, and
 * STORE_SCHEMA_VERSION (store.h) must equal store_n_migrations. */
#ifndef FEDNAS_COMMON_STORE_SCHEMA_H
#define FEDNAS_COMMON_STORE_SCHEMA_H

extern const char *const store_migrations[];
extern const int store_n_migrations;

#endif
