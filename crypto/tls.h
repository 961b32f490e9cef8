/* tls: the dashboard's HTTPS certificate. Makes a self-signed certificate (EC P-256, SAN
 * 127.0.0.1 and localhost, SHA-256, valid 825 days) on first start and reuses it afterwards,
 * so a browser that accepted it once keeps accepting it. */
#ifndef FEDNAS_CRYPTO_TLS_H
#define FEDNAS_CRYPTO_TLS_H

#include <stddef.h>

#include "common/err.h"

/* Ensures dir (created 0700) holds key.pem (0600), cert.pem (0644) and server.pem (0600, key
 * followed by certificate: the one file civetweb's ssl_certificate option takes). Existing files
 * are kept. Writes the path of server.pem to pem_out. */
int tls_ensure_self_signed(const char *dir, char *pem_out, size_t pem_cap, err_t *err);

/* Combines a given certificate (chain) file and key file into dir/server.pem (0600), checking
 * that both parse and that the key matches the certificate. */
int tls_combine(const char *cert_path, const char *key_path, const char *dir, char *pem_out, size_t pem_cap,
                err_t *err);

/* The SHA-256 fingerprint of the certificate in a PEM file, as "AB:CD:..." (96 chars + NUL). */
int tls_fingerprint(const char *pem_path, char out[97], err_t *err);

#endif
