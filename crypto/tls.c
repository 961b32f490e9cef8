/* tls.c: self-signed certificate creation with OpenSSL 3 (EVP_PKEY + X509). Files are written
 * to a temporary name and renamed, so a crash never leaves half a key, and two processes
 * starting at once both end up with a complete, matching pair. */
#define _GNU_SOURCE
#include "crypto/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

static int ossl_fail(err_t *err, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return err_set(err, FN_EIO, "tls: %s failed%s%s", what, buf[0] ? ": " : "", buf);
}

/* Opens path.tmp with mode for writing as a FILE. */
static FILE *open_tmp(const char *path, int mode, char *tmp, size_t cap, err_t *err)
{
    snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        err_set(err, FN_EIO, "tls: cannot create %s: %s", tmp, strerror(errno));
        return NULL;
    }
    fchmod(fd, (mode_t)mode); /* umask must not widen or narrow it */
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        err_set(err, FN_EIO, "tls: cannot open %s: %s", tmp, strerror(errno));
    }
    return f;
}

static int close_rename(FILE *f, const char *tmp, const char *path, err_t *err)
{
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return err_set(err, FN_EIO, "tls: cannot write %s: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return err_set(err, FN_EIO, "tls: cannot rename %s to %s: %s", tmp, path, strerror(errno));
    }
    return 0;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static X509 *make_cert(EVP_PKEY *key)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *sn = NULL;
    if (RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    sn = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    if (!sn || !X509_set_version(x, 2) || !X509_set_serialNumber(x, sn))
        goto fail;
    /* 825 days: the longest validity macOS/iOS accept for a TLS server certificate. */
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -3600) || !X509_gmtime_adj(X509_getm_notAfter(x), 825L * 86400))
        goto fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"fednas", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fednas dashboard (self-signed)",
                                    -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, key))
        goto fail;
    if (add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
        add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(x, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost,IP:::1") < 0 ||
        add_ext(x, NID_subject_key_identifier, "hash") < 0)
        goto fail;
    if (X509_sign(x, key, EVP_sha256()) <= 0)
        goto fail;
    ASN1_INTEGER_free(sn);
    BN_free(bn);
    return x;
fail:
    ASN1_INTEGER_free(sn);
    BN_free(bn);
    X509_free(x);
    return NULL;
}

static int write_key(const char *path, EVP_PKEY *key, err_t *err)
{
    char tmp[4200];
    FILE *f = open_tmp(path, 0600, tmp, sizeof tmp, err);
    if (!f)
        return err->code;
    if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) {
        fclose(f);
        unlink(tmp);
        return ossl_fail(err, "writing the private key");
    }
    return close_rename(f, tmp, path, err);
}

static int write_cert(const char *path, X509 *x, int mode, err_t *err)
{
    char tmp[4200];
    FILE *f = open_tmp(path, mode, tmp, sizeof tmp, err);
    if (!f)
        return err->code;
    if (!PEM_write_X509(f, x)) {
        fclose(f);
        unlink(tmp);
        return ossl_fail(err, "writing the certificate");
    }
    return close_rename(f, tmp, path, err);
}

/* server.pem = key + certificate chain, 0600. */
static int write_combined(const char *path, EVP_PKEY *key, STACK_OF(X509) *chain, err_t *err)
{
    char tmp[4200];
    FILE *f = open_tmp(path, 0600, tmp, sizeof tmp, err);
    if (!f)
        return err->code;
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    for (int i = 0; ok && i < sk_X509_num(chain); i++)
        ok = PEM_write_X509(f, sk_X509_value(chain, i));
    if (!ok) {
        fclose(f);
        unlink(tmp);
        return ossl_fail(err, "writing server.pem");
    }
    return close_rename(f, tmp, path, err);
}

static int join(char *out, size_t cap, const char *dir, const char *name, err_t *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return err_set(err, FN_EINVAL, "tls: path %s/%s is too long", dir, name);
    return 0;
}

static EVP_PKEY *read_key(const char *path, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(err, FN_EIO, "tls: cannot open key %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k)
        ossl_fail(err, "reading the private key (unencrypted PEM expected)");
    return k;
}

static STACK_OF(X509) *read_chain(const char *path, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(err, FN_EIO, "tls: cannot open certificate %s: %s", path, strerror(errno));
        return NULL;
    }
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *x;
    while (chain && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        sk_X509_push(chain, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);
    if (!chain || sk_X509_num(chain) == 0) {
        sk_X509_pop_free(chain, X509_free);
        err_set(err, FN_EINVAL, "tls: %s holds no PEM certificate", path);
        return NULL;
    }
    return chain;
}

int tls_ensure_self_signed(const char *dir, char *pem_out, size_t pem_cap, err_t *err)
{
    char key_path[4096], cert_path[4096];
    if (join(key_path, sizeof key_path, dir, "key.pem", err) < 0 ||
        join(cert_path, sizeof cert_path, dir, "cert.pem", err) < 0 || join(pem_out, pem_cap, dir, "server.pem", err) < 0)
        return err->code;
    if (fn_mkdirs(dir, 0700, err) < 0)
        return err->code;
    if (access(pem_out, R_OK) == 0 && access(cert_path, R_OK) == 0)
        return 0;

    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    STACK_OF(X509) *chain = NULL;
    int rc;
    if (access(key_path, R_OK) == 0 && access(cert_path, R_OK) == 0) {
        /* server.pem lost: rebuild it from the pair, keeping the certificate browsers know. */
        rc = tls_combine(cert_path, key_path, dir, pem_out, pem_cap, err);
        return rc;
    }
    key = EVP_EC_gen("P-256");
    if (!key)
        return ossl_fail(err, "generating an EC P-256 key");
    x = make_cert(key);
    if (!x) {
        EVP_PKEY_free(key);
        return ossl_fail(err, "making the self-signed certificate");
    }
    chain = sk_X509_new_null();
    if (!chain || !sk_X509_push(chain, x)) {
        sk_X509_free(chain);
        X509_free(x);
        EVP_PKEY_free(key);
        return err_set(err, FN_ENOMEM, "tls: out of memory");
    }
    rc = write_key(key_path, key, err);
    if (rc == 0)
        rc = write_cert(cert_path, x, 0644, err);
    if (rc == 0)
        rc = write_combined(pem_out, key, chain, err);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

int tls_combine(const char *cert_path, const char *key_path, const char *dir, char *pem_out, size_t pem_cap,
                err_t *err)
{
    if (join(pem_out, pem_cap, dir, "server.pem", err) < 0 || fn_mkdirs(dir, 0700, err) < 0)
        return err->code;
    EVP_PKEY *key = read_key(key_path, err);
    if (!key)
        return err->code;
    STACK_OF(X509) *chain = read_chain(cert_path, err);
    if (!chain) {
        EVP_PKEY_free(key);
        return err->code;
    }
    int rc;
    if (X509_check_private_key(sk_X509_value(chain, 0), key) != 1) {
        ERR_clear_error();
        rc = err_set(err, FN_EINVAL, "tls: the key %s does not belong to the certificate %s", key_path, cert_path);
    } else {
        rc = write_combined(pem_out, key, chain, err);
    }
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

int tls_fingerprint(const char *pem_path, char out[97], err_t *err)
{
    STACK_OF(X509) *chain = read_chain(pem_path, err);
    if (!chain)
        return err->code;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int ok = X509_digest(sk_X509_value(chain, 0), EVP_sha256(), md, &n);
    sk_X509_pop_free(chain, X509_free);
    if (!ok || n != 32)
        return ossl_fail(err, "hashing the certificate");
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 3 * i, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
    return 0;
}
