/* `fusemap generate MODEL_DIR [--image FILE]... (--prompt TEXT | --messages FILE | --input-ids
 * IDS [--pixel-values FILE])`: the model's answer, streamed to stdout as it is decoded (or one
 * JSON object with --json); a last stderr line gives the prompt size and the speeds. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "fusemap/chat.h"
#include "fusemap/generate.h"
#include "fusemap/tokenizer.h"

enum {
    OPT_IMAGE = FM_CLI_OPT_OWN,
    OPT_PROMPT,
    OPT_MESSAGES,
    OPT_IDS,
    OPT_PIXEL_VALUES,
    OPT_SYSTEM,
    OPT_MAX_NEW,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPETITION,
    OPT_SEED,
    OPT_THREADS,
    OPT_KV_DTYPE,
    OPT_JSON
};

static const fm_cli_opt opts[] = {
    {OPT_IMAGE, "--image", NULL, "FILE", "none",
     "a PNG or JPEG image for the prompt (one file per flag, repeatable; with --prompt the images "
     "come "
     "first in the user turn, with --messages they fill its image parts in order)"},
    {OPT_PROMPT, "--prompt", NULL, "TEXT", "none", "the user's question (one user turn)"},
    {OPT_MESSAGES, "--messages", NULL, "FILE.json", "none",
     "a conversation in Hugging Face format, or {\"messages\": [...], variables...}; '-' reads "
     "standard input"},
    {OPT_IDS, "--input-ids", NULL, "IDS", "none",
     "the prompt as token ids (no tokenizer or template), e.g. 1,2,3"},
    {OPT_PIXEL_VALUES, "--pixel-values", NULL, "FILE", "none",
     "with --input-ids: pixel_values (F32) and image_grid_thw (I64) of the prompt's images"},
    {OPT_SYSTEM, "--system", NULL, "TEXT", "the template's default",
     "a system turn before the prompt (with --prompt)"},
    {OPT_MAX_NEW, "--max-new-tokens", NULL, "N", "generation_config.json's, else 20",
     "tokens to generate at most"},
    {OPT_TEMPERATURE, "--temperature", NULL, "T", "generation_config.json's",
     "0 = greedy; > 0 turns sampling on"},
    {OPT_TOP_K, "--top-k", NULL, "K", "generation_config.json's, else 50",
     "keep the K most likely tokens (0 = off)"},
    {OPT_TOP_P, "--top-p", NULL, "P", "generation_config.json's, else 1",
     "nucleus sampling threshold"},
    {OPT_MIN_P, "--min-p", NULL, "P", "0",
     "drop tokens below P times the most likely one's probability"},
    {OPT_REPETITION, "--repetition-penalty", NULL, "R", "generation_config.json's, else 1",
     "divide positive (multiply negative) logits of tokens already seen by R"},
    {OPT_SEED, "--seed", NULL, "S", "0", "sampling seed: the same seed gives the same output"},
    {OPT_THREADS, "--threads", NULL, "N", "all cores", "threads (1..1024)"},
    {OPT_KV_DTYPE, "--kv-dtype", NULL, "f32|bf16", "f32", "the KV cache's element type"},
    {OPT_JSON, "--json", NULL, NULL, NULL,
     "print one JSON object (tokens, text, prompt_tokens, prefill_tok_s, decode_tok_s, stop) "
     "instead of streaming"},
    FM_CLI_OPTS_FUSION,
    FM_CLI_OPT_STRICT_ENTRY,
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_generate_help = {
    "generate MODEL_DIR [--image FILE]... (--prompt TEXT | --messages FILE.json | --input-ids IDS) "
    "[options]",
    "Builds the prompt with the model's chat template and tokenizer (text from the user never "
    "forms\n"
    "special tokens), runs the vision tower on the images, then generates: the answer streams to\n"
    "stdout as it is decoded. Sampling defaults come from generation_config.json; the flags\n"
    "override them. Stops at an end-of-sequence id (generation_config.json's and <|im_end|>) or\n"
    "after --max-new-tokens. The last stderr line: prompt tokens, prefill and decode speeds.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap generate Qwen2-VL-2B-Instruct --image cat.png --prompt \"What is in this picture?\"\n"
    "fusemap generate Qwen2-VL-2B-Instruct --messages chat.json --max-new-tokens 64 --temperature "
    "0.7 --seed 1 --json\n",
};

typedef struct gen_args {
    const char *dir, *prompt, *messages, *ids, *pixel_values, *system;
    const char *images[FM_CLI_MAX_IMAGES];
    int n_images, threads;
    fm_dtype kv;
    bool json;
    fm_generation_overrides ov;
    fm_cli_common c;
} gen_args;

static int number(const fm_cli_command *cmd, const char *name, const char *v, double *out) {
    char *end;
    *out = strtod(v, &end);
    return *end || end == v ? fm_cli_usage(cmd, "%s: invalid number '%s'", name, v) : 0;
}

static int integer(const fm_cli_command *cmd, const char *name, const char *v, int64_t *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    *out = x;
    return *end || end == v || x < 0
               ? fm_cli_usage(cmd, "%s: expected a non-negative integer, got '%s'", name, v)
               : 0;
}

static int sampling_opt(const fm_cli_command *cmd, gen_args *a, int id, const char *v) {
    fm_generation_overrides *o = &a->ov;
    int64_t i = 0;
    int rc = 0;
    switch (id) {
    case OPT_MAX_NEW:
        rc = integer(cmd, "--max-new-tokens", v, &o->max_new_tokens),
        o->set |= FM_GEN_SET_MAX_NEW_TOKENS;
        break;
    case OPT_TEMPERATURE:
        rc = number(cmd, "--temperature", v, &o->temperature), o->set |= FM_GEN_SET_TEMPERATURE;
        break;
    case OPT_TOP_K:
        rc = integer(cmd, "--top-k", v, &o->top_k), o->set |= FM_GEN_SET_TOP_K;
        break;
    case OPT_TOP_P:
        rc = number(cmd, "--top-p", v, &o->top_p), o->set |= FM_GEN_SET_TOP_P;
        break;
    case OPT_MIN_P:
        rc = number(cmd, "--min-p", v, &o->min_p), o->set |= FM_GEN_SET_MIN_P;
        break;
    case OPT_REPETITION:
        rc = number(cmd, "--repetition-penalty", v, &o->repetition_penalty),
        o->set |= FM_GEN_SET_REPETITION_PENALTY;
        break;
    case OPT_SEED:
        rc = integer(cmd, "--seed", v, &i), o->seed = (uint64_t)i, o->set |= FM_GEN_SET_SEED;
        break;
    default:
        return -1;
    }
    return rc;
}

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    gen_args *a = ctx;
    int rc = sampling_opt(cmd, a, id, v);
    if (rc >= 0) return rc;
    switch (id) {
    case OPT_IMAGE:
        if (v[0] == '-' && v[1])
            return fm_cli_usage(cmd, "--image needs a file, got the option '%s'", v);
        if (a->n_images == FM_CLI_MAX_IMAGES)
            return fm_cli_usage(cmd, "at most %d --image", FM_CLI_MAX_IMAGES);
        a->images[a->n_images++] = v;
        return 0;
    case OPT_PROMPT:
        a->prompt = v;
        return 0;
    case OPT_MESSAGES:
        a->messages = v;
        return 0;
    case OPT_IDS:
        a->ids = v;
        return 0;
    case OPT_PIXEL_VALUES:
        a->pixel_values = v;
        return 0;
    case OPT_SYSTEM:
        a->system = v;
        return 0;
    case OPT_THREADS:
        return fm_cli_parse_threads(cmd, v, &a->threads);
    case OPT_KV_DTYPE:
        return fm_cli_parse_kv_dtype(cmd, v, &a->kv);
    case OPT_JSON:
        a->json = true;
        return 0;
    default:
        if (a->dir) return fm_cli_usage(cmd, "generate: unexpected argument '%s'", v);
        a->dir = v;
        return 0;
    }
}

static int check_args(const fm_cli_command *cmd, const gen_args *a) {
    int sources = !!a->prompt + !!a->messages + !!a->ids;
    if (!a->dir || sources != 1)
        return fm_cli_usage(
            cmd, "generate needs MODEL_DIR and one of --prompt, --messages, --input-ids");
    if (a->ids && a->n_images)
        return fm_cli_usage(cmd, "with --input-ids, images come as --pixel-values");
    if (a->pixel_values && !a->ids)
        return fm_cli_usage(cmd, "--pixel-values goes with --input-ids");
    if (a->system && !a->prompt) return fm_cli_usage(cmd, "--system goes with --prompt");
    return FM_CLI_GO;
}

/* --prompt (and --system, --image): one user turn, the images first, as JSON text. */
static fm_status prompt_json(const gen_args *a, char **out, size_t *len, fm_error *err) {
    json_t *msgs = json_array(), *content = json_array(), *user = json_object();
    if (a->system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", a->system));
    for (int i = 0; i < a->n_images; i++)
        json_array_append_new(content, json_pack("{s:s}", "type", "image"));
    json_array_append_new(content, json_pack("{s:s,s:s}", "type", "text", "text", a->prompt));
    json_object_set_new(user, "role", json_string("user"));
    json_object_set_new(user, "content", content);
    json_array_append_new(msgs, user);
    char *s = json_dumps(msgs, JSON_COMPACT);
    json_decref(msgs);
    if (!s) return fm_error_set(err, FM_ERR_INPUT, "--prompt/--system: not valid UTF-8 text");
    *len = strlen(s);
    *out = fm_strdup(s);
    free(s);
    return *out ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
}

/* The prompt ids (and the images' pixel values) from the chosen source. */
static fm_status build_prompt(const gen_args *a, fm_model *m, const fm_tokenizer *tok,
                              int64_t **ids, size_t *n, fm_tensor *pv, fm_tensor *grid,
                              fm_error *err) {
    if (a->ids) {
        fm_status st = fm_cli_parse_ids(a->ids, ids, n, err);
        if (st == FM_OK && a->pixel_values)
            st = fm_cli_read_pixel_values(a->pixel_values, pv, grid, err);
        return st;
    }
    char *json = NULL;
    size_t len = 0;
    fm_chat_template *tmpl = NULL;
    fm_image imgs[FM_CLI_MAX_IMAGES];
    fm_status st =
        a->prompt ? prompt_json(a, &json, &len, err)
                  : fm_cli_read_input(a->messages, FM_CHAT_MAX_MESSAGES_BYTES, &json, &len, err);
    if (st == FM_OK) st = fm_chat_template_load(a->dir, &tmpl, err);
    bool loaded =
        st == FM_OK && (st = fm_cli_load_images(a->images, a->n_images, imgs, err)) == FM_OK;
    if (st == FM_OK)
        st = fm_cli_chat_prompt(m, tok, tmpl, json, len, imgs, (size_t)a->n_images, pv, grid, ids,
                                n, err);
    for (int i = 0; loaded && i < a->n_images; i++)
        fm_image_free(&imgs[i]);
    fm_chat_template_free(tmpl);
    fm_free(json);
    return st;
}

static bool stream_text(void *ctx, int32_t id, const char *text, size_t len) {
    (void)ctx, (void)id;
    if (len) fwrite(text, 1, len, stdout), fflush(stdout);
    return true;
}

static void print_json(const fm_generate_result *r) {
    json_t *o = json_object(), *t = json_array();
    for (size_t i = 0; i < r->n_tokens; i++)
        json_array_append_new(t, json_integer(r->tokens[i]));
    json_object_set_new(o, "tokens", t);
    json_object_set_new(o, "text", r->text ? json_stringn(r->text, r->text_len) : json_null());
    json_object_set_new(o, "prompt_tokens", json_integer(r->prompt_tokens));
    json_object_set_new(o, "prefill_tok_s",
                        json_real(r->prefill_s > 0 ? (double)r->prompt_tokens / r->prefill_s : 0));
    double steps = r->n_tokens > 1 ? (double)(r->n_tokens - 1) : 0;
    json_object_set_new(o, "decode_tok_s", json_real(r->decode_s > 0 ? steps / r->decode_s : 0));
    json_object_set_new(o, "stop", json_string(r->stop == FM_STOP_EOS ? "eos" : "length"));
    json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(o);
}

static fm_status generate(const gen_args *a, fm_model *m, const fm_tokenizer *tok, fm_error *err) {
    fm_generation_config gc;
    fm_generate_options go;
    fm_generate_options_init(&go);
    int64_t *ids = NULL;
    size_t n = 0;
    int32_t stops[FM_GENERATION_MAX_EOS + 1];
    fm_tensor pv = {0}, grid = {0};
    fm_generate_result r = {0};
    fm_status st = fm_generation_config_load(a->dir, &gc, err);
    if (st == FM_OK) st = fm_generation_config_override(&gc, &a->ov, err);
    if (st == FM_OK) st = fm_generation_config_sampling(&gc, &go.sampling, err);
    if (st == FM_OK) st = build_prompt(a, m, tok, &ids, &n, &pv, &grid, err);
    if (st == FM_OK) st = fm_generation_config_new_tokens(&gc, (int64_t)n, &go.max_new_tokens, err);
    go.kv_dtype = a->kv, go.threads = a->threads, go.tokenizer = tok;
    go.stop_ids = stops, go.n_stop = fm_cli_stop_ids(&gc, tok, stops, sizeof stops / sizeof *stops);
    if (!a->json) go.on_token = stream_text;
    if (st == FM_OK)
        st = fm_generate(m, ids, n, pv.data ? &pv : NULL, pv.data ? &grid : NULL, &go, &r, err);
    if (st == FM_OK && a->json) print_json(&r);
    if (st == FM_OK && !a->json) fputc('\n', stdout), fflush(stdout);
    if (st == FM_OK && !a->c.quiet)
        fprintf(
            stderr, "prompt %lld tokens, prefill %.1f tok/s, decode %.1f tok/s, %zu tokens (%s)\n",
            (long long)r.prompt_tokens, r.prefill_s > 0 ? (double)r.prompt_tokens / r.prefill_s : 0,
            r.decode_s > 0 && r.n_tokens > 1 ? (double)(r.n_tokens - 1) / r.decode_s : 0,
            r.n_tokens, r.stop == FM_STOP_EOS ? "eos" : "length");
    fm_generate_result_free(&r);
    fm_tensor_free(&pv), fm_tensor_free(&grid);
    fm_free(ids);
    return st;
}

static int run(const gen_args *a) {
    fm_error err;
    fm_load_options lo;
    if (fm_cli_load_options((fm_cli_common *)&a->c, &lo)) return 1;
    fm_model *m = NULL;
    fm_tokenizer *tok = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", a->dir);
    fm_status st = fm_cli_load(a->dir, &lo, a->c.quiet, &m, NULL, &err);
    if (st == FM_OK && !a->ids)
        st = fm_tokenizer_open(path, &tok, &err);
    else if (st == FM_OK && fm_tokenizer_open(path, &tok, NULL) != FM_OK)
        tok = NULL; /* ids only: text if we can */
    if (st == FM_OK) st = generate(a, m, tok, &err);
    fm_tokenizer_free(tok);
    fm_model_free(m);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}

int fm_cli_generate_run(const fm_cli_command *self, int argc, char **argv) {
    gen_args a;
    memset(&a, 0, sizeof a);
    a.kv = FM_DTYPE_F32;
    fm_generation_overrides_init(&a.ov);
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO) rc = check_args(self, &a);
    if (rc == FM_CLI_GO) rc = run(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
