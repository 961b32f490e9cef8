/* rng: a small, seedable, reproducible generator (xoshiro256**, seeded by splitmix64).
 * For shuffling, partitioning and initialisation; never for keys, masks or DP noise,
 * which come from libsodium. The same seed gives the same stream on every machine. */
#ifndef FEDNAS_COMMON_RNG_H
#define FEDNAS_COMMON_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t rng_below(rng_t *r, uint64_t n);
/* Uniform double in [0, 1). */
double rng_uniform(rng_t *r);
/* Standard normal (Marsaglia polar method). */
double rng_normal(rng_t *r);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang), used for Dirichlet draws. */
double rng_gamma(rng_t *r, double shape);
/* Fisher-Yates shuffle of n ints. */
void rng_shuffle_int(rng_t *r, int *a, int n);
/* Derives an independent seed for stream `index` of a base seed (e.g. per client, per round). */
uint64_t rng_derive(uint64_t seed, uint64_t index);

#endif
