/* fm_from_pretrained / fm_save_pretrained on generated Qwen2-VL checkpoints: byte-identical
 * round trips (single file, sharded, bf16, f32, tied), zero-copy loading, the load report
 * (extra, missing, wrong shape), strict mode, dtype casts and the runtime layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/models.h"
#include "qwen_fixture.h"

static char *tmp;

static void path_in(char *buf, size_t n, const char *a, const char *b) {
    snprintf(buf, n, "%s/%s/%s", tmp, a, b);
}

static void round_trip(const char *tag, const fm_qfix *q, uint64_t max_shard) {
    char src[4200], dst[4200];
    fm_error err;
    snprintf(src, sizeof src, "%s/%s-src", tmp, tag);
    snprintf(dst, sizeof dst, "%s/%s-dst", tmp, tag);
    CHECK_OK(fm_qfix_write(src, q, &err), &err);
    fm_model *m = NULL;
    fm_load_report rep;
    CHECK_OK(fm_from_pretrained(src, NULL, &m, &rep, &err), &err);
    CHECK_EQ_INT(0, rep.n_missing);
    CHECK_EQ_INT(0, rep.n_unexpected);
    CHECK_EQ_INT(2, rep.n_fired); /* the two hub->runtime renamings */
    fm_load_report_free(&rep);
    if (!m) return;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    if (max_shard) so.max_shard_size = max_shard;
    CHECK_OK(fm_save_pretrained(m, dst, &so, &err), &err);
    CHECK_MSG(fm_test_same_dir(src, dst, NULL),
              "%s: saved directory equals the source byte for byte", tag);
    fm_model_free(m);
}

static void test_round_trip_single_f32(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    round_trip("single-f32", &q, 0);
}

static void test_round_trip_sharded_bf16(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.dtype = FM_DTYPE_BF16, q.max_shard = 20000, q.depth = 3, q.text_layers = 2;
    round_trip("sharded-bf16", &q, 0); /* no explicit size: the source's shard layout is kept */
    char idx[4300];
    path_in(idx, sizeof idx, "sharded-bf16-dst", "model.safetensors.index.json");
    size_t len = 0;
    char *text = fm_test_read_file(idx, &len);
    CHECK_MSG(text != NULL, "sharded save wrote an index");
    free(text);
    /* an explicit size re-splits: 1 GB holds everything in one model.safetensors */
    char src[4200], one[4200], f[4300];
    snprintf(src, sizeof src, "%s/sharded-bf16-src", tmp);
    snprintf(one, sizeof one, "%s/sharded-bf16-one", tmp);
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(src, NULL, &m, NULL, &err), &err);
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 1000000000;
    if (m) CHECK_OK(fm_save_pretrained(m, one, &so, &err), &err);
    fm_model_free(m);
    snprintf(f, sizeof f, "%s/model.safetensors", one);
    char *whole = fm_test_read_file(f, NULL);
    CHECK_MSG(whole != NULL, "explicit 1 GB limit gives a single model.safetensors");
    free(whole);
}

static void test_round_trip_tied_f16_v5(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.tie = true, q.dtype = FM_DTYPE_F16, q.v5_layout = true;
    round_trip("tied", &q, 0);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/tied-src", tmp);
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(dir, NULL, &m, NULL, &err), &err);
    if (!m) return;
    const fm_tensor *e = fm_model_param(m, "model.language_model.embed_tokens.weight");
    const fm_tensor *h = fm_model_param(m, "lm_head.weight");
    CHECK(e && h && e->data && e->data == h->data); /* tied: one tensor */
    fm_model_free(m);
}

static void test_zero_copy_auto(void) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/single-f32-src", tmp);
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(dir, NULL, &m, NULL, &err), &err);
    if (!m) return;
    const char *names[] = {
        "model.visual.patch_embed.proj.weight", "model.visual.blocks.1.mlp.fc2.bias",
        "model.language_model.layers.0.self_attn.q_proj.weight", "lm_head.weight"};
    for (size_t i = 0; i < 4; i++) {
        const fm_tensor *t = fm_model_param(m, names[i]);
        CHECK_MSG(t && fm_tensor_is_mapped(t), "%s is a view into the mapped file", names[i]);
    }
    fm_model_free(m);
}

static void test_cast_on_load(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.dtype = FM_DTYPE_BF16;
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/cast-src", tmp);
    snprintf(dst, sizeof dst, "%s/cast-dst", tmp);
    fm_error err;
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    fm_load_options o;
    fm_load_options_init(&o);
    o.dtype = FM_DTYPE_F32;
    fm_model *m = NULL, *auto_m = NULL;
    CHECK_OK(fm_from_pretrained(src, &o, &m, NULL, &err), &err);
    CHECK_OK(fm_from_pretrained(src, NULL, &auto_m, NULL, &err), &err);
    if (!m || !auto_m) {
        fm_model_free(m), fm_model_free(auto_m);
        return;
    }
    const fm_tensor *a = fm_model_param(m, "model.visual.blocks.0.attn.qkv.weight");
    const fm_tensor *b = fm_model_param(auto_m, "model.visual.blocks.0.attn.qkv.weight");
    CHECK(a && a->dtype == FM_DTYPE_F32 && !fm_tensor_is_mapped(a));
    CHECK(b && b->dtype == FM_DTYPE_BF16 && fm_tensor_is_mapped(b));
    if (a && b) {
        float *conv = malloc(a->nbytes);
        fm_bf16_to_f32(conv, b->data, fm_tensor_numel(b));
        CHECK(!memcmp(conv, a->data, a->nbytes));
        free(conv);
    }
    CHECK_OK(fm_save_pretrained(m, dst, NULL, &err), &err);
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/config.json", dst);
    char *text = fm_test_read_file(cfg, NULL);
    CHECK_CONTAINS(text, "\"torch_dtype\": \"float32\"");
    CHECK_CONTAINS(text, "\"spatial_patch_size\": 14"); /* unknown keys kept */
    free(text);
    fm_model_free(m);
    fm_model_free(auto_m);
}

/* Rewrites DIR/model.safetensors through `edit`, which may rename, drop or add tensors. */
typedef void (*edit_fn)(fm_st_item *items, size_t *n, fm_tensor *extra);

static void rewrite(const char *dir, edit_fn edit) {
    char path[4300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fm_st_file *f = NULL;
    fm_error err;
    CHECK_OK(fm_st_open(path, &f, &err), &err);
    if (!f) return;
    size_t n = fm_st_count(f);
    fm_st_item *items = calloc(n + 1, sizeof *items);
    fm_tensor *ts = calloc(n + 1, sizeof *ts);
    char **names = calloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        fm_st_tensor(f, i, &ts[i], &err);
        names[i] = strdup(fm_st_entry_at(f, i)->name);
        items[i] = (fm_st_item){names[i], &ts[i]};
    }
    fm_tensor extra = {0};
    edit(items, &n, &extra);
    fm_st_kv meta = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &meta, o.n_metadata = 1, o.with_metadata = true;
    CHECK_OK(fm_st_write_file(path, items, n, &o, &err), &err);
    for (size_t i = 0; i <= fm_st_count(f); i++)
        fm_tensor_free(&ts[i]), free(names[i]);
    fm_tensor_free(&extra);
    fm_st_close(f);
    free(items), free(ts), free(names);
}

static void add_extra(fm_st_item *items, size_t *n, fm_tensor *extra) {
    fm_shape s = {1, {4}};
    fm_tensor_alloc(extra, FM_DTYPE_F32, &s, NULL);
    memset(extra->data, 0x3f, extra->nbytes);
    items[(*n)++] = (fm_st_item){"visual.blocks.0.attn.extra_scale", extra};
}

static void drop_fc1_bias(fm_st_item *items, size_t *n, fm_tensor *extra) {
    (void)extra;
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(items[i].name, "visual.blocks.1.mlp.fc1.bias")) items[i] = items[--*n];
}

static void shrink_norm(fm_st_item *items, size_t *n, fm_tensor *extra) {
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(items[i].name, "visual.merger.ln_q.weight")) continue;
        fm_shape s = {1, {items[i].tensor->shape.dims[0] - 1}};
        fm_tensor_alloc(extra, items[i].tensor->dtype, &s, NULL);
        memset(extra->data, 0, extra->nbytes);
        items[i].tensor = extra;
    }
}

static fm_status load_case(const char *tag, edit_fn edit, bool strict, fm_load_report *rep,
                           fm_error *err) {
    char dir[4200];
    fm_qfix q;
    fm_qfix_init(&q);
    snprintf(dir, sizeof dir, "%s/%s", tmp, tag);
    CHECK_OK(fm_qfix_write(dir, &q, err), err);
    rewrite(dir, edit);
    fm_load_options o;
    fm_load_options_init(&o);
    o.strict = strict;
    fm_model *m = NULL;
    fm_status st = fm_from_pretrained(dir, &o, &m, rep, err);
    CHECK((st == FM_OK) == (m != NULL));
    fm_model_free(m);
    return st;
}

static void test_report_extra_missing_shape(void) {
    fm_load_report rep;
    fm_error err;
    CHECK_OK(load_case("extra", add_extra, false, &rep, &err), &err);
    CHECK_EQ_INT(1, rep.n_unexpected);
    if (rep.n_unexpected) CHECK_EQ_STR("model.visual.blocks.0.attn.extra_scale", rep.unexpected[0]);
    fm_load_report_free(&rep);
    CHECK_STATUS(FM_ERR_UNEXPECTED_KEYS, load_case("extra-strict", add_extra, true, &rep, &err),
                 &err);
    CHECK_CONTAINS(err.msg, "extra_scale");
    fm_load_report_free(&rep);

    CHECK_OK(load_case("missing", drop_fc1_bias, false, &rep, &err), &err);
    CHECK_EQ_INT(1, rep.n_missing);
    if (rep.n_missing) CHECK_EQ_STR("model.visual.blocks.1.mlp.fc1.bias", rep.missing[0]);
    fm_load_report_free(&rep);
    CHECK_STATUS(FM_ERR_MISSING_KEYS, load_case("missing-strict", drop_fc1_bias, true, &rep, &err),
                 &err);
    fm_load_report_free(&rep);

    CHECK_STATUS(FM_ERR_SHAPE, load_case("shape", shrink_norm, false, &rep, &err), &err);
    CHECK_CONTAINS(err.msg, "model.visual.merger.ln_q.weight");
    CHECK_CONTAINS(err.msg, "[31]");
    CHECK_CONTAINS(err.msg, "[32]");
    CHECK_EQ_INT(1, rep.n_mismatched);
    fm_load_report_free(&rep);
}

static void test_runtime_format_save_reloads(void) {
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/single-f32-src", tmp);
    snprintf(dst, sizeof dst, "%s/runtime-dst", tmp);
    fm_error err;
    fm_model *m = NULL, *back = NULL;
    CHECK_OK(fm_from_pretrained(src, NULL, &m, NULL, &err), &err);
    if (!m) return;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    CHECK_OK(fm_save_pretrained(m, dst, &so, &err), &err);
    fm_checkpoint *ck = NULL;
    CHECK_OK(fm_checkpoint_open(dst, &ck, &err), &err);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.blocks.0.attn.qkv.weight") >= 0);
    CHECK(ck && fm_checkpoint_find(ck, "model.language_model.norm.weight") >= 0);
    CHECK(ck && fm_checkpoint_find(ck, "visual.blocks.0.attn.qkv.weight") < 0);
    fm_checkpoint_close(ck);
    fm_load_report rep;
    CHECK_OK(fm_from_pretrained(dst, NULL, &back, &rep, &err), &err);
    CHECK_EQ_INT(0, rep.n_missing);
    CHECK_EQ_INT(0, rep.n_fired); /* runtime names load as they are */
    fm_load_report_free(&rep);
    if (back) {
        const fm_tensor *a = fm_model_param(m, "model.visual.merger.mlp.2.weight");
        const fm_tensor *b = fm_model_param(back, "model.visual.merger.mlp.2.weight");
        CHECK(a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes));
    }
    fm_model_free(back);
    fm_model_free(m);
}

int main(void) {
    tmp = fm_test_tmpdir("pretrained");
    RUN(test_round_trip_single_f32);
    RUN(test_round_trip_sharded_bf16);
    RUN(test_round_trip_tied_f16_v5);
    RUN(test_zero_copy_auto);
    RUN(test_cast_on_load);
    RUN(test_report_extra_missing_shape);
    RUN(test_runtime_format_save_reloads);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
