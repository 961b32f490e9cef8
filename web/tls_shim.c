/* tls_shim.c: built as a tiny shared library whose SONAME is "libssl.so" and which links
 * libssl.so.3. Debian's civetweb 1.15 dlopen()s "libssl.so" and looks up
 * SSL_get_peer_certificate, which OpenSSL 3 only exports as SSL_get1_peer_certificate; with
 * that entry NULL every HTTPS connection crashes a worker. tls_load.c loads this library
 * (RTLD_NOW | RTLD_GLOBAL) before mg_init_library(MG_FEATURES_TLS); civetweb's own
 * dlopen("libssl.so") then finds it by SONAME, and every other SSL_* lookup falls through to
 * libssl.so.3, its dependency. Both names are declared by hand: <openssl/ssl.h> turns the old
 * one into a macro. */
typedef struct ssl_st SSL;
typedef struct x509_st X509;

X509 *SSL_get1_peer_certificate(const SSL *s);
X509 *SSL_get_peer_certificate(const SSL *s);

X509 *SSL_get_peer_certificate(const SSL *s)
{
    return SSL_get1_peer_certificate(s);
}
