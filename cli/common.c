/* Shared CLI helpers: dtype names, loads and saves with progress and warnings, the report
 * printer, timing. */
#include "common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fusemap/image.h"
#include "fusemap/tokenizer.h"
#include "progress.h"

/* Keys shown per kind of warning; the rest are counted in one more line. */
#define WARN_KEYS_MAX 10

int fm_cli_parse_dtype(const char *s, fm_dtype *out) {
    static const struct {
        const char *a, *b;
        fm_dtype dt;
    } names[] = {{"auto", "auto", FM_DTYPE_INVALID},
                 {"f32", "float32", FM_DTYPE_F32},
                 {"bf16", "bfloat16", FM_DTYPE_BF16},
                 {"f16", "float16", FM_DTYPE_F16}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i].a) || !strcmp(s, names[i].b)) return *out = names[i].dt, 0;
    return -2;
}

/* {"a": true, "b": true} from --fuse a --fuse b (names are checked to need no escaping). */
static char *fusion_json(fm_cli_fusion *f) {
    size_t n = 3;
    for (int i = 0; i < f->n_fuse; i++)
        n += strlen(f->fuse[i]) + 12;
    char *w = f->built = malloc(n);
    if (!w) return NULL;
    *w++ = '{';
    for (int i = 0; i < f->n_fuse; i++)
        w += sprintf(w, "%s\"%s\": true", i ? ", " : "", f->fuse[i]);
    strcpy(w, "}");
    return f->built;
}

int fm_cli_load_options(fm_cli_common *c, fm_load_options *lo) {
    fm_load_options_init(lo);
    lo->strict = c->strict;
    lo->fusion_config = c->fusion.json;
    if (c->fusion.n_fuse && !(lo->fusion_config = fusion_json(&c->fusion)))
        return fm_cli_errorf("out of memory");
    return 0;
}

/* ---- warnings ------------------------------------------------------------------------------ */

/* Exponent and mantissa bits of the float dtypes a load can cast between. */
static bool float_bits(fm_dtype dt, int *exp, int *man) {
    switch (dt) {
    case FM_DTYPE_F16:
        return *exp = 5, *man = 10, true;
    case FM_DTYPE_BF16:
        return *exp = 8, *man = 7, true;
    case FM_DTYPE_F32:
        return *exp = 8, *man = 23, true;
    case FM_DTYPE_F64:
        return *exp = 11, *man = 52, true;
    default:
        return false;
    }
}

/* What a cast loses ("precision", "range", both), or NULL when every value survives. */
static const char *cast_loss(fm_dtype from, fm_dtype to) {
    int fe, fm, te, tm;
    if (!float_bits(from, &fe, &fm) || !float_bits(to, &te, &tm)) return "exactness";
    bool range = te < fe, precision = tm < fm;
    return range && precision ? "range and precision"
           : range            ? "range (large values become inf)"
           : precision        ? "precision"
                              : NULL;
}

static void warn_casts(const char *dir, const fm_load_report *r, bool quiet) {
    size_t counted[FM_DTYPE_COUNT][FM_DTYPE_COUNT] = {{0}};
    const char *first[FM_DTYPE_COUNT][FM_DTYPE_COUNT] = {{0}};
    for (size_t i = 0; i < r->n_casts; i++) {
        const fm_cast *c = &r->casts[i];
        if ((unsigned)c->from >= FM_DTYPE_COUNT || (unsigned)c->to >= FM_DTYPE_COUNT) continue;
        if (!counted[c->from][c->to]++) first[c->from][c->to] = c->key;
    }
    for (int a = 0; a < FM_DTYPE_COUNT; a++)
        for (int b = 0; b < FM_DTYPE_COUNT; b++) {
            const char *loss = counted[a][b] ? cast_loss((fm_dtype)a, (fm_dtype)b) : NULL;
            if (!loss) continue;
            fm_cli_warnf(
                quiet,
                "%s: %zu weight%s cast from %s to %s on load (--dtype), losing %s (first: %s)", dir,
                counted[a][b], counted[a][b] == 1 ? "" : "s", fm_dtype_name((fm_dtype)a),
                fm_dtype_name((fm_dtype)b), loss, first[a][b]);
        }
}

void fm_cli_warn_report(const char *dir, const char *arch, const fm_load_report *r, bool quiet) {
    if (quiet) return;
    for (size_t i = 0; i < r->n_unexpected && i < WARN_KEYS_MAX; i++)
        fm_cli_warnf(quiet,
                     "%s: checkpoint weight '%s' was not used when initializing %s (the model has "
                     "no place for it)",
                     dir, r->unexpected[i], arch);
    if (r->n_unexpected > WARN_KEYS_MAX)
        fm_cli_warnf(quiet,
                     "%s: ... and %zu more checkpoint weights were not used ('fusemap inspect %s' "
                     "lists them)",
                     dir, r->n_unexpected - WARN_KEYS_MAX, dir);
    for (size_t i = 0; i < r->n_missing && i < WARN_KEYS_MAX; i++)
        fm_cli_warnf(quiet,
                     "%s: weight '%s' of %s is missing from the checkpoint and was not loaded", dir,
                     r->missing[i], arch);
    if (r->n_missing > WARN_KEYS_MAX)
        fm_cli_warnf(quiet, "%s: ... and %zu more weights are missing from the checkpoint", dir,
                     r->n_missing - WARN_KEYS_MAX);
    warn_casts(dir, r, quiet);
}

/* ---- load and save ------------------------------------------------------------------------- */

fm_status fm_cli_load(const char *dir, const fm_load_options *lo, bool quiet, fm_model **out,
                      fm_load_report *rep, fm_error *err) {
    fm_load_options o = *lo;
    fm_load_report local;
    fm_cli_meter meter;
    fm_cli_meter_start(&meter, "loading", NULL, fm_cli_progress_wanted(quiet));
    if (!o.progress) o.progress = fm_cli_meter_progress, o.progress_ctx = &meter;
    fm_status st = fm_from_pretrained(dir, &o, out, rep ? rep : &local, err);
    fm_cli_meter_clear(&meter);
    if (st == FM_OK)
        fm_cli_warn_report(dir, fm_model_architecture(*out), rep ? rep : &local, quiet);
    if (!rep) fm_load_report_free(&local);
    return st;
}

fm_status fm_cli_save(const fm_model *m, const char *dir, const fm_save_pretrained_options *so,
                      bool quiet, fm_error *err) {
    fm_save_pretrained_options o = *so;
    fm_cli_meter meter;
    fm_cli_meter_start(&meter, "saving", NULL, fm_cli_progress_wanted(quiet));
    if (!o.progress) o.progress = fm_cli_meter_progress, o.progress_ctx = &meter;
    fm_status st = fm_save_pretrained(m, dir, &o, err);
    fm_cli_meter_clear(&meter);
    return st;
}

/* ---- report ---------------------------------------------------------------------------------- */

static void section(FILE *out, const char *title, char **v, size_t n) {
    if (!n) return;
    fprintf(out, "  %s (%zu):\n", title, n);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "    %s\n", v[i]);
}

void fm_cli_print_report(FILE *out, const char *dir, const fm_load_report *r) {
    fprintf(out, "load report for %s:\n", dir);
    section(out, "fused modules", r->fused, r->n_fused);
    section(out, "transforms fired", r->fired, r->n_fired);
    if (r->n_casts) fprintf(out, "  cast on load: %zu weights\n", r->n_casts);
    if (r->n_missing || r->n_unexpected)
        fprintf(out, "  %zu missing and %zu unexpected weights (warnings above)\n", r->n_missing,
                r->n_unexpected);
    if (!r->n_fused && !r->n_fired && !r->n_missing && !r->n_unexpected && !r->n_casts)
        fprintf(out, "  clean: every key loaded as stored\n");
}

double fm_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

fm_status fm_cli_read_input(const char *path, size_t max, char **out, size_t *len, fm_error *err) {
    const char *label = strcmp(path, "-") ? path : "standard input";
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    *out = NULL;
    *len = 0;
    if (!f)
        return fm_error_set(err, errno == ENOENT ? FM_ERR_NOT_FOUND : FM_ERR_IO, "%s: %s", label,
                            strerror(errno));
    size_t cap = 65536, n = 0;
    char *b = fm_malloc(cap + 1);
    fm_status st = b ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", label);
    while (st == FM_OK) {
        if (n == cap) {
            char *nb = cap <= max ? fm_realloc(b, 2 * cap + 1) : NULL;
            if (!nb)
                st = cap > max
                         ? fm_error_set(err, FM_ERR_LIMIT, "%s: larger than %zu bytes", label, max)
                         : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", label);
            else
                b = nb, cap *= 2;
            continue;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (st == FM_OK && ferror(f)) st = fm_error_set(err, FM_ERR_IO, "%s: read failed", label);
    if (st == FM_OK && n > max)
        st = fm_error_set(err, FM_ERR_LIMIT, "%s: larger than %zu bytes", label, max);
    if (f != stdin) fclose(f);
    if (st != FM_OK) {
        fm_free(b);
        return st;
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return FM_OK;
}

/* Reads pixel_values (F32) and image_grid_thw (I64) from IN (views, freed by the caller). */
fm_status fm_cli_read_pixel_values(const char *path, fm_tensor *pv, fm_tensor *grid,
                                   fm_error *err) {
    fm_st_file *f = NULL;
    fm_status st = fm_st_open(path, &f, err);
    long ip = st == FM_OK ? fm_st_find(f, "pixel_values") : -1,
         ig = st == FM_OK ? fm_st_find(f, "image_grid_thw") : -1;
    if (st == FM_OK && (ip < 0 || ig < 0))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "%s: needs tensors 'pixel_values' and 'image_grid_thw'", path);
    if (st == FM_OK) st = fm_st_tensor(f, (size_t)ip, pv, err);
    if (st == FM_OK) st = fm_st_tensor(f, (size_t)ig, grid, err);
    if (st == FM_OK && (pv->dtype != FM_DTYPE_F32 || grid->dtype != FM_DTYPE_I64))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "%s: pixel_values must be F32 (is %s) and image_grid_thw I64 (is %s)",
                          path, fm_dtype_name(pv->dtype), fm_dtype_name(grid->dtype));
    fm_tensor aligned;
    if (st == FM_OK &&
        ((uintptr_t)pv->data % 4 || (uintptr_t)grid->data % 8)) { /* unaligned file layout */
        st = fm_tensor_cast(&aligned, pv, FM_DTYPE_F32, err);
        if (st == FM_OK) fm_tensor_free(pv), *pv = aligned;
        if (st == FM_OK) st = fm_tensor_cast(&aligned, grid, FM_DTYPE_I64, err);
        if (st == FM_OK) fm_tensor_free(grid), *grid = aligned;
    }
    fm_st_close(f);
    return st;
}

fm_status fm_cli_load_images(const char *const *paths, int n, fm_image *imgs, fm_error *err) {
    fm_status st = n <= FM_CLI_MAX_IMAGES
                       ? FM_OK
                       : fm_error_set(err, FM_ERR_LIMIT, "at most %d images", FM_CLI_MAX_IMAGES);
    for (int i = 0; i < n && i < FM_CLI_MAX_IMAGES; i++)
        memset(&imgs[i], 0, sizeof imgs[i]);
    /* transformers' load_image applies the EXIF orientation before preprocessing */
    for (int i = 0; st == FM_OK && i < n; i++) {
        st = fm_image_load(paths[i], &imgs[i], err);
        if (st == FM_OK) st = fm_image_apply_orientation(&imgs[i], err);
    }
    if (st != FM_OK)
        for (int i = 0; i < n && i < FM_CLI_MAX_IMAGES; i++)
            fm_image_free(&imgs[i]);
    return st;
}

fm_status fm_cli_preprocess_images(const fm_model *m, const char *const *paths, int n,
                                   fm_tensor *pv, fm_tensor *grid, fm_error *err) {
    fm_image imgs[FM_CLI_MAX_IMAGES];
    fm_status st = fm_cli_load_images(paths, n, imgs, err);
    if (st == FM_OK) st = fm_model_preprocess_images(m, imgs, (size_t)n, pv, grid, err);
    for (int i = 0; st == FM_OK && i < n; i++)
        fm_image_free(&imgs[i]);
    return st;
}

fm_status fm_cli_chat_prompt(const fm_model *m, const fm_tokenizer *tok,
                             const fm_chat_template *tmpl, const char *json, size_t len,
                             const fm_image *imgs, size_t n_images, fm_tensor *pv, fm_tensor *grid,
                             int64_t **ids, size_t *n, fm_error *err) {
    fm_status st = FM_OK;
    if (n_images) st = fm_model_preprocess_images(m, imgs, n_images, pv, grid, err);
    if (st == FM_OK)
        st = fm_model_encode_chat(m, tok, tmpl, json, len, true, n_images ? grid : NULL, ids, n,
                                  err);
    if (st != FM_OK && n_images) fm_tensor_free(pv), fm_tensor_free(grid);
    return st;
}

size_t fm_cli_stop_ids(const fm_generation_config *gc, const fm_tokenizer *tok, int32_t *out,
                       size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < gc->n_eos_token_ids && n < cap; i++)
        out[n++] = (int32_t)gc->eos_token_ids[i];
    int32_t im_end = tok ? fm_tokenizer_token_to_id(tok, "<|im_end|>", 10) : -1;
    bool have = false;
    for (size_t i = 0; i < n; i++)
        have |= out[i] == im_end;
    if (im_end >= 0 && !have && n < cap) out[n++] = im_end;
    return n;
}

int fm_cli_parse_threads(const fm_cli_command *cmd, const char *v, int *out) {
    char *end;
    long t = strtol(v, &end, 10);
    if (*end || end == v || t < 1 || t > 1024)
        return fm_cli_usage(cmd, "--threads: expected 1..1024, got '%s'", v);
    *out = (int)t;
    return 0;
}

int fm_cli_parse_kv_dtype(const fm_cli_command *cmd, const char *v, fm_dtype *out) {
    if (!strcmp(v, "f32") || !strcmp(v, "float32"))
        *out = FM_DTYPE_F32;
    else if (!strcmp(v, "bf16") || !strcmp(v, "bfloat16"))
        *out = FM_DTYPE_BF16;
    else
        return fm_cli_usage(cmd, "--kv-dtype: expected f32 or bf16, got '%s'", v);
    return 0;
}

fm_status fm_cli_parse_ids(const char *s, int64_t **ids, size_t *n, fm_error *err) {
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int64_t *v = fm_malloc(cap * sizeof *v);
    *ids = NULL, *n = 0;
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (const char *p = s;; k++) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || (*end && *end != ',')) {
            fm_free(v);
            return fm_error_set(err, FM_ERR_INPUT,
                                "--input-ids: item %zu ('%.*s') is not a token id", k + 1,
                                (int)strcspn(p, ","), p);
        }
        v[k] = x;
        if (!*end) break;
        p = end + 1;
    }
    *ids = v, *n = k + 1;
    return FM_OK;
}
