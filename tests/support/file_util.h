/* Test support: whole-file reads and comparisons, directory listings. */
#ifndef FM_TEST_FILE_UTIL_H
#define FM_TEST_FILE_UTIL_H

#include <stddef.h>

/* Reads a whole file (caller frees); NULL on error. */
char *fm_test_read_file(const char *path, size_t *len);
/* 1 when both files exist and have identical bytes. */
int fm_test_same_file(const char *a, const char *b);
/* 1 when directories a and b hold the same regular file names with identical bytes,
 * ignoring names listed in `skip` (NULL-terminated, may be NULL). Prints differences. */
int fm_test_same_dir(const char *a, const char *b, const char *const *skip);
/* Writes bytes to path; 0 on success. */
int fm_test_write_file(const char *path, const void *data, size_t len);

#endif
