/* fusemap tokenize end to end on the committed fixture: JSON Lines in and out, --no-special,
 * --decode (special tokens kept), the golden ids, malformed lines (exit 1 naming the line,
 * earlier lines answered), usage errors (exit 2) and --help (exit 0). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"

static char *tmp;
static const char *cli;
static char fixture[1024];

/* Runs `fusemap tokenize ARGS` with `input` on stdin; *out and *errout receive stdout and
 * stderr (caller frees). Returns the exit code. */
static int tokenize(const char *input, size_t len, char **out, char **errout, const char *fmt,
                    ...) {
    char args[2048], cmd[16384], in[4300], o[4300], e[4300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(in, sizeof in, "%s/in.jsonl", tmp);
    snprintf(o, sizeof o, "%s/out.jsonl", tmp);
    snprintf(e, sizeof e, "%s/err.txt", tmp);
    fm_test_write_file(in, input, len);
    snprintf(cmd, sizeof cmd, "%s tokenize %s < %s > %s 2> %s", cli, args, in, o, e);
    int rc = system(cmd);
    *out = fm_test_read_file(o, NULL);
    *errout = fm_test_read_file(e, NULL);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_encode_decode(void) {
    const char in[] = "\"<|im_start|>user\\nHello world<|im_end|>\"\n\"caf\\u00e9 <tool_call>\"\n";
    char *out = NULL, *err = NULL;
    CHECK_EQ_INT(0, tokenize(in, sizeof in - 1, &out, &err, "%s", fixture));
    CHECK_EQ_STR("", err);
    /* two lines of id arrays; the first starts with <|im_start|> (1257) and ends with
     * <|im_end|> (1258) */
    CHECK(out && !strncmp(out, "[1257,", 6));
    CHECK_CONTAINS(out, ",1258]\n[");
    /* --no-special: the markers are text, <tool_call> (not special) still splits */
    char *out2 = NULL, *err2 = NULL;
    CHECK_EQ_INT(0, tokenize(in, sizeof in - 1, &out2, &err2, "%s --no-special", fixture));
    CHECK(out2 && !strstr(out2, "1257") && !strstr(out2, "1258") && strstr(out2, "1259"));
    /* decode what encode printed: the text comes back, special tokens kept; the added token
     * "café" decodes through the ByteLevel table (é is U+00E9, byte 0xE9), so Hugging Face
     * gives "caf\uFFFD" and so does fusemap */
    char *dec = NULL, *err3 = NULL;
    CHECK_EQ_INT(0, tokenize(out, out ? strlen(out) : 0, &dec, &err3, "%s --decode", fixture));
    CHECK_EQ_STR("\"<|im_start|>user\\nHello world<|im_end|>\"\n\"caf\xef\xbf\xbd <tool_call>\"\n",
                 dec);
    free(out), free(err), free(out2), free(err2), free(dec), free(err3);
}

/* Every golden string through the CLI, compared with the goldens (the ids Hugging Face gives). */
static void test_goldens(void) {
    char path[1100];
    snprintf(path, sizeof path, "%s/../goldens.json", fixture);
    json_t *g = json_load_file(path, JSON_ALLOW_NUL, NULL), *cases = json_object_get(g, "encode");
    CHECK(json_array_size(cases) > 300);
    size_t cap = 1 << 20, n = 0;
    char *in = malloc(cap);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        char *line = json_dumps(json_object_get(json_array_get(cases, i), "text"),
                                JSON_ENCODE_ANY | JSON_COMPACT);
        size_t k = strlen(line);
        if (n + k + 2 > cap) in = realloc(in, cap *= 2);
        memcpy(in + n, line, k), n += k, in[n++] = '\n';
        free(line);
    }
    char *out = NULL, *err = NULL;
    CHECK_EQ_INT(0, tokenize(in, n, &out, &err, "%s", fixture));
    size_t matched = 0, i = 0;
    for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n"), i++) {
        json_t *got = json_loads(line, 0, NULL);
        json_t *want = json_object_get(json_array_get(cases, i), "special");
        matched += got && json_equal(got, want);
        json_decref(got);
    }
    CHECK_MSG(matched == json_array_size(cases), "%zu of %zu lines match the goldens", matched,
              json_array_size(cases));
    free(in), free(out), free(err);
    json_decref(g);
}

static void expect_line_error(const char *input, const char *args, int line, const char *what,
                              size_t answered) {
    char *out = NULL, *err = NULL, want[64];
    CHECK_EQ_INT(1, tokenize(input, strlen(input), &out, &err, "%s %s", fixture, args));
    snprintf(want, sizeof want, "stdin line %d", line);
    CHECK_CONTAINS(err, "fusemap: error: ");
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, what);
    size_t lines = 0;
    for (const char *p = out; p && *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(answered, lines);
    free(out), free(err);
}

static void test_malformed_lines(void) {
    expect_line_error("\"ok\"\n{\"not\": \"a string\"}\n\"never\"\n", "", 2,
                      "expected a JSON string", 1);
    expect_line_error("\"ok\"\n\"ok\"\n\"unterminated\n", "", 3, "invalid JSON", 2);
    expect_line_error("\n", "", 1, "invalid JSON", 0);
    expect_line_error("[1,2]\n[1,-3]\n", "--decode", 2, "element 1 is not a token id", 1);
    expect_line_error("[1,2.5]\n", "--decode", 1, "element 1", 0);
    expect_line_error("\"text\"\n", "--decode", 1, "expected a JSON array", 0);
    expect_line_error("[99999999999]\n", "--decode", 1, "not a token id", 0);
    /* unknown ids inside the range are dropped, as Hugging Face does */
    char *out = NULL, *err = NULL;
    CHECK_EQ_INT(0, tokenize("[2000000000, 71]\n", 17, &out, &err, "%s --decode", fixture));
    CHECK(out && out[0] == '"' && strlen(out) == 4);
    free(out), free(err);
}

static void test_usage(void) {
    char *out = NULL, *err = NULL;
    CHECK_EQ_INT(2, tokenize("", 0, &out, &err, "%s", ""));
    CHECK_CONTAINS(err, "MODEL_DIR is missing");
    free(out), free(err);
    CHECK_EQ_INT(2, tokenize("", 0, &out, &err, "%s --frobnicate", fixture));
    CHECK_CONTAINS(err, "unknown option '--frobnicate'");
    free(out), free(err);
    CHECK_EQ_INT(2, tokenize("", 0, &out, &err, "%s %s", fixture, fixture));
    free(out), free(err);
    CHECK_EQ_INT(0, tokenize("", 0, &out, &err, "--help"));
    CHECK_CONTAINS(out, "usage: fusemap tokenize MODEL_DIR");
    CHECK_CONTAINS(out, "--no-special");
    CHECK_CONTAINS(out, "--decode");
    CHECK_CONTAINS(out, "examples:");
    free(out), free(err);
    CHECK_EQ_INT(1, tokenize("\"x\"\n", 4, &out, &err, "%s/nowhere", tmp));
    CHECK_CONTAINS(err, "tokenizer.json");
    free(out), free(err);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    const char *d = getenv("FM_TEST_DATA");
    snprintf(fixture, sizeof fixture, "%s/tokenizer/pairs", d && *d ? d : "tests/data");
    tmp = fm_test_tmpdir("cli-tokenize");
    RUN(test_encode_decode);
    RUN(test_goldens);
    RUN(test_malformed_lines);
    RUN(test_usage);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
