/* fusemap io: safetensors reader (mmap, zero-copy, strict validation) and writer
 * (byte-identical to the reference serializer), sharded checkpoints, atomic directory
 * saves, and the config.json tree. */
#ifndef FUSEMAP_IO_H
#define FUSEMAP_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/core.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits the reader enforces (documented in README "Limits"). */
#define FM_ST_MAX_HEADER_BYTES 100000000ull /* reference limit, N <= 1e8 */
#define FM_ST_MAX_TENSORS 1000000u
#define FM_ST_MAX_NAME_BYTES 4096u
#define FM_JSON_MAX_DEPTH 64

/* ---- one safetensors file ------------------------------------------------------------ */
typedef struct fm_st_file fm_st_file;

typedef struct fm_st_entry {
    const char
        *name; /* borrowed until fm_st_close; NUL-terminated (may contain NUL: use name_len) */
    size_t name_len;
    fm_dtype dtype;
    fm_shape shape;
    uint64_t begin, end; /* offsets relative to the data region */
} fm_st_entry;

typedef struct fm_st_kv {
    const char *key;   /* borrowed until fm_st_close */
    const char *value; /* borrowed until fm_st_close */
} fm_st_kv;

/* Opens, maps and validates every rule of the spec. Reads only the 8-byte prefix and the
 * header; tensor bytes are neither read nor copied. Caller closes with fm_st_close. */
fm_status fm_st_open(const char *path, fm_st_file **out, fm_error *err);
/* Same rules on an in-memory buffer (borrowed until close); `label` names it in errors. */
fm_status fm_st_open_buffer(const void *buf, uint64_t len, const char *label, fm_st_file **out,
                            fm_error *err);
void fm_st_close(fm_st_file *f); /* accepts NULL; views taken from it stay valid */
const char *fm_st_path(const fm_st_file *f);
size_t fm_st_count(const fm_st_file *f);
/* Entries in data-offset order. */
const fm_st_entry *fm_st_entry_at(const fm_st_file *f, size_t i);
/* Index of the tensor named `name` (NUL-terminated), or -1. */
long fm_st_find(const fm_st_file *f, const char *name);
/* Metadata (`__metadata__`), in file order; has_metadata distinguishes absent from {}. */
bool fm_st_has_metadata(const fm_st_file *f);
size_t fm_st_metadata_count(const fm_st_file *f);
const fm_st_kv *fm_st_metadata_at(const fm_st_file *f, size_t i);
/* Zero-copy view of tensor i (data may be unaligned for its dtype). Caller frees with
 * fm_tensor_free. */
fm_status fm_st_tensor(const fm_st_file *f, size_t i, fm_tensor *out, fm_error *err);
/* Header length N, and data region start (8 + N). */
uint64_t fm_st_header_len(const fm_st_file *f);

/* ---- writer ------------------------------------------------------------------------------ */
typedef struct fm_st_item {
    const char *name;        /* borrowed for the call */
    const fm_tensor *tensor; /* borrowed for the call; must have data */
} fm_st_item;

/* Serialises exactly as the reference: sorted by dtype rank desc then name bytes, compact
 * JSON with serde escaping, metadata first (in the given order), space padding to 8.
 * meta == NULL && n_meta == 0 with `with_metadata` false omits __metadata__. */
typedef struct fm_st_write_options {
    const fm_st_kv *metadata; /* borrowed for the call */
    size_t n_metadata;
    bool with_metadata; /* write "__metadata__" even when n_metadata == 0 */
} fm_st_write_options;
void fm_st_write_options_init(fm_st_write_options *o);

/* Header bytes (8-byte prefix included) for these items; caller frees *out with fm_free. */
fm_status fm_st_serialize_header(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                                 uint8_t **out, uint64_t *out_len, fm_error *err);
/* Writes the whole file to an open fd (no fsync). */
fm_status fm_st_write_fd(int fd, const char *label, const fm_st_item *items, size_t n,
                         const fm_st_write_options *o, fm_error *err);
/* Atomic single-file write: temp file in the same directory, fsync, rename, fsync dir. */
fm_status fm_st_write_file(const char *path, const fm_st_item *items, size_t n,
                           const fm_st_write_options *o, fm_error *err);

/* ---- checkpoints (a model directory: model.safetensors or an index + shards) ---------- */
typedef struct fm_checkpoint fm_checkpoint;

typedef struct fm_ckpt_entry {
    const char *name;  /* borrowed until fm_checkpoint_close */
    const char *shard; /* file name relative to the directory; borrowed until close */
    fm_dtype dtype;
    fm_shape shape;
    uint64_t nbytes;
    uint32_t shard_index; /* which shard file */
    uint32_t index_in_shard;
} fm_ckpt_entry;

/* Opens DIR: `model.safetensors.index.json` if present (every weight_map entry must exist in
 * its shard, a shard tensor absent from the map is an error, a name in two shards is an
 * error, shard names may not escape DIR), else `model.safetensors`. Entries are ordered by
 * shard (sorted unique shard names), then data offset. */
fm_status fm_checkpoint_open(const char *dir, fm_checkpoint **out, fm_error *err);
void fm_checkpoint_close(fm_checkpoint *c); /* accepts NULL; views stay valid */
const char *fm_checkpoint_dir(const fm_checkpoint *c);
bool fm_checkpoint_is_sharded(const fm_checkpoint *c);
size_t fm_checkpoint_count(const fm_checkpoint *c);
const fm_ckpt_entry *fm_checkpoint_entry_at(const fm_checkpoint *c, size_t i);
long fm_checkpoint_find(const fm_checkpoint *c, const char *name);
fm_status fm_checkpoint_tensor(const fm_checkpoint *c, size_t i, fm_tensor *out, fm_error *err);
size_t fm_checkpoint_shard_count(const fm_checkpoint *c);
const fm_st_file *fm_checkpoint_shard(const fm_checkpoint *c, size_t i);

/* ---- sharded saves -------------------------------------------------------------------- */
/* Parses "5GB", "500MB", "10GiB", "100" (bytes), "5Gb" (bits): transformers' rules. */
fm_status fm_parse_size(const char *s, uint64_t *out, fm_error *err);
#define FM_DEFAULT_MAX_SHARD_SIZE 50000000000ull

/* One extra (non-weights) file to write in the same atomic save. */
typedef struct fm_extra_file {
    const char *name; /* bare file name, borrowed */
    const void *data; /* borrowed */
    uint64_t len;
} fm_extra_file;

typedef struct fm_save_options {
    uint64_t max_shard_size;     /* bytes; default FM_DEFAULT_MAX_SHARD_SIZE */
    bool write_total_parameters; /* index metadata total_parameters (default true) */
    uint64_t total_parameters;   /* value for it; 0 = sum of element counts */
    /* Optional fixed assignment (keeps a source checkpoint's shard layout): item i goes to
     * shard shard_of[i] (0-based, < n_shards, every shard non-empty); max_shard_size is then
     * ignored. NULL = huggingface_hub's greedy split. Borrowed for the call. */
    const uint32_t *shard_of;
    uint32_t n_shards;
} fm_save_options;
void fm_save_options_init(fm_save_options *o);

/* Saves tensors (in state-dict order: it decides shard assignment, huggingface_hub's greedy
 * split) plus extra files (config.json …) into DIR atomically: everything is written and
 * fsynced in a staging directory beside DIR, other files already in DIR are carried over
 * (hard links), stale weight files are dropped, and the staging directory replaces DIR in one
 * atomic exchange. On failure DIR is unchanged and nothing temporary remains. Each shard gets
 * metadata {"format":"pt"}. */
fm_status fm_checkpoint_save(const char *dir, const fm_st_item *items, size_t n,
                             const fm_extra_file *extra, size_t n_extra, const fm_save_options *o,
                             fm_error *err);

/* ---- config.json tree -------------------------------------------------------------------
 * Keeps every key in its original order; numbers keep their value (floats re-printed the way
 * Python's json writes them). Duplicate keys are an error; errors give line and column. */
typedef struct fm_config fm_config;

typedef enum fm_json_type {
    FM_JSON_ABSENT = 0,
    FM_JSON_NULL,
    FM_JSON_BOOL,
    FM_JSON_INT,
    FM_JSON_REAL,
    FM_JSON_STRING,
    FM_JSON_ARRAY,
    FM_JSON_OBJECT
} fm_json_type;

fm_status fm_config_load(const char *path, fm_config **out, fm_error *err);
/* `origin` names the text in errors (a file name or "--fusion-config"). */
fm_status fm_config_parse(const char *text, size_t len, const char *origin, fm_config **out,
                          fm_error *err);
fm_config *fm_config_new_object(void); /* empty {}; NULL on OOM */
fm_status fm_config_clone(const fm_config *c, fm_config **out, fm_error *err);
void fm_config_free(fm_config *c); /* accepts NULL */

/* Keys are dotted paths into nested objects ("vision_config.depth"). */
fm_json_type fm_config_type(const fm_config *c, const char *key);
fm_status fm_config_get_int(const fm_config *c, const char *key, int64_t *out, fm_error *err);
fm_status fm_config_get_double(const fm_config *c, const char *key, double *out, fm_error *err);
fm_status fm_config_get_bool(const fm_config *c, const char *key, bool *out, fm_error *err);
/* Borrowed until the key is changed or the config freed. */
fm_status fm_config_get_string(const fm_config *c, const char *key, const char **out,
                               fm_error *err);
/* Sub-tree copy (object, array or scalar) as its own config; caller frees. */
fm_status fm_config_get_subtree(const fm_config *c, const char *key, fm_config **out,
                                fm_error *err);
/* Keys of the object at `key` ("" = root), in order. Borrowed until change/free. */
size_t fm_config_object_size(const fm_config *c, const char *key);
const char *fm_config_object_key(const fm_config *c, const char *key, size_t i);
/* Array length at key; 0 if not an array. Elements read by "key.N" is not supported: use these. */
size_t fm_config_array_size(const fm_config *c, const char *key);
fm_status fm_config_array_int(const fm_config *c, const char *key, size_t i, int64_t *out,
                              fm_error *err);
fm_json_type fm_config_root_type(const fm_config *c);

/* Setters replace the value in place (keeping the key's position) or append it. */
fm_status fm_config_set_int(fm_config *c, const char *key, int64_t v, fm_error *err);
fm_status fm_config_set_string(fm_config *c, const char *key, const char *v, fm_error *err);
fm_status fm_config_set_subtree(fm_config *c, const char *key, const fm_config *v, fm_error *err);
fm_status fm_config_remove(fm_config *c, const char *key, fm_error *err);

/* Python-json style text: indent 2, ", "/": " separators, ASCII escapes, trailing newline.
 * Caller frees *out with fm_free. */
fm_status fm_config_dump(const fm_config *c, char **out, size_t *out_len, fm_error *err);
/* Compact single-line form (for messages and --json). */
fm_status fm_config_dump_compact(const fm_config *c, char **out, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
