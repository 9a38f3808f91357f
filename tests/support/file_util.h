/* Test support, the one place for file helpers: temporary directories, whole-file reads and
 * writes, comparisons. The area-specific fixtures (imgfx_, wrfx_, stfx_) delegate here. */
#ifndef FM_TEST_FILE_UTIL_H
#define FM_TEST_FILE_UTIL_H

#include <stddef.h>

/* Fresh directory "$FM_TEST_TMP/fusemap-TAG-XXXXXX" (or under /tmp); malloc'd, NULL on failure. */
char *fm_test_tmpdir(const char *tag);
/* rm -rf without following symlinks; makes directories writable first (tests that drop
 * privileges leave read-only ones). 0 on success, -1 if anything could not be removed. */
int fm_test_rmtree(const char *path);
/* malloc'd "a/b". */
char *fm_test_join(const char *a, const char *b);
/* Reads a whole file (caller frees); NULL on error. */
char *fm_test_read_file(const char *path, size_t *len);
/* 1 when both files exist and have identical bytes. */
int fm_test_same_file(const char *a, const char *b);
/* 1 when directories a and b hold the same regular file names with identical bytes,
 * ignoring names listed in `skip` (NULL-terminated, may be NULL). Prints differences. */
int fm_test_same_dir(const char *a, const char *b, const char *const *skip);
/* The same comparison without printing (for states that are expected to differ). */
int fm_test_same_dir_quiet(const char *a, const char *b, const char *const *skip);
/* Writes bytes to path; 0 on success. */
int fm_test_write_file(const char *path, const void *data, size_t len);

#endif
