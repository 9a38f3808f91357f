/* generation_config.json (src/api/generation_config.c): transformers' defaults when absent, the
 * Qwen2-VL-Instruct file, eos as int or list with the config.json fallback, null values, hostile
 * files (wrong types, ranges, size, nesting, non-regular files) with errors naming file and key,
 * user overrides, the mapping onto sampler options and the new-token count, allocation failures. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/generate.h"
#include "support/check.h"
#include "support/file_util.h"

/* Qwen2-VL-7B-Instruct's generation_config.json as published on the hub. */
static const char *QWEN_GC = "{\n"
                             "  \"bos_token_id\": 151643,\n"
                             "  \"pad_token_id\": 151643,\n"
                             "  \"do_sample\": true,\n"
                             "  \"eos_token_id\": [\n"
                             "    151645,\n"
                             "    151643\n"
                             "  ],\n"
                             "  \"repetition_penalty\": 1.05,\n"
                             "  \"temperature\": 0.1,\n"
                             "  \"top_k\": 1,\n"
                             "  \"top_p\": 0.001,\n"
                             "  \"transformers_version\": \"4.37.0\"\n"
                             "}\n";

static const char *MODEL_CONFIG = "{\"model_type\": \"qwen2_vl\", \"eos_token_id\": 151645}";

/* A fresh model directory with the given files (NULL text: not written). Caller removes it. */
static char *model_dir(const char *gc, const char *config) {
    char *dir = fm_test_tmpdir("gencfg");
    if (!dir) return NULL;
    const char *names[2] = {"generation_config.json", "config.json"}, *texts[2] = {gc, config};
    for (int i = 0; i < 2; i++) {
        if (!texts[i]) continue;
        char *p = fm_test_join(dir, names[i]);
        CHECK(p && fm_test_write_file(p, texts[i], strlen(texts[i])) == 0);
        free(p);
    }
    return dir;
}

static void remove_dir(char *dir) {
    if (dir) CHECK(fm_test_rmtree(dir) == 0);
    free(dir);
}

/* Loads a directory made of `gc` (+ config.json `config`); returns the status. */
static fm_status load_texts(const char *gc, const char *config, fm_generation_config *out,
                            fm_error *err) {
    char *dir = model_dir(gc, config);
    if (!dir) return FM_ERR_IO;
    fm_status st = fm_generation_config_load(dir, out, err);
    remove_dir(dir);
    return st;
}

static void test_absent_file_gives_transformers_defaults(void) {
    fm_error err;
    fm_generation_config c;
    memset(&c, 0xab, sizeof c);
    CHECK_OK(load_texts(NULL, NULL, &c, &err), &err);
    CHECK(!c.found);
    CHECK(!c.do_sample);
    CHECK(c.temperature == 1.0 && c.top_p == 1.0 && c.min_p == 0 && c.repetition_penalty == 1.0);
    CHECK_EQ_INT(50, c.top_k);
    CHECK_EQ_INT(20, c.max_length);
    CHECK_EQ_INT(0, c.max_new_tokens);
    CHECK_EQ_INT(0, c.n_eos_token_ids);
    CHECK_EQ_INT(FM_EOS_NONE, c.eos_source);
    CHECK_EQ_INT(-1, c.bos_token_id);
    CHECK_EQ_INT(-1, c.pad_token_id);
    fm_sampling_options o;
    CHECK_OK(fm_generation_config_sampling(&c, &o, &err), &err);
    CHECK(fm_sampling_options_greedy(&o)); /* do_sample false -> greedy */
    CHECK_EQ_INT(50, o.top_k);
    /* eos from config.json, top level */
    CHECK_OK(load_texts(NULL, MODEL_CONFIG, &c, &err), &err);
    CHECK(!c.found);
    CHECK_EQ_INT(1, c.n_eos_token_ids);
    CHECK_EQ_INT(151645, c.eos_token_ids[0]);
    CHECK_EQ_INT(FM_EOS_MODEL_CONFIG, c.eos_source);
    /* eos from config.json's text_config (transformers v5 layout), list form */
    CHECK_OK(load_texts(NULL, "{\"text_config\": {\"eos_token_id\": [7, 9, 7]}}", &c, &err), &err);
    CHECK_EQ_INT(2, c.n_eos_token_ids); /* duplicates dropped */
    CHECK(c.eos_token_ids[0] == 7 && c.eos_token_ids[1] == 9);
    CHECK_EQ_INT(FM_EOS_MODEL_CONFIG, c.eos_source);
}

static void test_qwen_instruct_file(void) {
    fm_error err;
    fm_generation_config c;
    CHECK_OK(load_texts(QWEN_GC, MODEL_CONFIG, &c, &err), &err);
    CHECK(c.found);
    CHECK(c.do_sample);
    CHECK(c.temperature == 0.1 && c.top_p == 0.001 && c.repetition_penalty == 1.05);
    CHECK_EQ_INT(1, c.top_k);
    CHECK_EQ_INT(20, c.max_length); /* absent: the default */
    CHECK_EQ_INT(2, c.n_eos_token_ids);
    CHECK(c.eos_token_ids[0] == 151645 && c.eos_token_ids[1] == 151643);
    CHECK_EQ_INT(FM_EOS_GENERATION_CONFIG, c.eos_source); /* the file wins over config.json */
    CHECK_EQ_INT(151643, c.bos_token_id);
    CHECK_EQ_INT(151643, c.pad_token_id);
    fm_sampling_options o;
    CHECK_OK(fm_generation_config_sampling(&c, &o, &err), &err);
    CHECK(o.do_sample && !fm_sampling_options_greedy(&o));
    CHECK(o.temperature == 0.1 && o.top_k == 1 && o.top_p == 0.001 && o.repetition_penalty == 1.05);
    CHECK_EQ_INT(1, o.min_keep);
    /* effectively greedy: the argmax of the penalised logits for any seed */
    float l[6] = {1.0f, 3.0f, 2.9f, -1.0f, 0.5f, 2.95f};
    int32_t h[] = {1}, id = -1;
    for (uint64_t seed = 0; seed < 20; seed++) {
        fm_sampler *s = NULL;
        o.seed = seed;
        CHECK_OK(fm_sampler_new(&o, 6, &s, &err), &err);
        CHECK_OK(fm_sampler_next(s, l, h, 1, &id, &err), &err);
        CHECK_EQ_INT(5, id); /* 3.0 / 1.05 = 2.857 < 2.95 */
        fm_sampler_free(s);
    }
    /* eos as a single int */
    CHECK_OK(load_texts("{\"eos_token_id\": 2, \"max_new_tokens\": 128, \"min_p\": 0.05}", NULL, &c,
                        &err),
             &err);
    CHECK_EQ_INT(1, c.n_eos_token_ids);
    CHECK_EQ_INT(2, c.eos_token_ids[0]);
    CHECK_EQ_INT(128, c.max_new_tokens);
    CHECK(c.min_p == 0.05);
}

static void test_null_values(void) {
    fm_error err;
    fm_generation_config c;
    const char *gc =
        "{\"top_k\": null, \"temperature\": null, \"top_p\": null, \"do_sample\": null,"
        " \"min_p\": null, \"repetition_penalty\": null, \"max_length\": null,"
        " \"max_new_tokens\": null, \"eos_token_id\": null, \"bos_token_id\": null,"
        " \"pad_token_id\": -1}";
    CHECK_OK(load_texts(gc, MODEL_CONFIG, &c, &err), &err);
    CHECK_EQ_INT(0, c.top_k); /* null top_k: no top-k warper, as transformers */
    CHECK(c.temperature == 1.0 && c.top_p == 1.0 && c.min_p == 0 && !c.do_sample);
    CHECK_EQ_INT(20, c.max_length);
    CHECK_EQ_INT(0, c.max_new_tokens);
    CHECK_EQ_INT(FM_EOS_MODEL_CONFIG, c.eos_source); /* null eos falls back */
    CHECK_EQ_INT(-1, c.bos_token_id);
    CHECK_EQ_INT(-1, c.pad_token_id);
    /* an explicit empty list: no eos ids, no fallback */
    CHECK_OK(load_texts("{\"eos_token_id\": []}", MODEL_CONFIG, &c, &err), &err);
    CHECK_EQ_INT(0, c.n_eos_token_ids);
    CHECK_EQ_INT(FM_EOS_GENERATION_CONFIG, c.eos_source);
}

/* Each hostile file: the status, a message naming the file and the key, *out untouched. */
static void test_bad_files(void) {
    struct {
        const char *gc, *config;
        fm_status st;
        const char *needles[2];
    } cases[] = {
        {"{\"top_k\": 50.0}", NULL, FM_ERR_CONFIG, {"generation_config.json", "'top_k'"}},
        {"{\"top_k\": -3}", NULL, FM_ERR_CONFIG, {"generation_config.json", "'top_k'"}},
        {"{\"do_sample\": \"yes\"}", NULL, FM_ERR_CONFIG, {"generation_config.json", "do_sample"}},
        {"{\"do_sample\": 1}", NULL, FM_ERR_CONFIG, {"'do_sample'", "expected a bool"}},
        {"{\"temperature\": \"0.7\"}", NULL, FM_ERR_CONFIG, {"'temperature'", "a string"}},
        {"{\"temperature\": -0.5}", NULL, FM_ERR_CONFIG, {"'temperature'", "out of range"}},
        {"{\"top_p\": 1.5}", NULL, FM_ERR_CONFIG, {"'top_p'", "out of range"}},
        {"{\"min_p\": -1}", NULL, FM_ERR_CONFIG, {"'min_p'", "out of range"}},
        {"{\"repetition_penalty\": 0}",
         NULL,
         FM_ERR_CONFIG,
         {"'repetition_penalty'", "must be > 0"}},
        {"{\"max_new_tokens\": 0}", NULL, FM_ERR_CONFIG, {"'max_new_tokens'", "out of range"}},
        {"{\"max_length\": [20]}", NULL, FM_ERR_CONFIG, {"'max_length'", "an array"}},
        {"{\"eos_token_id\": \"</s>\"}", NULL, FM_ERR_CONFIG, {"'eos_token_id'", "a string"}},
        {"{\"eos_token_id\": [1, \"x\"]}", NULL, FM_ERR_CONFIG, {"eos_token_id[1]", "a string"}},
        {"{\"eos_token_id\": [1, -2]}", NULL, FM_ERR_CONFIG, {"eos_token_id[1]", "not a token"}},
        {"{\"eos_token_id\": 4294967296}", NULL, FM_ERR_CONFIG, {"'eos_token_id'", "range"}},
        {"{\"bos_token_id\": 1.5}", NULL, FM_ERR_CONFIG, {"'bos_token_id'", "an integer"}},
        {"{\"do_sample\": true,}", NULL, FM_ERR_JSON, {"generation_config.json", ""}},
        {"{\"a\": 1, \"a\": 2}", NULL, FM_ERR_JSON, {"generation_config.json", "duplicate"}},
        {"[1, 2]", NULL, FM_ERR_CONFIG, {"generation_config.json", "not a JSON object"}},
        {"{}", "{\"eos_token_id\": {\"x\": 1}}", FM_ERR_CONFIG, {"config.json", "'eos_token_id'"}},
        {NULL, "{\"eos_token_id\": 1", FM_ERR_JSON, {"config.json", ""}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_error err;
        fm_generation_config c, before;
        memset(&c, 0x5a, sizeof c);
        before = c;
        fm_status st = load_texts(cases[i].gc, cases[i].config, &c, &err);
        CHECK_MSG(st == cases[i].st, "case %zu: expected %s, seen %s (%s)", i,
                  fm_status_name(cases[i].st), fm_status_name(st), err.msg);
        for (int k = 0; k < 2 && st != FM_OK; k++)
            CHECK_MSG(strstr(err.msg, cases[i].needles[k]), "case %zu: '%s' lacks '%s'", i, err.msg,
                      cases[i].needles[k]);
        CHECK_MSG(memcmp(&c, &before, sizeof c) == 0, "case %zu: output changed on error", i);
    }
}

static void test_limits(void) {
    fm_error err;
    fm_generation_config c;
    /* more eos ids than FM_GENERATION_MAX_EOS */
    char buf[2048];
    size_t o = (size_t)snprintf(buf, sizeof buf, "{\"eos_token_id\": [");
    for (int i = 0; i <= FM_GENERATION_MAX_EOS; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, i ? ", %d" : "%d", i);
    snprintf(buf + o, sizeof buf - o, "]}");
    CHECK_STATUS(FM_ERR_LIMIT, load_texts(buf, NULL, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "'eos_token_id'");
    /* a file over the size limit: refused before parsing */
    size_t big = FM_GENERATION_CONFIG_MAX_BYTES + 10;
    char *text = malloc(big + 1);
    memset(text, ' ', big);
    memcpy(text, "{}", 2);
    text[big] = '\0';
    CHECK_STATUS(FM_ERR_LIMIT, load_texts(text, NULL, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "exceed the limit");
    free(text);
    /* nesting beyond the JSON depth limit */
    char deep[400];
    memset(deep, 0, sizeof deep);
    strcpy(deep, "{\"x\": ");
    for (int i = 0; i < 100; i++)
        strcat(deep, "[");
    for (int i = 0; i < 100; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    CHECK_STATUS(FM_ERR_LIMIT, load_texts(deep, NULL, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "nesting");
}

static void test_not_regular_files(void) {
    fm_error err;
    fm_generation_config c;
    char *dir = model_dir(NULL, NULL);
    if (!dir) return;
    char *p = fm_test_join(dir, "generation_config.json");
    CHECK(mkdir(p, 0700) == 0); /* a directory in its place */
    CHECK_STATUS(FM_ERR_IO, fm_generation_config_load(dir, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "not a regular file");
    CHECK(rmdir(p) == 0);
    CHECK(mkfifo(p, 0600) == 0); /* a FIFO: refused, never waited on */
    CHECK_STATUS(FM_ERR_IO, fm_generation_config_load(dir, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "not a regular file");
    CHECK(unlink(p) == 0);
    /* model directory missing, or a file */
    char *missing = fm_test_join(dir, "nope");
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_generation_config_load(missing, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "nope");
    CHECK(fm_test_write_file(p, "{}", 2) == 0);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_generation_config_load(p, &c, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_generation_config_load(NULL, &c, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_generation_config_load(dir, NULL, &err), &err);
    /* open failing (fault injection): an I/O error naming the file */
    fm_fault_set(FM_FAULT_OPEN, 1);
    CHECK_STATUS(FM_ERR_IO, fm_generation_config_load(dir, &c, &err), &err);
    fm_fault_set(FM_FAULT_OPEN, 0);
    CHECK_CONTAINS(err.msg, "generation_config.json");
    free(missing);
    free(p);
    remove_dir(dir);
}

static void test_overrides(void) {
    fm_error err;
    fm_generation_config c, before;
    fm_generation_overrides ov;
    fm_sampling_options o;
    /* a temperature on a greedy default turns sampling on */
    fm_generation_config_init(&c);
    fm_generation_overrides_init(&ov);
    ov.set = FM_GEN_SET_TEMPERATURE | FM_GEN_SET_SEED;
    ov.temperature = 0.7;
    ov.seed = 1234;
    CHECK_OK(fm_generation_config_override(&c, &ov, &err), &err);
    CHECK_OK(fm_generation_config_sampling(&c, &o, &err), &err);
    CHECK(o.do_sample && o.temperature == 0.7 && o.seed == 1234);
    CHECK_EQ_INT(50, o.top_k); /* transformers' implicit top_k 50 stays */
    /* explicit do_sample false wins */
    fm_generation_config_init(&c);
    ov.set = FM_GEN_SET_TEMPERATURE | FM_GEN_SET_DO_SAMPLE;
    ov.do_sample = false;
    CHECK_OK(fm_generation_config_override(&c, &ov, &err), &err);
    CHECK(!c.do_sample);
    /* temperature 0 on the Qwen file: greedy */
    CHECK_OK(load_texts(QWEN_GC, NULL, &c, &err), &err);
    ov.set = FM_GEN_SET_TEMPERATURE;
    ov.temperature = 0;
    CHECK_OK(fm_generation_config_override(&c, &ov, &err), &err);
    CHECK_OK(fm_generation_config_sampling(&c, &o, &err), &err);
    CHECK(fm_sampling_options_greedy(&o));
    CHECK(o.repetition_penalty == 1.05); /* the file's penalty still applies */
    /* top-k alone turns sampling on; max_new_tokens and penalty pass through */
    fm_generation_config_init(&c);
    ov.set = FM_GEN_SET_TOP_K | FM_GEN_SET_MAX_NEW_TOKENS | FM_GEN_SET_REPETITION_PENALTY |
             FM_GEN_SET_TOP_P | FM_GEN_SET_MIN_P;
    ov.top_k = 0;
    ov.top_p = 0.9;
    ov.min_p = 0.1;
    ov.max_new_tokens = 7;
    ov.repetition_penalty = 1.2;
    CHECK_OK(fm_generation_config_override(&c, &ov, &err), &err);
    CHECK_OK(fm_generation_config_sampling(&c, &o, &err), &err);
    CHECK(o.do_sample && o.top_k == 0 && o.top_p == 0.9 && o.min_p == 0.1);
    CHECK(o.repetition_penalty == 1.2 && o.temperature == 1.0);
    CHECK_EQ_INT(7, c.max_new_tokens);
    /* bad values: refused by name, config unchanged */
    struct {
        unsigned set;
        const char *name;
    } bad[] = {{FM_GEN_SET_TEMPERATURE, "temperature"},
               {FM_GEN_SET_TOP_K, "top_k"},
               {FM_GEN_SET_TOP_P, "top_p"},
               {FM_GEN_SET_MIN_P, "min_p"},
               {FM_GEN_SET_REPETITION_PENALTY, "repetition_penalty"},
               {FM_GEN_SET_MAX_NEW_TOKENS, "max_new_tokens"}};
    fm_generation_overrides_init(&ov);
    ov.temperature = -1;
    ov.top_k = -1;
    ov.top_p = 2;
    ov.min_p = NAN;
    ov.repetition_penalty = -1;
    ov.max_new_tokens = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_generation_config_init(&c);
        before = c;
        ov.set = bad[i].set;
        CHECK_STATUS(FM_ERR_INVALID_ARG, fm_generation_config_override(&c, &ov, &err), &err);
        CHECK_CONTAINS(err.msg, bad[i].name);
        CHECK(memcmp(&c, &before, sizeof c) == 0);
    }
    CHECK_OK(fm_generation_config_override(&c, NULL, &err), &err);
}

static void test_new_tokens(void) {
    fm_error err;
    fm_generation_config c;
    int64_t n = -1;
    fm_generation_config_init(&c);
    CHECK_OK(fm_generation_config_new_tokens(&c, 500, &n, &err), &err);
    CHECK_EQ_INT(20, n); /* default max_length: 20 new tokens, as transformers */
    c.max_length = 100;
    CHECK_OK(fm_generation_config_new_tokens(&c, 30, &n, &err), &err);
    CHECK_EQ_INT(70, n);
    CHECK_STATUS(FM_ERR_INPUT, fm_generation_config_new_tokens(&c, 100, &n, &err), &err);
    CHECK_CONTAINS(err.msg, "max_length 100");
    c.max_new_tokens = 5; /* wins over max_length */
    CHECK_OK(fm_generation_config_new_tokens(&c, 100, &n, &err), &err);
    CHECK_EQ_INT(5, n);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_generation_config_new_tokens(&c, -1, &n, &err), &err);
}

/* Every allocation failing in turn (both files read): FM_ERR_NOMEM, output untouched, no leak. */
static void test_alloc_failures(void) {
    char *dir = model_dir("{\"do_sample\": true, \"top_k\": 20}", MODEL_CONFIG);
    if (!dir) return;
    int failures = 0;
    for (uint64_t nth = 1; nth < 100; nth++) {
        fm_error err;
        fm_generation_config c, before;
        memset(&c, 0x77, sizeof c);
        before = c;
        fm_fault_set(FM_FAULT_ALLOC, nth);
        fm_status st = fm_generation_config_load(dir, &c, &err);
        uint64_t seen = fm_fault_count(FM_FAULT_ALLOC);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            CHECK(seen < nth);
            CHECK(c.do_sample && c.top_k == 20 && c.eos_source == FM_EOS_MODEL_CONFIG);
            break;
        }
        failures++;
        CHECK_STATUS(FM_ERR_NOMEM, st, &err);
        CHECK(memcmp(&c, &before, sizeof c) == 0);
    }
    CHECK_MSG(failures >= 4, "only %d allocation points", failures);
    remove_dir(dir);
}

int main(void) {
    RUN(test_absent_file_gives_transformers_defaults);
    RUN(test_qwen_instruct_file);
    RUN(test_null_values);
    RUN(test_bad_files);
    RUN(test_limits);
    RUN(test_not_regular_files);
    RUN(test_overrides);
    RUN(test_new_tokens);
    RUN(test_alloc_failures);
    TEST_END();
}
