/* Shamir sharing over GF(2^61 - 1); see shamir.h for the encoding and the side-channel rules. */
#include "crypto/shamir.h"

#include <sodium.h>
#include <string.h>

#define P SHAMIR_P

/* chunk widths in bytes of the 32-byte secret: 7+7+7+7+4 */
static const unsigned chunk_len[SHAMIR_WORDS] = {7, 7, 7, 7, 4};

/* r < 2^62 -> r mod p for r <= 2p, by masked subtraction (no branch). */
static inline uint64_t csub(uint64_t r)
{
    uint64_t t = r - P;
    uint64_t keep = 0 - (t >> 63); /* all ones when r < p */
    return (r & keep) | (t & ~keep);
}

uint64_t shamir_add(uint64_t a, uint64_t b) { return csub(a + b); }

uint64_t shamir_sub(uint64_t a, uint64_t b) { return csub(a + P - b); }

uint64_t shamir_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 z = (unsigned __int128)a * b; /* < 2^122 */
    uint64_t lo = (uint64_t)z & P, hi = (uint64_t)(z >> 61);
    return csub(csub(lo + hi));
}

uint64_t shamir_inv(uint64_t a)
{
    /* public exponent p - 2 = 2^61 - 3: bits 60..2 set, bit 1 clear, bit 0 set */
    uint64_t e = P - 2, r = 1, b = a;
    for (int i = 0; i < 61; i++) {
        if ((e >> i) & 1) /* branches on the public exponent only */
            r = shamir_mul(r, b);
        b = shamir_mul(b, b);
    }
    return r;
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void store_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Uniform field element from libsodium (61 random bits, p itself rejected: the rejection
 * depends on fresh random bits only, never on the secret). */
static uint64_t random_elem(void)
{
    uint64_t v;
    do {
        randombytes_buf(&v, sizeof v);
        v &= P;
    } while (v == P);
    return v;
}

static int check_points(const uint32_t *xs, size_t n, err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        if (xs[i] == 0)
            return err_set(err, FN_EINVAL, "shamir: evaluation point 0 is the secret; ids must be >= 1");
        for (size_t j = 0; j < i; j++)
            if (xs[i] == xs[j])
                return err_set(err, FN_EINVAL, "shamir: evaluation point %u appears twice", xs[i]);
    }
    return 0;
}

int shamir_split(const uint8_t secret[SHAMIR_SECRET_LEN], uint32_t t, const uint32_t *xs, size_t n,
                 shamir_share_t *out, err_t *err)
{
    if (t < 1 || (size_t)t > n)
        return err_set(err, FN_EINVAL, "shamir: threshold %u must be in [1, %zu]", t, n);
    int rc = check_points(xs, n, err);
    if (rc)
        return rc;
    if (sodium_init() < 0)
        return err_set(err, FN_EIO, "libsodium failed to initialise");
    /* coef[w][0] is the secret chunk, coef[w][1..t) random */
    size_t ncoef = (size_t)SHAMIR_WORDS * t;
    uint64_t *coef = sodium_malloc(ncoef * sizeof *coef);
    if (!coef)
        return err_set(err, FN_ENOMEM, "shamir: out of secure memory");
    const uint8_t *s = secret;
    for (int w = 0; w < SHAMIR_WORDS; w++) {
        coef[(size_t)w * t] = load_le(s, chunk_len[w]);
        s += chunk_len[w];
        for (uint32_t k = 1; k < t; k++)
            coef[(size_t)w * t + k] = random_elem();
    }
    for (size_t i = 0; i < n; i++) {
        out[i].x = xs[i];
        uint64_t x = xs[i];
        for (int w = 0; w < SHAMIR_WORDS; w++) {
            const uint64_t *c = coef + (size_t)w * t;
            uint64_t acc = c[t - 1];
            for (uint32_t k = t - 1; k-- > 0;) /* Horner */
                acc = shamir_add(shamir_mul(acc, x), c[k]);
            out[i].y[w] = acc;
        }
    }
    sodium_free(coef); /* wipes */
    return 0;
}

/* Lagrange weights for evaluating at point z from points xs[0..t): all public. */
static void lagrange_weights(const uint32_t *xs, uint32_t t, uint64_t z, uint64_t *w)
{
    for (uint32_t i = 0; i < t; i++) {
        uint64_t num = 1, den = 1;
        for (uint32_t j = 0; j < t; j++) {
            if (j == i)
                continue;
            num = shamir_mul(num, shamir_sub(z, xs[j]));
            den = shamir_mul(den, shamir_sub(xs[i], xs[j]));
        }
        w[i] = shamir_mul(num, shamir_inv(den));
    }
}

int shamir_combine(const shamir_share_t *shares, size_t count, uint32_t t, uint8_t secret[SHAMIR_SECRET_LEN],
                   err_t *err)
{
    if (t < 1)
        return err_set(err, FN_EINVAL, "shamir: threshold must be >= 1");
    if (count < t)
        return err_set(err, FN_EINVAL, "shamir: %zu shares given, the threshold is %u", count, t);
    uint32_t *xs = FN_MALLOC(count * sizeof *xs);
    uint64_t *w = FN_MALLOC((size_t)t * sizeof *w);
    for (size_t i = 0; i < count; i++) {
        xs[i] = shares[i].x;
        for (int k = 0; k < SHAMIR_WORDS; k++)
            if (shares[i].y[k] >= P) {
                free(xs);
                free(w);
                return err_set(err, FN_EPROTO, "shamir: share from %u is not a field element", shares[i].x);
            }
    }
    int rc = check_points(xs, count, err);
    uint64_t *val = sodium_malloc(SHAMIR_WORDS * sizeof *val);
    if (!val)
        rc = err_set(err, FN_ENOMEM, "shamir: out of secure memory");
    if (rc)
        goto out;
    lagrange_weights(xs, t, 0, w);
    for (int k = 0; k < SHAMIR_WORDS; k++) {
        uint64_t acc = 0;
        for (uint32_t i = 0; i < t; i++)
            acc = shamir_add(acc, shamir_mul(w[i], shares[i].y[k]));
        val[k] = acc;
    }
    /* Extra shares must lie on the same polynomial. The comparison involves secret-dependent
     * values but only its single pass/fail outcome is branched on. */
    uint64_t bad = 0;
    for (size_t e = t; e < count; e++) {
        lagrange_weights(xs, t, xs[e], w);
        for (int k = 0; k < SHAMIR_WORDS; k++) {
            uint64_t acc = 0;
            for (uint32_t i = 0; i < t; i++)
                acc = shamir_add(acc, shamir_mul(w[i], shares[i].y[k]));
            bad |= acc ^ shares[e].y[k];
        }
    }
    if (bad) {
        rc = err_set(err, FN_EPROTO, "shamir: the %zu shares are inconsistent (a share was altered)", count);
        goto out;
    }
    for (int k = 0; k < SHAMIR_WORDS; k++)
        bad |= val[k] >> (8 * chunk_len[k]);
    if (bad) {
        rc = err_set(err, FN_EPROTO, "shamir: the reconstructed value is not a secret (a share was altered)");
        goto out;
    }
    uint8_t *s = secret;
    for (int k = 0; k < SHAMIR_WORDS; k++) {
        store_le(s, val[k], chunk_len[k]);
        s += chunk_len[k];
    }
out:
    if (val)
        sodium_free(val);
    free(xs);
    free(w);
    return rc;
}

void shamir_store(const shamir_share_t *s, uint8_t out[SHAMIR_SHARE_LEN])
{
    for (int k = 0; k < SHAMIR_WORDS; k++)
        store_le(out + 8 * k, s->y[k], 8);
}

int shamir_load(shamir_share_t *s, uint32_t x, const uint8_t in[SHAMIR_SHARE_LEN], err_t *err)
{
    uint64_t y[SHAMIR_WORDS];
    for (int k = 0; k < SHAMIR_WORDS; k++) {
        y[k] = load_le(in + 8 * k, 8);
        if (y[k] >= P)
            return err_set(err, FN_EPROTO, "shamir: share value out of range");
    }
    s->x = x;
    memcpy(s->y, y, sizeof y);
    sodium_memzero(y, sizeof y);
    return 0;
}
