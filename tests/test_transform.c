/* Weight transforms and the conversion-mapping registry (src/loading/transform.c, pattern.c,
 * mapping.c): target normalisation, SEARCH and first-occurrence replacement, backreferences,
 * the ".*." rule, Python-re syntax on PCRE2, creation-time errors (reversibility included),
 * reversal, and the registry with its built-in Qwen2-VL entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/loading.h"
#include "fusemap/models.h"
#include "loading/pattern.h"
#include "support/check.h"

static fm_transform *ren(const char *s, const char *t) {
    fm_transform *x = NULL;
    fm_error e;
    fm_status st = fm_transform_renaming_new(s, t, &x, &e);
    CHECK_MSG(st == FM_OK, "renaming %s -> %s: %s", s, t, e.msg);
    return x;
}

static fm_transform *conv(const char *const *s, size_t ns, const char *const *t, size_t nt,
                          const fm_op_desc *ops, size_t nops) {
    fm_transform *x = NULL;
    fm_error e;
    fm_status st = fm_transform_converter_new(s, ns, t, nt, ops, nops, &x, &e);
    CHECK_MSG(st == FM_OK, "converter %s: %s", s[0], e.msg);
    return x;
}

/* Renames key; returns a static copy ("" on error) and the branch. */
static const char *rn(const fm_transform *t, const char *key, int *branch) {
    static char buf[512];
    char *o = NULL;
    int b = -2;
    fm_error e;
    buf[0] = '\0';
    if (!t) return buf;
    fm_status st = fm_transform_rename(t, key, &o, &b, &e);
    CHECK_MSG(st == FM_OK, "rename %s: %s", key, e.msg);
    if (o) snprintf(buf, sizeof buf, "%s", o);
    fm_free(o);
    if (branch) *branch = b;
    return buf;
}

static const fm_op_desc kMerge0 = {FM_OP_MERGE_MODULELIST, 0, 0, 0, {0, 0, 0}};
static const fm_op_desc kCat1 = {FM_OP_CONCATENATE, 1, 0, 0, {0, 0, 0}};
static const fm_op_desc kChunk0 = {FM_OP_CHUNK, 0, 0, 0, {0, 0, 0}};

/* ---- normalisation ------------------------------------------------------------------------------
 */
static void test_target_normalisation(void) {
    fm_transform *a = ren("^model(?!\\.(language_model|visual))", "^model\\.language_model$");
    if (!a) return;
    CHECK_EQ_STR("model.language_model", fm_transform_target(a, 0));
    /* paired: the target's anchors are copied onto the source */
    CHECK_EQ_STR("^model(?!\\.(language_model|visual))$", fm_transform_source(a, 0));
    fm_transform *r = NULL;
    fm_error e;
    CHECK_OK(fm_transform_reverse(a, &r, &e), &e);
    /* reversed: lookahead deleted from the target, anchors of the original source copied */
    CHECK_EQ_STR("model", fm_transform_target(r, 0));
    CHECK_EQ_STR("^model\\.language_model$", fm_transform_source(r, 0));
    fm_transform_free(r);
    fm_transform_free(a);
    /* a capture group in the target becomes \1 and moves into the source's \1 */
    fm_transform *t = ren("(.+)", "timm_model.\\1");
    CHECK_OK(fm_transform_reverse(t, &r, &e), &e);
    CHECK_EQ_STR("timm_model.(.+)", fm_transform_source(r, 0));
    CHECK_EQ_STR("\\1", fm_transform_target(r, 0));
    CHECK_EQ_STR("timm_model.blocks.0.w", rn(t, "blocks.0.w", NULL));
    CHECK_EQ_STR("blocks.0.w", rn(r, "timm_model.blocks.0.w", NULL));
    fm_transform_free(r);
    fm_transform_free(t);
}

/* ---- SEARCH and replacement (§2.2) -------------------------------------------------------------
 */
static void test_sub_span_rewrite_keeps_prefix(void) {
    const char *s1[2] = {"block_sparse_moe.experts.*.w1.weight",
                         "block_sparse_moe.experts.*.w3.weight"};
    const char *t1[1] = {"mlp.experts.gate_up_proj"};
    const char *s2[1] = {"block_sparse_moe.experts.*.w2.weight"},
               *t2[1] = {"mlp.experts.down_proj"};
    fm_op_desc ops[2] = {kMerge0, kCat1};
    fm_transform *gu = conv(s1, 2, t1, 1, ops, 2), *dn = conv(s2, 1, t2, 1, ops, 1);
    int b = -2;
    CHECK_EQ_STR("foo.mlp.experts.gate_up_proj",
                 rn(gu, "foo.block_sparse_moe.experts.3.w1.weight", &b));
    CHECK_EQ_INT(0, b);
    CHECK_EQ_STR("foo.mlp.experts.gate_up_proj",
                 rn(gu, "foo.block_sparse_moe.experts.12.w3.weight", &b));
    CHECK_EQ_INT(1, b);
    CHECK_EQ_STR("foo.mlp.experts.down_proj",
                 rn(dn, "foo.block_sparse_moe.experts.3.w2.weight", &b));
    CHECK_EQ_STR("foo.block_sparse_moe.experts.3.w2.weight",
                 rn(gu, "foo.block_sparse_moe.experts.3.w2.weight", &b));
    CHECK_EQ_INT(-1, b); /* no match: unchanged */
    fm_transform *lm = ren("model.language_model.*", "language_model");
    CHECK_EQ_STR("language_model", rn(lm, "model.language_model.lm_head.weight", NULL));
    fm_transform_free(gu);
    fm_transform_free(dn);
    fm_transform_free(lm);
}

static void test_star_accepts_non_digits(void) {
    const char *s[1] = {"model.layers.*.mlp.gate_up_proj.weight"}, *t[2] = {"gate", "up"};
    fm_op_desc op = kChunk0;
    fm_transform *c = conv(s, 1, t, 2, &op, 1);
    int b;
    const char *keys[4] = {
        "model.layers.0.mlp.gate_up_proj.weight", "model.layers.12.mlp.gate_up_proj.weight",
        "model.layers.a.mlp.gate_up_proj.weight", "model.layers.00x.mlp.gate_up_proj.weight"};
    for (int i = 0; i < 4; i++) {
        rn(c, keys[i], &b);
        CHECK_MSG(b == 0, "%s did not match", keys[i]);
    }
    rn(c, "model.layers.0.mlp.up_proj.weight", &b);
    CHECK_EQ_INT(-1, b);
    rn(c, "model.layers.3.mlp.gate_up_proj.weight.bar", &b); /* no end anchoring */
    CHECK_EQ_INT(0, b);
    fm_transform_free(c);
}

static void test_leftmost_then_branch_order(void) {
    const char *s[2] = {"b", "a"}, *t[1] = {"X"};
    fm_op_desc op = {FM_OP_CONCATENATE, 0, 0, 0, {0, 0, 0}};
    fm_transform *c = conv(s, 2, t, 1, &op, 1);
    int b;
    CHECK_EQ_STR("X.b", rn(c, "a.b", &b)); /* "a" starts further left, although listed second */
    CHECK_EQ_INT(1, b);
    fm_transform_free(c);
    const char *s2[2] = {"ab", "a"};
    c = conv(s2, 2, t, 1, &op, 1);
    CHECK_EQ_STR("X.c", rn(c, "ab.c", &b)); /* same position: the first branch wins */
    CHECK_EQ_INT(0, b);
    fm_transform_free(c);
    const char *s3[2] = {"a", "ab"};
    c = conv(s3, 2, t, 1, &op, 1);
    CHECK_EQ_STR("Xb.c", rn(c, "ab.c", &b));
    CHECK_EQ_INT(0, b);
    fm_transform_free(c);
}

static void test_first_occurrence_and_empty_match(void) {
    fm_transform *q =
        ren("y$", "Z"); /* match at the end, but the first "y" is replaced (quirk §11.9) */
    CHECK_EQ_STR("Z.x.y", rn(q, "y.x.y", NULL));
    fm_transform *p = ren("^(?!model\\.)", "model.");
    CHECK_EQ_STR("model.layer.0", rn(p, "layer.0", NULL)); /* empty match inserts at the start */
    CHECK_EQ_STR("model.layer.0", rn(p, "model.layer.0", NULL));
    fm_transform *a = ren("^visual", "model.visual");
    int b;
    CHECK_EQ_STR("model.visual.blocks.0", rn(a, "visual.blocks.0", NULL));
    CHECK_EQ_STR("model.visual.x", rn(a, "model.visual.x", &b)); /* ^ anchors */
    CHECK_EQ_INT(-1, b);
    fm_transform_free(q);
    fm_transform_free(p);
    fm_transform_free(a);
}

static void test_backreferences(void) {
    fm_transform *a = ren("layers\\.(\\d+)\\.attn", "blocks.\\1.attention");
    CHECK_EQ_STR("model.blocks.12.attention.q", rn(a, "model.layers.12.attn.q", NULL));
    CHECK_EQ_STR("model.blocks.3.attention", rn(a, "model.blocks.3.attention", NULL));
    fm_transform *d = ren("(?P<pre>ab)(?P=pre)", "C"); /* named groups and their backreference */
    CHECK_EQ_STR("xCy", rn(d, "xababy", NULL));
    fm_transform_free(a);
    fm_transform_free(d);
    /* Several groups (issue #43355) load fine in transformers but cannot be reversed (the reverse
     * keeps one group): refused at creation here, not discovered at save time. */
    fm_transform *t = (fm_transform *)1;
    fm_error e;
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("(\\w+)_(\\d+)", "\\2_\\1", &t, &e), &e);
    CHECK_CONTAINS(e.msg, "not reversible");
    CHECK(t == NULL);
    /* the substitution itself handles several and multi-digit groups, empty when unset */
    char *g[12] = {"m", "a", "", "c", "d", "e", "f", "g", "h", "i", "j", "k"}, *o = NULL;
    fm_groups gr = {g, 12};
    CHECK_OK(fm_pattern_expand_refs("\\3.\\1[\\2]\\11.\\0", &gr, &o, &e), &e);
    CHECK_EQ_STR("c.a[]k.m", o);
    fm_free(o);
    CHECK_STATUS(FM_ERR_PATTERN, fm_pattern_expand_refs("\\12", &gr, &o, &e), &e);
}

/* Python-re spellings PCRE2 reads differently, and Unicode classes as Python's str patterns. */
static void test_python_syntax(void) {
    int b;
    fm_transform *z = ren("weight\\Z", "W"), *u = ren("\\u0041\\U00000042", "ab"),
                 *q = ren("x{,2}y", "Q"), *lb = ren("(?<!pre_)proj", "P"),
                 *dg = ren("layer\\d", "L"), *fl = ren("(?iu)ATTN", "attn");
    CHECK_EQ_STR("a.W", rn(z, "a.weight", NULL));
    rn(z, "a.weight\n", &b); /* \Z is the absolute end in Python, not "before a final newline" */
    CHECK_EQ_INT(-1, b);
    CHECK_EQ_STR("ab.c", rn(u, "AB.c", NULL));
    CHECK_EQ_STR("aQ", rn(q, "axxy", NULL));
    CHECK_EQ_STR("a.Q", rn(q, "a.y", NULL));
    rn(lb, "pre_proj", &b);
    CHECK_EQ_INT(-1, b); /* the lookbehind rejects the only candidate */
    CHECK_EQ_STR("x.P", rn(lb, "x.proj", NULL));
    CHECK_EQ_STR("pre_P.proj",
                 rn(lb, "pre_proj.proj", NULL)); /* matched ".proj"; first "proj" replaced */
    CHECK_EQ_STR("L.w",
                 rn(dg, "layer\xd9\xa3.w", NULL)); /* ARABIC-INDIC DIGIT THREE is \d in Python */
    CHECK_EQ_STR("x.attn", rn(fl, "x.Attn", NULL));
    fm_transform_free(z);
    fm_transform_free(u);
    fm_transform_free(q);
    fm_transform_free(lb);
    fm_transform_free(dg);
    fm_transform_free(fl);
}

static void test_200_branches(void) {
    char *s[200], *t[1] = {"fused"};
    for (int i = 0; i < 200; i++) {
        s[i] = malloc(32);
        snprintf(s[i], 32, "block%d\\.weight$", i);
    }
    fm_op_desc op = {FM_OP_CONCATENATE, 0, 0, 0, {0, 0, 0}};
    fm_transform *c = conv((const char *const *)s, 200, (const char *const *)t, 1, &op, 1);
    int b;
    CHECK_EQ_STR("model.fused", rn(c, "model.block57.weight", &b));
    CHECK_EQ_INT(57, b);
    CHECK_EQ_STR("x.fused", rn(c, "x.block199.weight", &b));
    CHECK_EQ_INT(199, b);
    rn(c, "model.block200.weight", &b);
    CHECK_EQ_INT(-1, b);
    fm_transform_free(c);
    for (int i = 0; i < 200; i++)
        free(s[i]);
}

/* ---- creation-time errors -----------------------------------------------------------------------
 */
static void test_creation_errors(void) {
    fm_transform *t = (fm_transform *)1;
    fm_error e;
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("layers.(", "x", &t, &e), &e);
    CHECK(t == NULL);
    CHECK_CONTAINS(e.msg, "layers.(");
    CHECK_CONTAINS(e.msg, "offset");
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("(?a)x", "y", &t, &e), &e);
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("\\N{DIGIT ONE}", "y", &t, &e), &e);
    const char *s1[1] = {"a"}, *s2[2] = {"a", "b"}, *t1[1] = {"x"}, *t2[2] = {"x", "y"};
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_transform_converter_new(s1, 1, t1, 1, NULL, 0, &t, &e), &e);
    CHECK_CONTAINS(e.msg, "WeightConverter requires at least one operation.");
    fm_op_desc ch = kChunk0, cat = {FM_OP_CONCATENATE, 0, 0, 0, {0, 0, 0}};
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_transform_converter_new(s2, 2, t2, 2, &ch, 1, &t, &e), &e);
    CHECK_CONTAINS(e.msg, "one to many, one to one or many to one");
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_transform_converter_new(s1, 1, t1, 1, &ch, 1, &t, &e), &e);
    CHECK_CONTAINS(e.msg, "Undefined Operation"); /* Chunk into a single target */
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_transform_converter_new(s1, 1, t2, 2, &cat, 1, &t, &e), &e);
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("a\\1", "b", &t, &e), &e);
    CHECK_CONTAINS(e.msg, "contains \\1 backreference");
    const char *tg[2] = {"(a).x", "(b).y"};
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_converter_new(s1, 1, tg, 2, &ch, 1, &t, &e), &e);
    CHECK_CONTAINS(e.msg, "Multiple different capturing groups");
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("(a)b", "\\2", &t, &e), &e);
    CHECK_CONTAINS(e.msg, "group 2");
    /* the reverse is built at creation: a target that would not compile as a source is refused */
    CHECK_STATUS(FM_ERR_PATTERN, fm_transform_renaming_new("a", "b[", &t, &e), &e);
    CHECK_CONTAINS(e.msg, "not reversible");
    fm_op_desc bad = {FM_OP_CONV3D_TO_LINEAR, 0, 0, 0, {2, 2, 2}};
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_transform_converter_new(s1, 1, t1, 1, &bad, 1, &t, &e), &e);
}

/* ---- reversal, clone, describe
 * ------------------------------------------------------------------- */
static void test_reverse_clone_describe(void) {
    const char *s[2] = {"mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"};
    const char *t[1] = {"mlp.experts.gate_up_proj"};
    fm_op_desc ops[2] = {kMerge0, kCat1};
    fm_transform *c = conv(s, 2, t, 1, ops, 2), *r = NULL, *rr = NULL, *cl = NULL;
    fm_error e;
    if (!c) return;
    CHECK_EQ_STR("WeightConverter(mlp.experts.*.gate_proj.weight, mlp.experts.*.up_proj.weight -> "
                 "mlp.experts.gate_up_proj; MergeModulelist(dim=0), Concatenate(dim=1))",
                 fm_transform_describe(c));
    CHECK_OK(fm_transform_reverse(c, &r, &e), &e);
    CHECK_EQ_STR("WeightConverter(mlp.experts.gate_up_proj -> mlp.experts.*.gate_proj.weight, "
                 "mlp.experts.*.up_proj.weight; Chunk(dim=1), SplitModulelist(dim=0))",
                 fm_transform_describe(r));
    CHECK_OK(fm_transform_reverse(r, &rr, &e), &e);
    CHECK_EQ_STR(fm_transform_describe(c), fm_transform_describe(rr));
    CHECK_OK(fm_transform_clone(c, &cl, &e), &e);
    fm_transform_free(c); /* the clone shares nothing that dies with the original */
    CHECK_EQ_STR("l.0.mlp.experts.gate_up_proj", rn(cl, "l.0.mlp.experts.5.up_proj.weight", NULL));
    CHECK_EQ_INT(FM_TRANSFORM_CONVERTER, fm_transform_kind_of(cl));
    CHECK_EQ_INT(2, fm_transform_op_count(cl));
    CHECK_EQ_INT(FM_OP_CONCATENATE, fm_transform_op(cl, 1)->kind);
    CHECK(fm_transform_op(cl, 2) == NULL && fm_transform_source(cl, 2) == NULL);
    const char *ws[1] = {"patch_embed\\.proj\\.weight$"},
               *wt[1] = {"patch_embed\\.linear_proj\\.weight$"};
    fm_op_desc c3 = {FM_OP_CONV3D_TO_LINEAR, 0, 0, 3, {2, 14, 14}};
    fm_transform *f = conv(ws, 1, wt, 1, &c3, 1);
    CHECK_EQ_STR("WeightConverter(patch_embed\\.proj\\.weight$ -> patch_embed.linear_proj.weight; "
                 "Conv3dToLinear)",
                 fm_transform_describe(f));
    CHECK_EQ_STR("model.visual.patch_embed.linear_proj.weight",
                 rn(f, "model.visual.patch_embed.proj.weight", NULL));
    fm_transform *n = ren("^visual", "model.visual");
    CHECK_EQ_STR("WeightRenaming(^visual -> model.visual)", fm_transform_describe(n));
    fm_transform_free(n);
    fm_transform_free(f);
    fm_transform_free(r);
    fm_transform_free(rr);
    fm_transform_free(cl);
}

/* ---- conversion-mapping registry
 * ------------------------------------------------------------------ */
/* Applies every transform of a list in order (renamings chained). */
static const char *chain(const fm_transform_list *l, const char *key) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", key);
    for (size_t i = 0; i < l->count; i++) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", rn(l->items[i], buf, NULL));
        snprintf(buf, sizeof buf, "%s", tmp);
    }
    return buf;
}

static void test_qwen2_vl_builtin_both_ways(void) {
    fm_transform_list l, rev = {0};
    fm_error e;
    fm_conversion_mapping_reset();
    CHECK_OK(fm_conversion_mapping_get("Qwen2VLForConditionalGeneration", &l, &e), &e);
    CHECK_EQ_INT(2, l.count);
    static const char *const pairs[][2] = {
        {"visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"},
        {"model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"},
        {"lm_head.weight", "lm_head.weight"},
        {"model.embed_tokens.weight", "model.language_model.embed_tokens.weight"},
        {"visual.merger.mlp.0.weight", "model.visual.merger.mlp.0.weight"},
    };
    for (size_t i = l.count; i-- > 0;) {
        fm_transform *r = NULL;
        CHECK_OK(fm_transform_reverse(l.items[i], &r, &e), &e);
        fm_transform_list_append(&rev, r, &e);
    }
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        CHECK_EQ_STR(pairs[i][1], chain(&l, pairs[i][0]));
        CHECK_EQ_STR(pairs[i][0], chain(&rev, pairs[i][1]));
        CHECK_EQ_STR(pairs[i][1], chain(&l, pairs[i][1])); /* runtime names are left alone */
    }
    fm_transform_list_free(&l);
    fm_transform_list_free(&rev);
    CHECK_OK(fm_conversion_mapping_get("Qwen2_5_VLForConditionalGeneration", &l, &e), &e);
    CHECK_EQ_INT(2, l.count);
    fm_transform_list_free(&l);
}

static void test_registry_semantics(void) {
    fm_transform_list l = {0}, got = {0};
    fm_error e;
    fm_conversion_mapping_reset();
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_conversion_mapping_get("my_model", &got, &e), &e);
    CHECK(got.items == NULL && got.count == 0);
    fm_transform_list_append(&l, ren("^old", "new"), &e);
    fm_transform_list_append(&l, ren("\\.gamma$", ".weight"), &e);
    CHECK_OK(fm_conversion_mapping_register("my_model", &l, false, &e), &e);
    CHECK_OK(fm_conversion_mapping_get("my_model", &got, &e), &e);
    CHECK_EQ_INT(l.count, got.count);
    CHECK_EQ_STR(fm_transform_describe(l.items[1]), fm_transform_describe(got.items[1]));
    fm_transform_list_free(&got);
    CHECK_STATUS(FM_ERR_EXISTS, fm_conversion_mapping_register("my_model", &l, false, &e), &e);
    CHECK_CONTAINS(e.msg, "Conversion mapping for 'my_model' already exists");
    fm_transform_list one = {0};
    fm_transform_list_append(&one, ren("a", "b"), &e);
    CHECK_OK(fm_conversion_mapping_register("my_model", &one, true, &e), &e);
    CHECK_OK(fm_conversion_mapping_get("my_model", &got, &e), &e);
    CHECK_EQ_INT(1, got.count);
    CHECK_EQ_STR("WeightRenaming(a -> b)", fm_transform_describe(got.items[0]));
    fm_transform_list_free(&got); /* a deep copy: the registry keeps its own */
    CHECK_OK(fm_conversion_mapping_get("my_model", &got, &e), &e);
    CHECK_EQ_INT(1, got.count);
    fm_transform_list_free(&got);
    CHECK_STATUS(FM_ERR_EXISTS,
                 fm_conversion_mapping_register("Qwen2VLForConditionalGeneration", &one, false, &e),
                 &e);
    CHECK_OK(fm_conversion_mapping_unregister("my_model", &e), &e);
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_conversion_mapping_unregister("my_model", &e), &e);
    CHECK_OK(fm_conversion_mapping_register("gone_after_reset", &one, false, &e), &e);
    CHECK_OK(fm_conversion_mapping_unregister("Qwen2VLForConditionalGeneration", &e), &e);
    fm_conversion_mapping_reset();
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_conversion_mapping_get("gone_after_reset", &got, &e), &e);
    CHECK_OK(fm_conversion_mapping_get("Qwen2VLForConditionalGeneration", &got, &e), &e);
    fm_transform_list_free(&got);
    fm_transform_list_free(&l);
    fm_transform_list_free(&one);
}

/* Every allocation failure on the way is reported as FM_ERR_NOMEM and leaks nothing (ASan). */
static void test_alloc_failures(void) {
    const char *s[2] = {"mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"};
    const char *t[1] = {"mlp.experts.gate_up_proj"};
    fm_op_desc ops[2] = {kMerge0, kCat1};
    int failures = 0, done = 0;
    for (uint64_t k = 1; k < 2000 && !done; k++) {
        fm_transform *c = NULL, *r = NULL;
        fm_error e;
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_transform_converter_new(s, 2, t, 1, ops, 2, &c, &e);
        char *o = NULL;
        int b;
        if (st == FM_OK) st = fm_transform_reverse(c, &r, &e);
        if (st == FM_OK)
            st = fm_transform_rename(c, "l.0.mlp.experts.1.up_proj.weight", &o, &b, &e);
        done = fm_fault_count(FM_FAULT_ALLOC) < k;
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (!done) {
            CHECK_MSG(st == FM_ERR_NOMEM, "allocation %llu: %s (%s)", (unsigned long long)k,
                      fm_status_name(st), e.msg);
            failures++;
        } else {
            CHECK_OK(st, &e);
        }
        fm_free(o);
        fm_transform_free(c);
        fm_transform_free(r);
    }
    CHECK(done && failures > 20);
}

int main(void) {
    if (fm_init(NULL) != FM_OK) return 1; /* the built-in architectures' key mappings */
    RUN(test_target_normalisation);
    RUN(test_sub_span_rewrite_keeps_prefix);
    RUN(test_star_accepts_non_digits);
    RUN(test_leftmost_then_branch_order);
    RUN(test_first_occurrence_and_empty_match);
    RUN(test_backreferences);
    RUN(test_python_syntax);
    RUN(test_200_branches);
    RUN(test_creation_errors);
    RUN(test_reverse_clone_describe);
    RUN(test_qwen2_vl_builtin_both_ways);
    RUN(test_registry_semantics);
    RUN(test_alloc_failures);
    TEST_END();
}
