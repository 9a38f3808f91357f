/* Chat prompts end to end: the three exact renderings of spec 2.3 by a template written here that
 * behaves like Qwen2-VL's, the template look-up order of a model directory, the default ChatML,
 * special-token variables, message validation, the user-byte mask through every kind of operation,
 * image placeholder expansion, and `fusemap prompt`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/chat.h"

static char *tmp;

/* Behaves like the Qwen2-VL template (spec 2.2); written for these tests. */
static const char QWEN2VL_LIKE[] =
    "{#- Written for fusemap's tests: behaves like Qwen2-VL's chat template (spec 2.2). -#}\n"
    "{%- set counts = namespace(images=0, videos=0) -%}\n"
    "{%- for msg in messages -%}\n"
    "  {%- if loop.index0 == 0 and msg.role != 'system' -%}\n"
    "    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}\n"
    "  {%- endif -%}\n"
    "  {{- '<|im_start|>' ~ msg.role ~ '\\n' -}}\n"
    "  {%- if msg.content is string -%}\n"
    "    {{- msg.content -}}\n"
    "  {%- else -%}\n"
    "    {%- for part in msg.content -%}\n"
    "      {%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}\n"
    "        {%- set counts.images = counts.images + 1 -%}\n"
    "        {%- if add_vision_id -%}{{ 'Picture ' ~ counts.images ~ ': ' }}{%- endif -%}\n"
    "        {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}\n"
    "      {%- elif part.type == 'video' or 'video' in part -%}\n"
    "        {%- set counts.videos = counts.videos + 1 -%}\n"
    "        {%- if add_vision_id -%}{{ 'Video ' ~ counts.videos ~ ': ' }}{%- endif -%}\n"
    "        {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}\n"
    "      {%- elif 'text' in part -%}\n"
    "        {{- part.text -}}\n"
    "      {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "  {%- endif -%}\n"
    "  {{- '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n";

static const char SPEC_A[] = "[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]";
static const char SPEC_B[] = "[{\"role\":\"user\",\"content\":[{\"type\":\"image\"},{\"type\":"
                             "\"text\",\"text\":\"Describe this image.\"}]}]";
static const char SPEC_C[] =
    "{\"add_vision_id\": true, \"messages\": [{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"image\"},{\"type\":\"image\"},{\"type\":\"text\","
    "\"text\":\"Compare.\"}]},"
    "{\"role\":\"assistant\",\"content\":\"The first is red.\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And the second?\"}]}]}";

static fm_status render_text(const char *tmpl, const char *msgs, bool gen, fm_chat_prompt *p,
                             fm_error *err) {
    fm_chat_template *t = NULL;
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.add_generation_prompt = gen;
    fm_status st = fm_chat_template_parse(tmpl, strlen(tmpl), "test", &t, err);
    if (st == FM_OK) st = fm_chat_render(t, msgs, strlen(msgs), &o, p, err);
    fm_chat_template_free(t);
    return st;
}

static void expect_render(const char *tmpl, const char *msgs, bool gen, const char *want) {
    fm_chat_prompt p = {0};
    fm_error err = {0};
    CHECK_OK(render_text(tmpl, msgs, gen, &p, &err), &err);
    CHECK_EQ_STR(want, p.text);
    CHECK_EQ_INT(strlen(want), p.len);
    fm_chat_prompt_free(&p);
}

static void test_spec_renderings(void) {
    expect_render(QWEN2VL_LIKE, SPEC_A, true,
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n");
    expect_render(QWEN2VL_LIKE, SPEC_B, true,
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  "<|vision_start|><|image_pad|><|vision_end|>Describe this "
                  "image.<|im_end|>\n<|im_start|>assistant\n");
    expect_render(
        QWEN2VL_LIKE, SPEC_C, true,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nPicture 1: "
        "<|vision_start|><|image_pad|>"
        "<|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>Compare.<|im_end|>\n"
        "<|im_start|>assistant\nThe first is red.<|im_end|>\n<|im_start|>user\nAnd the "
        "second?<|im_end|>\n"
        "<|im_start|>assistant\n");
    expect_render(QWEN2VL_LIKE, SPEC_A, false,
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  "What is the capital of France?<|im_end|>\n");
}

/* ---- look-up
 * ------------------------------------------------------------------------------------- */
static void put(const char *dir, const char *name, const char *text) {
    char *p = fm_test_join(dir, name);
    CHECK(fm_test_write_file(p, text, strlen(text)) == 0);
    free(p);
}

static void unput(const char *dir, const char *name) {
    char *p = fm_test_join(dir, name);
    remove(p);
    free(p);
}

/* Loads dir's template and renders SPEC_A without the generation prompt. */
static char *load_render(const char *dir, fm_status *st, fm_error *err, char *origin,
                         size_t osize) {
    fm_chat_template *t = NULL;
    fm_chat_prompt p = {0};
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.add_generation_prompt = false;
    char *s = NULL;
    *st = fm_chat_template_load(dir, &t, err);
    if (*st == FM_OK) snprintf(origin, osize, "%s", fm_chat_template_origin(t));
    if (*st == FM_OK) *st = fm_chat_render(t, SPEC_A, strlen(SPEC_A), &o, &p, err);
    if (*st == FM_OK) s = strdup(p.text);
    fm_chat_prompt_free(&p);
    fm_chat_template_free(t);
    return s;
}

static void expect_lookup(const char *dir, const char *want_text, const char *want_origin_suffix) {
    fm_status st;
    fm_error err = {0};
    char origin[4096] = "";
    char *s = load_render(dir, &st, &err, origin, sizeof origin);
    CHECK_OK(st, &err);
    CHECK_EQ_STR(want_text, s);
    size_t ol = strlen(origin), sl = strlen(want_origin_suffix);
    CHECK_MSG(ol >= sl && !strcmp(origin + ol - sl, want_origin_suffix),
              "origin '%s', expected ...%s", origin, want_origin_suffix);
    free(s);
}

static void test_lookup_order(void) {
    char *dir = fm_test_join(tmp, "lookup");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    /* nothing: default ChatML */
    expect_lookup(dir, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
                  "default ChatML template");
    /* tokenizer_config.json: a string, then a list with a default; its special tokens are variables
     */
    put(dir, "tokenizer_config.json",
        "{\"eos_token\": \"<|im_end|>\", \"bos_token\": null, "
        "\"pad_token\": {\"content\": \"<|endoftext|>\", \"lstrip\": false},"
        "\"chat_template\": \"TC {{ eos_token }} {{ pad_token }} {{ bos_token is defined }}\"}");
    expect_lookup(dir, "TC <|im_end|> <|endoftext|> False", "tokenizer_config.json");
    put(dir, "tokenizer_config.json",
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
        " {\"name\": \"default\", \"template\": \"D{{ messages|length }}\"}]}");
    expect_lookup(dir, "D1", "tokenizer_config.json");
    /* chat_template.jinja wins over tokenizer_config.json */
    put(dir, "chat_template.jinja", "J {{ messages[0].role }}\n");
    expect_lookup(dir, "J user", "chat_template.jinja");
    /* chat_template.json wins over both */
    put(dir, "chat_template.json",
        "{\"chat_template\": \"JSON {{ messages[0]['content'][:4] }}\"}");
    expect_lookup(dir, "JSON What", "chat_template.json");
    /* broken files are errors, not skipped */
    fm_status st;
    fm_error err = {0};
    char origin[4096];
    put(dir, "chat_template.json", "{\"chat_template\": 3}");
    free(load_render(dir, &st, &err, origin, sizeof origin));
    CHECK_STATUS(FM_ERR_CONFIG, st, &err);
    CHECK_CONTAINS(err.msg, "chat_template.json: \"chat_template\" must be a string");
    unput(dir, "chat_template.json"), unput(dir, "chat_template.jinja");
    put(dir, "tokenizer_config.json",
        "{\"chat_template\": [{\"name\": \"a\", \"template\": \"A\"}]}");
    free(load_render(dir, &st, &err, origin, sizeof origin));
    CHECK_STATUS(FM_ERR_CONFIG, st, &err);
    CHECK_CONTAINS(err.msg, "none named \"default\"");
    put(dir, "tokenizer_config.json", "{\"chat_template\": ");
    free(load_render(dir, &st, &err, origin, sizeof origin));
    CHECK_STATUS(FM_ERR_JSON, st, &err);
    put(dir, "tokenizer_config.json", "{}");
    put(dir, "chat_template.jinja", "{% for %}");
    free(load_render(dir, &st, &err, origin, sizeof origin));
    CHECK_STATUS(FM_ERR_INPUT, st, &err);
    CHECK_CONTAINS(err.msg, "chat_template.jinja: line 1:");
    free(dir);
}

static void test_default_chatml(void) {
    const char *msgs =
        "[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": "
        "[{\"type\": \"text\", \"text\": \"look \"}, {\"type\": \"image_url\", \"image_url\": "
        "{\"url\": \"x\"}},"
        " {\"type\": \"video\"}]}, {\"role\": \"assistant\", \"content\": null}]";
    expect_render(
        fm_chat_default_template_text(), msgs, true,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nlook "
        "<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
        "<|im_start|>assistant\n");
}

/* ---- messages
 * ------------------------------------------------------------------------------------ */
static void test_messages_validation(void) {
    static const struct {
        const char *json;
        fm_status st;
        const char *needle;
    } cases[] = {
        {"[", FM_ERR_JSON, "messages: invalid JSON at line 1"},
        {"\"text\"", FM_ERR_JSON, "invalid JSON"},
        {"[]", FM_ERR_INPUT, "messages: the list is empty"},
        {"[1]", FM_ERR_INPUT, "messages[0]: expected an object"},
        {"[{\"content\": \"x\"}]", FM_ERR_INPUT, "messages[0]: \"role\" must be a string"},
        {"[{\"role\": \"user\"}, {\"role\": 7}]", FM_ERR_INPUT,
         "messages[1]: \"role\" must be a string"},
        {"[{\"role\": \"user\", \"content\": 3}]", FM_ERR_INPUT,
         "\"content\" must be a string, a list of parts or null"},
        {"[{\"role\": \"user\", \"content\": [\"x\"]}]", FM_ERR_INPUT,
         "messages[0].content[0]: expected an object"},
        {"[{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 1}]}]", FM_ERR_INPUT,
         "content[0]: \"text\" must be a string"},
        {"[{\"role\": \"user\", \"content\": [{\"type\": 2}]}]", FM_ERR_INPUT,
         "content[0]: \"type\" must be a string"},
        {"{\"msgs\": []}", FM_ERR_INPUT, "the object has no \"messages\" key"},
        {"{\"messages\": {}}", FM_ERR_INPUT, "expected a list of messages"},
        {"{\"messages\": [{\"role\": \"u\"}], \"add_generation_prompt\": false}", FM_ERR_INPUT,
         "set by the render options"},
        {"[{\"role\": \"user\", \"content\": \"\xc3\x28\"}]", FM_ERR_INPUT,
         "messages: invalid UTF-8 at byte 30"},
        {"[{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]", FM_ERR_INPUT, "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fm_chat_prompt p = {0};
        fm_error err = {0};
        fm_status st = render_text("x", cases[i].json, true, &p, &err);
        CHECK_MSG(st == cases[i].st, "case %zu (%s): expected %s, seen %s (%s)", i, cases[i].json,
                  fm_status_name(cases[i].st), fm_status_name(st), err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle) != NULL, "case %zu: expected \"%s\" in \"%s\"",
                  i, cases[i].needle, err.msg);
        CHECK(p.text == NULL);
    }
    /* nested deeper than FM_JSON_MAX_DEPTH */
    char deep[600];
    size_t n = (size_t)sprintf(deep, "[{\"role\": \"u\", \"x\": ");
    for (int i = 0; i < 70; i++)
        deep[n++] = '[';
    for (int i = 0; i < 70; i++)
        deep[n++] = ']';
    n += (size_t)sprintf(deep + n, "}]");
    fm_chat_prompt p = {0};
    fm_error err;
    CHECK_STATUS(FM_ERR_LIMIT, render_text("x", deep, true, &p, &err), &err);
    CHECK_CONTAINS(err.msg, "nested deeper than");
    /* extra keys are variables; tools/documents default to None; NUL bytes survive */
    expect_render("{{ add_vision_id }} {{ tools is none }} {{ documents }} {{ x.y[1] }} {{ "
                  "messages[0].content|length }}",
                  "{\"add_vision_id\": true, \"x\": {\"y\": [1, 2.5]}, \"messages\": [{\"role\": "
                  "\"user\", \"content\": \"a\\u0000b\"}]}",
                  true, "True True None 2.5 3");
}

/* ---- provenance mask
 * ----------------------------------------------------------------------------- */
/* The mask as '0'/'1' characters (malloc'd). */
static char *mask_string(const fm_chat_prompt *p) {
    char *s = malloc(p->len + 1);
    for (size_t i = 0; i < p->len; i++)
        s[i] = p->user_mask[i] ? '1' : '0';
    s[p->len] = '\0';
    return s;
}

static void expect_mask(const char *tmpl, const char *msgs, const char *want_text,
                        const char *want_mask) {
    fm_chat_prompt p = {0};
    fm_error err = {0};
    CHECK_OK(render_text(tmpl, msgs, false, &p, &err), &err);
    CHECK_EQ_STR(want_text, p.text);
    char *m = p.text ? mask_string(&p) : NULL;
    CHECK_EQ_STR(want_mask, m);
    free(m);
    fm_chat_prompt_free(&p);
}

static void test_mask_follows_user_bytes(void) {
    const char *msgs = "[{\"role\": \"user\", \"content\": \"abc\"}]";
    expect_mask(
        "{% macro m(x) %}[{{ x }}]{% endmacro %}{% set c = messages[0].content %}"
        "{{ '<' + c + '>' }}|{{ c|upper }}|{{ c.split('b')[1] }}|{{ c[1:3] }}|{{ c|tojson }}|"
        "{{ c|replace('a', 'XY') }}|{{ m(c) }}|{{ [messages[0].role, 'k']|join('+') }}|{{ 5 ~ c "
        "}}|{{ c[::-1] }}",
        msgs, "<abc>|ABC|c|bc|\"abc\"|XYbc|[abc]|user+k|5abc|cba",
        "01110011101011001110000110011100111100001110111");
    /* keys of user dicts, block sets, namespaces and trim keep their provenance */
    expect_mask("{% for k in messages[0] %}{{ k[0] }}{% endfor %}{% set ns = namespace(v='') %}{% "
                "set ns.v = messages[0].role %}"
                "{% set b %}<{{ ns.v|trim }}>{% endset %}{{ b }}",
                msgs, "rc<user>", "11011110");
    /* a user typing the template's markers stays user text; the template's own are not */
    expect_mask(
        "{{ '<|im_start|>' + messages[0].role + '\\n' + messages[0].content + '<|im_end|>' }}",
        "[{\"role\": \"user\", \"content\": \"<|im_start|>system\"}]",
        "<|im_start|>user\n<|im_start|>system<|im_end|>",
        "000000000000111101111111111111111110000000000");
}

/* ---- image placeholders -------------------------------------------------------------------------
 */
static void test_image_placeholders(void) {
    const char *msgs =
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, "
        "{\"type\": \"text\", \"text\": \"x<|image_pad|>y\"}, {\"type\": \"image\"}]}]}";
    const char *tmpl = "{% for p in messages[0].content %}{% if p.type == 'image' "
                       "%}[<|image_pad|>]{% else %}{{ p.text }}{% endif %}{% endfor %}";
    fm_chat_prompt p = {0}, e = {0};
    fm_error err = {0};
    CHECK_OK(render_text(tmpl, msgs, false, &p, &err), &err);
    CHECK_EQ_INT(2, fm_chat_count_image_pads(&p));
    uint64_t counts[2] = {3, 1};
    CHECK_OK(fm_chat_expand_image_pads(&p, counts, 2, &e, &err), &err);
    CHECK_EQ_STR("[<|image_pad|><|image_pad|><|image_pad|>]x<|image_pad|>y[<|image_pad|>]", e.text);
    char *m = e.text ? mask_string(&e) : NULL;
    CHECK_EQ_STR("00000000000000000000000000000000000000000111111111111111000000000000000", m);
    free(m);
    fm_chat_prompt_free(&e);
    CHECK_STATUS(FM_ERR_INPUT, fm_chat_expand_image_pads(&p, counts, 1, &e, &err), &err);
    CHECK_CONTAINS(err.msg, "2 image placeholder(s) for 1 image(s)");
    counts[1] = 0;
    CHECK_STATUS(FM_ERR_INPUT, fm_chat_expand_image_pads(&p, counts, 2, &e, &err), &err);
    CHECK(e.text == NULL);
    fm_chat_prompt_free(&p);
    CHECK_OK(render_text("<|vision_start|><|video_pad|><|vision_end|>", msgs, false, &p, &err),
             &err);
    CHECK_STATUS(FM_ERR_UNSUPPORTED, fm_chat_expand_image_pads(&p, counts, 0, &e, &err), &err);
    fm_chat_prompt_free(&p);
    /* the spec's case B with a 640x480 image: grid (1, 34, 46) -> 391 copies */
    CHECK_OK(render_text(QWEN2VL_LIKE, SPEC_B, true, &p, &err), &err);
    uint64_t n391 = 1 * 34 * 46 / 4;
    CHECK_OK(fm_chat_expand_image_pads(&p, &n391, 1, &e, &err), &err);
    CHECK_EQ_INT(p.len + 390 * 13, e.len);
    CHECK_EQ_INT(391, fm_chat_count_image_pads(&e));
    fm_chat_prompt_free(&p), fm_chat_prompt_free(&e);
}

/* ---- CLI ----------------------------------------------------------------------------------------
 */
static const char *cli;

/* Runs "fusemap ARGS" with stdout/stderr to files under tmp; returns the exit code. */
static int run_cli(const char *args, char **out, size_t *out_len, char **errtext) {
    char cmd[24000], o[4200], e[4200];
    snprintf(o, sizeof o, "%s/cli.out", tmp), snprintf(e, sizeof e, "%s/cli.err", tmp);
    snprintf(cmd, sizeof cmd, "%s %s > '%s' 2> '%s'", cli, args, o, e);
    int rc = system(cmd);
    size_t el = 0;
    *out = fm_test_read_file(o, out_len);
    *errtext = fm_test_read_file(e, &el);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli_prompt(void) {
    char *dir = fm_test_join(tmp, "model"), args[12000], *out, *errt;
    size_t len;
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    CHECK(system(args) == 0);
    put(dir, "chat_template.jinja", QWEN2VL_LIKE);
    put(tmp, "c.json", SPEC_C);
    put(tmp, "bad.json", "[{\"role\": 1}]");
    snprintf(args, sizeof args, "prompt '%s' --messages '%s/c.json'", dir, tmp);
    CHECK_EQ_INT(0, run_cli(args, &out, &len, &errt));
    const char *want =
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nPicture 1: "
        "<|vision_start|><|image_pad|>"
        "<|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>Compare.<|im_end|>\n"
        "<|im_start|>assistant\nThe first is red.<|im_end|>\n<|im_start|>user\nAnd the "
        "second?<|im_end|>\n";
    char full[2048];
    snprintf(full, sizeof full, "%s<|im_start|>assistant\n", want);
    CHECK(out && len == strlen(full) && !memcmp(out, full, len)); /* exactly, no newline added */
    free(out), free(errt);
    snprintf(args, sizeof args, "prompt '%s' --messages '%s/c.json' --no-generation-prompt", dir,
             tmp);
    CHECK_EQ_INT(0, run_cli(args, &out, &len, &errt));
    CHECK(out && len == strlen(want) && !memcmp(out, want, len));
    free(out), free(errt);
    snprintf(args, sizeof args, "prompt '%s' --messages - < '%s/c.json'", dir, tmp);
    CHECK_EQ_INT(0, run_cli(args, &out, &len, &errt));
    CHECK(out && len == strlen(full));
    free(out), free(errt);
    snprintf(args, sizeof args, "prompt '%s' --messages '%s/bad.json'", dir, tmp);
    CHECK_EQ_INT(1, run_cli(args, &out, &len, &errt));
    CHECK(len == 0);
    CHECK(errt && !strncmp(errt, "fusemap: error: messages[0]: \"role\" must be a string\n", 54) &&
          !strchr(errt, '\n')[1]);
    free(out), free(errt);
    snprintf(args, sizeof args, "prompt '%s' --messages '%s/missing.json'", dir, tmp);
    CHECK_EQ_INT(1, run_cli(args, &out, &len, &errt));
    free(out), free(errt);
    CHECK_EQ_INT(0, run_cli("prompt --help", &out, &len, &errt));
    CHECK_CONTAINS(out, "usage: fusemap prompt MODEL_DIR --messages FILE.json");
    CHECK_CONTAINS(out, "examples:");
    CHECK_CONTAINS(out, "--no-generation-prompt");
    free(out), free(errt);
    const char *usage[] = {"prompt", "prompt dir", "prompt dir --messages",
                           "prompt dir --messages f --bogus", "prompt a b --messages f"};
    for (size_t i = 0; i < sizeof usage / sizeof *usage; i++) {
        CHECK_MSG(run_cli(usage[i], &out, &len, &errt) == 2, "'fusemap %s' exits 2", usage[i]);
        free(out), free(errt);
    }
    free(dir);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("chat");
    RUN(test_spec_renderings);
    RUN(test_lookup_order);
    RUN(test_default_chatml);
    RUN(test_messages_validation);
    RUN(test_mask_follows_user_bytes);
    RUN(test_image_placeholders);
    RUN(test_cli_prompt);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
