/* Test helpers of the writer and save tests: temporary directories, whole-file reads, tensors
 * filled with given bytes, and directory snapshots to prove a failed save changed nothing.
 * Test code: plain malloc/free. */
#ifndef FM_TEST_WR_FIXTURES_H
#define FM_TEST_WR_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/tensor.h"

/* A fresh directory under $FM_TEST_TMP (or /tmp). Caller removes it with wrfx_rmrf and frees
 * the string with free(). NULL on failure. */
char *wrfx_mkdtemp(void);
/* Removes a tree without following symbolic links (directories made writable first). 0 or -1. */
int wrfx_rmrf(const char *path);
/* "a/b"; caller frees with free(). */
char *wrfx_join(const char *a, const char *b);
/* Whole file; caller frees with free(). NULL when it cannot be read. */
uint8_t *wrfx_read(const char *path, size_t *len);
/* Creates or truncates a file with these bytes. 0 or -1. */
int wrfx_write(const char *path, const void *data, size_t len);
bool wrfx_exists(const char *path);
/* splitmix64 step. */
uint64_t wrfx_rand(uint64_t *state);
/* An owned tensor of dtype/shape holding `bytes` (or seeded random bytes when bytes is NULL).
 * Returns 0, or -1 on error. Free with fm_tensor_free. */
int wrfx_tensor(fm_tensor *t, fm_dtype dt, int ndim, const int64_t *dims, const void *bytes,
                uint64_t seed);

/* Recursive picture of a directory: every entry's relative path, type, permission bits and
 * content (file bytes or link target), sorted by path. */
typedef struct wrfx_snap_entry {
    char *path;
    char type; /* 'f', 'd', 'l', '?' */
    unsigned mode;
    uint8_t *data;
    size_t len;
} wrfx_snap_entry;

typedef struct wrfx_snap {
    wrfx_snap_entry *v;
    size_t n;
    bool missing; /* the directory did not exist */
} wrfx_snap;

int wrfx_snapshot(const char *dir, wrfx_snap *out);
void wrfx_snap_free(wrfx_snap *s);
/* 1 when equal; otherwise 0 and a description of the first difference in `why`. */
int wrfx_snap_equal(const wrfx_snap *a, const wrfx_snap *b, char *why, size_t why_len);
/* Number of entries of `parent` whose name starts with `prefix` (leftover staging dirs). */
int wrfx_count_prefix(const char *parent, const char *prefix);

#endif
