/* `fusemap inspect DIR [--json]`: model_type and architectures from config.json, every
 * checkpoint tensor (name, dtype, shape, shard, bytes) and totals, as a table or one JSON
 * document. Exit 0 ok, 1 bad input (the reader's message), 2 bad usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "common.h"
#include "fusemap/io.h"

typedef struct inspect_args {
    const char *dir; /* borrowed from argv */
    bool json, modules;
    fm_cli_fusion fusion; /* --fuse / --fusion-config: imply --modules */
} inspect_args;

/* What the report shows besides the tensors. */
typedef struct inspect_info {
    json_t *model_type;    /* owned: a string, or null when config.json lacks it */
    json_t *architectures; /* owned: an array of strings (empty when absent) */
    uint64_t params, bytes;
    uint64_t bytes_per_dtype[FM_DTYPE_COUNT];
} inspect_info;

static int parse_args(inspect_args *a, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int f = fm_cli_fusion_arg(&a->fusion, argc, argv, &i);
        if (f < 0) return 2;
        if (f)
            a->modules = true;
        else if (!strcmp(s, "--modules"))
            a->modules = true;
        else if (!strcmp(s, "--json"))
            a->json = true;
        else if (s[0] == '-' && s[1])
            return fm_cli_usage_error("inspect: unknown option '%s'", s);
        else if (!a->dir)
            a->dir = s;
        else
            return fm_cli_usage_error("inspect: unexpected argument '%s'", s);
    }
    if (!a->dir)
        return fm_cli_usage_error(
            "usage: fusemap inspect DIR [--json] [--modules] [--fuse NAME]...");
    if (a->fusion.json && a->fusion.n_fuse)
        return fm_cli_usage_error("use either --fuse or --fusion-config, not both");
    return 0;
}

/* ---- config.json --------------------------------------------------------------------------- */

/* architectures: the config subtree re-parsed with jansson (the config API has no string-array
 * getter); non-string elements are skipped. */
static fm_status read_architectures(const fm_config *cfg, json_t *out, fm_error *err) {
    fm_config *sub = NULL;
    char *text = NULL;
    fm_status st = fm_config_get_subtree(cfg, "architectures", &sub, err);
    if (st == FM_OK) st = fm_config_dump_compact(sub, &text, err);
    json_t *arr = st == FM_OK ? json_loads(text, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v)) json_array_append(out, v);
    json_decref(arr);
    fm_free(text);
    fm_config_free(sub);
    return st;
}

/* Fills model_type/architectures; a missing config.json leaves them null/empty. */
static fm_status read_config(const char *dir, inspect_info *info, fm_error *err) {
    size_t n = strlen(dir) + sizeof "/config.json";
    char *path = malloc(n);
    struct stat sb;
    fm_config *cfg = NULL;
    fm_status st = FM_OK;
    info->model_type = json_null();
    info->architectures = json_array();
    if (!path || !info->architectures) st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (st == FM_OK) snprintf(path, n, "%s/config.json", dir);
    if (st == FM_OK && stat(path, &sb) == 0) {
        const char *mt;
        st = fm_config_load(path, &cfg, err);
        if (st == FM_OK && fm_config_type(cfg, "model_type") == FM_JSON_STRING &&
            fm_config_get_string(cfg, "model_type", &mt, err) == FM_OK) {
            json_decref(info->model_type);
            info->model_type = json_string(mt);
        }
        if (st == FM_OK && fm_config_type(cfg, "architectures") == FM_JSON_ARRAY)
            st = read_architectures(cfg, info->architectures, err);
    }
    fm_config_free(cfg);
    free(path);
    return st;
}

/* ---- totals and output ----------------------------------------------------------------------- */

static uint64_t numel_of(const fm_shape *s) {
    uint64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= (uint64_t)s->dims[i]; /* bounded: the reader checked it */
    return n;
}

static void sum_totals(const fm_checkpoint *c, inspect_info *info) {
    for (size_t i = 0; i < fm_checkpoint_count(c); i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        info->params += numel_of(&e->shape);
        info->bytes += e->nbytes;
        info->bytes_per_dtype[e->dtype] += e->nbytes;
    }
}

/* The tensor's exact name bytes (names may hold NUL; the shard entry has the length). */
static size_t name_len_of(const fm_checkpoint *c, const fm_ckpt_entry *e) {
    return fm_st_entry_at(fm_checkpoint_shard(c, e->shard_index), e->index_in_shard)->name_len;
}

static json_t *tensor_json(const fm_checkpoint *c, const fm_ckpt_entry *e) {
    json_t *t = json_object(), *shape = json_array();
    json_object_set_new(t, "name", json_stringn(e->name, name_len_of(c, e)));
    json_object_set_new(t, "dtype", json_string(fm_dtype_name(e->dtype)));
    for (int d = 0; d < e->shape.ndim; d++)
        json_array_append_new(shape, json_integer(e->shape.dims[d]));
    json_object_set_new(t, "shape", shape);
    json_object_set_new(t, "shard", json_string(e->shard));
    json_object_set_new(t, "bytes", json_integer((json_int_t)e->nbytes));
    return t;
}

static int print_json(const fm_checkpoint *c, inspect_info *info) {
    json_t *root = json_object(), *tensors = json_array(), *totals = json_object(),
           *per = json_object();
    json_object_set(root, "model_type", info->model_type);
    json_object_set(root, "architectures", info->architectures);
    for (size_t i = 0; i < fm_checkpoint_count(c); i++)
        json_array_append_new(tensors, tensor_json(c, fm_checkpoint_entry_at(c, i)));
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(totals, "tensors", json_integer((json_int_t)fm_checkpoint_count(c)));
    json_object_set_new(totals, "parameters", json_integer((json_int_t)info->params));
    json_object_set_new(totals, "bytes", json_integer((json_int_t)info->bytes));
    for (int d = 0; d < FM_DTYPE_COUNT; d++)
        if (info->bytes_per_dtype[d])
            json_object_set_new(per, fm_dtype_name((fm_dtype)d),
                                json_integer((json_int_t)info->bytes_per_dtype[d]));
    json_object_set_new(totals, "bytes_per_dtype", per);
    json_object_set_new(root, "totals", totals);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF ? 0 : 1;
    json_decref(root);
    return rc;
}

/* Terminal-safe name: control bytes and NUL as \xNN (a name is arbitrary JSON text). */
static void put_name(const char *s, size_t len, int width) {
    int w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7F)
            w += printf("\\x%02x", ch);
        else {
            putchar(ch);
            w += (ch & 0xC0) != 0x80; /* count code points, not bytes */
        }
    }
    printf("%*s", width > w ? width - w : 0, "");
}

static void print_table(const fm_checkpoint *c, const inspect_info *info) {
    size_t n = fm_checkpoint_count(c), nw = 4, sw = 5;
    char shape[256];
    for (size_t i = 0; i < n; i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        size_t l = name_len_of(c, e);
        if (l > nw) nw = l < 96 ? l : 96;
        if (strlen(e->shard) > sw) sw = strlen(e->shard);
    }
    const char *mt = json_string_value(info->model_type);
    printf("model_type:    %s\narchitectures: ", mt ? mt : "(none)");
    size_t k;
    json_t *v;
    json_array_foreach(info->architectures, k, v)
        printf("%s%s", k ? ", " : "", json_string_value(v));
    printf("%s\ncheckpoint:    %s ", json_array_size(info->architectures) ? "" : "(none)",
           fm_checkpoint_dir(c));
    if (fm_checkpoint_is_sharded(c))
        printf("(sharded, %zu shards)\n\n", fm_checkpoint_shard_count(c));
    else
        printf("(single file)\n\n");
    printf("%-*s  %-11s  %-24s  %-*s  %14s\n", (int)nw, "NAME", "DTYPE", "SHAPE", (int)sw, "SHARD",
           "BYTES");
    for (size_t i = 0; i < n; i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        put_name(e->name, name_len_of(c, e), (int)nw);
        printf("  %-11s  %-24s  %-*s  %14llu\n", fm_dtype_name(e->dtype),
               fm_shape_format(&e->shape, shape, sizeof shape), (int)sw, e->shard,
               (unsigned long long)e->nbytes);
    }
    printf("\ntotals: %zu tensors, %llu parameters, %llu bytes\n", n,
           (unsigned long long)info->params, (unsigned long long)info->bytes);
    for (int d = 0; d < FM_DTYPE_COUNT; d++)
        if (info->bytes_per_dtype[d])
            printf("  %-11s %14llu bytes\n", fm_dtype_name((fm_dtype)d),
                   (unsigned long long)info->bytes_per_dtype[d]);
}

int fm_cli_inspect(int argc, char **argv) {
    inspect_args a = {0};
    int rc = parse_args(&a, argc, argv);
    if (!rc && a.modules)
        rc = fm_cli_inspect_modules(a.dir, fm_cli_fusion_config(&a.fusion), a.json);
    if (rc || a.modules) return fm_cli_fusion_free(&a.fusion), rc;
    fm_error err;
    fm_error_clear(&err);
    fm_checkpoint *c = NULL;
    inspect_info info;
    memset(&info, 0, sizeof info);
    fm_status st = fm_checkpoint_open(a.dir, &c, &err);
    if (st == FM_OK) st = read_config(a.dir, &info, &err);
    if (st == FM_OK) {
        sum_totals(c, &info);
        if (a.json)
            rc = print_json(c, &info);
        else
            print_table(c, &info);
        if (rc || fflush(stdout) != 0 || ferror(stdout))
            rc = fm_cli_errorf("inspect: cannot write the output");
    } else {
        rc = fm_cli_fail(&err);
    }
    json_decref(info.model_type);
    json_decref(info.architectures);
    fm_checkpoint_close(c);
    return rc;
}
