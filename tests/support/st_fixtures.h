/* Test helpers of the safetensors reader tests: raw-bytes safetensors builders (valid and
 * deliberately malformed files), temporary directories and small file utilities. Test code:
 * plain malloc/free; only the dtype table is taken from the library. */
#ifndef FM_TEST_ST_FIXTURES_H
#define FM_TEST_ST_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of a safetensors file: 8-byte LE `n_field`, then `header` (hlen bytes), then `data`.
 * n_field is written as given (a lie is how malformed prefixes are made). Caller frees *out
 * with free(); returns 0, or -1 on OOM. */
int stfx_bytes_n(uint64_t n_field, const void *header, size_t hlen, const void *data, size_t dlen,
                 uint8_t **out, size_t *out_len);
/* Same with n_field = hlen (header taken as a C string when hlen is 0 is NOT implied: pass
 * the length; use stfx_bytes_str for C strings). */
int stfx_bytes_str(const char *header, const void *data, size_t dlen, uint8_t **out,
                   size_t *out_len);

/* A tensor for stfx_build: dtype by safetensors name (unknown names count 1 byte/element). */
typedef struct stfx_tensor {
    const char *name; /* plain ASCII without quotes or backslashes */
    const char *dtype;
    int ndim;
    int64_t dims[8];
} stfx_tensor;

/* Bytes of one tensor of t (elements x bits / 8). */
uint64_t stfx_nbytes(const stfx_tensor *t);
/* A valid file: tensors at consecutive offsets in the given order, tensor i filled with
 * stfx_random_bytes(.., seed + i); `meta` is NULL or the JSON text of __metadata__'s value.
 * Caller frees *out with free(). Returns 0 or -1. */
int stfx_build(const stfx_tensor *ts, size_t n, const char *meta, uint64_t seed, uint8_t **out,
               size_t *out_len);

/* Writes bytes to a new file (truncating). Returns 0 or -1. */
int stfx_write_file(const char *path, const void *bytes, size_t len);
/* stfx_bytes_str + write. */
int stfx_write_st(const char *path, const char *header, const void *data, size_t dlen);
/* Writes `text` to dir/name. */
int stfx_write_text(const char *dir, const char *name, const char *text);
/* A fresh empty directory root/dNNN (numbered per process); malloc'd, NULL on failure. */
char *stfx_new_dir(const char *root);
/* stfx_build (metadata {"format":"pt"}) written to dir/name; 0 on success. */
int stfx_write_built(const char *dir, const char *name, const stfx_tensor *ts, size_t n,
                     uint64_t seed);

/* "dir/name"; caller frees with free(). */
char *stfx_join(const char *dir, const char *name);
/* A fresh directory under $FM_TEST_TMP (or /tmp), e.g. "/tmp/fm-XXXXXX"; caller removes it
 * with stfx_rmrf and frees the string with free(). NULL on failure. */
char *stfx_mkdtemp(void);
/* Removes a tree (no symlink following). Returns 0 or -1. */
int stfx_rmrf(const char *path);
/* Fills n bytes with a reproducible pseudo-random sequence from `seed`. */
void stfx_random_bytes(void *buf, size_t n, uint64_t seed);

#endif
