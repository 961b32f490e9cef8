/* keys: CURVE (X25519) key pairs for ZeroMQ, stored as small text files with a magic line
 * and a version, secrets in sodium_malloc memory, files 0600. Also the server's allow-list
 * ("NAME PUBLIC_KEY" lines) and the per-site startup kit folder that `fednas keys` writes. */
#ifndef FEDNAS_CRYPTO_KEYS_H
#define FEDNAS_CRYPTO_KEYS_H

#include <stddef.h>

#include "common/err.h"

#define KEYS_Z85_LEN 40 /* a 32-byte key in Z85 text */

typedef struct keys_pair {
    char public_z85[KEYS_Z85_LEN + 1];
    char secret_z85[KEYS_Z85_LEN + 1];
} keys_pair_t;

/* A pair in guarded memory (sodium_malloc); freed and wiped by keys_pair_free. */
keys_pair_t *keys_pair_new(void);
void keys_pair_free(keys_pair_t *kp);
int keys_generate(keys_pair_t *kp, err_t *err);

/* A secret key file holds both keys; a public key file only the public one. */
int keys_write_secret(const char *path, const keys_pair_t *kp, err_t *err);
int keys_write_public(const char *path, const char *public_z85, err_t *err);
int keys_read_secret(const char *path, keys_pair_t *kp, err_t *err);
int keys_read_public(const char *path, char public_z85[KEYS_Z85_LEN + 1], err_t *err);

/* The allow-list: the sites whose public keys the server accepts. */
typedef struct keys_allow_entry {
    char name[64];
    char public_z85[KEYS_Z85_LEN + 1];
} keys_allow_entry_t;
typedef struct keys_allow {
    keys_allow_entry_t *entries;
    int count;
} keys_allow_t;
int keys_allow_load(const char *path, keys_allow_t *out, err_t *err);
/* Appends NAME KEY; FN_EINVAL if the name is taken. Creates the file when missing. */
int keys_allow_add(const char *path, const char *name, const char *public_z85, err_t *err);
/* The name for a public key, or NULL when it is not allowed. */
const char *keys_allow_find(const keys_allow_t *a, const char *public_z85);
/* The entry for a site name, or NULL. */
const keys_allow_entry_t *keys_allow_find_name(const keys_allow_t *a, const char *name);
void keys_allow_free(keys_allow_t *a);

/* `fednas keys init DIR`: DIR/server.key, DIR/server.pub and an empty DIR/allowed_clients
 * (kept if they exist). `fednas keys site DIR NAME`: a fresh pair for the site in
 * DIR/sites/NAME/{site.key, server.pub}, and NAME added to the allow-list. */
int keys_init_dir(const char *dir, err_t *err);
int keys_add_site(const char *dir, const char *name, err_t *err);

/* Validates a site name: 1-63 characters of [A-Za-z0-9._-], not starting with '.'. */
int keys_valid_name(const char *name);

#endif
