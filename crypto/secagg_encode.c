/* Fixed-point encoding of float vectors into Z_2^bits for secure aggregation: L2 clipping,
 * scaling by f, unbiased stochastic rounding, and the signed decoding of a sum. The scale and
 * the error bound are derived in secagg.h. */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "crypto/secagg.h"

double secagg_choose_scale(uint32_t n, double clip, uint32_t bits)
{
    if (n < 1 || !(clip > 0) || !isfinite(clip) || bits < 2 || bits > 32)
        return 0;
    /* n (C f + 1) <= 2^(bits-1) - 1: the +1 is the most stochastic rounding can add */
    double room = ldexp(1.0, (int)bits - 1) - 1.0 - (double)n;
    if (room <= 0)
        return 0;
    return room / ((double)n * clip);
}

int secagg_encode(const float *x, size_t m, double clip, double f, uint32_t bits, uint32_t *out, err_t *err)
{
    if (!(clip > 0) || !isfinite(clip) || !(f > 0) || !isfinite(f) || bits < 2 || bits > 32)
        return err_set(err, FN_EINVAL, "secagg: encode needs clip > 0, f > 0 and 2 <= bits <= 32");
    if (clip * f + 1 >= ldexp(1.0, (int)bits - 1))
        return err_set(err, FN_EINVAL, "secagg: clip %g times scale %g does not fit in %u bits", clip, f, bits);
    if (sodium_init() < 0)
        return err_set(err, FN_EIO, "libsodium failed to initialise");
    double ss = 0;
    for (size_t i = 0; i < m; i++) {
        if (!isfinite(x[i]))
            return err_set(err, FN_EINVAL, "secagg: encode input %zu is not finite", i);
        ss += (double)x[i] * x[i];
    }
    double norm = sqrt(ss), s = norm > clip ? clip / norm : 1.0, lim = clip * f;
    uint32_t mask = bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    uint64_t rnd[256];
    for (size_t i = 0; i < m; i++) {
        if (i % 256 == 0)
            randombytes_buf(rnd, sizeof rnd);
        double z = (double)x[i] * s * f;
        z = z > lim ? lim : z < -lim ? -lim : z; /* a no-op up to float error of the clipping */
        double fl = floor(z);
        double u = (double)(rnd[i % 256] >> 11) * 0x1.0p-53; /* uniform in [0, 1) */
        int64_t r = (int64_t)fl + (int64_t)(u < z - fl);   /* E[r] = z */
        out[i] = (uint32_t)((uint64_t)r & mask);
    }
    sodium_memzero(rnd, sizeof rnd);
    return 0;
}

void secagg_decode(const uint32_t *sum, size_t m, double f, uint32_t bits, float *out)
{
    uint64_t mod = (uint64_t)1 << bits;
    uint32_t mask = (uint32_t)(mod - 1);
    for (size_t i = 0; i < m; i++) {
        uint64_t v = sum[i] & mask;
        int64_t sv = v >= mod / 2 ? (int64_t)v - (int64_t)mod : (int64_t)v;
        out[i] = (float)((double)sv / f);
    }
}
