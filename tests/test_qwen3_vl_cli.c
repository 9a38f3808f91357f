/* Every command on a small random Qwen3-VL with a tokenizer, chat template and
 * preprocessor_config.json: inspect (classes, fused patch embedding with its bias, DeepStack
 * mergers), convert (byte-identical, runtime format with all three fusion families and back),
 * run (image_embeds and deepstack_embeds from an image and from pixel_values, equal to the
 * library), forward (logits equal to the library's), generate from an image (tokens equal to the
 * library's) and verify with every family. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/img_fixtures.h"
#include "support/qwen_fixture.h"

enum { VOCAB = 1280, IM_START = 1257, IM_END = 1258, VSTART = 1267, IMG = 1268, VEND = 1269 };
enum { D = 64, E = 48, K = 2 };
static char *tmp, *dir, *png, *pvfile;
static const char *cli;

/* Runs `fusemap ARGS` (stdout into *out, stderr into *errt, either may be NULL); exit code. */
static int fm(char **out, char **errt, const char *fmt, ...) {
    char args[8192], cmd[20000], of[4200], ef[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(of, sizeof of, "%s/stdout.txt", tmp);
    snprintf(ef, sizeof ef, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", cli, args, of, ef);
    int rc = system(cmd);
    char *o = fm_test_read_file(of, NULL), *x = fm_test_read_file(ef, NULL);
    if (out)
        *out = o;
    else
        free(o);
    if (errt)
        *errt = x;
    else
        free(x);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void write_file(const char *d, const char *name, const char *text) {
    char *p = fm_test_join(d, name);
    CHECK(fm_test_write_file(p, text, strlen(text)) == 0);
    free(p);
}

/* The test tokenizer plus Qwen's vision markers as special added tokens. */
static int write_tokenizer(const char *to) {
    json_error_t je;
    json_t *t = json_load_file("tests/data/tokenizer/pairs/tokenizer.json", 0, &je);
    if (!t) return -1;
    static const char *const names[3] = {"<|vision_start|>", "<|image_pad|>", "<|vision_end|>"};
    json_t *added = json_object_get(t, "added_tokens");
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", VSTART + i,
                                               "content", names[i], "single_word", 0, "lstrip", 0,
                                               "rstrip", 0, "normalized", 0, "special", 1));
    char *path = fm_test_join(to, "tokenizer.json");
    int rc = json_dump_file(t, path, JSON_COMPACT);
    json_decref(t);
    free(path);
    return rc;
}

/* A Qwen-style chat template (written for this test): images as vision_start, pad, vision_end. */
static const char *template_text =
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is "
    "string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% "
    "if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

static void setup(void) {
    tmp = fm_test_tmpdir("qwen3_vl_cli");
    dir = fm_test_join(tmp, "model");
    fm_qfix q;
    fm_qfix_init_qwen3(&q);
    q.depth = 3, q.embed_dim = D, q.num_heads = 4, q.mlp_ratio = 2, q.hidden_size = E;
    q.num_position_embeddings = 16, q.deepstack[0] = 1, q.deepstack[1] = 2, q.n_deepstack = K;
    q.text_layers = 2, q.text_hidden = E, q.text_heads = 4, q.text_kv_heads = 2,
    q.text_head_dim = 16, q.text_inter = 64, q.vocab = VOCAB, q.tie = true, q.scale = 0.15f,
    q.pos_scale = 0.5f;
    q.mrope[0] = 2, q.mrope[1] = 3, q.mrope[2] = 3;
    q.extra_config =
        "\"image_token_id\": 1268, \"vision_start_token_id\": 1267, \"vision_end_token_id\": 1269, "
        "\"video_token_id\": 1270, \"eos_token_id\": 1258";
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, &q, &e), &e);
    CHECK(write_tokenizer(dir) == 0);
    write_file(dir, "chat_template.jinja", template_text);
    /* limits that keep a 64 x 96 image as it is: a 4 x 6 grid of 16-pixel patches */
    write_file(dir, "preprocessor_config.json",
               "{\"image_processor_type\": \"Qwen2VLImageProcessorFast\", \"patch_size\": 16, "
               "\"merge_size\": 2, \"temporal_patch_size\": 2, \"image_mean\": [0.5, 0.5, 0.5], "
               "\"image_std\": [0.5, 0.5, 0.5], \"size\": {\"shortest_edge\": 4096, "
               "\"longest_edge\": 65536}}\n");
    uint8_t rgb[64 * 96 * 3];
    imgfx_fill_smooth(rgb, 96, 64, 3, 11);
    size_t len = 0;
    uint8_t *bytes = imgfx_png_encode(96, 64, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    png = fm_test_join(tmp, "img.png");
    CHECK(bytes && fm_test_write_file(png, bytes, len) == 0);
    free(bytes);
}

static fm_model *load(const char *fusion) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    return m;
}

/* The library's view of the image: preprocessing and vision features. */
static void library_features(fm_model *m, fm_tensor *pv, fm_tensor *gt, fm_vision_features *f) {
    fm_image img = {0};
    fm_error e;
    CHECK_OK(fm_image_load(png, &img, &e), &e);
    if (m && img.data) CHECK_OK(fm_model_preprocess_images(m, &img, 1, pv, gt, &e), &e);
    if (pv->data) CHECK_OK(fm_model_vision_features(m, pv, gt, NULL, f, &e), &e);
    fm_image_free(&img);
}

static fm_tensor read_tensor(const char *path, const char *name) {
    fm_st_file *f = NULL;
    fm_tensor t = {0};
    fm_error e;
    CHECK_OK(fm_st_open(path, &f, &e), &e);
    long i = f ? fm_st_find(f, name) : -1;
    CHECK_MSG(i >= 0, "%s has no tensor %s", path, name);
    if (i >= 0) CHECK_OK(fm_st_tensor(f, (size_t)i, &t, &e), &e);
    fm_st_close(f);
    return t;
}

static double max_diff(const fm_tensor *a, const fm_tensor *b) {
    if (!a->data || !b->data || !fm_shape_equal(&a->shape, &b->shape)) return INFINITY;
    double m = 0;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++)
        m = fmax(m, fabs((double)((float *)a->data)[i] - ((float *)b->data)[i]));
    return m;
}

static void test_inspect(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, NULL, "inspect %s --modules --fuse patch_embeddings", dir));
    CHECK_CONTAINS(out, "FusedQwen3VLVisionPatchEmbed [replaces Qwen3VLVisionPatchEmbed]");
    CHECK_CONTAINS(out, "model.visual.patch_embed.linear_proj");
    CHECK_CONTAINS(out, "weight [64, 1536]");
    CHECK_CONTAINS(out, "bias [64]");
    CHECK_CONTAINS(out, "model.visual.deepstack_merger_list.1");
    CHECK_CONTAINS(out, "Qwen3VLTextAttention");
    CHECK_CONTAINS(out, "q_norm");
    free(out);
    CHECK_EQ_INT(0, fm(&out, NULL, "inspect %s", dir));
    CHECK_CONTAINS(out, "qwen3_vl");
    free(out);
}

/* Every tensor of checkpoint a is in b under the same name with the same dtype, shape, bytes. */
static void check_same_tensors(const char *a, const char *b, const char *what) {
    fm_checkpoint *ca = NULL, *cb = NULL;
    fm_error e;
    CHECK_OK(fm_checkpoint_open(a, &ca, &e), &e);
    CHECK_OK(fm_checkpoint_open(b, &cb, &e), &e);
    size_t bad = 0;
    for (size_t i = 0; ca && cb && i < fm_checkpoint_count(ca); i++) {
        const fm_ckpt_entry *x = fm_checkpoint_entry_at(ca, i);
        long j = fm_checkpoint_find(cb, x->name);
        fm_tensor tx = {0}, ty = {0};
        if (j >= 0) {
            fm_checkpoint_tensor(ca, i, &tx, &e);
            fm_checkpoint_tensor(cb, (size_t)j, &ty, &e);
        }
        bool same = tx.data && ty.data && tx.dtype == ty.dtype &&
                    fm_shape_equal(&tx.shape, &ty.shape) && tx.nbytes == ty.nbytes &&
                    !memcmp(tx.data, ty.data, (size_t)tx.nbytes);
        if (!same && bad++ < 3) fprintf(stderr, "  %s: %s differs\n", what, x->name);
        fm_tensor_free(&tx), fm_tensor_free(&ty);
    }
    CHECK_MSG(ca && cb && bad == 0 && fm_checkpoint_count(ca) == fm_checkpoint_count(cb),
              "%s: %zu tensors differ (%zu vs %zu tensors)", what, bad,
              ca ? fm_checkpoint_count(ca) : 0, cb ? fm_checkpoint_count(cb) : 0);
    fm_checkpoint_close(ca), fm_checkpoint_close(cb);
}

static void test_convert(void) {
    char *a = fm_test_join(tmp, "c-same"), *rt = fm_test_join(tmp, "c-rt"),
         *back = fm_test_join(tmp, "c-back"), *unf = fm_test_join(tmp, "c-unf");
    char *f0 = fm_test_join(dir, "model.safetensors"), *f1 = fm_test_join(a, "model.safetensors"),
         *f2 = fm_test_join(rt, "model.safetensors"), *f3 = fm_test_join(back, "model.safetensors");
    CHECK_EQ_INT(0, fm(NULL, NULL, "convert %s %s", dir, a));
    CHECK_MSG(fm_test_same_file(f0, f1), "convert without options keeps the bytes");
    CHECK_EQ_INT(0, fm(NULL, NULL,
                       "convert %s %s --fuse patch_embeddings --fuse qkv --fuse gate_up "
                       "--save-runtime-format",
                       dir, rt));
    fm_checkpoint *ck = NULL;
    fm_error e;
    CHECK_OK(fm_checkpoint_open(rt, &ck, &e), &e);
    static const char *const keys[] = {"model.visual.patch_embed.linear_proj.weight",
                                       "model.visual.patch_embed.linear_proj.bias",
                                       "model.language_model.layers.1.self_attn.qkv_proj.weight",
                                       "model.language_model.layers.0.mlp.gate_up_proj.weight"};
    for (int i = 0; ck && i < 4; i++)
        CHECK_MSG(fm_checkpoint_find(ck, keys[i]) >= 0, "runtime format has %s", keys[i]);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.patch_embed.proj.bias") < 0);
    fm_checkpoint_close(ck);
    /* loaded unfused (Linear -> Conv3d, Chunk) and saved in its original format: its own bytes */
    CHECK_EQ_INT(0, fm(NULL, NULL, "convert %s %s --fusion-config '{}'", rt, back));
    CHECK_MSG(fm_test_same_file(f2, f3),
              "runtime format -> unfused -> original format: same bytes");
    /* unfused in the runtime format: Qwen3-VL's runtime names are the hub's, so the source's
     * tensors come back exactly */
    CHECK_EQ_INT(
        0, fm(NULL, NULL, "convert %s %s --fusion-config '{}' --save-runtime-format", rt, unf));
    check_same_tensors(dir, unf, "fused runtime format -> unfused runtime format");
    fm_test_rmtree(a), fm_test_rmtree(rt), fm_test_rmtree(back), fm_test_rmtree(unf);
    free(a), free(rt), free(back), free(unf), free(f0), free(f1), free(f2), free(f3);
}

static void test_run(void) {
    char *o1 = fm_test_join(tmp, "run-img.safetensors"),
         *o2 = fm_test_join(tmp, "run-pv.safetensors"), *errt = NULL;
    CHECK_EQ_INT(0,
                 fm(NULL, &errt, "run %s --image %s -o %s --fuse patch_embeddings", dir, png, o1));
    CHECK_CONTAINS(errt, "deepstack_embeds [2, 6, 48]");
    free(errt);
    fm_model *m = load(NULL);
    fm_tensor pv = {0}, gt = {0};
    fm_vision_features f = {{0}, {0}};
    library_features(m, &pv, &gt, &f);
    fm_tensor emb = read_tensor(o1, "image_embeds"), ds = read_tensor(o1, "deepstack_embeds");
    CHECK_MSG(max_diff(&emb, &f.image_embeds) <= 1e-5 && max_diff(&ds, &f.deepstack) <= 1e-5,
              "run --image (fused) vs library (unfused): max |diff| %.3g / %.3g",
              max_diff(&emb, &f.image_embeds), max_diff(&ds, &f.deepstack));
    fm_tensor_free(&emb), fm_tensor_free(&ds);
    /* the same pixel values from a file: the same bytes of output as the library */
    fm_st_item items[2] = {{"pixel_values", &pv}, {"image_grid_thw", &gt}};
    fm_st_write_options wo;
    fm_st_write_options_init(&wo);
    fm_error e;
    CHECK_OK(fm_st_write_file(pvfile, items, 2, &wo, &e), &e);
    CHECK_EQ_INT(0,
                 fm(NULL, NULL, "run %s --pixel-values %s -o %s -q --threads 1", dir, pvfile, o2));
    emb = read_tensor(o2, "image_embeds"), ds = read_tensor(o2, "deepstack_embeds");
    CHECK_MSG(max_diff(&emb, &f.image_embeds) <= 1e-6 && max_diff(&ds, &f.deepstack) <= 1e-6,
              "run --pixel-values vs library: max |diff| %.3g / %.3g",
              max_diff(&emb, &f.image_embeds), max_diff(&ds, &f.deepstack));
    fm_tensor_free(&emb), fm_tensor_free(&ds);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_vision_features_free(&f);
    fm_model_free(m);
    free(o1), free(o2);
}

/* forward --pixel-values: logits of every row, equal to the library's prefill. */
static void test_forward(void) {
    char *o = fm_test_join(tmp, "logits.safetensors"), ids_arg[512];
    int64_t ids[16] = {IM_START, 5, 77, VSTART, IMG, IMG, IMG, IMG, IMG, IMG, VEND, 9, 300};
    size_t n = 13, w = 0;
    for (size_t i = 0; i < n; i++)
        w += (size_t)snprintf(ids_arg + w, sizeof ids_arg - w, "%s%lld", i ? "," : "",
                              (long long)ids[i]);
    CHECK_EQ_INT(0, fm(NULL, NULL, "forward %s --input-ids %s --pixel-values %s -o %s -q", dir,
                       ids_arg, pvfile, o));
    fm_tensor lg = read_tensor(o, "logits"), want = {0};
    fm_model *m = load(NULL);
    fm_tensor pv = {0}, gt = {0};
    fm_vision_features f = {{0}, {0}};
    library_features(m, &pv, &gt, &f);
    int64_t pos3[48], next;
    int32_t sl[16] = {0}, ps[16], lr[16];
    for (size_t i = 0; i < n; i++)
        ps[i] = lr[i] = (int32_t)i;
    fm_kv_cache *c = NULL;
    fm_error e;
    if (m && f.image_embeds.data) {
        CHECK_OK(fm_model_rope_index(m, ids, (int64_t)n, &gt, pos3, &next, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, (int64_t)n, FM_DTYPE_F32, &c, &e), &e);
        fm_text_batch b = {.ids = ids,
                           .pos3 = pos3,
                           .slot = sl,
                           .pos = ps,
                           .n = n,
                           .image_embeds = &f.image_embeds,
                           .logit_rows = lr,
                           .n_logits = n,
                           .deepstack_embeds = &f.deepstack};
        CHECK_OK(fm_model_forward_text(m, c, &b, NULL, &want, &e), &e);
    }
    CHECK_MSG(max_diff(&lg, &want) <= 1e-5, "forward logits vs library: max |diff| %.3g",
              max_diff(&lg, &want));
    fm_kv_cache_free(c);
    fm_tensor_free(&lg), fm_tensor_free(&want), fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_vision_features_free(&f);
    fm_model_free(m);
    free(o);
}

/* generate --image: the same tokens as the library's generate on the same prompt. */
static void test_generate_image(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, NULL,
                       "generate %s --image %s --prompt 'What is it?' --max-new-tokens 6 --json -q "
                       "--fuse qkv --fuse gate_up",
                       dir, png));
    fm_model *m = load(NULL);
    fm_tokenizer *tok = NULL;
    fm_chat_template *t = NULL;
    fm_tensor pv = {0}, gt = {0};
    fm_vision_features f = {{0}, {0}};
    library_features(m, &pv, &gt, &f);
    fm_generate_result r = {0};
    fm_error e;
    int64_t *ids = NULL;
    size_t n = 0;
    const char *msgs = "[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": "
                       "\"text\", \"text\": \"What is it?\"}]}]";
    CHECK_OK(fm_tokenizer_open(dir, &tok, &e), &e);
    CHECK_OK(fm_chat_template_load(dir, &t, &e), &e);
    if (m && tok && t && gt.data)
        CHECK_OK(fm_model_encode_chat(m, tok, t, msgs, strlen(msgs), true, &gt, &ids, &n, &e), &e);
    size_t pads = 0;
    for (size_t i = 0; i < n; i++)
        pads += ids[i] == IMG;
    CHECK_EQ_INT(6, pads); /* a 4 x 6 grid: 6 image tokens */
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = 6;
    int32_t stop[1] = {IM_END};
    go.stop_ids = stop, go.n_stop = 1;
    if (n) CHECK_OK(fm_generate(m, ids, n, &pv, &gt, &go, &r, &e), &e);
    json_error_t je;
    json_t *j = out ? json_loads(out, 0, &je) : NULL, *toks = json_object_get(j, "tokens");
    CHECK_MSG(json_is_array(toks) && json_array_size(toks) == r.n_tokens && r.n_tokens > 0,
              "CLI: %s", out ? out : "(none)");
    for (size_t i = 0; json_is_array(toks) && i < r.n_tokens && i < json_array_size(toks); i++)
        CHECK_EQ_INT(r.tokens[i], json_integer_value(json_array_get(toks, i)));
    json_decref(j);
    fm_free(ids), free(out);
    fm_generate_result_free(&r);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_vision_features_free(&f);
    fm_chat_template_free(t), fm_tokenizer_free(tok), fm_model_free(m);
}

static void test_verify(void) {
    char *out = NULL;
    CHECK_EQ_INT(
        0, fm(&out, NULL, "verify %s --fuse patch_embeddings --fuse qkv --fuse gate_up", dir));
    CHECK_CONTAINS(out, "deepstack: fused vs unfused");
    CHECK_CONTAINS(out, "verify: OK");
    free(out);
}

int main(void) {
    cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    setup();
    pvfile = fm_test_join(tmp, "pixels.safetensors");
    RUN(test_inspect);
    RUN(test_convert);
    RUN(test_run);
    RUN(test_forward);
    RUN(test_generate_image);
    RUN(test_verify);
    fm_test_rmtree(tmp);
    free(tmp), free(dir), free(png), free(pvfile);
    TEST_END();
}
