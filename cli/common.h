/* Shared CLI helpers: dtype names, loading and saving with the CLI's conventions (progress
 * line, load-report warnings, --quiet, --strict), the load report printer, timing. */
#ifndef FUSEMAP_CLI_COMMON_H
#define FUSEMAP_CLI_COMMON_H

#include <stdbool.h>
#include <stdio.h>

#include "commands.h"
#include "fusemap/chat.h"
#include "fusemap/generate.h"
#include "fusemap/loading.h"
#include "fusemap/models.h"
#include "fusemap/tokenizer.h"

/* "auto" -> FM_DTYPE_INVALID, "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"; -2 if bad. */
int fm_cli_parse_dtype(const char *s, fm_dtype *out);

/* fm_load_options with the shared options applied (--strict, --fuse / --fusion-config).
 * Returns 0, or 1 after printing an error (out of memory). */
int fm_cli_load_options(fm_cli_common *c, fm_load_options *lo);

/* fm_from_pretrained with a progress line (when wanted) and, after a successful load, the load
 * report's problems as one-line warnings on stderr (unless quiet). `rep` may be NULL; when
 * given it receives the report (caller frees with fm_load_report_free). */
fm_status fm_cli_load(const char *dir, const fm_load_options *lo, bool quiet, fm_model **out,
                      fm_load_report *rep, fm_error *err);
/* The warnings: each unexpected weight ("was not used"), each missing one, lossy casts. */
void fm_cli_warn_report(const char *dir, const char *architecture, const fm_load_report *r,
                        bool quiet);

/* fm_save_pretrained with a progress line (when wanted). */
fm_status fm_cli_save(const fm_model *m, const char *dir, const fm_save_pretrained_options *so,
                      bool quiet, fm_error *err);

/* Prints what a load did (fused modules, transforms fired; "clean" when nothing happened). */
void fm_cli_print_report(FILE *out, const char *dir, const fm_load_report *r);

double fm_cli_now(void);

/* The whole file at path ("-": standard input), at most `max` bytes, NUL-terminated; caller
 * frees *out with fm_free. Errors name the file. */
fm_status fm_cli_read_input(const char *path, size_t max, char **out, size_t *len, fm_error *err);

/* Option values shared by several commands: each returns 0, or 2 after a usage error. */
int fm_cli_parse_threads(const fm_cli_command *cmd, const char *v, int *out);       /* 1..1024 */
int fm_cli_parse_kv_dtype(const fm_cli_command *cmd, const char *v, fm_dtype *out); /* f32 | bf16 */
/* "1,2,3" -> ids (caller frees with fm_free); FM_ERR_INPUT naming the bad item. */
fm_status fm_cli_parse_ids(const char *s, int64_t **ids, size_t *n, fm_error *err);

/* At most this many --image per command. */
#define FM_CLI_MAX_IMAGES 64
/* Reads pixel_values (F32) and image_grid_thw (I64) from a safetensors file (caller frees both). */
fm_status fm_cli_read_pixel_values(const char *path, fm_tensor *pv, fm_tensor *grid, fm_error *err);
/* Loads n images (EXIF orientation applied) and preprocesses them with the model's processor. */
fm_status fm_cli_preprocess_images(const fm_model *m, const char *const *paths, int n,
                                   fm_tensor *pv, fm_tensor *grid, fm_error *err);
/* Loads n (<= FM_CLI_MAX_IMAGES) image files into imgs[n], EXIF orientation applied, as
 * transformers' load_image does (caller frees each with fm_image_free; none left on failure). */
fm_status fm_cli_load_images(const char *const *paths, int n, fm_image *imgs, fm_error *err);

/* The chat prompt as `fusemap generate` and `fusemap serve` build it: the n_images decoded
 * images (orientation applied; borrowed) preprocessed by the model's processor into *pv and
 * *grid (caller frees both; untouched when there are none), then the message list (JSON text,
 * the images' parts in order) rendered with the model's chat template, each template
 * placeholder expanded per image grid, and encoded with special tokens recognised only in the
 * template's own bytes. *ids: caller frees with fm_free. */
fm_status fm_cli_chat_prompt(const fm_model *m, const struct fm_tokenizer *tok,
                             const struct fm_chat_template *tmpl, const char *json, size_t len,
                             const fm_image *imgs, size_t n_images, fm_tensor *pv, fm_tensor *grid,
                             int64_t **ids, size_t *n, fm_error *err);

/* The ids a chat answer stops at: generation_config.json's eos ids, and <|im_end|> (the end of a
 * chat turn) when the tokenizer has it. Returns how many were written to out[cap]. */
size_t fm_cli_stop_ids(const fm_generation_config *gc, const struct fm_tokenizer *tok, int32_t *out,
                       size_t cap);

#endif
