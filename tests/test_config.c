/* The config.json tree (src/io/config.c): byte-identical round trip of a Python-written config,
 * Python float repr, error positions and limits, typed dotted-key access, order-keeping setters,
 * deep copies, file loading and allocation-failure paths. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/io.h"
#include "io/config_internal.h"
#include "support/check.h"

/* A Qwen2-VL config.json exactly as transformers writes it (json.dumps(indent=2) + "\n"),
 * extended with escapes, unicode, empty containers and float edge cases. Checked with Python. */
static const char *QWEN_CONFIG = "{\n"
                                 "  \"_name_or_path\": \"Qwen/Qwen2-VL-2B-Instruct\",\n"
                                 "  \"architectures\": [\n"
                                 "    \"Qwen2VLForConditionalGeneration\"\n"
                                 "  ],\n"
                                 "  \"attention_dropout\": 0.0,\n"
                                 "  \"bos_token_id\": 151643,\n"
                                 "  \"eos_token_id\": 151645,\n"
                                 "  \"vision_start_token_id\": 151652,\n"
                                 "  \"vision_end_token_id\": 151653,\n"
                                 "  \"vision_token_id\": 151654,\n"
                                 "  \"image_token_id\": 151655,\n"
                                 "  \"video_token_id\": 151656,\n"
                                 "  \"hidden_act\": \"silu\",\n"
                                 "  \"hidden_size\": 1536,\n"
                                 "  \"initializer_range\": 0.02,\n"
                                 "  \"intermediate_size\": 8960,\n"
                                 "  \"max_position_embeddings\": 32768,\n"
                                 "  \"max_window_layers\": 28,\n"
                                 "  \"model_type\": \"qwen2_vl\",\n"
                                 "  \"num_attention_heads\": 12,\n"
                                 "  \"num_hidden_layers\": 28,\n"
                                 "  \"num_key_value_heads\": 2,\n"
                                 "  \"rms_norm_eps\": 1e-06,\n"
                                 "  \"rope_theta\": 1000000.0,\n"
                                 "  \"sliding_window\": 32768,\n"
                                 "  \"tie_word_embeddings\": true,\n"
                                 "  \"torch_dtype\": \"bfloat16\",\n"
                                 "  \"transformers_version\": \"4.41.2\",\n"
                                 "  \"use_cache\": true,\n"
                                 "  \"use_sliding_window\": false,\n"
                                 "  \"vision_config\": {\n"
                                 "    \"depth\": 32,\n"
                                 "    \"embed_dim\": 1280,\n"
                                 "    \"mlp_ratio\": 4,\n"
                                 "    \"num_heads\": 16,\n"
                                 "    \"in_chans\": 3,\n"
                                 "    \"hidden_size\": 1536,\n"
                                 "    \"patch_size\": 14,\n"
                                 "    \"spatial_merge_size\": 2,\n"
                                 "    \"spatial_patch_size\": 14,\n"
                                 "    \"temporal_patch_size\": 2,\n"
                                 "    \"initializer_range\": 0.02,\n"
                                 "    \"layer_norm_eps\": 1e-05\n"
                                 "  },\n"
                                 "  \"rope_scaling\": {\n"
                                 "    \"type\": \"mrope\",\n"
                                 "    \"mrope_section\": [\n"
                                 "      16,\n"
                                 "      24,\n"
                                 "      24\n"
                                 "    ]\n"
                                 "  },\n"
                                 "  \"vocab_size\": 151936,\n"
                                 "  \"comment\": \"caf\\u00e9 \\u2014 \\ud83d\\ude00 \\\"q\\\" "
                                 "back\\\\slash\\ttab\\nnl /slash \\u007f \\u0001\",\n"
                                 "  \"empty_obj\": {},\n"
                                 "  \"empty_list\": [],\n"
                                 "  \"nothing\": null,\n"
                                 "  \"nested_lists\": [\n"
                                 "    [],\n"
                                 "    [\n"
                                 "      1.5,\n"
                                 "      -2\n"
                                 "    ],\n"
                                 "    {}\n"
                                 "  ],\n"
                                 "  \"small\": 1.5e-05,\n"
                                 "  \"big\": 1.2345678901234568e+17,\n"
                                 "  \"neg_zero\": -0.0,\n"
                                 "  \"tiny\": 5e-324,\n"
                                 "  \"max\": 1.7976931348623157e+308\n"
                                 "}\n";

/* Parses text (NUL-terminated) as "config.json"; NULL on failure (reported). */
static fm_config *parse(const char *text, fm_error *err) {
    fm_config *c = NULL;
    fm_status st = fm_config_parse(text, strlen(text), "config.json", &c, err);
    CHECK_OK(st, err);
    return c;
}

static char *dump(const fm_config *c) {
    char *out = NULL;
    size_t len = 0;
    fm_error ev, *e = &ev;
    CHECK_OK(fm_config_dump(c, &out, &len, e), e);
    if (out) CHECK_EQ_INT(strlen(out), len);
    return out;
}

static char *compact(const fm_config *c) {
    char *out = NULL;
    fm_error ev, *e = &ev;
    CHECK_OK(fm_config_dump_compact(c, &out, e), e);
    return out;
}

/* ---- round trips -------------------------------------------------------------------------------
 */

static void test_round_trip_qwen_config(void) {
    fm_error errv, *err = &errv;
    fm_config *c = parse(QWEN_CONFIG, err);
    if (!c) return;
    char *out = dump(c);
    CHECK_EQ_STR(QWEN_CONFIG, out);
    fm_free(out);
    CHECK_EQ_INT(FM_JSON_OBJECT, fm_config_root_type(c));
    CHECK_EQ_STR("_name_or_path", fm_config_object_key(c, "", 0));
    CHECK_EQ_STR("max", fm_config_object_key(c, "", fm_config_object_size(c, "") - 1));
    CHECK(fm_config_object_key(c, "", fm_config_object_size(c, "")) == NULL);
    CHECK_EQ_STR("temporal_patch_size", fm_config_object_key(c, "vision_config", 9));
    char *cv = NULL;
    fm_config *vc = NULL;
    CHECK_OK(fm_config_get_subtree(c, "vision_config", &vc, err), err);
    if (vc) cv = compact(vc);
    CHECK_EQ_STR(
        "{\"depth\": 32, \"embed_dim\": 1280, \"mlp_ratio\": 4, \"num_heads\": 16, \"in_chans\": "
        "3, "
        "\"hidden_size\": 1536, \"patch_size\": 14, \"spatial_merge_size\": 2, "
        "\"spatial_patch_size\": 14, "
        "\"temporal_patch_size\": 2, \"initializer_range\": 0.02, \"layer_norm_eps\": 1e-05}",
        cv);
    fm_free(cv);
    fm_config_free(vc);
    fm_config_free(c);
}

/* Non-canonical input (exponent spellings, spacing, raw UTF-8, escaped '/') comes out the way
 * Python re-writes it (expected strings produced with Python's json module). */
static void test_canonicalises_like_python(void) {
    fm_error errv, *err = &errv;
    const char *in =
        "{\"b\":1E2, \"a\" :[1.0e-6,2.50,-0,0.1e1, 100e-2,12345678901234567890e-3, 3.0E+16],"
        "\"s\":\"\\u00E9\\/x\",\"u\":\"\xc3\xa9\xf0\x9f\x98\x80\", \"d\": {\"k\": [[]]}}";
    fm_config *c = parse(in, err);
    if (!c) return;
    char *out = dump(c), *one = compact(c);
    CHECK_EQ_STR(
        "{\n  \"b\": 100.0,\n  \"a\": [\n    1e-06,\n    2.5,\n    0,\n    1.0,\n    1.0,\n"
        "    1.2345678901234568e+16,\n    3e+16\n  ],\n  \"s\": \"\\u00e9/x\",\n"
        "  \"u\": \"\\u00e9\\ud83d\\ude00\",\n  \"d\": {\n    \"k\": [\n      []\n    ]\n  }\n}\n",
        out);
    CHECK_EQ_STR("{\"b\": 100.0, \"a\": [1e-06, 2.5, 0, 1.0, 1.0, 1.2345678901234568e+16, 3e+16], "
                 "\"s\": \"\\u00e9/x\", \"u\": \"\\u00e9\\ud83d\\ude00\", \"d\": {\"k\": [[]]}}",
                 one);
    const char *u;
    CHECK_OK(fm_config_get_string(c, "u", &u, err), err);
    CHECK_EQ_STR("\xc3\xa9\xf0\x9f\x98\x80", u); /* stored as UTF-8, escaped only on output */
    fm_free(out);
    fm_free(one);
    fm_config_free(c);
    /* scalar roots */
    c = parse(" 1.5 ", err);
    out = c ? dump(c) : NULL;
    CHECK_EQ_STR("1.5\n", out);
    CHECK_EQ_INT(FM_JSON_REAL, fm_config_root_type(c));
    fm_free(out);
    fm_config_free(c);
}

/* ---- float repr
 * ---------------------------------------------------------------------------------- */

static void test_float_repr(void) {
    struct {
        double v;
        const char *want;
    } c[] = {
        {0.1, "0.1"},
        {1e-06, "1e-06"},
        {1e-05, "1e-05"},
        {1.5e-05, "1.5e-05"},
        {0.0001, "0.0001"},
        {0.001, "0.001"},
        {1e16, "1e+16"},
        {1e15, "1000000000000000.0"},
        {1e22, "1e+22"},
        {1e23, "1e+23"},
        {123.456, "123.456"},
        {100.0, "100.0"},
        {1000000.0, "1000000.0"},
        {123456789.0, "123456789.0"},
        {5e-324, "5e-324"},
        {1.7976931348623157e+308, "1.7976931348623157e+308"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {-2.5, "-2.5"},
        {0.3, "0.3"},
        {2.0 / 3, "0.6666666666666666"},
        {1e-07, "1e-07"},
        {1.5e300, "1.5e+300"},
        {1.2345678901234568e+17, "1.2345678901234568e+17"},
        {9007199254740993.0, "9007199254740992.0"},
        /* powers of two whose shortest digits are not the correctly rounded ones (lopsided
         * rounding interval): Python prints these */
        {0x1p-24, "5.960464477539063e-08"},
        {0x1p-44, "5.684341886080802e-14"},
        {0x1p89, "6.189700196426902e+26"},
    };
    char buf[FM_PY_FLOAT_REPR_MAX];
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n = fm_py_float_repr(c[i].v, buf);
        CHECK_EQ_STR(c[i].want, buf);
        CHECK_EQ_INT(strlen(c[i].want), n);
    }
    /* Random doubles: the text reads back exactly, and no shorter digit string does. */
    uint64_t s = 0x243f6a8885a308d3ull;
    int bad = 0;
    int rounds = getenv("FM_TEST_QUICK") ? 2000 : 20000;
    for (int i = 0; i < rounds && bad < 5; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t u = s ^ (s >> 29);
        double v;
        memcpy(&v, &u, 8);
        if (v != v || v - v != 0) continue;
        fm_py_float_repr(v, buf);
        int ok = strtod(buf, NULL) == v;
        char *e = strchr(buf, 'e');
        int digits = 0;
        for (char *p = buf; *p && p != e; p++)
            digits += *p >= '0' && *p <= '9';
        char shorter[64];
        if (digits > 2) { /* fewer significant digits must not read back (leading "0." excluded) */
            snprintf(shorter, sizeof shorter, "%.*e", digits - 3, v);
            if (strtod(shorter, NULL) == v && !strstr(buf, "0.")) ok = 0;
        }
        if (!ok) {
            bad++;
            CHECK_MSG(ok, "repr of %a: %s", v, buf);
        }
    }
}

static void test_float_repr_in_dump(void) {
    fm_error errv, *err = &errv;
    fm_config *c =
        parse("[0.1,1e-06,1E-5,0.0001,1e16,1e15,123.456,5e-324,1.7976931348623157e308,-0.0,"
              "1000000.0,0.02,2.5e-3, 1.0E+2]",
              err);
    char *one = c ? compact(c) : NULL;
    CHECK_EQ_STR("[0.1, 1e-06, 1e-05, 0.0001, 1e+16, 1000000000000000.0, 123.456, 5e-324, "
                 "1.7976931348623157e+308, -0.0, 1000000.0, 0.02, 0.0025, 100.0]",
                 one);
    fm_free(one);
    fm_config_free(c);
}

/* ---- parse errors and limits ------------------------------------------------------------------
 */

static void test_parse_errors(void) {
    fm_error errv, *err = &errv;
    fm_config *c = (fm_config *)&errv; /* must be reset to NULL on failure */
    const char *dup = "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 1,\n    \"x\": 2\n  }\n}\n";
    CHECK_EQ_INT(FM_ERR_JSON, fm_config_parse(dup, strlen(dup), "dup.json", &c, err));
    CHECK(c == NULL);
    CHECK_CONTAINS(err->msg, "dup.json:5:");
    CHECK_CONTAINS(err->msg, "duplicate");
    const char *bad = "{\n  \"a\": [1, 2,]\n}";
    CHECK_EQ_INT(FM_ERR_JSON, fm_config_parse(bad, strlen(bad), "--fusion-config", &c, err));
    CHECK_CONTAINS(err->msg, "--fusion-config:2:");
    struct {
        const char *text;
        fm_status st;
    } cases[] = {
        {"", FM_ERR_JSON},
        {"{} x", FM_ERR_JSON},                                    /* trailing garbage */
        {"{\"a\": 123456789012345678901234567890}", FM_ERR_JSON}, /* beyond int64 */
        {"{\"a\": 1e400}", FM_ERR_JSON},                          /* beyond double */
        {"{\"a\": NaN}", FM_ERR_JSON},
        {"{\"a\": \"x\\u0000y\"}", FM_ERR_JSON}, /* NUL in a string */
        {"{\"a\": \"\xff\"}", FM_ERR_JSON},      /* invalid UTF-8 */
        {"{'a': 1}", FM_ERR_JSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_status st = fm_config_parse(cases[i].text, strlen(cases[i].text), "t", &c, err);
        CHECK_MSG(st == cases[i].st, "case %zu: %s (%s)", i, fm_status_name(st), err->msg);
        CHECK_CONTAINS(err->msg, "t:1:");
        CHECK(c == NULL);
    }
    const char nul[] = "{\"a\": 1}\0";
    CHECK_EQ_INT(FM_ERR_JSON,
                 fm_config_parse(nul, sizeof nul, "t", &c, err)); /* NUL after the value */
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_parse(NULL, 0, "t", &c, err));
}

/* n nested containers (arrays, objects or alternating) around 1. Caller frees. */
static char *nested(long n, int kind) {
    char *s = malloc((size_t)n * 6 + 8), *p = s;
    for (long i = 0; i < n; i++) {
        int obj = kind == 1 || (kind == 2 && i % 2);
        p += sprintf(p, "%s", obj ? "{\"k\":" : "[");
    }
    *p++ = '1';
    for (long i = n - 1; i >= 0; i--)
        *p++ = (kind == 1 || (kind == 2 && i % 2)) ? '}' : ']';
    *p = '\0';
    return s;
}

static void test_depth_limit(void) {
    fm_error errv, *err = &errv;
    for (int kind = 0; kind < 3; kind++) {
        fm_config *c = NULL;
        char *ok = nested(FM_JSON_MAX_DEPTH, kind), *deep = nested(FM_JSON_MAX_DEPTH + 1, kind);
        CHECK_OK(fm_config_parse(ok, strlen(ok), "deep.json", &c, err), err);
        char *one = c ? compact(c) : NULL; /* the writer handles the deepest accepted tree */
        CHECK(one && strlen(one) > FM_JSON_MAX_DEPTH * 2);
        fm_free(one);
        fm_config_free(c);
        CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_parse(deep, strlen(deep), "deep.json", &c, err));
        CHECK_CONTAINS(err->msg, "deep.json");
        CHECK_CONTAINS(err->msg, "64");
        free(ok);
        free(deep);
        char *huge = nested(100000, kind); /* far beyond jansson's own cap: refused, no crash */
        CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_parse(huge, strlen(huge), "huge.json", &c, err));
        CHECK_CONTAINS(err->msg, "huge.json");
        CHECK(c == NULL);
        free(huge);
    }
    /* a deep tree inside arrays of a wide object: depth counts per branch */
    char wide[4096];
    char *d = nested(FM_JSON_MAX_DEPTH - 1, 0);
    snprintf(wide, sizeof wide, "{\"a\": [], \"b\": %s, \"c\": {}}", d);
    free(d);
    fm_config *c = NULL;
    CHECK_OK(fm_config_parse(wide, strlen(wide), "w", &c, err), err);
    fm_config_free(c);
}

static void test_size_limit(void) {
    fm_error errv, *err = &errv;
    fm_config *c = NULL;
    char *big = calloc(1, FM_CONFIG_MAX_BYTES + 1); /* zero pages: never touched */
    if (!big) return;
    CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_parse(big, FM_CONFIG_MAX_BYTES + 1, "big.json", &c, err));
    CHECK_CONTAINS(err->msg, "big.json");
    CHECK(c == NULL);
    free(big);
}

/* ---- typed access ---------------------------------------------------------------------------- */

static void test_typed_getters(void) {
    fm_error errv, *err = &errv;
    fm_config *c =
        parse("{\"vision_config\": {\"depth\": 1.5, \"heads\": 16, \"flag\": true, \"name\": \"v\","
              " \"l\": [16, 24, 2.5, \"x\"], \"o\": {}}, \"n\": null, \"top\": 7}",
              err);
    if (!c) return;
    int64_t i = -1;
    double d = -1;
    bool b = false;
    const char *s = NULL;
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "vision_config.depth", &i, err));
    CHECK_EQ_STR("config.json: key 'vision_config.depth': expected an integer, found a real (1.5)",
                 err->msg);
    CHECK_EQ_INT(-1, i);
    CHECK_OK(fm_config_get_double(c, "vision_config.depth", &d, err), err);
    CHECK(d == 1.5);
    CHECK_OK(fm_config_get_int(c, "vision_config.heads", &i, err), err);
    CHECK_EQ_INT(16, i);
    CHECK_OK(fm_config_get_double(c, "vision_config.heads", &d, err), err); /* ints are numbers */
    CHECK(d == 16.0);
    CHECK_EQ_INT(FM_ERR_CONFIG,
                 fm_config_get_int(c, "vision_config.flag", &i, err)); /* bool is no int */
    CHECK_CONTAINS(err->msg, "found a bool (true)");
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_double(c, "vision_config.flag", &d, err));
    CHECK_OK(fm_config_get_bool(c, "vision_config.flag", &b, err), err);
    CHECK(b);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_bool(c, "top", &b, err));
    CHECK_CONTAINS(err->msg, "expected a bool, found an integer (7)");
    CHECK_OK(fm_config_get_string(c, "vision_config.name", &s, err), err);
    CHECK_EQ_STR("v", s);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_string(c, "vision_config.o", &s, err));
    CHECK_CONTAINS(err->msg, "expected a string, found an object");
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "vision_config.name", &i, err));
    CHECK_CONTAINS(err->msg, "found a string (\"v\")");
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "n", &i, err));
    CHECK_CONTAINS(err->msg, "found null");
    /* missing keys and non-object intermediates */
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_get_int(c, "vision_config.width", &i, err));
    CHECK_EQ_STR("config.json: key 'vision_config.width' not found", err->msg);
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_get_int(c, "text_config.depth", &i, err));
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "top.x", &i, err));
    CHECK_EQ_STR("config.json: key 'top.x': 'top' is an integer, not an object", err->msg);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "vision_config.heads.x.y", &i, err));
    CHECK_CONTAINS(err->msg, "'vision_config.heads' is an integer");
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_get_int(c, "vision_config..depth", &i, err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_get_int(c, ".top", &i, err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_get_int(NULL, "top", &i, err));
    /* types */
    CHECK_EQ_INT(FM_JSON_REAL, fm_config_type(c, "vision_config.depth"));
    CHECK_EQ_INT(FM_JSON_INT, fm_config_type(c, "top"));
    CHECK_EQ_INT(FM_JSON_BOOL, fm_config_type(c, "vision_config.flag"));
    CHECK_EQ_INT(FM_JSON_NULL, fm_config_type(c, "n"));
    CHECK_EQ_INT(FM_JSON_ARRAY, fm_config_type(c, "vision_config.l"));
    CHECK_EQ_INT(FM_JSON_OBJECT, fm_config_type(c, ""));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(c, "nope"));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(c, "top.x"));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(NULL, "top"));
    /* arrays */
    CHECK_EQ_INT(4, fm_config_array_size(c, "vision_config.l"));
    CHECK_EQ_INT(0, fm_config_array_size(c, "top"));
    CHECK_OK(fm_config_array_int(c, "vision_config.l", 1, &i, err), err);
    CHECK_EQ_INT(24, i);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_array_int(c, "vision_config.l", 2, &i, err));
    CHECK_CONTAINS(err->msg, "'vision_config.l[2]': expected an integer, found a real (2.5)");
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_array_int(c, "vision_config.l", 4, &i, err));
    CHECK_CONTAINS(err->msg, "out of range");
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_array_int(c, "top", 0, &i, err));
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_array_int(c, "nope", 0, &i, err));
    /* object listing */
    CHECK_EQ_INT(3, fm_config_object_size(c, ""));
    CHECK_EQ_INT(6, fm_config_object_size(c, "vision_config"));
    CHECK_EQ_INT(0, fm_config_object_size(c, "top"));
    CHECK_EQ_STR("l", fm_config_object_key(c, "vision_config", 4));
    CHECK(fm_config_object_key(c, "top", 0) == NULL);
    fm_config_free(c);
}

/* ---- setters ----------------------------------------------------------------------------------
 */

static void test_setters_keep_order(void) {
    fm_error errv, *err = &errv;
    fm_config *c = parse("{\"a\": 1, \"b\": {\"x\": 1, \"y\": 2}, \"c\": \"s\"}", err);
    if (!c) return;
    CHECK_OK(fm_config_set_int(c, "a", -5, err), err);         /* replace in place */
    CHECK_OK(fm_config_set_string(c, "b.x", "new", err), err); /* type change, same slot */
    CHECK_OK(fm_config_set_int(c, "b.z", 3, err), err);        /* appended to b */
    CHECK_OK(fm_config_set_string(c, "d.e.f", "\xe2\x80\x94", err), err); /* creates d, d.e */
    CHECK_OK(fm_config_set_int(c, "c", INT64_MIN, err), err);
    char *one = compact(c);
    CHECK_EQ_STR(
        "{\"a\": -5, \"b\": {\"x\": \"new\", \"y\": 2, \"z\": 3}, \"c\": -9223372036854775808, "
        "\"d\": {\"e\": {\"f\": \"\\u2014\"}}}",
        one);
    fm_free(one);
    CHECK_OK(fm_config_remove(c, "b.y", err), err);
    CHECK_OK(fm_config_remove(c, "a", err), err);
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_remove(c, "a", err));
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_remove(c, "q.r", err));
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_remove(c, "c.r", err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_remove(c, "", err));
    CHECK_OK(fm_config_set_int(c, "a", 9, err), err); /* re-added at the end */
    one = compact(c);
    CHECK_EQ_STR(
        "{\"b\": {\"x\": \"new\", \"z\": 3}, \"c\": -9223372036854775808, \"d\": {\"e\": {\"f\": "
        "\"\\u2014\"}}, \"a\": 9}",
        one);
    fm_free(one);
    /* refusals leave the tree unchanged */
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_set_int(c, "c.x.y", 1, err));
    CHECK_CONTAINS(err->msg, "'c' is an integer, not an object");
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_string(c, "z", "\xc3", err)); /* bad UTF-8 */
    const char *bad_utf8[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80",
                              "\xf0\x9f\x98"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++)
        CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_string(c, "z", bad_utf8[i], err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_int(c, "\xff", 1, err)); /* key, too */
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_int(c, "z..y", 1, err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_int(c, "", 1, err));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_config_set_string(c, "z", NULL, err));
    char *after = compact(c);
    CHECK_EQ_STR(
        "{\"b\": {\"x\": \"new\", \"z\": 3}, \"c\": -9223372036854775808, \"d\": {\"e\": {\"f\": "
        "\"\\u2014\"}}, \"a\": 9}",
        after);
    fm_free(after);
    fm_config_free(c);
    fm_config *arr = parse("[1]", err);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_set_int(arr, "a", 1, err)); /* root is not an object */
    CHECK_CONTAINS(err->msg, "top level is an array");
    fm_config_free(arr);
}

static void test_subtrees_are_copies(void) {
    fm_error errv, *err = &errv;
    fm_config *c = parse(QWEN_CONFIG, err), *v = NULL, *fc = NULL, *cl = NULL;
    if (!c) return;
    CHECK_OK(fm_config_get_subtree(c, "vision_config", &v, err), err);
    CHECK_OK(fm_config_set_int(v, "depth", 2, err), err);
    int64_t depth = 0;
    CHECK_OK(fm_config_get_int(c, "vision_config.depth", &depth, err), err);
    CHECK_EQ_INT(32, depth); /* the original is untouched */
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_get_int(v, "hidden_act", &depth, err));
    CHECK_EQ_STR("config.json[vision_config]: key 'hidden_act' not found", err->msg);
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(v, "initializer_range", &depth, err));
    CHECK_CONTAINS(err->msg, "config.json[vision_config]: key 'initializer_range'");
    /* fusion_config from text, inserted as a copy, appended after every original key */
    const char *ftxt = "{\"patch_embed\": {\"enabled\": true}}";
    CHECK_OK(fm_config_parse(ftxt, strlen(ftxt), "--fusion-config", &fc, err), err);
    CHECK_OK(fm_config_set_subtree(c, "fusion_config", fc, err), err);
    CHECK_OK(fm_config_set_int(fc, "x", 1, err), err);
    CHECK_EQ_INT(1, fm_config_object_size(c, "fusion_config"));
    CHECK_EQ_STR("fusion_config", fm_config_object_key(c, "", fm_config_object_size(c, "") - 1));
    char *out = dump(c);
    const char *tail =
        "  \"max\": 1.7976931348623157e+308,\n  \"fusion_config\": {\n    \"patch_embed\": {\n"
        "      \"enabled\": true\n    }\n  }\n}\n";
    CHECK(out && strlen(out) > strlen(tail) && strcmp(out + strlen(out) - strlen(tail), tail) == 0);
    fm_free(out);
    /* replacing a subtree keeps its slot; a config can be inserted into itself (copy first) */
    CHECK_OK(fm_config_set_subtree(c, "vision_config", v, err), err);
    CHECK_OK(fm_config_get_int(c, "vision_config.depth", &depth, err), err);
    CHECK_EQ_INT(2, depth);
    CHECK_EQ_STR("use_sliding_window", fm_config_object_key(c, "", 27));
    CHECK_EQ_STR("vision_config", fm_config_object_key(c, "", 28));
    CHECK_OK(fm_config_clone(c, &cl, err), err);
    CHECK_OK(fm_config_set_subtree(cl, "self", cl, err), err);
    CHECK_EQ_INT(FM_JSON_OBJECT, fm_config_type(cl, "self.vision_config"));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(c, "self"));
    fm_config_free(cl);
    fm_config_free(fc);
    fm_config_free(v);
    fm_config_free(c);
    fm_config_free(NULL);
}

/* Setters respect the nesting limit, counting the key's own levels. */
static void test_setter_depth_limit(void) {
    fm_error errv, *err = &errv;
    fm_config *c = fm_config_new_object(), *sub = NULL;
    if (!c) return;
    char key[256] = "k";
    for (int i = 1; i < FM_JSON_MAX_DEPTH; i++)
        strcat(key, ".k");                            /* 64 segments */
    CHECK_OK(fm_config_set_int(c, key, 1, err), err); /* depth exactly 64 */
    strcat(key, ".k");
    CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_set_int(c, key, 1, err));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(c, key));
    char *d62 = nested(62, 1);
    CHECK_OK(fm_config_parse(d62, strlen(d62), "s", &sub, err), err);
    free(d62);
    CHECK_OK(fm_config_set_subtree(c, "a.b", sub, err), err); /* 2 + 62 = 64 */
    CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_set_subtree(c, "a.b.c", sub, err));
    CHECK_EQ_INT(FM_JSON_ABSENT, fm_config_type(c, "a.b.c"));
    char *one = compact(c);
    CHECK(one != NULL);
    fm_free(one);
    fm_config_free(sub);
    fm_config_free(c);
}

/* ---- files -------------------------------------------------------------------------------------
 */

static void test_load_file(void) {
    fm_error errv, *err = &errv;
    const char *base = getenv("FM_TEST_TMP") ? getenv("FM_TEST_TMP") : "/tmp";
    char dir[512], path[600], big[600];
    snprintf(dir, sizeof dir, "%s/fm_config_XXXXXX", base);
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp in %s", base);
        return;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(big, sizeof big, "%s/big.json", dir);
    FILE *f = fopen(path, "wb");
    fputs(QWEN_CONFIG, f);
    fclose(f);
    fm_config *c = NULL;
    CHECK_OK(fm_config_load(path, &c, err), err);
    char *out = c ? dump(c) : NULL;
    CHECK_EQ_STR(QWEN_CONFIG, out);
    int64_t v = 0;
    CHECK_EQ_INT(FM_ERR_CONFIG, fm_config_get_int(c, "rms_norm_eps", &v, err));
    CHECK_CONTAINS(err->msg, path); /* errors name the file */
    fm_free(out);
    fm_config_free(c);
    /* broken file: position names the path */
    f = fopen(path, "wb");
    fputs("{\n  \"a\": 1,\n  \"a\": 2\n}\n", f);
    fclose(f);
    CHECK_EQ_INT(FM_ERR_JSON, fm_config_load(path, &c, err));
    CHECK_CONTAINS(err->msg, path);
    CHECK_CONTAINS(err->msg, ":3:");
    /* over the size limit: refused from the file size, before reading */
    int fd = open(big, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)FM_CONFIG_MAX_BYTES + 1) == 0);
    close(fd);
    CHECK_EQ_INT(FM_ERR_LIMIT, fm_config_load(big, &c, err));
    CHECK_CONTAINS(err->msg, "big.json");
    unlink(big);
    CHECK_EQ_INT(FM_ERR_NOT_FOUND, fm_config_load(big, &c, err));
    CHECK_CONTAINS(err->msg, "big.json");
    CHECK_EQ_INT(FM_ERR_IO, fm_config_load(dir, &c, err)); /* a directory */
    fm_fault_set(FM_FAULT_OPEN, 1);
    CHECK_EQ_INT(FM_ERR_IO, fm_config_load(path, &c, err));
    fm_fault_set(FM_FAULT_OPEN, 0);
    CHECK(c == NULL);
    unlink(path);
    CHECK(rmdir(dir) == 0);
}

/* Every allocation of ours failing in turn: a clean FM_ERR_NOMEM and no leak (ASan). */
static void test_alloc_failures(void) {
    fm_error errv, *err = &errv;
    int failures = 0;
    for (uint64_t nth = 1; nth < 200; nth++) {
        fm_config *c = NULL, *s = NULL;
        char *out = NULL;
        size_t len;
        fm_fault_set(FM_FAULT_ALLOC, nth);
        fm_status st = fm_config_parse(QWEN_CONFIG, strlen(QWEN_CONFIG), "config.json", &c, err);
        if (st == FM_OK) st = fm_config_get_subtree(c, "rope_scaling", &s, err);
        if (st == FM_OK) st = fm_config_set_subtree(c, "r2", s, err);
        if (st == FM_OK) st = fm_config_remove(c, "r2", err);
        if (st == FM_OK) st = fm_config_dump(c, &out, &len, err);
        uint64_t seen = fm_fault_count(FM_FAULT_ALLOC);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            CHECK_EQ_STR(QWEN_CONFIG, out);
            CHECK(seen < nth); /* ran out of allocations to fail: done */
            fm_free(out);
            fm_config_free(s);
            fm_config_free(c);
            break;
        }
        failures++;
        CHECK_MSG(st == FM_ERR_NOMEM, "nth=%llu: %s (%s)", (unsigned long long)nth,
                  fm_status_name(st), err->msg);
        CHECK(out == NULL);
        fm_config_free(s);
        fm_config_free(c);
    }
    CHECK(failures >= 4);
}

int main(void) {
    RUN(test_round_trip_qwen_config);
    RUN(test_canonicalises_like_python);
    RUN(test_float_repr);
    RUN(test_float_repr_in_dump);
    RUN(test_parse_errors);
    RUN(test_depth_limit);
    RUN(test_size_limit);
    RUN(test_typed_getters);
    RUN(test_setters_keep_order);
    RUN(test_subtrees_are_copies);
    RUN(test_setter_depth_limit);
    RUN(test_load_file);
    RUN(test_alloc_failures);
    TEST_END();
}
