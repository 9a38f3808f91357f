/* fusemap tokenize: JSON Lines in, JSON Lines out — text to ids (as Hugging Face's
 * tokenizer.encode) or, with --decode, ids to text (as tokenizer.decode). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fusemap/tokenizer.h"

#define MAX_LINE_BYTES ((size_t)64 << 20)

static const char tokenize_usage[] =
    "usage: fusemap tokenize MODEL_DIR [--no-special] [--decode]\n"
    "\n"
    "Reads JSON Lines on standard input and writes one JSON line per input line.\n"
    "MODEL_DIR is a model directory holding tokenizer.json (or the tokenizer.json file).\n"
    "\n"
    "  (default)     each line is a JSON string; prints the token ids as a JSON array,\n"
    "                exactly as Hugging Face's tokenizer.encode(text) (special-token text\n"
    "                in the input becomes the special token, as in Hugging Face).\n"
    "  --no-special  special-token text (added tokens with \"special\": true) stays plain\n"
    "                text; added tokens with \"special\": false are still recognised.\n"
    "                Default: off (special tokens are recognised).\n"
    "  --decode      each line is a JSON array of ids; prints the decoded text as a JSON\n"
    "                string (UTF-8, not escaped to ASCII). Special tokens are kept, as\n"
    "                Hugging Face's decode(ids) does by default; unknown ids are dropped.\n"
    "                Default: off (encode).\n"
    "  -h, --help    prints this text.\n"
    "\n"
    "A malformed line stops the run with exit status 1 and names the line number;\n"
    "lines before it have been answered. Usage errors exit with status 2.\n"
    "\n"
    "example:\n"
    "  printf '\"Hello world\"\\n' | fusemap tokenize ./Qwen2-VL-2B-Instruct\n"
    "  [9707,1879]\n"
    "  printf '[9707,1879]\\n' | fusemap tokenize ./Qwen2-VL-2B-Instruct --decode\n"
    "  \"Hello world\"\n";

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

int fm_cli_tokenize(int argc, char **argv) {
    tok_opts o = {NULL, true, false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(tokenize_usage, stdout), 0;
        if (!strcmp(a, "--no-special"))
            o.special = false;
        else if (!strcmp(a, "--decode"))
            o.decode = true;
        else if (a[0] == '-' && a[1])
            return fm_cli_usage_error("tokenize: unknown option '%s'", a);
        else if (o.dir)
            return fm_cli_usage_error("tokenize: more than one MODEL_DIR ('%s')", a);
        else
            o.dir = a;
    }
    if (!o.dir) return fm_cli_usage_error("tokenize: MODEL_DIR is missing");
    return run(&o);
}
