/* The sampler's random stream (src/api/sampling.c), exposed to tests so the documented
 * generator can be checked against its published reference outputs. */
#ifndef FM_API_SAMPLING_INTERNAL_H
#define FM_API_SAMPLING_INTERNAL_H

#include <stdint.h>

/* xoshiro256** (Blackman & Vigna). State must not be all zero. */
typedef struct fm_rng {
    uint64_t s[4];
} fm_rng;

/* splitmix64: advances *state by the golden-ratio increment and returns the mixed value. */
uint64_t fm_splitmix64(uint64_t *state);
/* s[0..3] = four consecutive splitmix64 outputs from `seed`. */
void fm_rng_seed(fm_rng *r, uint64_t seed);
uint64_t fm_rng_next(fm_rng *r);
/* Top 53 bits of the next output times 2^-53: uniform on [0, 1). */
double fm_rng_uniform(fm_rng *r);

#endif
