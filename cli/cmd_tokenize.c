/* fusemap tokenize: JSON Lines in, JSON Lines out — text to ids (as Hugging Face's
 * tokenizer.encode) or, with --decode, ids to text (as tokenizer.decode). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fusemap/tokenizer.h"

#define MAX_LINE_BYTES ((size_t)64 << 20)

enum { OPT_NO_SPECIAL = FM_CLI_OPT_OWN, OPT_DECODE };

static const fm_cli_opt opts[] = {
    {OPT_NO_SPECIAL, "--no-special", NULL, NULL, NULL,
     "special-token text (added tokens with \"special\": true) stays plain text; added tokens with "
     "\"special\": false are still recognised (default: special tokens are recognised, as Hugging "
     "Face's encode)"},
    {OPT_DECODE, "--decode", NULL, NULL, NULL,
     "each line is a JSON array of ids; prints the decoded text as a JSON string (special tokens "
     "kept, "
     "as Hugging Face's decode(ids); unknown ids dropped) (default: encode)"},
};

const fm_cli_help fm_cli_tokenize_help = {
    "tokenize MODEL_DIR [--no-special] [--decode]",
    "Reads JSON Lines on standard input and writes one JSON line per input line: each line a JSON\n"
    "string, answered with its token ids as a JSON array, exactly as Hugging Face's\n"
    "tokenizer.encode(text). MODEL_DIR holds tokenizer.json (or is the tokenizer.json file). A\n"
    "malformed line stops the run with exit status 1 naming the line number; lines before it have\n"
    "been answered.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap tokenize Qwen2-VL-2B-Instruct < texts.jsonl > ids.jsonl    (a line \"Hello world\" -> "
    "[9707,1879])\n"
    "fusemap tokenize Qwen2-VL-2B-Instruct --decode < ids.jsonl        (a line [9707,1879] -> "
    "\"Hello world\")\n",
};

typedef struct tok_opts {
    const char *dir;
    bool special, decode;
} tok_opts;

/* Prints one JSON value and a newline; false when stdout fails. */
static bool print_json(json_t *v) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    bool ok = s && fputs(s, stdout) >= 0 && putchar('\n') != EOF;
    free(s);
    return ok;
}

static int encode_line(const fm_tokenizer *t, json_t *v, size_t lineno, bool special) {
    if (!json_is_string(v)) return fm_cli_errorf("stdin line %zu: expected a JSON string", lineno);
    int32_t *ids = NULL;
    size_t n = 0;
    fm_error err;
    if (fm_tokenizer_encode(t, json_string_value(v), json_string_length(v), NULL,
                            special ? FM_TOKENIZE_SPECIAL : 0, &ids, &n, &err) != FM_OK)
        return fm_cli_errorf("stdin line %zu: %s", lineno, err.msg);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, json_integer(ids[i]))) json_decref(arr), arr = NULL;
    fm_free(ids);
    bool ok = arr && print_json(arr);
    json_decref(arr);
    return ok ? 0 : fm_cli_errorf("stdin line %zu: cannot write the result", lineno);
}

static int decode_line(const fm_tokenizer *t, json_t *v, size_t lineno) {
    if (!json_is_array(v))
        return fm_cli_errorf("stdin line %zu: expected a JSON array of token ids", lineno);
    size_t n = json_array_size(v);
    int32_t *ids = fm_malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return fm_cli_errorf("stdin line %zu: out of memory", lineno);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        json_int_t id = json_is_integer(x) ? json_integer_value(x) : -1;
        if (id < 0 || id > INT32_MAX) {
            fm_free(ids);
            return fm_cli_errorf("stdin line %zu: element %zu is not a token id (an integer in "
                                 "0..2147483647)",
                                 lineno, i);
        }
        ids[i] = (int32_t)id;
    }
    char *text = NULL;
    size_t len = 0;
    fm_error err;
    fm_status st = fm_tokenizer_decode(t, ids, n, false, &text, &len, &err);
    fm_free(ids);
    if (st != FM_OK) return fm_cli_errorf("stdin line %zu: %s", lineno, err.msg);
    json_t *s = json_stringn(text, len);
    fm_free(text);
    bool ok = s && print_json(s);
    json_decref(s);
    return ok ? 0 : fm_cli_errorf("stdin line %zu: cannot write the result", lineno);
}

static int one_line(const fm_tokenizer *t, const tok_opts *o, const char *line, size_t len,
                    size_t lineno) {
    json_error_t je;
    if (len && line[len - 1] == '\n') len--;
    json_t *v = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v)
        return fm_cli_errorf("stdin line %zu: invalid JSON at column %d: %s", lineno, je.column,
                             je.text);
    int rc = o->decode ? decode_line(t, v, lineno) : encode_line(t, v, lineno, o->special);
    json_decref(v);
    fflush(stdout);
    return rc;
}

static int run(const tok_opts *o) {
    fm_tokenizer *t = NULL;
    fm_error err;
    if (fm_tokenizer_open(o->dir, &t, &err) != FM_OK) return fm_cli_fail(&err);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if ((size_t)got > MAX_LINE_BYTES)
            rc = fm_cli_errorf("stdin line %zu: %zd bytes exceed the limit of %zu", lineno, got,
                               MAX_LINE_BYTES);
        else
            rc = one_line(t, o, line, (size_t)got, lineno);
    }
    if (rc == 0 && ferror(stdin)) rc = fm_cli_errorf("stdin: read error after line %zu", lineno);
    free(line);
    fm_tokenizer_free(t);
    return rc;
}

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    tok_opts *o = ctx;
    if (id == OPT_NO_SPECIAL)
        o->special = false;
    else if (id == OPT_DECODE)
        o->decode = true;
    else if (o->dir)
        return fm_cli_usage(cmd, "tokenize: more than one MODEL_DIR ('%s')", v);
    else
        o->dir = v;
    return 0;
}

int fm_cli_tokenize_run(const fm_cli_command *self, int argc, char **argv) {
    tok_opts o = {NULL, true, false};
    fm_cli_common c;
    memset(&c, 0, sizeof c);
    int rc = fm_cli_parse(self, argc, argv, &c, on_opt, &o);
    if (rc == FM_CLI_GO && !o.dir) rc = fm_cli_usage(self, "tokenize: MODEL_DIR is missing");
    if (rc == FM_CLI_GO) rc = run(&o);
    fm_cli_common_free(&c);
    return rc;
}
