/* The whole Qwen2.5-VL model through the library against the separate float64 references
 * (vision25_ref64 for the tower, text_ref64 for the Qwen2 decoder, both reading the checkpoint
 * by hub names): get_rope_index for Qwen2.5-VL images, prompt logits with image features from
 * the tower for every fusion combination, greedy continuations with an image, original-format
 * saves byte for byte (single file and sharded, f32 and bf16), runtime-format saves loaded
 * both ways, the v5 config layout, and architectures that are refused whole. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/qwen_fixture.h"
#include "support/text_ref64.h"
#include "support/vision25_ref64.h"

enum { IMG = 290, VSTART = 291, VEND = 292, VOCAB = 300, H = 64 };
static const char *extra =
    "\"image_token_id\": 290, \"vision_start_token_id\": 291, \"vision_end_token_id\": 292, "
    "\"video_token_id\": 293, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, "
    "3]}";
static char *tmp;
static uint64_t seed = 0xD1B54A32D192ED03ull;
static double worst;

static fm_qfix fixture(fm_dtype dt, bool tie) {
    fm_qfix q;
    fm_qfix_init_qwen25(&q);
    q.depth = 2, q.embed_dim = 32, q.num_heads = 4, q.vision_inter = 40, q.patch_size = 4,
    q.window_size = 16; /* windows of 2x2 merged cells */
    q.hidden_size = H;  /* out_hidden_size = the decoder width */
    q.text_layers = 2, q.text_hidden = H, q.text_heads = 4, q.text_kv_heads = 2, q.text_inter = 96,
    q.vocab = VOCAB;
    q.dtype = dt, q.tie = tie, q.scale = 0.12f, q.extra_config = extra;
    return q;
}

static char *write_fixture(const fm_qfix *q, const char *tag) {
    char *dir = fm_test_join(tmp, tag);
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, q, &e), &e);
    return dir;
}

static fm_model *load(const char *dir, const char *fusion) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    return m;
}

static int64_t tokens_of(const int64_t *grid, int n) {
    int64_t k = 0;
    for (int i = 0; i < n; i++)
        k += grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2] / 4;
    return k;
}

/* Text ids with the images (vision_start, pads, vision_end) after the first half. */
static int64_t make_prompt(int64_t *ids, int n_text, const int64_t *grid, int n_images) {
    int64_t n = 0;
    for (int i = 0; i < n_text; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        ids[n++] = (int64_t)(seed % 280);
        if (i == n_text / 2)
            for (int k = 0; k < n_images; k++) {
                ids[n++] = VSTART;
                for (int64_t j = 0; j < tokens_of(grid + 3 * k, 1); j++)
                    ids[n++] = IMG;
                ids[n++] = VEND;
            }
    }
    return n;
}

/* Random pixel_values for the grids and image_grid_thw. */
static void make_pixels(const int64_t *grid, int n, fm_tensor *pv, fm_tensor *gt) {
    fm_shape ps = {2, {tokens_of(grid, n) * 4, 96}}, gs = {2, {n, 3}};
    CHECK_OK(fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL), NULL);
    CHECK_OK(fm_tensor_alloc(gt, FM_DTYPE_I64, &gs, NULL), NULL);
    if (pv->data) fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &seed);
    if (gt->data) memcpy(gt->data, grid, (size_t)n * 3 * sizeof *grid);
}

/* Logits of every prompt row: the tower's features, get_rope_index, one prefill. */
static fm_tensor prompt_logits(fm_model *m, const int64_t *ids, int64_t T, const fm_tensor *pv,
                               const fm_tensor *gt) {
    fm_tensor emb = {0}, logits = {0};
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3), next = 0;
    int32_t *sl = calloc((size_t)T, 4), *ps = malloc((size_t)T * 4);
    fm_kv_cache *c = NULL;
    fm_error e;
    for (int64_t i = 0; i < T; i++)
        ps[i] = (int32_t)i;
    if (m && pv) CHECK_OK(fm_model_vision_forward(m, pv, gt, NULL, &emb, &e), &e);
    if (m) CHECK_OK(fm_model_rope_index(m, ids, T, gt, pos3, &next, &e), &e);
    if (m) CHECK_OK(fm_kv_cache_new(m, 1, T, FM_DTYPE_F32, &c, &e), &e);
    fm_text_batch b = {.ids = ids,
                       .pos3 = pos3,
                       .slot = sl,
                       .pos = ps,
                       .n = (size_t)T,
                       .image_embeds = pv ? &emb : NULL,
                       .logit_rows = ps,
                       .n_logits = (size_t)T};
    if (c) CHECK_OK(fm_model_forward_text(m, c, &b, NULL, &logits, &e), &e);
    fm_kv_cache_free(c);
    fm_tensor_free(&emb);
    free(pos3), free(sl), free(ps);
    return logits;
}

/* The references' logits: tower features from vision25_ref64, decoder from text_ref64. */
static double *ref_logits(const char *dir, const int64_t *ids, int64_t T, const fm_tensor *pv,
                          const int64_t *grid, int n_images) {
    fm_v25ref_model vr;
    fm_tref_model tr;
    char why[256] = "";
    double *lg = malloc((size_t)(T * VOCAB) * sizeof *lg), *feat = NULL;
    float *f32 = NULL;
    int64_t k = tokens_of(grid, n_images);
    CHECK_MSG(fm_tref_load(dir, &tr, why, sizeof why) == 0, "text reference: %s", why);
    if (n_images) {
        CHECK_MSG(fm_v25ref_load(dir, &vr, why, sizeof why) == 0, "vision reference: %s", why);
        feat = malloc((size_t)(k * H) * sizeof *feat), f32 = malloc((size_t)(k * H) * 4);
        CHECK(feat && fm_v25ref_forward(&vr, grid, n_images, pv->data, feat) == 0);
        for (int64_t i = 0; f32 && i < k * H; i++)
            f32[i] = (float)feat[i];
        fm_v25ref_free(&vr);
    }
    CHECK(fm_tref_forward(&tr, ids, T, f32, grid, n_images, lg) == 0);
    fm_tref_free(&tr);
    free(feat), free(f32);
    return lg;
}

static double rel_ref(const fm_tensor *a, const double *ref) {
    double num = 0, den = 0;
    const float *x = a->data;
    for (uint64_t i = 0; x && i < fm_tensor_numel(a); i++)
        num += (x[i] - ref[i]) * (x[i] - ref[i]), den += ref[i] * ref[i];
    return x ? sqrt(num / den) : INFINITY;
}

static double rel(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    const float *x = a->data, *y = b->data;
    for (uint64_t i = 0; x && y && i < fm_tensor_numel(a); i++)
        num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
    return x && y ? sqrt(num / den) : INFINITY;
}

/* ---- positions --------------------------------------------------------------------------------
 */
static void test_rope_index(void) {
    fm_qfix q = fixture(FM_DTYPE_F32, false);
    char *dir = write_fixture(&q, "rope");
    fm_model *m = load(dir, NULL);
    fm_tref_model ref;
    char why[256];
    CHECK_MSG(fm_tref_load(dir, &ref, why, sizeof why) == 0, "reference: %s", why);
    /* a still image, a three-frame one (every frame at the same temporal position in
     * Qwen2.5-VL, so the text after it continues at next + max(h, w) / 2, not next + 3), a tall
     * one */
    const int64_t grid[] = {1, 4, 6, 3, 2, 4, 1, 8, 2};
    int64_t ids[256], T = make_prompt(ids, 8, grid, 3), pos[3 * 256], want[3 * 256], next = 0;
    fm_tensor gt = {FM_DTYPE_I64, {2, {3, 3}}, (void *)grid, sizeof grid, NULL};
    fm_error e;
    if (m && ref.l) {
        CHECK_OK(fm_model_rope_index(m, ids, T, &gt, pos, &next, &e), &e);
        fm_tref_positions(&ref, ids, T, grid, 3, want);
        CHECK_MSG(!memcmp(pos, want, (size_t)(3 * T) * sizeof *pos),
                  "positions differ from the reference's");
        int64_t mx = 0, first = -1;
        for (int64_t i = 0; i < 3 * T; i++)
            mx = want[i] > mx ? want[i] : mx;
        CHECK_EQ_INT(mx + 1, next);
        for (int64_t i = 0, img = 0; i < T && first < 0; i++) /* the second image's first token */
            if (ids[i] == IMG && img++ == 6) first = i;
        for (int64_t k = 0; first >= 0 && k < 6; k++) /* 3 frames of 1x2 cells */
            CHECK_MSG(pos[first + k] == pos[first] && pos[T + first + k] == pos[T + first] &&
                          pos[2 * T + first + k] == pos[2 * T + first] + k % 2,
                      "token %lld of the 3-frame image at (%lld, %lld, %lld)", (long long)k,
                      (long long)pos[first + k], (long long)pos[T + first + k],
                      (long long)pos[2 * T + first + k]);
        /* the vision_end after it: next + max(1, 1, 2) */
        CHECK(first >= 0 && pos[first + 6] == pos[first] + 2);
    }
    fm_tref_free(&ref);
    fm_model_free(m);
    free(dir);
}

/* ---- prompt logits for every fusion combination ---------------------------------------------- */
static const char *const combos[] = {
    "{}",
    "{\"patch_embeddings\": true}",
    "{\"qkv\": true}",
    "{\"gate_up\": true}",
    "{\"patch_embeddings\": true, \"qkv\": true}",
    "{\"patch_embeddings\": true, \"gate_up\": true}",
    "{\"qkv\": true, \"gate_up\": true}",
    "{\"patch_embeddings\": true, \"qkv\": true, \"gate_up\": true}"};

static void check_logits(const char *dir, const int64_t *grid, int n_images, const char *what) {
    int64_t ids[512], T = make_prompt(ids, 9, grid, n_images);
    fm_tensor pv = {0}, gt = {0};
    if (n_images) make_pixels(grid, n_images, &pv, &gt);
    double *want = ref_logits(dir, ids, T, n_images ? &pv : NULL, grid, n_images);
    fm_tensor plain = {0};
    for (size_t c = 0; c < sizeof combos / sizeof *combos; c++) {
        fm_model *m = load(dir, combos[c]);
        fm_tensor lg = prompt_logits(m, ids, T, n_images ? &pv : NULL, n_images ? &gt : NULL);
        double er = rel_ref(&lg, want);
        worst = fmax(worst, er);
        CHECK_MSG(er <= 1e-5, "%s, %s: logits rel-L2 %.3g vs float64 (want <= 1e-5)", what,
                  combos[c], er);
        if (c == 0)
            plain = lg;
        else {
            CHECK_MSG(rel(&lg, &plain) <= 1e-5, "%s, %s: fused vs unfused logits rel-L2 %.3g", what,
                      combos[c], rel(&lg, &plain));
            fm_tensor_free(&lg);
        }
        fm_model_free(m);
    }
    fm_tensor_free(&plain), fm_tensor_free(&pv), fm_tensor_free(&gt);
    free(want);
}

static void test_logits_vs_ref64(void) {
    fm_qfix q = fixture(FM_DTYPE_F32, false);
    char *dir = write_fixture(&q, "f32");
    const int64_t one[] = {1, 8, 12}, two[] = {1, 4, 6, 1, 6, 10};
    check_logits(dir, NULL, 0, "text only");
    check_logits(dir, one, 1, "one image 1x8x12");
    check_logits(dir, two, 2, "two images 1x4x6 + 1x6x10");
    free(dir);
    q = fixture(FM_DTYPE_BF16, true);
    dir = write_fixture(&q, "bf16");
    check_logits(dir, two, 2, "bf16 weights, tied lm_head, two images");
    free(dir);
}

/* ---- greedy continuation with an image --------------------------------------------------------
 */
static int64_t argmax(const double *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        b = x[i] > x[b] ? i : b;
    return b;
}

static void test_greedy_with_image(void) {
    fm_qfix q = fixture(FM_DTYPE_F32, false);
    q.scale = 0.2f; /* logits far enough apart that argmax is not a rounding question */
    char *dir = write_fixture(&q, "greedy");
    fm_model *m = load(dir, "{\"patch_embeddings\": true, \"qkv\": true, \"gate_up\": true}");
    const int64_t grid[] = {1, 6, 10};
    int64_t ids[256], T = make_prompt(ids, 7, grid, 1);
    fm_tensor pv = {0}, gt = {0};
    make_pixels(grid, 1, &pv, &gt);
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = 8;
    fm_generate_result r = {0};
    fm_error e;
    if (m) CHECK_OK(fm_generate(m, ids, (size_t)T, &pv, &gt, &go, &r, &e), &e);
    CHECK_EQ_INT(8, (long long)r.n_tokens);
    for (size_t k = 0; k < r.n_tokens && k < 8; k++) { /* the reference recomputes it all */
        double *lg = ref_logits(dir, ids, T + (int64_t)k, &pv, grid, 1);
        int64_t best = argmax(lg + (T + (int64_t)k - 1) * VOCAB, VOCAB);
        CHECK_MSG(r.tokens[k] == best, "token %zu: generated %d, reference %lld", k, r.tokens[k],
                  (long long)best);
        ids[T + (int64_t)k] = best;
        free(lg);
    }
    fm_generate_result_free(&r);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_model_free(m);
    free(dir);
}

/* ---- saves ------------------------------------------------------------------------------------
 */
/* The runtime name of a hub key (the two transformers renamings, written out). */
static void runtime_name(const char *hub, char *out, size_t n) {
    if (!strncmp(hub, "visual.", 7))
        snprintf(out, n, "model.%s", hub);
    else if (!strncmp(hub, "model.", 6))
        snprintf(out, n, "model.language_model.%s", hub + 6);
    else
        snprintf(out, n, "%s", hub);
}

/* Every tensor of hub checkpoint a is in b under its runtime name with the same dtype, shape
 * and bytes, and b has no other. */
static bool same_tensors(const char *a, const char *b) {
    fm_checkpoint *ca = NULL, *cb = NULL;
    bool same = fm_checkpoint_open(a, &ca, NULL) == FM_OK &&
                fm_checkpoint_open(b, &cb, NULL) == FM_OK &&
                fm_checkpoint_count(ca) == fm_checkpoint_count(cb);
    for (size_t i = 0; same && i < fm_checkpoint_count(ca); i++) {
        char name[256];
        runtime_name(fm_checkpoint_entry_at(ca, i)->name, name, sizeof name);
        long j = fm_checkpoint_find(cb, name);
        fm_tensor x = {0}, y = {0};
        same = j >= 0 && fm_checkpoint_tensor(ca, i, &x, NULL) == FM_OK &&
               fm_checkpoint_tensor(cb, (size_t)j, &y, NULL) == FM_OK && x.dtype == y.dtype &&
               fm_shape_equal(&x.shape, &y.shape) && x.nbytes == y.nbytes &&
               !memcmp(x.data, y.data, (size_t)x.nbytes);
        if (!same) fprintf(stderr, "  %s differs\n", fm_checkpoint_entry_at(ca, i)->name);
        fm_tensor_free(&x), fm_tensor_free(&y);
    }
    fm_checkpoint_close(ca), fm_checkpoint_close(cb);
    return same;
}

static const char *const all3 = "{\"patch_embeddings\": true, \"qkv\": true, \"gate_up\": true}";

static void check_saves(fm_dtype dt, uint64_t shard, const char *tag) {
    fm_qfix q = fixture(dt, dt == FM_DTYPE_BF16);
    q.max_shard = shard;
    char *src = write_fixture(&q, tag), *orig = fm_test_join(tmp, "orig"),
         *rt = fm_test_join(tmp, "rt"), *back = fm_test_join(tmp, "back");
    const char *skip[] = {"config.json", NULL};
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = all3, o.strict = true;
    fm_model *fused = NULL, *plain = load(src, "{}");
    fm_load_report rep;
    fm_error e;
    CHECK_OK(fm_from_pretrained(src, &o, &fused, &rep, &e), &e);
    /* patch embed, 2 vision MLPs, 2 x (attention, MLP) of the decoder */
    CHECK_EQ_INT(1 + 2 + 2 * 2, (long long)rep.n_fused);
    fm_load_report_free(&rep);
    if (fused) CHECK_OK(fm_save_pretrained(fused, orig, NULL, &e), &e);
    CHECK_MSG(fm_test_same_dir(src, orig, skip), "%s: original-format save is the source", tag);
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    if (fused) CHECK_OK(fm_save_pretrained(fused, rt, &so, &e), &e);
    fm_checkpoint *ck = NULL;
    CHECK_OK(fm_checkpoint_open(rt, &ck, &e), &e);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.blocks.1.mlp.gate_up_proj.bias") >= 0);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.patch_embed.linear_proj.weight") >= 0);
    fm_checkpoint_close(ck);
    fm_model *rf = load(rt, NULL), *ru = load(rt, "{}"); /* runtime layout: fused and unfused */
    const int64_t grid[] = {1, 6, 10};
    int64_t ids[256], T = make_prompt(ids, 6, grid, 1);
    fm_tensor pv = {0}, gt = {0};
    make_pixels(grid, 1, &pv, &gt);
    fm_tensor lp = prompt_logits(plain, ids, T, &pv, &gt), l1 = prompt_logits(rf, ids, T, &pv, &gt),
              l2 = prompt_logits(ru, ids, T, &pv, &gt);
    CHECK_MSG(rel(&l1, &lp) <= 1e-5 && rel(&l2, &lp) <= 1e-5,
              "%s: runtime-format save reloaded fused %.3g / unfused %.3g", tag, rel(&l1, &lp),
              rel(&l2, &lp));
    /* the unfused model saves the layout it was loaded from, byte for byte; in its runtime
     * format it holds the source's tensors under the runtime names */
    if (ru) CHECK_OK(fm_save_pretrained(ru, back, NULL, &e), &e);
    CHECK_MSG(fm_test_same_dir(rt, back, skip), "%s: runtime layout -> unfused -> saved", tag);
    fm_test_rmtree(back);
    if (ru) CHECK_OK(fm_save_pretrained(ru, back, &so, &e), &e);
    CHECK_MSG(same_tensors(src, back), "%s: unfused runtime format = the source's tensors", tag);
    fm_tensor_free(&lp), fm_tensor_free(&l1), fm_tensor_free(&l2);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_model_free(fused), fm_model_free(plain), fm_model_free(rf), fm_model_free(ru);
    fm_test_rmtree(orig), fm_test_rmtree(rt), fm_test_rmtree(back), fm_test_rmtree(src);
    free(src), free(orig), free(rt), free(back);
}

static void test_save_round_trips(void) {
    check_saves(FM_DTYPE_F32, 0, "save-f32");
    check_saves(FM_DTYPE_BF16, 0, "save-bf16");
    check_saves(FM_DTYPE_F32, 60000, "save-f32-sharded");
    check_saves(FM_DTYPE_BF16, 30000, "save-bf16-sharded");
}

/* ---- config layouts ---------------------------------------------------------------------------
 */
/* The hub config rewritten as a v5 re-save would write it: text keys in text_config, RoPE in
 * text_config.rope_parameters (theta inside), tie flag at both levels. Same logits. */
static void test_v5_layout(void) {
    fm_qfix q = fixture(FM_DTYPE_F32, true);
    char *flat = write_fixture(&q, "flat"), *v5 = write_fixture(&q, "v5");
    char *path = fm_test_join(v5, "config.json");
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je), *tc = json_object();
    static const char *const keys[] = {
        "hidden_size",         "intermediate_size", "num_attention_heads", "num_hidden_layers",
        "num_key_value_heads", "rms_norm_eps",      "vocab_size"};
    for (size_t i = 0; c && i < sizeof keys / sizeof *keys; i++) {
        json_object_set(tc, keys[i], json_object_get(c, keys[i]));
        json_object_del(c, keys[i]);
    }
    json_object_del(c, "rope_scaling"), json_object_del(c, "rope_theta");
    json_object_set_new(tc, "rope_parameters",
                        json_pack("{s:s,s:[iii],s:f}", "rope_type", "default", "mrope_section", 2,
                                  3, 3, "rope_theta", 1e6));
    json_object_set_new(tc, "tie_word_embeddings", json_true());
    json_object_set_new(c, "text_config", tc);
    CHECK(c && json_dump_file(c, path, JSON_INDENT(2)) == 0);
    json_decref(c);
    const int64_t grid[] = {1, 4, 6};
    int64_t ids[128], T = make_prompt(ids, 6, grid, 1);
    fm_tensor pv = {0}, gt = {0};
    make_pixels(grid, 1, &pv, &gt);
    fm_model *a = load(flat, NULL), *b = load(v5, NULL);
    fm_tensor la = prompt_logits(a, ids, T, &pv, &gt), lb = prompt_logits(b, ids, T, &pv, &gt);
    CHECK_MSG(la.data && lb.data && !memcmp(la.data, lb.data, la.nbytes),
              "v5 layout logits differ from the hub layout's (rel-L2 %.3g)", rel(&lb, &la));
    double *want = ref_logits(v5, ids, T, &pv, grid, 1);
    CHECK_MSG(rel_ref(&lb, want) <= 1e-5, "v5 layout vs float64: %.3g", rel_ref(&lb, want));
    free(want);
    fm_tensor_free(&la), fm_tensor_free(&lb), fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_model_free(a), fm_model_free(b);
    free(flat), free(v5), free(path);
}

/* ---- refused architectures --------------------------------------------------------------------
 */
static void test_unknown_architectures(void) {
    static const char *const types[][2] = {{"qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration"},
                                           {"glm4v", "Glm4vForConditionalGeneration"}};
    for (int i = 0; i < 2; i++) {
        fm_qfix q = fixture(FM_DTYPE_F32, false);
        char *dir = write_fixture(&q, types[i][0]), *path = fm_test_join(dir, "config.json");
        json_error_t je;
        json_t *c = json_load_file(path, 0, &je);
        json_object_set_new(c, "model_type", json_string(types[i][0]));
        json_object_set_new(c, "architectures", json_pack("[s]", types[i][1]));
        CHECK(c && json_dump_file(c, path, JSON_INDENT(2)) == 0);
        json_decref(c);
        fm_load_options o;
        fm_load_options_init(&o);
        fm_model *m = NULL;
        fm_load_report rep;
        fm_error e;
        CHECK_STATUS(FM_ERR_UNSUPPORTED, fm_from_pretrained(dir, &o, &m, &rep, &e), &e);
        char want[96];
        snprintf(want, sizeof want, "unsupported model_type '%s'", types[i][0]);
        CHECK_CONTAINS(e.msg, want);
        CHECK_CONTAINS(e.msg, "qwen2_vl");
        CHECK_CONTAINS(e.msg, "qwen2_5_vl");
        CHECK(m == NULL && rep.n_fused == 0);
        fm_load_report_free(&rep);
        free(dir), free(path);
    }
    size_t n = 0;
    const char *const *t = fm_model_types(&n);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += !strcmp(t[i], "qwen2_5_vl");
    CHECK_EQ_INT(1, found);
}

int main(void) {
    tmp = fm_test_tmpdir("qwen25");
    RUN(test_rope_index);
    RUN(test_logits_vs_ref64);
    RUN(test_greedy_with_image);
    RUN(test_save_round_trips);
    RUN(test_v5_layout);
    RUN(test_unknown_architectures);
    fprintf(stderr, "max logits rel-L2 vs float64 references: %.3g\n", worst);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
