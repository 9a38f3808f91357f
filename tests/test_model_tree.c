/* Module tree and Qwen2-VL builder: names and order as transformers v5, class names,
 * config validation naming the key, hub vs v5 config layouts, scoped monkey patching. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fusemap/models.h"
#include "qwen_fixture.h"

static char *tmp;

static fm_model *load_meta(const fm_qfix *q, const char *patch_reason) {
    char dir[4200];
    fm_error err;
    fm_model *m = NULL;
    snprintf(dir, sizeof dir, "%s/%s", tmp, patch_reason);
    CHECK_OK(fm_qfix_write(dir, q, &err), &err);
    fm_load_options o;
    fm_load_options_init(&o);
    o.meta_only = true;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &err), &err);
    return m;
}

/* Expected runtime names, derived independently from the hub layout of spec §2. */
static void expected_names(const fm_qfix *q, char names[][96], int *n) {
    *n = 0;
#define P(...) snprintf(names[(*n)++], 96, __VA_ARGS__)
    P("model.visual.patch_embed.proj.weight");
    for (int i = 0; i < q->depth; i++) {
        const char *s[] = {"norm1.weight",    "norm1.bias",    "norm2.weight",     "norm2.bias",
                           "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                           "mlp.fc1.weight",  "mlp.fc1.bias",  "mlp.fc2.weight",   "mlp.fc2.bias"};
        for (int k = 0; k < 12; k++)
            P("model.visual.blocks.%d.%s", i, s[k]);
    }
    P("model.visual.merger.ln_q.weight"), P("model.visual.merger.ln_q.bias");
    P("model.visual.merger.mlp.0.weight"), P("model.visual.merger.mlp.0.bias");
    P("model.visual.merger.mlp.2.weight"), P("model.visual.merger.mlp.2.bias");
    P("model.language_model.embed_tokens.weight");
    for (int i = 0; i < q->text_layers; i++) {
        const char *s[] = {"self_attn.q_proj.weight", "self_attn.q_proj.bias",
                           "self_attn.k_proj.weight", "self_attn.k_proj.bias",
                           "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                           "self_attn.o_proj.weight", "mlp.gate_proj.weight",
                           "mlp.up_proj.weight",      "mlp.down_proj.weight",
                           "input_layernorm.weight",  "post_attention_layernorm.weight"};
        for (int k = 0; k < 12; k++)
            P("model.language_model.layers.%d.%s", i, s[k]);
    }
    P("model.language_model.norm.weight");
    P("lm_head.weight");
#undef P
}

static void test_named_parameters_order(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = 3, q.text_layers = 2;
    fm_model *m = load_meta(&q, "names");
    if (!m) return;
    fm_param_ref *refs = NULL;
    size_t n = 0;
    fm_error err;
    CHECK_OK(fm_module_named_params(fm_model_root(m), &refs, &n, &err), &err);
    static char names[512][96];
    int ne = 0;
    expected_names(&q, names, &ne);
    CHECK_EQ_INT(ne, n);
    for (size_t i = 0; i < n && (int)i < ne; i++)
        CHECK_EQ_STR(names[i], refs[i].name);
    const fm_tensor *w = fm_model_param(m, "model.visual.blocks.2.attn.qkv.weight");
    CHECK(w && w->shape.ndim == 2 && w->shape.dims[0] == 3 * q.embed_dim &&
          w->shape.dims[1] == q.embed_dim);
    CHECK(w && w->data == NULL); /* meta: no data */
    const fm_tensor *pw = fm_model_param(m, "model.visual.patch_embed.proj.weight");
    CHECK(pw && pw->shape.ndim == 5 && pw->shape.dims[1] == 3 && pw->shape.dims[2] == 2 &&
          pw->shape.dims[4] == 14);
    fm_param_refs_free(refs, n);
    fm_model_free(m);
}

typedef struct cls_case {
    const char *path, *cls;
} cls_case;

static void test_class_names(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    fm_model *m = load_meta(&q, "classes");
    if (!m) return;
    const cls_case cases[] = {
        {"", "Qwen2VLForConditionalGeneration"},
        {"model", "Qwen2VLModel"},
        {"model.visual", "Qwen2VisionTransformerPretrainedModel"},
        {"model.visual.patch_embed", "PatchEmbed"},
        {"model.visual.patch_embed.proj", "Conv3d"},
        {"model.visual.rotary_pos_emb", "VisionRotaryEmbedding"},
        {"model.visual.blocks", "ModuleList"},
        {"model.visual.blocks.1", "Qwen2VLVisionBlock"},
        {"model.visual.blocks.1.attn", "VisionAttention"},
        {"model.visual.blocks.1.mlp", "VisionMlp"},
        {"model.visual.blocks.1.mlp.act", "QuickGELUActivation"},
        {"model.visual.merger", "PatchMerger"},
        {"model.visual.merger.mlp", "Sequential"},
        {"model.visual.merger.mlp.1", "GELU"},
        {"model.language_model", "Qwen2VLTextModel"},
        {"model.language_model.layers.0", "Qwen2VLDecoderLayer"},
        {"model.language_model.layers.0.self_attn", "Qwen2VLAttention"},
        {"model.language_model.layers.0.mlp", "Qwen2MLP"},
        {"model.language_model.norm", "Qwen2RMSNorm"},
        {"lm_head", "Linear"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fm_module *mod = fm_module_find(fm_model_root(m), cases[i].path);
        CHECK_MSG(mod != NULL, "module '%s' exists", cases[i].path);
        if (mod) CHECK_EQ_STR(cases[i].cls, fm_module_class_of(mod)->name);
    }
    fm_model_free(m);
}

static void test_v5_layout_and_tie(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.v5_layout = true, q.tie = true, q.text_hidden = 64, q.text_heads = 8, q.text_kv_heads = 4;
    fm_model *m = load_meta(&q, "v5");
    if (!m) return;
    const fm_tensor *e = fm_model_param(m, "model.language_model.embed_tokens.weight");
    const fm_tensor *k = fm_model_param(m, "model.language_model.layers.0.self_attn.k_proj.weight");
    CHECK(e && e->shape.dims[1] == 64);
    CHECK(k && k->shape.dims[0] == 4 * 8 && k->shape.dims[1] == 64); /* kv heads * head_dim 8 */
    fm_model_free(m);
}

typedef struct bad_cfg {
    const char *find, *replace, *key;
} bad_cfg;

static void test_config_refusals(void) {
    const bad_cfg cases[] = {
        {"\"num_heads\": 4", "\"num_heads\": 0", "vision_config.num_heads"},
        {"\"num_heads\": 4", "\"num_heads\": 3", "vision_config.embed_dim"},
        {"\"depth\": 2", "\"depth\": 2.5", "vision_config.depth"},
        {"\"depth\": 2", "\"depth\": \"2\"", "vision_config.depth"},
        {"\"num_attention_heads\": 4", "\"num_attention_heads\": 5", "hidden_size"},
        {"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "num_attention_heads"},
        {"\"hidden_act\": \"quick_gelu\"", "\"hidden_act\": \"relu7\"", "vision_config.hidden_act"},
        {"\"vocab_size\": 100", "\"vocab_size\": -1", "vocab_size"},
        {"\"model_type\": \"qwen2_vl\"", "\"model_type\": \"llama9\"", "model_type"},
        {"\"depth\": 2", "\"depth\": 9223372036854775807", "vision_config.depth"},
        {"\"mlp_ratio\": 4", "\"mlp_ratio\": 1e300", "vision_config.mlp_ratio"},
        {"\"vocab_size\": 100", "\"vocab_size\": 4611686018427387904", "vocab_size"},
    };
    fm_qfix q;
    fm_qfix_init(&q);
    char *good = fm_qfix_config_text(&q);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[4200], path[4300], text[8192];
        snprintf(dir, sizeof dir, "%s/bad%zu", tmp, i);
        fm_error err;
        CHECK_OK(fm_qfix_write(dir, &q, &err), &err);
        const char *at = strstr(good, cases[i].find);
        CHECK_MSG(at != NULL, "fixture contains %s", cases[i].find);
        if (!at) continue;
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good), good, cases[i].replace,
                 at + strlen(cases[i].find));
        snprintf(path, sizeof path, "%s/config.json", dir);
        FILE *f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
        fm_model *m = NULL;
        fm_status st = fm_from_pretrained(dir, NULL, &m, NULL, &err);
        CHECK_MSG(st != FM_OK && m == NULL, "case %zu (%s) refused", i, cases[i].replace);
        CHECK_CONTAINS(err.msg, cases[i].key);
        fm_model_free(m);
    }
    free(good);
}

/* A replacement class for every "*Attention" class name, applied through the patch registry. */
static fm_status noop_init(fm_module *m, fm_build_ctx *c, const fm_args *a, fm_error *e) {
    (void)m, (void)c, (void)a, (void)e;
    return FM_OK;
}
static const fm_module_class stub_attention = {.name = "StubAttention", .init = noop_init};

static void test_patch_regex_scoped_to_build(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    fm_error err;
    CHECK_OK(fm_patch_register(".*Attention", &stub_attention, false, &err), &err);
    fm_model *m = load_meta(&q, "patched");
    CHECK_OK(fm_patch_unregister(".*Attention", &err), &err);
    fm_model *plain = load_meta(&q, "unpatched");
    if (m) {
        fm_module *a = fm_module_find(fm_model_root(m), "model.visual.blocks.0.attn");
        fm_module *t = fm_module_find(fm_model_root(m), "model.language_model.layers.0.self_attn");
        CHECK(a && !strcmp(fm_module_class_of(a)->name, "StubAttention"));
        CHECK(a && !strcmp(fm_module_requested_class(a), "VisionAttention"));
        CHECK(t && !strcmp(fm_module_class_of(t)->name, "StubAttention"));
        CHECK(fm_model_param(m, "model.visual.blocks.0.attn.qkv.weight") == NULL);
        fm_module *mlp = fm_module_find(fm_model_root(m), "model.visual.blocks.0.mlp");
        CHECK(mlp && !strcmp(fm_module_class_of(mlp)->name, "VisionMlp")); /* not matched */
    }
    if (plain) CHECK(fm_model_param(plain, "model.visual.blocks.0.attn.qkv.weight") != NULL);
    fm_model_free(m);
    fm_model_free(plain);
}

int main(void) {
    tmp = fm_test_tmpdir("tree");
    RUN(test_named_parameters_order);
    RUN(test_class_names);
    RUN(test_v5_layout_and_tie);
    RUN(test_config_refusals);
    RUN(test_patch_regex_scoped_to_build);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
