/* Help everywhere, checked by walking the command table (`fusemap help --commands`): for every
 * command, `fusemap CMD --help`, `-h`, `fusemap help CMD` and `fusemap --help CMD` print the same
 * text (usage, every option, examples) and exit 0; every option with a value states its default;
 * every option the help lists is accepted by the parser, an unknown one exits 2 with the usage
 * line; and every option string in the command's source file (cli/cmd_CMD*.c) and in the shared
 * CLI sources appears in the help, so a parser cannot learn an option the help does not show. */
#include <dirent.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"

static char *tmp, *cli_dir;
static const char *cli;
static char names[64][64];
static size_t n_names;

typedef struct result {
    int code;
    char *out, *err;
} result;

static result fm(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = fm_test_join(tmp, "out"), *e = fm_test_join(tmp, "err");
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s </dev/null", cli, args, o, e);
    int rc = system(cmd);
    result r = {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, fm_test_read_file(o, NULL),
                fm_test_read_file(e, NULL)};
    if (!r.out) r.out = strdup("");
    if (!r.err) r.err = strdup("");
    free(o), free(e);
    return r;
}

static void result_free(result *r) {
    free(r->out), free(r->err);
}

/* True when `word` occurs in text delimited by non-option characters. */
static bool has_word(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)); p++) {
        bool left = p == text || !(p[-1] == '-' || p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z'));
        char r = p[n];
        bool right = !(r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'));
        if (left && right) return true;
    }
    return false;
}

static void load_command_names(void) {
    result r = fm("help --commands");
    CHECK_EQ_INT(0, r.code);
    for (char *line = strtok(r.out, "\n"); line && n_names < 64; line = strtok(NULL, "\n"))
        snprintf(names[n_names++], sizeof names[0], "%s", line);
    result_free(&r);
}

static void test_main_help(void) {
    CHECK_MSG(n_names >= 4, "the table lists the commands, seen %zu", n_names);
    result a = fm("help"), b = fm("--help"), c = fm("-h"), none = fm("");
    CHECK_EQ_INT(0, a.code);
    CHECK_EQ_STR("", a.err);
    CHECK_EQ_STR(a.out, b.out);
    CHECK_EQ_STR(a.out, c.out);
    CHECK_EQ_INT(0, b.code);
    CHECK_EQ_INT(0, c.code);
    for (size_t i = 0; i < n_names; i++) {
        char line[128];
        snprintf(line, sizeof line, "\n  %.60s ", names[i]);
        CHECK_MSG(strstr(a.out, line) != NULL, "the main help lists '%s' with its summary",
                  names[i]);
    }
    CHECK_CONTAINS(a.out, "--version");
    CHECK_EQ_INT(2, none.code); /* no command: usage on stderr */
    CHECK_CONTAINS(none.err, "usage: fusemap");
    result u = fm("no-such-command"), h = fm("help no-such-command");
    CHECK_EQ_INT(2, u.code);
    CHECK_CONTAINS(u.err, "usage: fusemap");
    CHECK_EQ_INT(2, h.code);
    result_free(&a), result_free(&b), result_free(&c), result_free(&none), result_free(&u),
        result_free(&h);
}

/* One option line of a help: "  -o, --output FILE   text" or "      --json   text". */
typedef struct opt_line {
    char name[64], alias[8];
    bool has_value;
    char text[1024]; /* the description, continuation lines joined */
} opt_line;

static size_t parse_options(const char *help, opt_line *v, size_t cap) {
    const char *sec = strstr(help, "\noptions:\n");
    size_t n = 0;
    if (!sec) return 0;
    for (const char *p = sec + 10; *p && *p != '\n' && n < cap;) {
        size_t len = strcspn(p, "\n");
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)len, p);
        p += len + (p[len] == '\n');
        const char *s = line + strspn(line, " ");
        if (*s == '-' && s - line < 10) { /* continuation lines are indented to the text column */
            opt_line *o = &v[n++];
            memset(o, 0, sizeof *o);
            char first[64] = "", second[64] = "", third[64] = "";
            sscanf(s, "%63s %63s %63s", first, second, third);
            if (first[strlen(first) - 1] == ',') { /* "-o, --output FILE" */
                snprintf(o->alias, sizeof o->alias, "%.*s", (int)strlen(first) - 1, first);
                snprintf(o->name, sizeof o->name, "%s", second);
                o->has_value = third[0] >= 'A' && third[0] <= 'Z';
            } else {
                snprintf(o->name, sizeof o->name, "%s", first);
                o->has_value = second[0] >= 'A' && second[0] <= 'Z';
            }
            snprintf(o->text, sizeof o->text, "%s", s);
        } else if (n) {
            strncat(v[n - 1].text, " ", sizeof v[n - 1].text - strlen(v[n - 1].text) - 1);
            strncat(v[n - 1].text, s, sizeof v[n - 1].text - strlen(v[n - 1].text) - 1);
        }
    }
    return n;
}

static void check_command_help(const char *name) {
    result a = fm("%s --help", name), b = fm("%s -h", name), c = fm("help %s", name),
           d = fm("--help %s", name);
    CHECK_MSG(a.code == 0 && b.code == 0 && c.code == 0 && d.code == 0,
              "%s: help exits 0 (%d %d %d %d)", name, a.code, b.code, c.code, d.code);
    CHECK_EQ_STR("", a.err);
    CHECK_EQ_STR(a.out, b.out);
    CHECK_EQ_STR(a.out, c.out);
    CHECK_EQ_STR(a.out, d.out);
    char want[128];
    snprintf(want, sizeof want, "usage: fusemap %s ", name);
    CHECK_MSG(!strncmp(a.out, want, strlen(want)), "%s: help starts with '%s': %.80s", name, want,
              a.out);
    snprintf(want, sizeof want, "\nexamples:\n  fusemap %s ", name);
    CHECK_MSG(strstr(a.out, want) != NULL, "%s: an example of the command", name);
    opt_line opts[64];
    size_t n = parse_options(a.out, opts, 64);
    CHECK_MSG(n >= 2, "%s: options listed (seen %zu)", name, n);
    for (size_t i = 0; i < n; i++) {
        if (opts[i].has_value)
            CHECK_MSG(strstr(opts[i].text, "(default: ") != NULL,
                      "%s %s: the help states its default: '%s'", name, opts[i].name, opts[i].text);
        if (!strcmp(opts[i].name, "--help")) continue;
        /* the parser knows it: whatever else goes wrong, it is not an unknown option */
        for (int form = 0; form < (opts[i].alias[0] ? 2 : 1); form++) {
            const char *o = form ? opts[i].alias : opts[i].name;
            result r = fm("%s %s%s", name, o, opts[i].has_value ? " 1" : "");
            CHECK_MSG(!strstr(r.err, "unknown option"),
                      "%s: '%s' is in the help but the parser refuses it: %s", name, o, r.err);
            result_free(&r);
        }
    }
    result u = fm("%s --no-such-option", name);
    CHECK_EQ_INT(2, u.code);
    snprintf(want, sizeof want, "usage: fusemap %s ", name);
    CHECK_CONTAINS(u.err, want);
    CHECK_CONTAINS(u.err, "unknown option '--no-such-option'");
    result_free(&a), result_free(&b), result_free(&c), result_free(&d), result_free(&u);
}

static void test_every_command_help(void) {
    for (size_t i = 0; i < n_names; i++)
        check_command_help(names[i]);
}

/* The source without its comments (string and character literals kept as they are). */
static void strip_comments(char *s) {
    char *w = s, quote = 0;
    for (const char *r = s; *r;) {
        if (quote) {
            if (*r == '\\' && r[1])
                *w++ = *r++;
            else if (*r == quote)
                quote = 0;
            *w++ = *r++;
        } else if (r[0] == '/' && r[1] == '*') {
            const char *end = strstr(r + 2, "*/");
            r = end ? end + 2 : r + strlen(r);
        } else if (r[0] == '/' && r[1] == '/') {
            r += strcspn(r, "\n");
        } else {
            if (*r == '"' || *r == '\'') quote = *r;
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* Every string literal of a source file's code that is exactly an option ("-o", "--threads"). */
static size_t option_literals(const char *path, char out[][64], size_t cap) {
    char *src = fm_test_read_file(path, NULL);
    if (src) strip_comments(src);
    regex_t re;
    regmatch_t m[2];
    size_t n = 0;
    if (!src || regcomp(&re, "\"(--?[A-Za-z][A-Za-z0-9-]*)\"", REG_EXTENDED)) {
        free(src);
        return 0;
    }
    for (const char *p = src; n < cap && !regexec(&re, p, 2, m, 0); p += m[0].rm_eo)
        snprintf(out[n++], 64, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), p + m[1].rm_so);
    regfree(&re);
    free(src);
    return n;
}

/* The command a cli/ file belongs to: cmd_NAME.c or cmd_NAME_*.c; NULL for shared files. */
static const char *owner(const char *file) {
    const char *best = NULL;
    if (strncmp(file, "cmd_", 4)) return NULL;
    for (size_t i = 0; i < n_names; i++) {
        size_t l = strlen(names[i]);
        if (!strncmp(file + 4, names[i], l) &&
            (!strcmp(file + 4 + l, ".c") || file[4 + l] == '_') && (!best || l > strlen(best)))
            best = names[i];
    }
    return best ? best : "";
}

static void test_sources_match_help(void) {
    DIR *d = opendir(cli_dir);
    CHECK_MSG(d != NULL, "cli sources at %s", cli_dir);
    if (!d) return;
    char *helps[64] = {0}, *main_help = NULL;
    for (size_t i = 0; i < n_names; i++) {
        result r = fm("%s --help", names[i]);
        helps[i] = r.out;
        free(r.err);
    }
    result mr = fm("--help");
    main_help = mr.out;
    free(mr.err);
    size_t covered = 0, scanned = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 3 || (strcmp(e->d_name + len - 2, ".c") && strcmp(e->d_name + len - 2, ".h")))
            continue;
        const char *cmd = owner(e->d_name);
        CHECK_MSG(!cmd || *cmd, "%s: a command file whose command is not in the table", e->d_name);
        if (cmd && *cmd) covered++;
        char path[4300], lits[256][64];
        snprintf(path, sizeof path, "%s/%s", cli_dir, e->d_name);
        size_t n = option_literals(path, lits, 256);
        scanned += n;
        for (size_t k = 0; k < n; k++) {
            bool found = false;
            for (size_t i = 0; i < n_names && !found; i++)
                if ((!cmd || !strcmp(cmd, names[i])) && has_word(helps[i], lits[k])) found = true;
            if (!cmd && has_word(main_help, lits[k])) found = true;
            CHECK_MSG(found, "%s parses or names option '%s', which %s help does not show",
                      e->d_name, lits[k], cmd ? cmd : "no");
        }
    }
    closedir(d);
    CHECK_MSG(covered >= n_names,
              "every command has its cli/cmd_NAME.c (%zu files for %zu commands)", covered,
              n_names);
    CHECK_MSG(scanned > 20, "option strings found in the sources: %zu", scanned);
    for (size_t i = 0; i < n_names; i++)
        free(helps[i]);
    free(main_help);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("clihelp");
    /* the sources: cli/ beside this file's tests/ directory */
    const char *f = __FILE__, *slash = strrchr(f, '/');
    cli_dir = malloc(strlen(f) + 16);
    snprintf(cli_dir, strlen(f) + 16, "%.*s%scli", slash ? (int)(slash - f) : 0, f,
             slash ? "/../" : "../");
    load_command_names();
    RUN(test_main_help);
    RUN(test_every_command_help);
    RUN(test_sources_match_help);
    fm_test_rmtree(tmp);
    free(tmp), free(cli_dir);
    TEST_END();
}
