/* Internal: the bounded, non-recursive parser of a safetensors header (the N JSON bytes)
 * and the name quoting every io error message uses. Used by safetensors_read.c. */
#ifndef FUSEMAP_IO_ST_HEADER_H
#define FUSEMAP_IO_ST_HEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/io.h"

/* Deepest JSON nesting accepted anywhere in a header (serde_json's recursion limit). The
 * top-level object is depth 1, a tensor entry depth 2, so skipped members get the rest. */
#define FM_ST_MAX_DEPTH 128

/* A parsed header. Strings (tensor names, metadata keys and values) point into the buffer
 * given to fm_st_header_parse, which was decoded in place: they are borrowed until that
 * buffer is freed, NUL-terminated, and may contain NUL (use the lengths for names).
 * Dims are stored bit-for-bit: a dimension above INT64_MAX reads back negative as int64;
 * the offset-chain check reads dims as uint64_t, the reference's size type. */
typedef struct fm_st_header {
    fm_st_entry *entries; /* owned; in file order; free with fm_st_header_free */
    size_t n_entries;
    fm_st_kv *meta; /* owned; in file order */
    size_t n_meta;
    bool has_metadata; /* false when absent or `null` */
} fm_st_header;

/* Validates UTF-8 (FM_ERR_HEADER_UTF8), then parses the whole header: JSON syntax, the fixed
 * shape (object of tensor entries plus an optional `__metadata__` string map), strict
 * integers, known dtypes (FM_ERR_UNKNOWN_DTYPE), rank <= FM_MAX_DIMS, name length and tensor
 * count limits (FM_ERR_LIMIT), duplicate metadata keys (FM_ERR_HEADER_JSON: we reject where
 * the reference keeps the last). Everything else is FM_ERR_HEADER_JSON with the file offset.
 * Duplicate tensor names and the offset chain are checked by the caller, not here.
 * `buf` is modified (escapes decoded in place). `label` names the file in messages.
 * On failure *out is left empty and nothing is allocated. */
fm_status fm_st_header_parse(char *buf, size_t len, const char *label, fm_st_header *out,
                             fm_error *err);
void fm_st_header_free(fm_st_header *h); /* accepts NULL; frees arrays, not the buffer */

/* Writes a printable, bounded form of a tensor name into buf (control bytes and NUL as
 * \xNN, long names cut with "..."); returns buf. */
const char *fm_st_quote_name(char *buf, size_t size, const char *name, size_t len);
#define FM_ST_QUOTE_MAX 200

#endif
