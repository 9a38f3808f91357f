/* The weight-loading engine (src/loading/engine.c, groups.c): natural key order, the MoE
 * merge+concat / qkv chunk / renaming dummy of spec §12 items 11-12 (missing and unexpected
 * exactly as specified, values against naive references, revert == checkpoint), the Qwen2-VL
 * hub <-> runtime mapping with the Conv3d->Linear fusion (zero-copy both ways), casts, every
 * report entry (extra, missing, wrong shape, conversion error), and allocation failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/loading.h"
#include "fusemap/models.h"
#include "support/check.h"
#include "support/eng_fixtures.h"

static int quick(void) {
    return getenv("FM_TEST_QUICK") != NULL;
}

/* ---- small helpers ------------------------------------------------------------------------------
 */
typedef struct params {
    size_t n;
    fm_param_spec p[64];
    char names[64][96];
} params;

static void param_add(params *ps, const char *name, fm_dtype dt, int ndim, const int64_t *dims) {
    snprintf(ps->names[ps->n], sizeof ps->names[0], "%s", name);
    ps->p[ps->n] = (fm_param_spec){ps->names[ps->n], dt, eng_shape(ndim, dims)};
    ps->n++;
}

static long param_index(const params *ps, const char *name) {
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return (long)i;
    return -1;
}

static bool strv_has(char **v, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return true;
    return false;
}

static void add_renaming(fm_transform_list *l, const char *s, const char *t) {
    fm_transform *x = NULL;
    fm_error e;
    CHECK_OK(fm_transform_renaming_new(s, t, &x, &e), &e);
    if (x) fm_transform_list_append(l, x, &e);
}

static void add_converter(fm_transform_list *l, const char *const *s, size_t ns,
                          const char *const *t, size_t nt, const fm_op_desc *ops, size_t nops) {
    fm_transform *x = NULL;
    fm_error e;
    CHECK_OK(fm_transform_converter_new(s, ns, t, nt, ops, nops, &x, &e), &e);
    if (x) fm_transform_list_append(l, x, &e);
}

/* State dict of the loaded parameters (references), in definition order. */
static fm_named_tensor *state_of(const params *ps, const fm_tensor *out, size_t *n) {
    fm_named_tensor *v = calloc(ps->n + 1, sizeof *v);
    *n = 0;
    for (size_t i = 0; i < ps->n; i++) {
        if (!out[i].data) continue;
        v[*n].name = fm_strdup(ps->p[i].name);
        fm_tensor_ref(&v[(*n)++].tensor, &out[i]);
    }
    return v;
}

static void free_outs(fm_tensor *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        fm_tensor_free(&out[i]);
}

/* ---- natural key order --------------------------------------------------------------------------
 */
static void test_natural_key_order(void) {
    const char *want[] = {"a",   "a.01",  "a.1.x", "a.9",       "a.10",
                          "a.b", "a.b.c", "b",     "experts.2", "experts.10"};
    size_t n = sizeof want / sizeof want[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            int c = fm_natural_key_cmp(want[i], want[j]), e = i < j ? -1 : (i > j ? 1 : 0);
            CHECK_MSG((c > 0) - (c < 0) == e, "cmp(%s, %s) = %d, want %d", want[i], want[j], c, e);
        }
    CHECK_EQ_INT(
        0, fm_natural_key_cmp("x.007", "x.7")); /* equal as integers: a stable sort keeps order */
    CHECK(fm_natural_key_cmp("x.99999999999999999999999", "x.100000000000000000000000") < 0);
    CHECK(fm_natural_key_cmp("a.", "a") > 0);
}

/* ---- the MoE dummy (spec §12 items 11-12)
 * --------------------------------------------------------- */
enum { L = 2, E = 11, H = 4, I = 5, D = 3, V = 7 };

static const char *const kW1[2] = {"mlp.experts.*.w1.weight", "mlp.experts.*.w3.weight"};
static const char *const kGU[1] = {"mlp.experts.gate_up_proj"};
static const char *const kW2[1] = {"mlp.experts.*.w2.weight"};
static const char *const kDN[1] = {"mlp.experts.down_proj"};
static const fm_op_desc kMergeCat[2] = {{FM_OP_MERGE_MODULELIST, 0, 0, 0, {0, 0, 0}},
                                        {FM_OP_CONCATENATE, 1, 0, 0, {0, 0, 0}}};
static const fm_op_desc kChunk0 = {FM_OP_CHUNK, 0, 0, 0, {0, 0, 0}};

static void moe_transforms(fm_transform_list *l, bool generic_qkv) {
    add_renaming(l, ".block_sparse_moe.", ".mlp.");
    add_converter(l, kW1, 2, kGU, 1, kMergeCat, 2);
    add_converter(l, kW2, 1, kDN, 1, kMergeCat, 1);
    if (generic_qkv) {
        const char *s[1] = {"self_attn.qkv_proj.weight"};
        const char *t[3] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                            "self_attn.v_proj.weight"};
        add_converter(l, s, 1, t, 3, &kChunk0, 1);
    } else {
        const char *s[1] = {"model.layers.0.self_attn.qkv_proj.weight"};
        const char *t[3] = {"model.layers.0.self_attn.q_proj.weight",
                            "model.layers.0.self_attn.k_proj.weight",
                            "model.layers.0.self_attn.v_proj.weight"};
        add_converter(l, s, 1, t, 3, &kChunk0, 1);
    }
}

/* Checkpoint keys added in a shuffled order, so only the natural-key sort gives expert order. */
static void moe_checkpoint(eng_ckpt *c, uint64_t *st) {
    char name[128];
    int64_t ih[2] = {I, H}, hi[2] = {H, I}, eh[2] = {E, H}, qkv[2] = {3 * D, H}, vh[2] = {V, H};
    int order[E];
    for (int e = 0; e < E; e++)
        order[e] = e;
    for (int e = E - 1; e > 0; e--) {
        int j = (int)(eng_rand(st) % (uint64_t)(e + 1)), t = order[e];
        order[e] = order[j];
        order[j] = t;
    }
    for (int l = L - 1; l >= 0; l--) {
        for (int k = 0; k < E; k++) {
            int e = order[k];
            const char *w[3] = {"w3", "w1", "w2"};
            for (int j = 0; j < 3; j++) {
                fm_tensor t = eng_tensor(FM_DTYPE_F32, 2, j == 2 ? hi : ih, st);
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight",
                         l, e, w[j]);
                eng_ckpt_add(c, name, &t);
            }
        }
        fm_tensor g = eng_tensor(FM_DTYPE_F32, 2, eh, st), q = eng_tensor(FM_DTYPE_F32, 2, qkv, st);
        snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", l);
        eng_ckpt_add(c, name, &g);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.qkv_proj.weight", l);
        eng_ckpt_add(c, name, &q);
    }
    fm_tensor emb = eng_tensor(FM_DTYPE_F32, 2, vh, st);
    eng_ckpt_add(c, "model.embed_tokens.weight", &emb);
}

static void moe_params(params *ps, int layers) {
    char name[96];
    int64_t gu[3] = {E, 2 * I, H}, dn[3] = {E, H, I}, eh[2] = {E, H}, dh[2] = {D, H},
            vh[2] = {V, H};
    param_add(ps, "model.embed_tokens.weight", FM_DTYPE_F32, 2, vh);
    for (int l = 0; l < layers; l++) {
        const char *qkv[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj.weight", l, qkv[j]);
            param_add(ps, name, FM_DTYPE_F32, 2, dh);
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate.weight", l);
        param_add(ps, name, FM_DTYPE_F32, 2, eh);
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj", l);
        param_add(ps, name, FM_DTYPE_F32, 3, gu);
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_proj", l);
        param_add(ps, name, FM_DTYPE_F32, 3, dn);
    }
}

static const float *ck_f32(const eng_ckpt *c, const char *fmt, int l, int e) {
    char name[128];
    snprintf(name, sizeof name, fmt, l, e);
    const fm_tensor *t = eng_ckpt_find(c, name);
    return t ? t->data : NULL;
}

/* gate_up[e] = cat(w1_e, w3_e) on rows; down[e] = w2_e; q/k/v = row thirds of qkv. */
static void moe_check_values(const eng_ckpt *c, const params *ps, const fm_tensor *out,
                             int layers) {
    char name[128];
    int bad = 0;
    for (int l = 0; l < layers; l++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj", l);
        const float *gu = out[param_index(ps, name)].data;
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_proj", l);
        const float *dn = out[param_index(ps, name)].data;
        if (!gu || !dn) {
            CHECK_MSG(0, "layer %d experts not loaded", l);
            continue;
        }
        for (int e = 0; e < E; e++) {
            const float *w1 = ck_f32(c, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l,
                                     e),
                        *w3 = ck_f32(c, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l,
                                     e),
                        *w2 = ck_f32(c, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l,
                                     e);
            for (int r = 0; r < 2 * I; r++)
                for (int h = 0; h < H; h++)
                    bad += memcmp(&gu[(e * 2 * I + r) * H + h],
                                  r < I ? &w1[r * H + h] : &w3[(r - I) * H + h], 4) != 0;
            bad += memcmp(&dn[e * H * I], w2, sizeof(float) * H * I) != 0;
        }
        const float *qkv = ck_f32(c, "model.layers.%d.self_attn.qkv_proj.weight", l, 0);
        const char *n3[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj.weight", l, n3[j]);
            const fm_tensor *t = &out[param_index(ps, name)];
            if (l == 0 || layers == L)
                bad += !t->data || memcmp(t->data, qkv + j * D * H, sizeof(float) * D * H) != 0;
        }
    }
    CHECK_EQ_INT(0, bad);
}

static void test_moe_layer0_qkv(void) { /* §12 item 11 */
    uint64_t st = 101;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0}, fired = {0};
    moe_checkpoint(&c, &st);
    moe_params(&ps, L);
    moe_transforms(&tl, false);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[64];
    fm_load_report rep;
    fm_error e;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, &fired, &rep, &e), &e);
    CHECK_EQ_INT(3, rep.n_missing);
    for (size_t i = 0; i < rep.n_missing && i < 3; i++) {
        const char *q[3] = {"model.layers.1.self_attn.q_proj.weight",
                            "model.layers.1.self_attn.k_proj.weight",
                            "model.layers.1.self_attn.v_proj.weight"};
        CHECK_EQ_STR(q[i], rep.missing[i]); /* definition order */
    }
    CHECK_EQ_INT(1, rep.n_unexpected);
    if (rep.n_unexpected)
        CHECK_EQ_STR("model.layers.1.self_attn.qkv_proj.weight", rep.unexpected[0]);
    CHECK_EQ_INT(0, rep.n_mismatched);
    CHECK_EQ_INT(0, rep.n_conversion_errors);
    moe_check_values(&c, &ps, out, 1);
    /* the renamed router weight is the checkpoint tensor itself (zero-copy) */
    const fm_tensor *g = eng_ckpt_find(&c, "model.layers.1.block_sparse_moe.gate.weight");
    const fm_tensor *lg = &out[param_index(&ps, "model.layers.1.mlp.gate.weight")];
    CHECK(g && lg->data == g->data && lg->storage == g->storage);
    CHECK_EQ_INT(4, rep.n_fired);
    CHECK_EQ_INT(4, fired.count);
    for (size_t i = 0; i < fired.count && i < tl.count; i++) {
        CHECK_EQ_STR(fm_transform_describe(tl.items[i]), fm_transform_describe(fired.items[i]));
        CHECK_EQ_STR(fm_transform_describe(tl.items[i]), rep.fired[i]);
    }
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&fired);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

static void check_revert_equals_checkpoint(const eng_ckpt *c, const fm_named_tensor *rv,
                                           size_t nr) {
    CHECK_EQ_INT(c->n, nr);
    int bad = 0;
    for (size_t i = 0; i < nr; i++) {
        const fm_tensor *t = eng_ckpt_find(c, rv[i].name);
        if (!t || !eng_same_bytes(t, &rv[i].tensor)) {
            if (bad++ < 5)
                fprintf(stderr, "  reverted '%s' differs from the checkpoint\n", rv[i].name);
        }
    }
    CHECK_EQ_INT(0, bad);
}

static void test_moe_generic_roundtrip(void) { /* §12 item 12 */
    uint64_t st = 102;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0}, fired = {0};
    moe_checkpoint(&c, &st);
    moe_params(&ps, L);
    moe_transforms(&tl, true);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[64];
    fm_load_report rep;
    fm_error e;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, &fired, &rep, &e), &e);
    CHECK(rep.n_missing == 0 && rep.n_unexpected == 0 && rep.n_mismatched == 0 &&
          rep.n_conversion_errors == 0);
    moe_check_values(&c, &ps, out, L);
    size_t ns = 0, nr = 0;
    fm_named_tensor *state = state_of(&ps, out, &ns), *rv = NULL;
    CHECK_OK(fm_weights_revert(&fired, state, ns, &rv, &nr, &e), &e);
    check_revert_equals_checkpoint(&c, rv, nr);
    /* output order: first appearance while walking the runtime keys in natural order */
    if (nr > 2) CHECK_EQ_STR("model.embed_tokens.weight", rv[0].name);
    fm_named_tensors_free(rv, nr);
    fm_named_tensors_free(state, ns);
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&fired);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

/* A converter that claims a key with no parameter reports every target it would produce. */
static void test_claimed_key_without_parameter(void) {
    uint64_t st = 103;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0};
    moe_checkpoint(&c, &st);
    moe_params(&ps, 1); /* the model has one layer, the checkpoint two */
    moe_transforms(&tl, true);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[64];
    fm_load_report rep;
    fm_error e;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, NULL, &rep, &e), &e);
    CHECK_EQ_INT(0, rep.n_missing);
    const char *want[] = {
        "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.experts.gate_up_proj",
        "model.layers.1.mlp.experts.down_proj",   "model.layers.1.mlp.gate.weight"};
    CHECK_EQ_INT(6, rep.n_unexpected); /* deduplicated: 22 expert keys give one name each */
    for (size_t i = 0; i < 6; i++)
        CHECK_MSG(strv_has(rep.unexpected, rep.n_unexpected, want[i]), "%s", want[i]);
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

/* ---- Qwen2-VL: hub <-> runtime names with the patch-embedding fusion, zero-copy ----------------
 */
typedef struct qwen_case {
    eng_ckpt c;
    params ps;
    fm_transform_list tl;
} qwen_case;

static void qwen_setup(qwen_case *q, uint64_t *st, fm_dtype dt, bool fused) {
    memset(q, 0, sizeof *q);
    fm_error e;
    CHECK_OK(fm_conversion_mapping_get("Qwen2VLForConditionalGeneration", &q->tl, &e), &e);
    if (fused) {
        const char *s[1] = {"patch_embed\\.proj\\.weight$"},
                   *t[1] = {"patch_embed\\.linear_proj\\.weight$"};
        fm_op_desc op = {FM_OP_CONV3D_TO_LINEAR, 0, 0, 3, {2, 4, 4}};
        add_converter(&q->tl, s, 1, t, 1, &op, 1);
    }
    static const struct {
        const char *hub, *run;
        int nd;
        int64_t d[5];
    } k[] = {
        {"visual.patch_embed.proj.weight",
         "model.visual.patch_embed.proj.weight",
         5,
         {8, 3, 2, 4, 4}},
        {"visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight", 2, {24, 8}},
        {"visual.blocks.0.attn.qkv.bias", "model.visual.blocks.0.attn.qkv.bias", 1, {24}},
        {"model.layers.0.mlp.up_proj.weight",
         "model.language_model.layers.0.mlp.up_proj.weight",
         2,
         {16, 6}},
        {"model.embed_tokens.weight", "model.language_model.embed_tokens.weight", 2, {10, 6}},
        {"model.norm.weight", "model.language_model.norm.weight", 1, {6}},
        {"lm_head.weight", "lm_head.weight", 2, {10, 6}},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        uint64_t n = 1;
        for (int j = 0; j < k[i].nd; j++)
            n *= (uint64_t)k[i].d[j];
        total += n * fm_dtype_bits(dt) / 8;
    }
    fm_storage *map = eng_mapping(total, st); /* all tensors are views into one "file" */
    uint64_t off = 0;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        eng_ckpt_add_view(&q->c, k[i].hub, map, off, dt, k[i].nd, k[i].d);
        off += q->c.t[q->c.n - 1].nbytes;
        if (i == 0 && fused) {
            int64_t lin[2] = {8, 96};
            param_add(&q->ps, "model.visual.patch_embed.linear_proj.weight", dt, 2, lin);
        } else {
            param_add(&q->ps, k[i].run, dt, k[i].nd, k[i].d);
        }
    }
    fm_storage_release(map);
}

static void qwen_free(qwen_case *q) {
    eng_ckpt_free(&q->c);
    fm_transform_list_free(&q->tl);
}

static void test_qwen2_vl_hub_runtime_zero_copy(void) {
    uint64_t st = 104;
    qwen_case q;
    eng_unmaps = 0;
    fm_conversion_mapping_reset();
    qwen_setup(&q, &st, FM_DTYPE_BF16, true);
    fm_tensor_source src = eng_ckpt_source(&q.c);
    fm_tensor out[16];
    fm_transform_list fired = {0};
    fm_load_report rep;
    fm_error e;
    fm_weights_load_options o;
    fm_weights_load_options_init(&o);
    o.cast = FM_DTYPE_BF16; /* asked for, but equal to the stored dtype: still views */
    CHECK_OK(fm_weights_load(&q.tl, &src, q.ps.p, q.ps.n, &o, out, &fired, &rep, &e), &e);
    CHECK(rep.n_missing == 0 && rep.n_unexpected == 0 && rep.n_mismatched == 0);
    CHECK_EQ_INT(3, fired.count); /* both renamings and the fusion converter */
    for (size_t i = 0; i < q.ps.n; i++) {
        const fm_tensor *t = &q.c.t[i];
        CHECK_MSG(out[i].data == t->data && out[i].storage == t->storage &&
                      fm_tensor_is_mapped(&out[i]),
                  "%s was copied", q.ps.p[i].name);
        CHECK(fm_shape_equal(&out[i].shape, &q.ps.p[i].shape));
    }
    size_t ns = 0, nr = 0;
    fm_named_tensor *state = state_of(&q.ps, out, &ns), *rv = NULL;
    CHECK_OK(fm_weights_revert(&fired, state, ns, &rv, &nr, &e), &e);
    check_revert_equals_checkpoint(&q.c, rv, nr);
    for (size_t i = 0; i < nr; i++) { /* the reverse is zero-copy as well */
        const fm_tensor *t = eng_ckpt_find(&q.c, rv[i].name);
        CHECK(t && rv[i].tensor.data == t->data);
    }
    fm_named_tensors_free(rv, nr);
    fm_named_tensors_free(state, ns);
    free_outs(out, q.ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&fired);
    qwen_free(&q);
    CHECK_EQ_INT(1, eng_unmaps); /* the mapping lived exactly as long as its last view */
}

/* A key that renaming would turn into an unknown name, while the original is a parameter, is
 * loaded unrenamed (§6.2); renamed keys with no parameter are reported under the new name. */
static void test_rename_fallback_and_extra_key(void) {
    uint64_t st = 105;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0}, fired = {0};
    fm_error e;
    CHECK_OK(fm_conversion_mapping_get("Qwen2VLForConditionalGeneration", &tl, &e), &e);
    int64_t d[1] = {6};
    fm_tensor a = eng_tensor(FM_DTYPE_F32, 1, d, &st), b = eng_tensor(FM_DTYPE_F32, 1, d, &st),
              x = eng_tensor(FM_DTYPE_F32, 1, d, &st);
    eng_ckpt_add(&c, "model.norm.weight", &a);
    eng_ckpt_add(&c, "visual.norm.weight", &b);
    eng_ckpt_add(&c, "model.extra.weight", &x);
    param_add(&ps, "model.norm.weight", FM_DTYPE_F32, 1, d);
    param_add(&ps, "model.visual.norm.weight", FM_DTYPE_F32, 1, d);
    param_add(&ps, "model.language_model.never.weight", FM_DTYPE_F32, 1, d);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[4];
    fm_load_report rep;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, &fired, &rep, &e), &e);
    CHECK(out[0].data == c.t[0].data && out[1].data == c.t[1].data && out[2].data == NULL);
    CHECK_EQ_INT(1, rep.n_unexpected);
    if (rep.n_unexpected) CHECK_EQ_STR("model.language_model.extra.weight", rep.unexpected[0]);
    CHECK_EQ_INT(1, rep.n_missing);
    if (rep.n_missing) CHECK_EQ_STR("model.language_model.never.weight", rep.missing[0]);
    CHECK_EQ_INT(1, fired.count); /* only "^visual" led to a loaded key */
    if (fired.count)
        CHECK_EQ_STR("WeightRenaming(^visual -> model.visual)",
                     fm_transform_describe(fired.items[0]));
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&fired);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

/* Two checkpoint keys for one parameter: the first in natural order wins, the other is reported. */
static void test_duplicate_target(void) {
    uint64_t st = 106;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0};
    fm_error e;
    add_renaming(&tl, "^visual", "model.visual");
    int64_t d[1] = {3};
    fm_tensor a = eng_tensor(FM_DTYPE_F32, 1, d, &st), b = eng_tensor(FM_DTYPE_F32, 1, d, &st);
    eng_ckpt_add(&c, "visual.w", &a);
    eng_ckpt_add(&c, "model.visual.w", &b);
    param_add(&ps, "model.visual.w", FM_DTYPE_F32, 1, d);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[1];
    fm_load_report rep;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, 1, NULL, out, NULL, &rep, &e), &e);
    CHECK(out[0].data == c.t[1].data);
    CHECK(rep.n_unexpected == 1 && strcmp(rep.unexpected[0], "visual.w") == 0);
    free_outs(out, 1);
    fm_load_report_free(&rep);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

static void test_shape_mismatch_is_an_error(void) {
    uint64_t st = 107;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0}, fired = {0};
    fm_error e;
    add_renaming(&tl, "^visual", "model.visual");
    int64_t d5[1] = {5}, d6[1] = {6};
    fm_tensor a = eng_tensor(FM_DTYPE_F32, 1, d5, &st), b = eng_tensor(FM_DTYPE_F32, 1, d6, &st);
    eng_ckpt_add(&c, "visual.a", &a);
    eng_ckpt_add(&c, "visual.b", &b);
    param_add(&ps, "model.visual.a", FM_DTYPE_F32, 1, d6);
    param_add(&ps, "model.visual.b", FM_DTYPE_F32, 1, d6);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[2];
    fm_load_report rep;
    CHECK_STATUS(FM_ERR_SHAPE, fm_weights_load(&tl, &src, ps.p, 2, NULL, out, &fired, &rep, &e),
                 &e);
    CHECK_CONTAINS(e.msg, "model.visual.a");
    CHECK_CONTAINS(e.msg, "model expects [6]");
    CHECK_CONTAINS(e.msg, "checkpoint has [5]");
    CHECK_EQ_INT(1, rep.n_mismatched);
    if (rep.n_mismatched) {
        CHECK_EQ_STR("model.visual.a", rep.mismatched[0].key);
        CHECK_EQ_INT(5, rep.mismatched[0].checkpoint_shape.dims[0]);
        CHECK_EQ_INT(6, rep.mismatched[0].model_shape.dims[0]);
    }
    CHECK_EQ_INT(0, rep.n_missing); /* mismatched keys are reported as such, not as missing */
    CHECK(out[0].data == NULL && out[1].data == NULL); /* everything released */
    CHECK(fired.count == 0 && fired.items == NULL);
    fm_load_report_free(&rep);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

static void test_conversion_error_captured(void) {
    uint64_t st = 108;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0};
    fm_error e;
    const char *s[1] = {"attn.qkv.weight"},
               *t[3] = {"attn.q.weight", "attn.k.weight", "attn.v.weight"};
    add_converter(&tl, s, 1, t, 3, &kChunk0, 1);
    int64_t d4[2] = {4, 2}, d1[2] = {1, 2}, dn[1] = {3};
    fm_tensor a = eng_tensor(FM_DTYPE_F32, 2, d4, &st), n = eng_tensor(FM_DTYPE_F32, 1, dn, &st);
    eng_ckpt_add(&c, "blk.attn.qkv.weight", &a); /* 4 rows: ceil(4/3) = 2 gives 2 pieces, not 3 */
    eng_ckpt_add(&c, "blk.norm", &n);
    param_add(&ps, "blk.attn.q.weight", FM_DTYPE_F32, 2, d1);
    param_add(&ps, "blk.attn.k.weight", FM_DTYPE_F32, 2, d1);
    param_add(&ps, "blk.attn.v.weight", FM_DTYPE_F32, 2, d1);
    param_add(&ps, "blk.norm", FM_DTYPE_F32, 1, dn);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[4];
    fm_load_report rep;
    CHECK_STATUS(FM_ERR_CONVERSION,
                 fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, NULL, &rep, &e), &e);
    CHECK_EQ_INT(1, rep.n_conversion_errors);
    if (rep.n_conversion_errors) {
        CHECK_EQ_STR("blk.attn.q.weight", rep.conversion_errors[0].key);
        CHECK_CONTAINS(rep.conversion_errors[0].message,
                       "Chunk on tensors destined for 'blk.attn.q.weight'");
        CHECK_CONTAINS(rep.conversion_errors[0].message, "'blk.attn.qkv.weight' [4, 2]");
        CHECK_CONTAINS(rep.conversion_errors[0].message, "2 pieces for 3 targets");
    }
    CHECK_CONTAINS(e.msg, "Chunk");
    CHECK_EQ_INT(3, rep.n_missing); /* the group is skipped, its targets stay missing */
    for (size_t i = 0; i < ps.n; i++)
        CHECK(out[i].data == NULL);
    fm_load_report_free(&rep);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

/* Casting: float tensors end in the parameter's dtype, integers are kept, joins convert once. */
static void test_cast(void) {
    uint64_t st = 109;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0};
    fm_error e;
    const char *s[2] = {"experts.*.w1", "experts.*.w3"}, *t[1] = {"experts.gate_up"};
    add_converter(&tl, s, 2, t, 1, kMergeCat, 2);
    int64_t d2[2] = {2, 3}, di[1] = {4}, gu[3] = {2, 4, 3};
    const char *names[4] = {"m.experts.0.w1", "m.experts.0.w3", "m.experts.1.w1", "m.experts.1.w3"};
    for (int i = 0; i < 4; i++) {
        fm_tensor x = eng_tensor(FM_DTYPE_BF16, 2, d2, &st);
        for (int j = 0; j < 6; j++)
            ((uint16_t *)x.data)[j] &= 0xBFFF; /* finite */
        eng_ckpt_add(&c, names[i], &x);
    }
    fm_tensor p = eng_tensor(FM_DTYPE_BF16, 2, d2, &st), ids = eng_tensor(FM_DTYPE_I64, 1, di, &st);
    for (int j = 0; j < 6; j++)
        ((uint16_t *)p.data)[j] &= 0xBFFF;
    eng_ckpt_add(&c, "m.plain", &p);
    eng_ckpt_add(&c, "m.ids", &ids);
    param_add(&ps, "m.experts.gate_up", FM_DTYPE_F32, 3, gu);
    param_add(&ps, "m.plain", FM_DTYPE_F32, 2, d2);
    param_add(&ps, "m.ids", FM_DTYPE_I64, 1, di);
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[3];
    fm_load_report rep;
    fm_weights_load_options o;
    fm_weights_load_options_init(&o);
    o.cast = FM_DTYPE_F32;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, &o, out, NULL, &rep, &e), &e);
    CHECK(out[0].dtype == FM_DTYPE_F32 && out[1].dtype == FM_DTYPE_F32 &&
          out[2].dtype == FM_DTYPE_I64);
    CHECK(out[2].data == c.t[5].data); /* integers stay views */
    int bad = 0;
    const uint32_t *g = out[0].data, *pl = out[1].data;
    for (int e2 = 0; e2 < 2; e2++)
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < 3; h++) {
                const uint16_t *w = c.t[e2 * 2 + (r >= 2)].data;
                bad += g[(e2 * 4 + r) * 3 + h] != (uint32_t)w[(r % 2) * 3 + h] << 16;
            }
    for (int j = 0; j < 6; j++)
        bad += pl[j] != (uint32_t)((uint16_t *)c.t[4].data)[j] << 16;
    CHECK_EQ_INT(0, bad);
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

/* Group references in converter targets: load and revert both rebuild the full names. */
static void test_group_reference_converter_roundtrip(void) {
    uint64_t st = 110;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0}, fired = {0};
    fm_error e;
    const char *s[1] = {"layers\\.(\\d+)\\.qkv$"}, *t[2] = {"layers.\\1.q", "layers.\\1.k"};
    add_converter(&tl, s, 1, t, 2, &kChunk0, 1);
    int64_t d[2] = {4, 3}, h[2] = {2, 3};
    for (int l = 0; l < 3; l++) {
        char name[64];
        fm_tensor x = eng_tensor(FM_DTYPE_F16, 2, d, &st);
        snprintf(name, sizeof name, "m.layers.%d.qkv", l);
        eng_ckpt_add(&c, name, &x);
        snprintf(name, sizeof name, "m.layers.%d.q", l);
        param_add(&ps, name, FM_DTYPE_F16, 2, h);
        snprintf(name, sizeof name, "m.layers.%d.k", l);
        param_add(&ps, name, FM_DTYPE_F16, 2, h);
    }
    fm_tensor_source src = eng_ckpt_source(&c);
    fm_tensor out[6];
    fm_load_report rep;
    CHECK_OK(fm_weights_load(&tl, &src, ps.p, ps.n, NULL, out, &fired, &rep, &e), &e);
    CHECK(rep.n_missing == 0 && rep.n_unexpected == 0);
    for (int l = 0; l < 3; l++) { /* q = rows 0-1 of layer l's qkv (a view), k = rows 2-3 */
        CHECK(out[2 * l].data == c.t[l].data);
        CHECK(out[2 * l + 1].data == (uint8_t *)c.t[l].data + 12);
    }
    size_t ns = 0, nr = 0;
    fm_named_tensor *state = state_of(&ps, out, &ns), *rv = NULL;
    CHECK_OK(fm_weights_revert(&fired, state, ns, &rv, &nr, &e), &e);
    check_revert_equals_checkpoint(&c, rv, nr);
    fm_named_tensors_free(rv, nr);
    fm_named_tensors_free(state, ns);
    free_outs(out, ps.n);
    fm_load_report_free(&rep);
    fm_transform_list_free(&fired);
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

static void test_revert_errors_and_passthrough(void) {
    uint64_t st = 111;
    int64_t d[1] = {2};
    fm_named_tensor s[2] = {{"model.visual.a", eng_tensor(FM_DTYPE_F32, 1, d, &st)},
                            {"visual.a", eng_tensor(FM_DTYPE_F32, 1, d, &st)}};
    fm_transform_list tl = {0};
    fm_named_tensor *rv = NULL;
    size_t nr = 0;
    fm_error e;
    CHECK_OK(fm_weights_revert(NULL, s, 2, &rv, &nr, &e), &e); /* nothing fired: names unchanged */
    CHECK(nr == 2 && strcmp(rv[0].name, "model.visual.a") == 0 &&
          rv[0].tensor.data == s[0].tensor.data);
    fm_named_tensors_free(rv, nr);
    add_renaming(&tl, "^visual", "model.visual");
    CHECK_STATUS(FM_ERR_CONVERSION, fm_weights_revert(&tl, s, 2, &rv, &nr, &e), &e);
    CHECK_CONTAINS(e.msg, "'visual.a'");
    CHECK(rv == NULL && nr == 0);
    fm_tensor_free(&s[0].tensor);
    fm_tensor_free(&s[1].tensor);
    fm_transform_list_free(&tl);
}

/* Every allocation failure inside load and revert is FM_ERR_NOMEM, leaves no output and leaks
 * nothing (the ASan build checks the last part). */
static void test_alloc_failures(void) {
    uint64_t st = 112;
    eng_ckpt c = {0};
    params ps = {0};
    fm_transform_list tl = {0};
    moe_checkpoint(&c, &st);
    moe_params(&ps, L);
    moe_transforms(&tl, true);
    fm_tensor_source src = eng_ckpt_source(&c);
    int failures = 0, done = 0, bad = 0;
    uint64_t step = quick() ? 7 : 1;
    for (uint64_t k = 1; k < 100000 && !done; k += step) {
        fm_tensor out[64];
        fm_transform_list fired = {0};
        fm_load_report rep;
        fm_named_tensor *state = NULL, *rv = NULL;
        size_t ns = 0, nr = 0;
        fm_error e;
        fm_weights_load_options o;
        fm_weights_load_options_init(&o);
        o.cast = FM_DTYPE_F64;
        for (size_t i = 0; i < ps.n; i++)
            ps.p[i].dtype = FM_DTYPE_F64;
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status s1 = fm_weights_load(&tl, &src, ps.p, ps.n, &o, out, &fired, &rep, &e),
                  s2 = FM_OK;
        if (s1 ==
            FM_OK) { /* the load made fewer than k allocations: fail the revert's (k - n)-th */
            uint64_t n_load = fm_fault_count(FM_FAULT_ALLOC);
            fm_fault_set(FM_FAULT_ALLOC, 0);
            state = state_of(&ps, out, &ns);
            fm_fault_set(FM_FAULT_ALLOC, k - n_load);
            s2 = fm_weights_revert(&fired, state, ns, &rv, &nr, &e);
        }
        done = s1 == FM_OK && s2 == FM_OK;
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (!done) {
            failures++;
            fm_status s = s1 != FM_OK ? s1 : s2;
            if (s != FM_ERR_NOMEM && bad++ < 3)
                fprintf(stderr, "  k=%llu: %s (%s)\n", (unsigned long long)k, fm_status_name(s),
                        e.msg);
            if (s1 != FM_OK) {
                for (size_t i = 0; i < ps.n; i++)
                    bad += out[i].data != NULL;
                bad += rep.n_missing + rep.n_unexpected + fired.count != 0;
            } else {
                bad += rv != NULL || nr != 0;
            }
        }
        fm_named_tensors_free(rv, nr);
        fm_named_tensors_free(state, ns);
        if (s1 == FM_OK) free_outs(out, ps.n);
        fm_load_report_free(&rep);
        fm_transform_list_free(&fired);
    }
    for (size_t i = 0; i < ps.n; i++)
        ps.p[i].dtype = FM_DTYPE_F32;
    CHECK_EQ_INT(0, bad);
    CHECK(done && failures > (quick() ? 20 : 200));
    fm_transform_list_free(&tl);
    eng_ckpt_free(&c);
}

static void test_bad_arguments(void) {
    fm_error e;
    fm_load_report rep;
    fm_tensor out[2];
    params ps = {0};
    int64_t d[1] = {1};
    param_add(&ps, "a", FM_DTYPE_F32, 1, d);
    param_add(&ps, "a", FM_DTYPE_F32, 1, d);
    eng_ckpt c = {0};
    fm_tensor_source src = eng_ckpt_source(&c);
    CHECK_STATUS(FM_ERR_INVALID_ARG,
                 fm_weights_load(NULL, NULL, ps.p, 1, NULL, out, NULL, &rep, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG,
                 fm_weights_load(NULL, &src, ps.p, 2, NULL, out, NULL, &rep, &e), &e);
    CHECK_CONTAINS(e.msg, "listed twice");
    CHECK(rep.n_missing == 0 && rep.missing == NULL);
    CHECK_OK(fm_weights_load(NULL, &src, ps.p, 1, NULL, out, NULL, NULL, &e),
             &e); /* report optional */
    fm_load_report_free(NULL);
    fm_named_tensors_free(NULL, 0);
}

int main(void) {
    if (fm_init(NULL) != FM_OK) return 1; /* the built-in architectures' key mappings */
    RUN(test_natural_key_order);
    RUN(test_moe_layer0_qkv);
    RUN(test_moe_generic_roundtrip);
    RUN(test_claimed_key_without_parameter);
    RUN(test_qwen2_vl_hub_runtime_zero_copy);
    RUN(test_rename_fallback_and_extra_key);
    RUN(test_duplicate_target);
    RUN(test_shape_mismatch_is_an_error);
    RUN(test_conversion_error_captured);
    RUN(test_cast);
    RUN(test_group_reference_converter_roundtrip);
    RUN(test_revert_errors_and_passthrough);
    RUN(test_alloc_failures);
    RUN(test_bad_arguments);
    TEST_END();
}
