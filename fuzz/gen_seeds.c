/* Seed corpus generator: writes fuzz/corpus/<harness>/ (small valid and deliberately broken
 * inputs) with the library's own writer and the test fixtures. `make fuzz-seeds` runs it; the
 * output is committed, so this only runs when the seeds should change. Test code: libc malloc. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "file_util.h"
#include "fusemap/fusemap.h"
#include "fuzz_common.h"
#include "qwen_fixture.h"
#include "st_fixtures.h"

static const char *g_root; /* output root (borrowed from argv) */
static int g_count, g_bad;

static void put(const char *harness, const char *name, const void *data, size_t len) {
    char path[4096];
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
    q->patch_size = 2, q->temporal_patch_size = 1, q->merge_size = 1, q->in_channels = 1;
    q->text_layers = 1, q->text_hidden = 4, q->text_heads = 1, q->text_kv_heads = 1, q->text_inter = 4;
    q->vocab = 4, q->tie = true;
}

/* Every regular file of dir as an archive (after `prefix` bytes, e.g. the option byte). */
static uint8_t *pack_dir(const char *dir, const uint8_t *prefix, size_t np, size_t *len) {
    static const char *const names[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                        "model-00003-of-00003.safetensors"};
    uint8_t *buf = malloc(np ? np : 1);
    *len = np;
    if (!buf) return NULL;
    memcpy(buf, prefix, np);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[4096];
        size_t fl = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *data = fm_test_read_file(path, &fl);
        if (!data) continue;
        fmz_archive_add(&buf, len, names[i], data, fl);
        free(data);
    }
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
static void model_seed(const fm_qfix *q, const char *name, uint8_t flags, bool also_checkpoint) {
    char *dir = write_qfix(q, "seed");
    if (!dir) return;
    size_t len = 0;
    uint8_t *a = pack_dir(dir, &flags, 1, &len);
    if (a) put("pretrained", name, a, len);
    if (a && also_checkpoint) put("checkpoint", name, a + 1, len - 1);
    /* the single-file weights are also a header seed */
    char path[4096];
    size_t fl = 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *st = q->max_shard ? NULL : fm_test_read_file(path, &fl);
    if (st) put("st_header", name, st, fl);
    free(st), free(a);
    fm_test_rmtree(dir), free(dir);
}

/* A model saved in the fused runtime layout (names the unfused path must defuse or refuse). */
static void runtime_seed(const fm_qfix *q, const char *name, uint8_t flags) {
    char *dir = write_qfix(q, "rt"), *out = fm_test_tmpdir("rtout");
    fm_model *m = NULL;
    fm_load_options lo;
    fm_save_pretrained_options so;
    fm_load_options_init(&lo);
    lo.fusion_config = "{\"patch_embeddings\": true}";
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/m", out ? out : "/nonexistent");
    if (dir && out && fm_from_pretrained(dir, &lo, &m, NULL, NULL) == FM_OK &&
        fm_save_pretrained(m, sub, &so, NULL) == FM_OK) {
        size_t len = 0;
        uint8_t *a = pack_dir(sub, &flags, 1, &len);
        if (a) put("pretrained", name, a, len);
        free(a);
    } else {
        fprintf(stderr, "gen_seeds: runtime seed %s failed\n", name), g_bad++;
    }
    fm_model_free(m);
    if (dir) fm_test_rmtree(dir);
    if (out) fm_test_rmtree(out);
    free(dir), free(out);
}

static void model_seeds(void) {
    fm_qfix q;
    tiny(&q);
    model_seed(&q, "tiny_f32", 0x00, true);
    q.dtype = FM_DTYPE_BF16;
    model_seed(&q, "tiny_bf16_cast_f32", 0x01, true);
    q.dtype = FM_DTYPE_F16, q.tie = false;
    model_seed(&q, "tiny_f16_untied_strict", 0x10, false);
    tiny(&q), q.v5_layout = true;
    model_seed(&q, "tiny_v5_fused_runtime_save", 0x20, false);
    tiny(&q), q.extra_config = "\"fusion_config\": {\"patch_embeddings\": true}";
    model_seed(&q, "tiny_stored_fusion", 0x04, false);
    tiny(&q), q.extra_config = "\"fusion_config\": {\"patch_embeddings\": false}";
    model_seed(&q, "tiny_stored_fusion_off_bf16", 0x4a, false);
    tiny(&q), q.max_shard = 1200;
    model_seed(&q, "tiny_sharded", 0x00, true);
    model_seed(&q, "tiny_sharded_strict_small_shards", 0x50, false);
    tiny(&q), q.max_shard = 3000, q.dtype = FM_DTYPE_BF16;
    model_seed(&q, "tiny_sharded_bf16_f16", 0x03, true);
    tiny(&q), q.hidden_act = "gelu_pytorch_tanh", q.temporal_patch_size = 2, q.merge_size = 2;
    model_seed(&q, "tiny_merge2_tanh", 0x80, false);
    tiny(&q);
    runtime_seed(&q, "tiny_runtime_layout", 0x00);
    runtime_seed(&q, "tiny_runtime_layout_fused", 0x0c);
    fm_qfix_init(&q), q.text_layers = 0, q.depth = 1, q.vocab = 8;
    model_seed(&q, "small_default_dims", 0x00, false);
}

#include "gen_seeds_inputs.inc"

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
    header_seeds();
    checkpoint_seeds();
    config_seeds();
    pattern_seeds();
    printf("gen_seeds: %d seeds written to %s%s\n", g_count, g_root, g_bad ? " (with errors)" : "");
    return g_bad ? 1 : 0;
}
