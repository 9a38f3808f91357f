/* Seed corpus generator: writes fuzz/corpus/<harness>/ (small valid and deliberately broken
 * inputs) with the library's own writer and the test fixtures. `make fuzz-seeds` runs it; the
 * output is committed, so this only runs when the seeds should change. Test code: libc malloc. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_util.h"
#include "fusemap/fusemap.h"
#include "fuzz_common.h"
#include "qwen_fixture.h"
#include "st_fixtures.h"
#include "tok_fixture.h"

#include <jansson.h>

static const char *g_root; /* output root (borrowed from argv) */
static int g_count, g_bad;

/* Every seed's name says what the harness must do with it (fuzz/README.md): ok_* accepted,
 * bad_* rejected. */
static void put(const char *harness, const char *name, const void *data, size_t len) {
    char path[4096];
    if (fmz_expected_verdict(name) < 0) {
        fprintf(stderr, "gen_seeds: seed %s/%s: the name must start with ok_ or bad_\n", harness,
                name);
        g_bad++;
        return;
    }
    snprintf(path, sizeof path, "%s/%s", g_root, harness);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", g_root, harness, name);
    if (fm_test_write_file(path, data, len)) {
        fprintf(stderr, "gen_seeds: cannot write %s\n", path);
        g_bad++;
    }
    g_count++;
}

static void put_text(const char *harness, const char *name, const char *text) {
    put(harness, name, text, strlen(text));
}

/* ---- tiny model directories ----------------------------------------------------------------- */
static void tiny(fm_qfix *q) {
    fm_qfix_init(q);
    q->depth = 1, q->embed_dim = 8, q->num_heads = 2, q->hidden_size = 8, q->mlp_ratio = 1;
    q->patch_size = 2, q->temporal_patch_size = 1, q->merge_size = 1, q->in_channels = 3;
    q->text_layers = 1, q->text_hidden = 4, q->text_heads = 1, q->text_kv_heads = 1,
    q->text_inter = 4;
    q->vocab = 4, q->tie = true;
}

/* Every regular file of dir (name order) as an archive, after `prefix` bytes (the option byte). */
static uint8_t *pack_dir(const char *dir, const uint8_t *prefix, size_t np, size_t *len) {
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort);
    uint8_t *buf = malloc(np ? np : 1);
    *len = np;
    if (buf) memcpy(buf, prefix, np);
    for (int i = 0; i < n; i++) {
        char path[4096];
        size_t fl = 0;
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        char *data = ents[i]->d_name[0] != '.' && buf ? fm_test_read_file(path, &fl) : NULL;
        if (data && fmz_archive_add(&buf, len, ents[i]->d_name, data, fl)) free(buf), buf = NULL;
        free(data);
        free(ents[i]);
    }
    free(ents);
    return buf;
}

static char *write_qfix(const fm_qfix *q, const char *tag) {
    char *dir = fm_test_tmpdir(tag);
    fm_error err;
    if (dir && fm_qfix_write(dir, q, &err) != FM_OK) {
        fprintf(stderr, "gen_seeds: fixture %s: %s\n", tag, err.msg);
        fm_test_rmtree(dir), free(dir), dir = NULL, g_bad++;
    }
    return dir;
}

/* A whole-directory seed for the pretrained harness (and the checkpoint one, without config). */
#define ALSO_CK 1 /* model_seed: also a checkpoint seed (the archive without the option byte) */
#define ALSO_ST 2 /* model_seed: also a header seed (single-file weights) */
static void model_seed(const fm_qfix *q, const char *name, uint8_t flags, int also) {
    char *dir = write_qfix(q, "seed");
    if (!dir) return;
    fm_model *m = NULL;
    fm_error err;
    if (fm_from_pretrained(dir, NULL, &m, NULL, &err) != FM_OK)
        fprintf(stderr, "gen_seeds: seed %s does not load: %s\n", name, err.msg), g_bad++;
    fm_model_free(m);
    size_t len = 0;
    uint8_t *a = pack_dir(dir, &flags, 1, &len);
    if (a) put("pretrained", name, a, len);
    if (a && (also & ALSO_CK)) put("checkpoint", name, a + 1, len - 1);
    /* the single-file weights are also a header seed */
    char path[4096];
    size_t fl = 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *st = (also & ALSO_ST) ? fm_test_read_file(path, &fl) : NULL;
    if (st) put("st_header", name, st, fl);
    free(st), free(a);
    fm_test_rmtree(dir), free(dir);
}

/* A model saved in the fused runtime layout (names the unfused path must defuse or refuse). */
static void runtime_seed(const fm_qfix *q, const char *name, uint8_t flags) {
    char *dir = write_qfix(q, "rt"), *out = fm_test_tmpdir("rtout");
    fm_model *m = NULL;
    fm_error err = {0};
    fm_load_options lo;
    fm_save_pretrained_options so;
    fm_load_options_init(&lo);
    lo.fusion_config = "{\"patch_embeddings\": true}";
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/m", out ? out : "/nonexistent");
    if (dir && out && fm_from_pretrained(dir, &lo, &m, NULL, &err) == FM_OK &&
        fm_save_pretrained(m, sub, &so, &err) == FM_OK) {
        size_t len = 0;
        uint8_t *a = pack_dir(sub, &flags, 1, &len);
        if (a) put("pretrained", name, a, len);
        free(a);
    } else {
        fprintf(stderr, "gen_seeds: runtime seed %s failed: %s\n", name, err.msg), g_bad++;
    }
    fm_model_free(m);
    if (dir) fm_test_rmtree(dir);
    if (out) fm_test_rmtree(out);
    free(dir), free(out);
}

/* A model directory the loader must refuse: q's weights, config.json replaced by `config`
 * (NULL: no config.json at all). */
static void broken_model_seed(const fm_qfix *q, const char *name, uint8_t flags,
                              const char *config) {
    char *dir = write_qfix(q, "broken");
    if (!dir) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (config ? fm_test_write_file(path, config, strlen(config)) : unlink(path)) g_bad++;
    fm_model *m = NULL;
    fm_error err;
    fm_load_options lo;
    fm_load_options_init(&lo);
    lo.strict = (flags >> 4) & 1;
    if (fm_from_pretrained(dir, &lo, &m, NULL, &err) == FM_OK)
        fprintf(stderr, "gen_seeds: seed %s loads, but it should not\n", name), g_bad++;
    fm_model_free(m);
    size_t len = 0;
    uint8_t *a = pack_dir(dir, &flags, 1, &len);
    if (a) put("pretrained", name, a, len);
    free(a);
    fm_test_rmtree(dir), free(dir);
}

/* Directories fm_from_pretrained refuses (with config.json's own fusion_config): each a
 * different reason. */
static void broken_model_seeds(void) {
    fm_qfix q, other;
    tiny(&q);
    broken_model_seed(&q, "bad_no_config", 0x00, NULL);
    broken_model_seed(&q, "bad_config_not_json", 0x00, "{\"model_type\": \"qwen2_vl\",");
    broken_model_seed(&q, "bad_unknown_model_type", 0x00, "{\"model_type\": \"no_such_model\"}");
    other = q, other.depth = 2; /* blocks.1 missing from the weights */
    char *t = fm_qfix_config_text(&other);
    if (t) broken_model_seed(&q, "bad_strict_missing_block", 0x10, t);
    free(t);
    other = q, other.embed_dim = 12, other.hidden_size = 12; /* every vision shape differs */
    if ((t = fm_qfix_config_text(&other))) broken_model_seed(&q, "bad_shape_mismatch", 0x00, t);
    free(t);
    other = q, other.extra_config = "\"fusion_config\": {\"flash_attention\": true}";
    if ((t = fm_qfix_config_text(&other)))
        broken_model_seed(&q, "bad_stored_unknown_fusion", 0x00, t);
    free(t);
}

static void model_seeds(void) {
    fm_qfix q;
    tiny(&q);
    model_seed(&q, "ok_tiny_f32", 0x00, ALSO_CK | ALSO_ST);
    q.dtype = FM_DTYPE_BF16;
    model_seed(&q, "ok_tiny_bf16_cast_f32", 0x01, ALSO_CK | ALSO_ST);
    q.dtype = FM_DTYPE_F16, q.tie = false;
    model_seed(&q, "ok_tiny_f16_untied_strict", 0x10, ALSO_ST);
    tiny(&q), q.v5_layout = true;
    model_seed(&q, "ok_tiny_v5_fused_runtime_save", 0x20, 0);
    tiny(&q), q.extra_config = "\"fusion_config\": {\"patch_embeddings\": true}";
    model_seed(&q, "ok_tiny_stored_fusion", 0x04, 0);
    tiny(&q), q.extra_config = "\"fusion_config\": {\"patch_embeddings\": false}";
    model_seed(&q, "ok_tiny_stored_fusion_off_bf16", 0x4a, 0);
    tiny(&q), q.max_shard = 3000;
    model_seed(&q, "ok_tiny_sharded", 0x00, ALSO_CK);
    model_seed(&q, "ok_tiny_sharded_strict_small_shards", 0x50, 0);
    tiny(&q), q.max_shard = 1500, q.dtype = FM_DTYPE_BF16;
    model_seed(&q, "ok_tiny_sharded_bf16_f16", 0x03, ALSO_CK);
    tiny(&q), q.hidden_act = "gelu_pytorch_tanh", q.temporal_patch_size = 2, q.merge_size = 2;
    model_seed(&q, "ok_tiny_merge2_tanh", 0x80, 0);
    tiny(&q);
    runtime_seed(&q, "ok_tiny_runtime_layout", 0x00);
    runtime_seed(&q, "ok_tiny_runtime_layout_fused", 0x0c);
}

/* ---- st_header: raw safetensors files ------------------------------------------------------ */
static void st_tensors(const char *name, const stfx_tensor *ts, size_t n, const char *meta) {
    uint8_t *b = NULL;
    size_t len = 0;
    if (stfx_build(ts, n, meta, 7, &b, &len) == 0) put("st_header", name, b, len);
    free(b);
}

/* Header text with its true length, plus dlen data bytes. */
static void st_raw(const char *name, const char *header, size_t dlen) {
    uint8_t *b = NULL, *data = calloc(1, dlen ? dlen : 1);
    size_t len = 0;
    if (data) stfx_random_bytes(data, dlen, 3);
    if (data && stfx_bytes_str(header, data, dlen, &b, &len) == 0) put("st_header", name, b, len);
    free(b), free(data);
}

static void st_lying_prefix(const char *name, uint64_t n_field, const char *header) {
    uint8_t *b = NULL;
    size_t len = 0;
    if (stfx_bytes_n(n_field, header, strlen(header), NULL, 0, &b, &len) == 0)
        put("st_header", name, b, len);
    free(b);
}

static void header_seeds(void) {
    static const char *const dts[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                      "I16",  "U16", "F16", "BF16",    "I32",     "U32",
                                      "F32",  "F64", "C64", "I64",     "U64"};
    stfx_tensor all[sizeof dts / sizeof *dts];
    for (size_t i = 0; i < sizeof dts / sizeof *dts; i++) {
        static char names[sizeof dts / sizeof *dts][16];
        snprintf(names[i], sizeof names[i], "t%zu", i);
        all[i] = (stfx_tensor){names[i], dts[i], 2, {2, (int64_t)(i % 3) + 1}};
    }
    st_tensors("ok_all_dtypes", all, sizeof all / sizeof *all, "{\"format\":\"pt\"}");
    st_tensors("ok_scalar", (stfx_tensor[]){{"s", "F32", 0, {0}}}, 1, NULL);
    st_tensors("ok_zero_dim", (stfx_tensor[]){{"z", "F32", 2, {0, 3}}, {"w", "I64", 1, {2}}}, 2,
               NULL);
    st_tensors(
        "ok_sub_byte",
        (stfx_tensor[]){{"f4", "F4", 1, {4}}, {"f6", "F6_E2M3", 1, {4}}, {"g6", "F6_E3M2", 1, {8}}},
        3, "{}");
    st_tensors("ok_eight_dims", (stfx_tensor[]){{"e", "U8", 8, {1, 2, 1, 2, 1, 2, 1, 2}}}, 1,
               "null");
    st_raw("ok_empty_header", "{}", 0);
    st_raw("ok_writer_padding",
           "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_"
           "offsets\":[0,8]}}   ",
           8);
    st_raw("ok_unicode_names",
           "{\"a\\u00e9\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
           "\"\\u0000nul\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
           2);
    st_raw("ok_meta_escapes",
           "{\"__metadata__\":{\"k\\\"\\n\":\"v\\u0001\\\\\",\"x\":\"\"},\"a\":{\"dtype\":\"I8\","
           "\"shape\":[],\"data_offsets\":[0,1]}}",
           1);
    st_raw("ok_out_of_order",
           "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},\"a\":{\"dtype\":\"U8\","
           "\"shape\":[2],\"data_offsets\":[0,2]}}",
           4);
    /* malformed */
    put("st_header", "bad_empty", "", 0);
    put("st_header", "bad_short", "\x02\0\0\0\0\0\0", 7);
    st_lying_prefix("bad_len_huge", 0x8000000000000000ull, "{}");
    st_lying_prefix("bad_len_past_end", 100, "{}");
    st_lying_prefix("bad_len_over_limit", 100000001ull, "{}");
    st_raw("bad_utf8", "{\"\xc3\x28\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad_json_array", "[]", 0);
    st_raw("bad_json_truncated", "{\"a\":{\"dtype\":\"U8\",\"sha", 0);
    st_raw("bad_duplicate",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\","
           "\"shape\":[1],\"data_offsets\":[1,2]}}",
           2);
    st_raw("bad_dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    st_raw("bad_gap", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    st_raw("bad_overlap",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\","
           "\"shape\":[2],\"data_offsets\":[1,3]}}",
           3);
    st_raw("bad_end_before_begin",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,0]}}", 2);
    st_raw("bad_incomplete", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 5);
    st_raw("bad_overflow",
           "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,16],\"data_offsets\":[0,8]}}",
           8);
    st_raw("bad_f4_odd", "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2);
    st_raw("bad_negative_dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
           0);
    st_raw("bad_offsets_arity", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}",
           1);
    st_raw("bad_meta_value", "{\"__metadata__\":{\"k\":1}}", 0);
    st_raw("ok_extra_field",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":0}}", 1);
    st_raw("bad_nine_dims",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad_float_offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}",
           1);
}

/* ---- checkpoint: directory archives --------------------------------------------------------- */
typedef struct ck_file {
    const char *name, *text; /* text NULL: use st/st_len */
    const uint8_t *st;
    size_t st_len;
} ck_file;

static void ck_seed(const char *name, const ck_file *files, size_t n) {
    uint8_t *buf = NULL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        fmz_archive_add(&buf, &len, files[i].name,
                        files[i].text ? (const void *)files[i].text : files[i].st,
                        files[i].text ? strlen(files[i].text) : files[i].st_len);
    put("checkpoint", name, buf ? buf : (uint8_t *)"", len);
    free(buf);
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"
#define IDX "model.safetensors.index.json"
#define WM(body) "{\"metadata\": {\"total_size\": 30}, \"weight_map\": {" body "}}"

static void checkpoint_seeds(void) {
    uint8_t *a = NULL, *b = NULL, *dup = NULL;
    size_t al = 0, bl = 0, dl = 0;
    stfx_build((stfx_tensor[]){{"a", "F32", 1, {2}}, {"b", "I8", 1, {3}}}, 2, "{\"format\":\"pt\"}",
               1, &a, &al);
    stfx_build((stfx_tensor[]){{"c", "BF16", 2, {2, 2}}}, 1, "{\"format\":\"pt\"}", 2, &b, &bl);
    stfx_build((stfx_tensor[]){{"c", "BF16", 2, {2, 2}}, {"d", "U8", 0, {0}}}, 2, NULL, 3, &dup,
               &dl);
    if (!a || !b || !dup) {
        g_bad++;
        free(a), free(b), free(dup);
        return;
    }
    const char *ok = WM("\"a\": \"" S1 "\", \"b\": \"" S1 "\", \"c\": \"" S2 "\"");
    ck_seed("ok_ck_single", (ck_file[]){{"model.safetensors", NULL, a, al}}, 1);
    ck_seed("ok_ck_sharded", (ck_file[]){{IDX, ok, 0, 0}, {S1, NULL, a, al}, {S2, NULL, b, bl}}, 3);
    ck_seed("ok_ck_index_and_single",
            (ck_file[]){{IDX, ok, 0, 0},
                        {S1, NULL, a, al},
                        {S2, NULL, b, bl},
                        {"model.safetensors", NULL, b, bl}},
            4);
    ck_seed("bad_ck_unmapped_tensor",
            (ck_file[]){{IDX, WM("\"a\": \"" S1 "\", \"c\": \"" S2 "\""), 0, 0},
                        {S1, NULL, a, al},
                        {S2, NULL, b, bl}},
            3);
    ck_seed(
        "bad_ck_mapped_absent",
        (ck_file[]){
            {IDX, WM("\"a\": \"" S1 "\", \"b\": \"" S1 "\", \"c\": \"" S2 "\", \"zz\": \"" S2 "\""),
             0, 0},
            {S1, NULL, a, al},
            {S2, NULL, b, bl}},
        3);
    ck_seed(
        "ok_ck_in_two_shards",
        (ck_file[]){
            {IDX, WM("\"a\": \"" S1 "\", \"b\": \"" S1 "\", \"c\": \"" S2 "\", \"d\": \"" S2 "\""),
             0, 0},
            {S1, NULL, a, al},
            {S2, NULL, dup, dl},
            {"x.safetensors", NULL, b, bl}},
        4);
    ck_seed("bad_ck_escape_parent",
            (ck_file[]){
                {IDX, WM("\"a\": \"" S1 "\", \"b\": \"" S1 "\", \"c\": \"../outside.safetensors\""),
                 0, 0},
                {S1, NULL, a, al},
                {"up_outside.safetensors", NULL, b, bl}},
            3);
    ck_seed("bad_ck_escape_dotdir",
            (ck_file[]){{IDX,
                         WM("\"a\": \"./" S1 "\", \"b\": \"" S1
                            "\", \"c\": \"model/../../outside.safetensors\""),
                         0, 0},
                        {S1, NULL, a, al},
                        {"up_outside.safetensors", NULL, b, bl}},
            3);
    ck_seed("bad_ck_absolute",
            (ck_file[]){{IDX, WM("\"a\": \"/dev/null\""), 0, 0}, {S1, NULL, a, al}}, 2);
    ck_seed("bad_ck_self_index", (ck_file[]){{IDX, WM("\"a\": \"" IDX "\""), 0, 0}}, 1);
    ck_seed("ok_ck_empty_map", (ck_file[]){{IDX, WM(""), 0, 0}}, 1);
    ck_seed("bad_ck_map_not_object",
            (ck_file[]){{IDX, "{\"weight_map\": [\"" S1 "\"]}", 0, 0}, {S1, NULL, a, al}}, 2);
    ck_seed("bad_ck_value_not_string",
            (ck_file[]){{IDX, WM("\"a\": 1, \"b\": null"), 0, 0}, {S1, NULL, a, al}}, 2);
    ck_seed("bad_ck_no_weight_map", (ck_file[]){{IDX, "{\"metadata\": {}}", 0, 0}}, 1);
    ck_seed("bad_ck_index_garbage",
            (ck_file[]){{IDX, "{\"weight_map\": {\"a\": \"" S1 "\",", 0, 0}, {S1, NULL, a, al}}, 2);
    ck_seed("bad_ck_empty_name",
            (ck_file[]){{IDX, WM("\"a\": \"\", \"\": \"" S1 "\""), 0, 0}, {S1, NULL, a, al}}, 2);
    ck_seed("bad_ck_nothing", (ck_file[]){{"README.md", "no weights here\n", 0, 0}}, 1);
    ck_seed("bad_ck_bad_shard",
            (ck_file[]){{IDX, ok, 0, 0}, {S1, NULL, a, al / 2}, {S2, NULL, b, bl}}, 3);
    free(a), free(b), free(dup);
}

/* ---- config: JSON texts --------------------------------------------------------------------- */
static void config_seeds(void) {
    fm_qfix q;
    tiny(&q);
    char *t = fm_qfix_config_text(&q);
    if (t) put_text("config", "ok_qwen_tiny", t);
    free(t);
    q.v5_layout = true, q.extra_config = "\"fusion_config\": {\"patch_embeddings\": true}";
    if ((t = fm_qfix_config_text(&q))) put_text("config", "ok_qwen_v5_fusion", t);
    free(t);
    fm_qfix_init(&q);
    if ((t = fm_qfix_config_text(&q))) put_text("config", "ok_qwen_default", t);
    free(t);
    static const struct {
        const char *name, *text;
    } v[] = {
        {"ok_fusion_true", "{\"patch_embeddings\": true}"},
        {"ok_fusion_object", "{\"patch_embeddings\": {\"option\": [1, 2.5, null]}}"},
        {"ok_fusion_unknown", "{\"flash_attention\": true}"},
        {"ok_fusion_bad_value", "{\"patch_embeddings\": 1}"},
        {"ok_fusion_nested",
         "{\"model_type\": \"qwen2_vl\", \"fusion_config\": {\"patch_embeddings\": false}}"},
        {"ok_numbers", "{\"i\": 9223372036854775807, \"n\": -9223372036854775808, \"z\": -0.0, "
                       "\"e\": 1.5e-7, \"f\": 0.1, \"g\": 1e16, \"h\": 123456789012345680000.0}"},
        /* Python's json takes these; jansson does not (2^64, a real beyond double, a lone
         * surrogate, an escaped NUL): config.json refuses them with a message */
        {"bad_number_too_big", "{\"big\": 18446744073709551616}"},
        {"bad_number_real_overflow", "{\"r\": 1e400}"},
        {"ok_strings", "{\"s\": \"a\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\"}"},
        {"bad_string_lone_surrogate", "{\"lone\": \"\\udc00\"}"},
        {"bad_string_nul_escape", "{\"nul\": \"a\\u0000b\"}"},
        {"ok_arrays", "{\"a\": [1, 2, 3], \"m\": [1, \"x\", [2], {}], \"e\": []}"},
        {"ok_dotted_keys", "{\"a.b\": 1, \"a\": {\"b\": 2}, \"\": {\"\": 3}}"},
        {"bad_duplicate_keys", "{\"a\": 1, \"a\": 2}"},
        {"ok_scalar_root", "42"},
        {"ok_array_root", "[{\"a\": 1}]"},
        {"bad_truncated", "{\"vision_config\": {\"depth\": "},
        {"bad_trailing_garbage", "{} x"},
        {"ok_vision_bad",
         "{\"model_type\": \"qwen2_vl\", \"vision_config\": {\"embed_dim\": 10, \"num_heads\": 3,"
         " \"mlp_ratio\": 0.01, \"hidden_act\": \"relu\"}}"},
        {"ok_vision_huge",
         "{\"model_type\": \"qwen2_vl\", \"vision_config\": {\"depth\": 9223372036854775807,"
         " \"embed_dim\": 1099511627776, \"num_heads\": 4, \"mlp_ratio\": 4}}"},
        {"ok_text_config_only", "{\"model_type\": \"qwen2_vl\", \"vision_config\": {}, "
                                "\"text_config\": {\"hidden_size\": 8,"
                                " \"num_attention_heads\": 3, \"tie_word_embeddings\": true}}"},
        {"ok_index", WM("\"a\": \"" S1 "\", \"c\": \"" S2 "\"")},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        put_text("config", v[i].name, v[i].text);
    char deep[200];
    size_t k = 0;
    for (int i = 0; i < 65; i++)
        deep[k++] = '[';
    for (int i = 0; i < 65; i++)
        deep[k++] = ']';
    put("config", "bad_deep_65", deep, k);
    put("config", "ok_deep_64", deep + 1, k - 2);
}

/* ---- size strings -----------------------------------------------------------------------------
 */
static void size_seeds(void) {
    static const struct {
        const char *name, *text;
    } v[] = {
        {"ok_gb", "5GB"},
        {"ok_mib", "10MiB"},
        {"ok_bits", "5Gb"},
        {"ok_plain", "100"},
        {"ok_blanks", " 7 KB"},
        {"ok_tib_lower", "1tib"},
        {"bad_unit", "12XB"},
        {"bad_overflow", "99999999999999999999GB"},
        {"bad_mul_overflow", "18446744073709551615KB"},
        {"bad_empty", ""},
        {"bad_unit_only", "GB"},
        {"bad_negative", "-5GB"},
        {"bad_fraction", "1.5GB"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        put_text("size", v[i].name, v[i].text);
}

/* ---- pattern: header + lines ---------------------------------------------------------------- */
/* Op bytes: kind | (dim + 4) << 3, then (dim1 + 4) | (in_channels - 1) << 3 | kernel bits << 5. */
static void pat(const char *name, uint8_t flags, const uint8_t ops[4], const char *lines) {
    uint8_t buf[2048];
    size_t n = 0, nops = 1 + ((flags >> 5) & 1);
    buf[n++] = flags;
    for (size_t i = 0; i < 2 * nops; i++)
        buf[n++] = ops ? ops[i] : 0;
    size_t l = strlen(lines);
    if (n + l > sizeof buf) return;
    memcpy(buf + n, lines, l);
    put("pattern", name, buf, n + l);
}
#define OP(kind, dim) (uint8_t)((kind) | (((dim) + 4) << 3))
#define OP2(dim1, inch, kbits) (uint8_t)(((dim1) + 4) | (((inch)-1) << 3) | ((kbits) << 5))

static void pattern_seeds(void) {
    pat("ok_rename_visual", 0x00, NULL,
        "^visual\nmodel.visual\nvisual.blocks.0.attn.qkv.weight\nmodel.visual.x\n");
    pat("ok_rename_lookahead", 0x40, NULL,
        "^model(?!\\.(language_model|visual))\nmodel.language_model\nmodel.layers.0.w\n"
        "model.visual.w\n");
    pat("ok_rename_group", 0x00, NULL,
        "layers\\.(\\d+)\\.mlp\nblocks.\\1.ffn\nmodel.layers.12.mlp.w\n");
    pat("ok_rename_named_group", 0x40, NULL, "(?P<n>\\d+)\\.(?P=n)\\.x\\Z\ny\n1.1.x\n2.3.x\n");
    pat("ok_rename_dotstar", 0x00, NULL, "encoder.*.attn\nenc.attn\nencoder.l.0.attn.q\n");
    pat("ok_rename_py_syntax", 0x00, NULL,
        "(?u)a{,3}\\u00e9\\U0001F600\nb\naaa\xc3\xa9\xf0\x9f\x98\x80\n");
    pat("bad_rename_bad_flag", 0x00, NULL, "(?a)x\ny\nx\n");
    pat("bad_rename_bad_named_char", 0x00, NULL, "\\N{DIGIT ONE}\ny\n1\n");
    pat("bad_rename_two_groups", 0x00, NULL, "(a)(b)\n\\2_\\1\nab\n");
    pat("bad_rename_bad_ref", 0x00, NULL, "a\n\\7\na\n");
    pat("bad_rename_unbalanced", 0x40, NULL, "(ab\nx\nab\n");
    pat("ok_rename_backtrack", 0x00, NULL, /* nested quantifier, reversible: renaming runs */
        "(?:a+)+$\nx\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\naaaaaaaaaaaaaaaa\n");
    pat("bad_rename_backtrack_group", 0x00, NULL,
        "(a+)+$\nx\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\n");
    pat("ok_rename_lookbehind", 0x00, NULL, "(?<=\\.)w$\nweight\nlayer.w\n");
    pat("ok_rename_target_groups", 0x00, NULL,
        "^(?:model\\.)?(vis)ual\n^(?i)x\\.(vis)$\nmodel.visual.a\n");
    uint8_t c2l[4] = {OP(FM_OP_CONV3D_TO_LINEAR, 0), OP2(0, 3, 7)};
    pat("ok_conv_conv3d", 0x01, c2l,
        "patch_embed\\.proj\\.weight$\npatch_embed.linear_proj.weight\n"
        "visual.patch_embed.proj.weight\n");
    uint8_t chunk[4] = {OP(FM_OP_CHUNK, 0), OP2(0, 1, 0)};
    pat("ok_conv_chunk_qkv", 0x01 | (2 << 3), chunk,
        "attn\\.qkv\\.weight$\nattn.q.weight\nattn.k.weight\nattn.v.weight\n"
        "blocks.3.attn.qkv.weight\n");
    uint8_t cat[4] = {OP(FM_OP_CONCATENATE, 1), OP2(0, 1, 0)};
    pat("ok_conv_concat", 0x01 | (1 << 1), cat,
        "gate_proj\\.weight$\nup_proj\\.weight$\ngate_up_proj.weight\n"
        "mlp.gate_proj.weight\nmlp.up_proj.weight\n");
    uint8_t merge[4] = {OP(FM_OP_MERGE_MODULELIST, 0), OP2(0, 1, 0), OP(FM_OP_CONCATENATE, 1),
                        OP2(0, 1, 0)};
    pat("ok_conv_merge_concat", 0x21 | (1 << 1), merge,
        "experts.*.w1.weight\nexperts.*.w3.weight\nexperts.gate_up\n"
        "experts.0.w1.weight\nexperts.1.w3.weight\n");
    uint8_t tr[4] = {OP(FM_OP_TRANSPOSE, 0), OP2(1, 1, 0)};
    pat("ok_conv_transpose", 0x41, tr, "^lm_head\\.weight$\nlm_head.weight_t\nlm_head.weight\n");
    uint8_t split[4] = {OP(FM_OP_SPLIT_MODULELIST, -1), OP2(0, 1, 0)};
    pat("bad_conv_split_four_targets", 0x01 | (3 << 3), split, "stacked$\na\nb\nc\nd\nstacked\n");
    pat("ok_conv_split", 0x01, split, "stacked$\nparts.*\nstacked\n");
    uint8_t bad[4] = {OP(FM_OP_LINEAR_TO_CONV3D, 3), OP2(-4, 4, 0), OP(FM_OP_CHUNK, 2),
                      OP2(3, 2, 5)};
    pat("bad_conv_unroutable", 0x21 | (3 << 1) | (1 << 3), bad, "a\nb\nc\nd\nx\ny\nabcd\n");
}

/* ---- tokenizer: tokenizer.json [NUL text] ---------------------------------------------------
 * Named ok_* when the tokenizer.json loads, bad_* when it is rejected. */
static void tok_put(const char *name, json_t *root, const char *text, size_t tlen) {
    char *j = root ? json_dumps(root, JSON_COMPACT) : NULL;
    size_t jl = j ? strlen(j) : 0;
    char *buf = j ? malloc(jl + 1 + tlen) : NULL;
    if (buf) {
        memcpy(buf, j, jl);
        buf[jl] = '\0';
        if (text) memcpy(buf + jl + 1, text, tlen);
        put("tokenizer", name, buf, text ? jl + 1 + tlen : jl);
    }
    free(buf), free(j);
    json_decref(root);
}

/* A tokenizer trained on a small generated corpus (40 merges), as a JSON tree. */
static json_t *tok_trained(bool legacy, bool added) {
    size_t len = 0, jl = 0;
    char *text = tokfx_corpus(4000, 7, true, &len);
    tokfx_spec spec = {40, legacy, added};
    char *j = text ? tokfx_train_json(text, len, &spec, &jl) : NULL;
    json_t *root = j ? json_loadb(j, jl, 0, NULL) : NULL;
    free(text), free(j);
    return root;
}

static json_t *tok_at(json_t *root, const char *a, const char *b) {
    json_t *v = json_object_get(root, a);
    return b ? json_object_get(v, b) : v;
}

static void tokenizer_seeds(void) {
    static const char probe[] = "<|im_start|>user\nHi  <mask> there!! I'M 42\r\n\tcafe\xcc\x81 "
                                "<\xc3\xb1> \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9<|im_end|>";
    const size_t pl = sizeof probe - 1;
    tok_put("ok_trained_pairs", tok_trained(false, true), probe, pl);
    tok_put("ok_trained_legacy", tok_trained(true, true), probe, pl);
    tok_put("ok_trained_no_added", tok_trained(false, false), probe, pl);
    tok_put("ok_no_text", tok_trained(false, true), NULL, 0);
    tok_put("ok_invalid_utf8_text", tok_trained(false, true), "ab\xff\xfe", 4);
    char word[3000];
    memset(word, 'w', sizeof word);
    tok_put("ok_long_word", tok_trained(false, true), word, sizeof word);
    json_t *r = tok_trained(false, false);
    json_object_set_new(r, "pre_tokenizer",
                        json_pack("{ss sb sb sb}", "type", "ByteLevel", "add_prefix_space", 0,
                                  "trim_offsets", 0, "use_regex", 1));
    tok_put("ok_gpt2_byte_level", r, probe, pl);
    r = tok_trained(false, false);
    json_object_set_new(
        json_array_get(tok_at(tok_at(r, "pre_tokenizer", NULL), "pretokenizers", NULL), 0),
        "pattern", json_pack("{ss}", "String", " "));
    tok_put("ok_string_split", r, probe, pl);
    r = tok_trained(false, false);
    json_object_set_new(json_array_get(tok_at(r, "pre_tokenizer", "pretokenizers"), 0), "pattern",
                        json_pack("{ss}", "Regex", "(a+)+$"));
    tok_put("ok_catastrophic_regex", r, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", 31);
    r = tok_trained(false, false);
    json_object_del(tok_at(r, "model", "vocab"), "Q");
    json_object_set_new(tok_at(r, "model", NULL), "unk_token", json_string("?"));
    json_object_set_new(tok_at(r, "model", NULL), "fuse_unk", json_true());
    tok_put("ok_unk_fused", r, "QQ?QxQ", 6);
    r = tok_trained(true, true);
    json_array_append_new(tok_at(r, "model", "merges"), json_string("a b c"));
    tok_put("bad_merge_three_parts", r, probe, pl);
    r = tok_trained(false, true);
    json_array_append_new(tok_at(r, "model", "merges"), json_pack("[ss]", "zq", "x"));
    tok_put("bad_merge_out_of_vocab", r, probe, pl);
    r = tok_trained(false, true);
    json_object_set_new(r, "normalizer", json_pack("{ss}", "type", "NFKC"));
    tok_put("bad_normalizer_nfkc", r, probe, pl);
    r = tok_trained(false, true);
    json_object_set_new(json_array_get(json_object_get(r, "added_tokens"), 0), "id",
                        json_integer(5000));
    tok_put("bad_added_id", r, probe, pl);
    r = tok_trained(false, true);
    json_object_set_new(tok_at(r, "model", "vocab"), "dup", json_integer(3));
    tok_put("bad_duplicate_vocab_id", r, probe, pl);
    r = tok_trained(false, true);
    json_object_set_new(json_array_get(tok_at(r, "pre_tokenizer", "pretokenizers"), 0), "pattern",
                        json_pack("{ss}", "Regex", "(unclosed"));
    tok_put("bad_regex", r, probe, pl);
    r = tok_trained(false, true);
    json_object_set_new(r, "version", json_string("2.0"));
    tok_put("bad_version", r, probe, pl);
    char *j = json_dumps((r = tok_trained(false, true)), JSON_COMPACT);
    if (j) put("tokenizer", "bad_truncated", j, strlen(j) / 2);
    free(j);
    json_decref(r);
    char deep[200];
    size_t k = (size_t)sprintf(deep, "{\"model\":");
    for (int i = 0; i < 65; i++)
        deep[k++] = '[';
    for (int i = 0; i < 65; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    put("tokenizer", "bad_deep_65", deep, k);
    put_text("tokenizer", "bad_array_root", "[{\"model\": {}}]");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR (e.g. fuzz/corpus)\n", argv[0]);
        return 2;
    }
    g_root = argv[1];
    if (mkdir(g_root, 0755) && errno != EEXIST) {
        perror(g_root);
        return 1;
    }
    model_seeds();
    broken_model_seeds();
    header_seeds();
    checkpoint_seeds();
    config_seeds();
    size_seeds();
    pattern_seeds();
    tokenizer_seeds();
    printf("gen_seeds: %d seeds written to %s%s\n", g_count, g_root, g_bad ? " (with errors)" : "");
    return g_bad ? 1 : 0;
}
