#include "crypto/keys.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "common/util.h"

#define SECRET_MAGIC "# fednas curve secret key v1"
#define PUBLIC_MAGIC "# fednas curve public key v1"
#define ALLOW_MAGIC "# fednas allowed clients v1"

keys_pair_t *keys_pair_new(void)
{
    if (sodium_init() < 0)
        return NULL;
    keys_pair_t *kp = sodium_malloc(sizeof *kp);
    if (kp)
        memset(kp, 0, sizeof *kp);
    return kp;
}

void keys_pair_free(keys_pair_t *kp)
{
    if (kp)
        sodium_free(kp); /* wipes */
}

int keys_generate(keys_pair_t *kp, err_t *err)
{
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
    if (sodium_init() < 0)
        return err_set(err, FN_EIO, "libsodium failed to initialise");
    crypto_box_keypair(pk, sk); /* X25519, the curve ZeroMQ's CURVE uses */
    int ok = zmq_z85_encode(kp->public_z85, pk, sizeof pk) && zmq_z85_encode(kp->secret_z85, sk, sizeof sk);
    sodium_memzero(sk, sizeof sk);
    return ok ? 0 : err_set(err, FN_EIO, "cannot encode a key as Z85");
}

static int valid_z85(const char *s)
{
    if (strlen(s) != KEYS_Z85_LEN)
        return 0;
    unsigned char raw[32];
    return zmq_z85_decode(raw, s) != NULL;
}

int keys_write_secret(const char *path, const keys_pair_t *kp, err_t *err)
{
    char *buf = sodium_malloc(512);
    if (!buf)
        return err_set(err, FN_ENOMEM, "out of secure memory");
    int n = snprintf(buf, 512, "%s\npublic-key = %s\nsecret-key = %s\n", SECRET_MAGIC, kp->public_z85,
                     kp->secret_z85);
    int rc = fn_write_file(path, buf, (size_t)n, 0600, err);
    sodium_free(buf);
    return rc;
}

int keys_write_public(const char *path, const char *public_z85, err_t *err)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%s\npublic-key = %s\n", PUBLIC_MAGIC, public_z85);
    return fn_write_file(path, buf, (size_t)n, 0644, err);
}

/* Reads "field = VALUE" from a key file whose first line is magic. */
static int read_key_file(const char *path, const char *magic, keys_pair_t *kp, char *pub_out, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, errno == ENOENT ? FN_ENOTFOUND : FN_EIO,
                       "cannot open key file %s: %s (make keys with `fednas keys init` / `fednas keys site`)", path,
                       strerror(errno));
    char line[256];
    int rc = 0, have_pub = 0, have_sec = 0;
    if (!fgets(line, sizeof line, f) || strncmp(line, magic, strlen(magic)) != 0) {
        rc = err_set(err, FN_EINVAL, "%s is not a fednas key file (first line should be \"%s\")", path, magic);
        goto out;
    }
    for (int lineno = 2; fgets(line, sizeof line, f); lineno++) {
        char field[32], value[128];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%31s = %127s", field, value) != 2 || !valid_z85(value)) {
            rc = err_set(err, FN_EINVAL, "%s:%d: expected `public-key = <40 Z85 characters>`", path, lineno);
            goto out;
        }
        if (strcmp(field, "public-key") == 0) {
            if (kp)
                memcpy(kp->public_z85, value, KEYS_Z85_LEN + 1);
            if (pub_out)
                memcpy(pub_out, value, KEYS_Z85_LEN + 1);
            have_pub = 1;
        } else if (strcmp(field, "secret-key") == 0 && kp) {
            memcpy(kp->secret_z85, value, KEYS_Z85_LEN + 1);
            have_sec = 1;
        }
        sodium_memzero(value, sizeof value);
    }
    if (!have_pub || (kp && !have_sec))
        rc = err_set(err, FN_EINVAL, "%s: missing %s", path, have_pub ? "secret-key" : "public-key");
out:
    sodium_memzero(line, sizeof line);
    fclose(f);
    return rc;
}

int keys_read_secret(const char *path, keys_pair_t *kp, err_t *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077))
        return err_set(err, FN_EINVAL, "secret key file %s is readable by others (mode %03o); run chmod 600 %s", path,
                       (unsigned)(sb.st_mode & 0777), path);
    return read_key_file(path, SECRET_MAGIC, kp, NULL, err);
}

int keys_read_public(const char *path, char public_z85[KEYS_Z85_LEN + 1], err_t *err)
{
    /* A secret key file also names its public key; accept either. */
    FILE *f = fopen(path, "r");
    char first[64] = "";
    if (f) {
        if (!fgets(first, sizeof first, f))
            first[0] = '\0';
        fclose(f);
    }
    if (strncmp(first, SECRET_MAGIC, strlen(SECRET_MAGIC)) == 0) {
        keys_pair_t *kp = keys_pair_new();
        if (!kp)
            return err_set(err, FN_ENOMEM, "out of secure memory");
        int rc = read_key_file(path, SECRET_MAGIC, kp, public_z85, err);
        keys_pair_free(kp);
        return rc;
    }
    return read_key_file(path, PUBLIC_MAGIC, NULL, public_z85, err);
}

int keys_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int keys_allow_load(const char *path, keys_allow_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, errno == ENOENT ? FN_ENOTFOUND : FN_EIO,
                       "cannot open allow-list %s: %s (create it with `fednas keys init`)", path, strerror(errno));
    char line[512];
    int rc = 0, cap = 0;
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        if (lineno == 1 && strncmp(line, ALLOW_MAGIC, strlen(ALLOW_MAGIC)) != 0) {
            rc = err_set(err, FN_EINVAL, "%s is not a fednas allow-list (first line should be \"%s\")", path,
                         ALLOW_MAGIC);
            break;
        }
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char name[128], key[128];
        if (sscanf(line, "%127s %127s", name, key) != 2 || !keys_valid_name(name) || !valid_z85(key)) {
            rc = err_set(err, FN_EINVAL, "%s:%d: expected `SITE-NAME PUBLIC-KEY` (40 Z85 characters)", path, lineno);
            break;
        }
        if (keys_allow_find(out, key)) {
            rc = err_set(err, FN_EINVAL, "%s:%d: key of %s is listed twice", path, lineno, name);
            break;
        }
        if (out->count == cap) {
            cap = cap ? cap * 2 : 16;
            keys_allow_entry_t *e = realloc(out->entries, (size_t)cap * sizeof *e);
            if (!e) {
                rc = err_set(err, FN_ENOMEM, "out of memory loading %s", path);
                break;
            }
            out->entries = e;
        }
        snprintf(out->entries[out->count].name, sizeof out->entries[0].name, "%s", name);
        memcpy(out->entries[out->count].public_z85, key, KEYS_Z85_LEN + 1);
        out->count++;
    }
    fclose(f);
    if (rc < 0)
        keys_allow_free(out);
    return rc;
}

const char *keys_allow_find(const keys_allow_t *a, const char *public_z85)
{
    for (int i = 0; i < a->count; i++)
        if (strcmp(a->entries[i].public_z85, public_z85) == 0)
            return a->entries[i].name;
    return NULL;
}

const keys_allow_entry_t *keys_allow_find_name(const keys_allow_t *a, const char *name)
{
    for (int i = 0; i < a->count; i++)
        if (strcmp(a->entries[i].name, name) == 0)
            return &a->entries[i];
    return NULL;
}

void keys_allow_free(keys_allow_t *a)
{
    free(a->entries);
    a->entries = NULL;
    a->count = 0;
}

int keys_allow_add(const char *path, const char *name, const char *public_z85, err_t *err)
{
    keys_allow_t a;
    int rc = keys_allow_load(path, &a, err);
    if (rc == FN_ENOTFOUND) {
        char hdr[64];
        int n = snprintf(hdr, sizeof hdr, "%s\n", ALLOW_MAGIC);
        if ((rc = fn_write_file(path, hdr, (size_t)n, 0644, err)) < 0)
            return rc;
        rc = keys_allow_load(path, &a, err);
    }
    if (rc < 0)
        return rc;
    for (int i = 0; i < a.count; i++)
        if (strcmp(a.entries[i].name, name) == 0) {
            keys_allow_free(&a);
            return err_set(err, FN_EINVAL, "site %s is already in %s; choose another name", name, path);
        }
    keys_allow_free(&a);
    FILE *f = fopen(path, "a");
    if (!f || fprintf(f, "%s %s\n", name, public_z85) < 0 || fclose(f) != 0)
        return err_set(err, FN_EIO, "cannot append to %s: %s", path, strerror(errno));
    return 0;
}

int keys_init_dir(const char *dir, err_t *err)
{
    int rc = fn_mkdirs(dir, 0700, err);
    if (rc < 0)
        return rc;
    char path[PATH_MAX], pub[PATH_MAX], allow[PATH_MAX];
    snprintf(path, sizeof path, "%s/server.key", dir);
    snprintf(pub, sizeof pub, "%s/server.pub", dir);
    snprintf(allow, sizeof allow, "%s/allowed_clients", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        keys_pair_t *kp = keys_pair_new();
        if (!kp)
            return err_set(err, FN_ENOMEM, "out of secure memory");
        rc = keys_generate(kp, err);
        if (rc == 0)
            rc = keys_write_secret(path, kp, err);
        if (rc == 0)
            rc = keys_write_public(pub, kp->public_z85, err);
        keys_pair_free(kp);
        if (rc < 0)
            return rc;
    }
    if (stat(allow, &sb) != 0) {
        char hdr[64];
        int n = snprintf(hdr, sizeof hdr, "%s\n", ALLOW_MAGIC);
        rc = fn_write_file(allow, hdr, (size_t)n, 0644, err);
    }
    return rc;
}

int keys_add_site(const char *dir, const char *name, err_t *err)
{
    if (!keys_valid_name(name))
        return err_set(err, FN_EINVAL,
                       "invalid site name \"%s\": use 1-63 letters, digits, '.', '_' or '-' (not starting with '.')",
                       name);
    char server_pub[PATH_MAX], allow[PATH_MAX], kit[PATH_MAX], path[PATH_MAX];
    snprintf(server_pub, sizeof server_pub, "%s/server.pub", dir);
    snprintf(allow, sizeof allow, "%s/allowed_clients", dir);
    snprintf(kit, sizeof kit, "%s/sites/%s", dir, name);
    char spk[KEYS_Z85_LEN + 1];
    int rc = keys_read_public(server_pub, spk, err);
    if (rc < 0)
        return err_wrap(err, "run `fednas keys init %s` first: ", dir);
    keys_pair_t *kp = keys_pair_new();
    if (!kp)
        return err_set(err, FN_ENOMEM, "out of secure memory");
    rc = keys_generate(kp, err);
    if (rc == 0)
        rc = keys_allow_add(allow, name, kp->public_z85, err);
    if (rc == 0)
        rc = fn_mkdirs(kit, 0700, err);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/site.key", kit);
        rc = keys_write_secret(path, kp, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/server.pub", kit);
        rc = keys_write_public(path, spk, err);
    }
    keys_pair_free(kp);
    return rc;
}
