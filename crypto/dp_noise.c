/* DP noise: the exact samplers of Canonne, Kamath, Steinke (2020, "The Discrete Gaussian for
 * Differential Privacy", Algorithms 1-3) in integer arithmetic and CSPRNG Gaussian noise for central
 * DP (the distributed discrete Gaussian built on these samplers is dp_distributed.c).
 *
 * Randomness: libsodium's CSPRNG (see pool_refill), read through a per-thread buffer so a sample
 * costs a few loads rather than a system call per bit. A forked child must never replay its parent's
 * buffered bytes (the server forks local clients): a pthread_atfork child handler wipes the
 * forking thread's buffer, the only thread the child has. */
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>

#include "crypto/dp.h"

typedef unsigned __int128 u128;

/* ---- the random pool ---- */

#define POOL_WORDS 1024 /* 8 KB */
static _Thread_local uint64_t g_pool[POOL_WORDS];
static _Thread_local size_t g_pool_pos = POOL_WORDS; /* POOL_WORDS: empty */
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void pool_wipe(void)
{
    sodium_memzero(g_pool, sizeof g_pool);
    g_pool_pos = POOL_WORDS;
}

static void pool_register(void)
{
    pthread_atfork(NULL, NULL, pool_wipe);
}

/* Each refill takes a fresh 256-bit key from the OS CSPRNG (randombytes_buf) and expands it with
 * libsodium's ChaCha20 (randombytes_buf_deterministic): one getrandom() call per 8 KB and the
 * expansion in user space (a refill of 1 KB straight from the kernel cost over half of the
 * discrete Gaussian sampler's time); the output is as unpredictable as the key, which is wiped.
 * Registering the fork handler here is enough: before the first refill there is nothing to wipe. */
static void pool_refill(void)
{
    pthread_once(&g_pool_once, pool_register);
    unsigned char seed[randombytes_SEEDBYTES];
    randombytes_buf(seed, sizeof seed);
    randombytes_buf_deterministic(g_pool, sizeof g_pool, seed);
    sodium_memzero(seed, sizeof seed);
    g_pool_pos = 0;
}

static uint64_t rnd_u64(void)
{
    if (g_pool_pos == POOL_WORDS)
        pool_refill();
    uint64_t x = g_pool[g_pool_pos];
    ((volatile uint64_t *)g_pool)[g_pool_pos++] = 0; /* a word is used once; volatile: never elided */
    return x;
}

/* Uniform in [0, bound), bound >= 1, by rejection on the smallest covering power of two. */
static uint64_t rnd_below64(uint64_t bound)
{
    if (bound <= 1)
        return 0;
    uint64_t mask = UINT64_MAX >> __builtin_clzll(bound - 1);
    for (;;) {
        uint64_t x = rnd_u64() & mask;
        if (x < bound)
            return x;
    }
}

static u128 rnd_below128(u128 bound)
{
    if (bound <= UINT64_MAX)
        return rnd_below64((uint64_t)bound);
    uint64_t hi = (uint64_t)((bound - 1) >> 64);
    u128 mask = ((u128)(UINT64_MAX >> __builtin_clzll(hi)) << 64) | UINT64_MAX;
    for (;;) {
        u128 x = (((u128)rnd_u64() << 64) | rnd_u64()) & mask;
        if (x < bound)
            return x;
    }
}

double dp_uniform53(void)
{
    return (double)(rnd_u64() >> 11) * 0x1p-53;
}

/* ---- exact samplers (CKS 2020) on rationals num/den ---- */

/* Bernoulli(num/den), num <= den */
static int bern(u128 num, u128 den)
{
    return rnd_below128(den) < num;
}

/* Bernoulli(exp(-x)) for x = num/den in [0, 1] (CKS Algorithm 1, first part): with K the first k
 * for which Bernoulli(x/k) fails, return [K odd]. Bernoulli(x/k) = Bernoulli(x) and
 * Bernoulli(1/k), so no product num * k is ever formed. */
static int bern_exp1(u128 num, u128 den)
{
    uint64_t k = 1;
    while (bern(num, den) && rnd_below64(k) == 0)
        k++;
    return (int)(k & 1);
}

/* Bernoulli(exp(-x)) for any rational x >= 0: exp(-x) = exp(-1)^floor(x) exp(-frac(x)). */
static int bern_exp(u128 num, u128 den)
{
    while (num > den) {
        if (!bern_exp1(1, 1))
            return 0;
        num -= den;
    }
    return bern_exp1(num, den);
}

/* Geometric: the number of successes of Bernoulli(exp(-1)) before the first failure. */
static uint64_t geometric_exp1(void)
{
    uint64_t k = 0;
    while (bern_exp1(1, 1))
        k++;
    return k;
}

/* Discrete Laplace with integer scale t >= 1 (CKS Algorithm 2, s = 1): P(x) ~ exp(-|x| / t). */
static int64_t dlaplace(uint64_t t)
{
    for (;;) {
        int negative = (int)(rnd_u64() & 1);
        uint64_t u;
        do
            u = rnd_below64(t);
        while (!bern_exp(u, t));
        uint64_t v = geometric_exp1();
        if (v > (uint64_t)INT64_MAX / t - 1)
            continue; /* v >= 2^63/t successes in a row of probability 1/e: does not happen */
        int64_t mag = (int64_t)(v * t + u);
        if (negative && mag == 0)
            continue;
        return negative ? -mag : mag;
    }
}

static uint64_t isqrt64(uint64_t x)
{
    uint64_t r = (uint64_t)sqrt((double)x);
    while (r * r > x)
        r--;
    while ((r + 1) * (r + 1) <= x)
        r++;
    return r;
}

/* Discrete Gaussian N_Z(0, n/d) (CKS Algorithm 3): t = floor(sqrt(n/d)) + 1, propose a discrete
 * Laplace(t) value c and accept with probability exp(-(|c| - sigma2/t)^2 / (2 sigma2)), that is
 * exp(-(|c| d t - n)^2 / (2 n d t^2)), all in 128-bit integers (n, d <= 2^32, t <= 2^16 + 1).
 * When ||c| d t - n| >= 2^64 the exponent exceeds 2^128 / 2^99 = 2^29, an acceptance probability
 * below exp(-2^29), and the candidate is rejected without drawing: the one inexactness, far below
 * anything observable. */
static int64_t dgauss(uint64_t n, uint64_t d)
{
    uint64_t t = isqrt64(n / d) + 1; /* floor(sqrt(n/d)) = isqrt(floor(n/d)) */
    u128 den = (u128)2 * n * d * t * t;
    for (;;) {
        int64_t c = dlaplace(t);
        uint64_t ac = c < 0 ? (uint64_t)(-(c + 1)) + 1 : (uint64_t)c;
        u128 x = (u128)ac * d * t; /* < 2^63 * 2^32 * 2^17: no overflow */
        u128 a = x >= n ? x - n : n - x;
        if (a >> 64)
            continue;
        if (bern_exp(a * a, den))
            return c;
    }
}

static int check_rational(uint64_t num, uint64_t den, int allow_zero, err_t *err)
{
    if (den < 1 || den > DP_RATIONAL_MAX || num > DP_RATIONAL_MAX || (!allow_zero && num < 1))
        return err_set(err, FN_EINVAL, "dp: rational parameter %llu/%llu: need %s <= num <= 2^32 and 1 <= den <= 2^32",
                       (unsigned long long)num, (unsigned long long)den, allow_zero ? "0" : "1");
    return FN_OK;
}

int dp_bernoulli_exp(uint64_t num, uint64_t den, int *out, err_t *err)
{
    int rc = check_rational(num, den, 1, err);
    if (rc < 0)
        return rc;
    *out = bern_exp(num, den);
    return FN_OK;
}

int dp_discrete_laplace(uint64_t t, int64_t *out, err_t *err)
{
    if (t < 1 || t > DP_RATIONAL_MAX)
        return err_set(err, FN_EINVAL, "dp: discrete Laplace scale %llu must be in [1, 2^32]", (unsigned long long)t);
    *out = dlaplace(t);
    return FN_OK;
}

int dp_discrete_gaussian(uint64_t sigma2_num, uint64_t sigma2_den, int64_t *out, err_t *err)
{
    int rc = check_rational(sigma2_num, sigma2_den, 0, err);
    if (rc < 0)
        return rc;
    *out = dgauss(sigma2_num, sigma2_den);
    return FN_OK;
}

int dp_rational_from_double(double v, uint64_t *num, uint64_t *den, err_t *err)
{
    if (!(v > 0) || !(v <= (double)DP_RATIONAL_MAX))
        return err_set(err, FN_EINVAL, "dp: variance %g must be in (0, 2^32]", v);
    uint64_t d = 1;
    while (d < DP_RATIONAL_MAX && v * (double)(d * 2) <= (double)DP_RATIONAL_MAX)
        d *= 2;
    double n = nearbyint(v * (double)d);
    if (n < 1)
        return err_set(err, FN_EINVAL, "dp: variance %g is too small for the discrete samplers (min 2^-33)", v);
    *num = (uint64_t)n;
    *den = d;
    return FN_OK;
}

int dp_add_discrete_gaussian_u32(uint32_t *v, size_t n, uint64_t sigma2_num, uint64_t sigma2_den, err_t *err)
{
    int rc = check_rational(sigma2_num, sigma2_den, 0, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        v[i] += (uint32_t)(uint64_t)dgauss(sigma2_num, sigma2_den); /* two's complement: adds mod 2^32 */
    return FN_OK;
}

/* ---- continuous Gaussian ---- */

double dp_gaussian(void)
{
    /* Two Box-Muller pairs give four independent standard normals; their sum has variance 4. */
    double s = 0;
    for (int k = 0; k < 2; k++) {
        double u1 = 1.0 - dp_uniform53(); /* (0, 1]: log never sees 0 */
        double u2 = dp_uniform53();
        double r = sqrt(-2.0 * log(u1));
        s += r * cos(2 * M_PI * u2) + r * sin(2 * M_PI * u2);
    }
    return 0.5 * s;
}

int dp_add_gaussian_noise(float *v, size_t n, double std, err_t *err)
{
    if (!(std >= 0) || isinf(std))
        return err_set(err, FN_EINVAL, "dp: noise std %g must be finite and >= 0", std);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((double)v[i] + std * dp_gaussian());
    return FN_OK;
}
