/* store_schema.c: the run store's schema as its migrations, kept apart from store.c's code so
 * the history of the tables reads in one place. */
#include "common/store_schema.h"

#include "common/store_nas.h"

/* Migrations run in order; migration i brings user_version from i to i+1. Never edit one that
 * has shipped: append a new one. */
const char *const store_migrations[] = {
    /* 0 -> 1: the walking skeleton's tables. */
    "CREATE TABLE experiments ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  config TEXT NOT NULL,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(id),"
    "  status TEXT NOT NULL CHECK (status IN ('running','done','failed','stopped')),"
    "  rounds_planned INTEGER NOT NULL,"
    "  clients_planned INTEGER NOT NULL,"
    "  seed INTEGER NOT NULL,"
    "  run_dir TEXT,"
    "  started_at REAL NOT NULL,"
    "  ended_at REAL,"
    "  message TEXT);"
    "CREATE TABLE rounds ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  round INTEGER NOT NULL,"
    "  started_at REAL NOT NULL,"
    "  ended_at REAL NOT NULL,"
    "  selected INTEGER NOT NULL,"
    "  participants INTEGER NOT NULL,"
    "  dropped INTEGER NOT NULL,"
    "  test_accuracy REAL, test_loss REAL, train_loss REAL, train_accuracy REAL,"
    "  samples INTEGER NOT NULL,"
    "  bytes_down INTEGER NOT NULL, bytes_up INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, round));"
    "CREATE TABLE round_metrics ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  round INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  PRIMARY KEY (run_id, round, name));"
    "CREATE TABLE clients ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  client_id INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  public_key TEXT,"
    "  samples INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL,"
    "  joined_at REAL NOT NULL,"
    "  last_seen REAL NOT NULL,"
    "  rounds_contributed INTEGER NOT NULL DEFAULT 0,"
    "  bytes_up INTEGER NOT NULL DEFAULT 0,"
    "  bytes_down INTEGER NOT NULL DEFAULT 0,"
    "  last_latency REAL,"
    "  PRIMARY KEY (run_id, client_id));",
    /* 1 -> 2: the latest committed model of each run, written in the same transaction as its
     * round row, so a killed server resumes from exactly the last round it reported. */
    "CREATE TABLE checkpoints ("
    "  run_id INTEGER PRIMARY KEY REFERENCES runs(id),"
    "  round INTEGER NOT NULL,"
    "  params BLOB NOT NULL,"
    "  state BLOB,"
    "  meta TEXT NOT NULL,"
    "  created_at REAL NOT NULL);",
    /* 2 -> 3: the process serving each run, so the dashboard can stop it (SIGTERM). */
    "ALTER TABLE runs ADD COLUMN pid INTEGER;",
    /* 3 -> 4: what the server is doing right now (a round's phase), for the dashboard. */
    "ALTER TABLE runs ADD COLUMN phase TEXT;"
    "ALTER TABLE runs ADD COLUMN phase_round INTEGER;"
    "ALTER TABLE runs ADD COLUMN phase_at REAL;",
    /* 4 -> 5: NAS searches (common/store_nas.h): a run's search settings, every candidate the
     * controller asked for, and the top-k retrained from scratch. */
    STORE_NAS_MIGRATION,
};
const int store_n_migrations = (int)(sizeof store_migrations / sizeof store_migrations[0]);
