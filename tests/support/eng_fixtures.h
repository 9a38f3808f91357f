/* Loading-engine test helpers: seeded random tensors, an in-memory checkpoint source for
 * fm_weights_load, and tensors backed by a fake "mapped file" whose unmapping is counted. */
#ifndef FM_TEST_ENG_FIXTURES_H
#define FM_TEST_ENG_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/loading.h"

uint64_t eng_rand(uint64_t *state); /* xorshift64*; state must be non-zero */
int64_t eng_rand_range(uint64_t *state, int64_t lo, int64_t hi); /* lo..hi inclusive */
void eng_fill(fm_tensor *t, uint64_t *state);                    /* random bytes over t->nbytes */
/* Owned tensor of random bytes; aborts the test binary on allocation failure. */
fm_tensor eng_tensor(fm_dtype dt, int ndim, const int64_t *dims, uint64_t *state);
fm_shape eng_shape(int ndim, const int64_t *dims);
bool eng_same_bytes(const fm_tensor *a, const fm_tensor *b); /* dtype, shape and bytes */

/* A fake mapped file: one heap buffer wrapped with fm_storage_wrap_mapping. Its unmap callback
 * frees the buffer and increments eng_unmaps. */
extern int eng_unmaps;
fm_storage *eng_mapping(uint64_t bytes, uint64_t *state);

/* In-memory checkpoint: names + tensors, exposed as an fm_tensor_source. */
typedef struct eng_ckpt {
    size_t n, cap;
    char **names;
    fm_tensor *t; /* one reference each */
} eng_ckpt;
void eng_ckpt_add(eng_ckpt *c, const char *name, fm_tensor *t); /* takes t */
/* Adds a view of `bytes` of storage at offset into the checkpoint (a "mapped" tensor). */
void eng_ckpt_add_view(eng_ckpt *c, const char *name, fm_storage *s, uint64_t offset, fm_dtype dt,
                       int ndim, const int64_t *dims);
const fm_tensor *eng_ckpt_find(const eng_ckpt *c, const char *name);
fm_tensor_source eng_ckpt_source(eng_ckpt *c);
void eng_ckpt_free(eng_ckpt *c);

#endif
