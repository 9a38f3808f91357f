/* The shared library's ABI: libfusemap.so exports exactly the functions and data the public
 * headers declare with FM_API — nothing internal (kernels, test hooks such as fault injection),
 * nothing declared but missing. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"

typedef struct names {
    char **v;
    size_t n;
} names;

static void add(names *s, const char *name, size_t len) {
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->v[i]) == len && !strncmp(s->v[i], name, len)) return;
    s->v = realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n] = strndup(name, len);
    s->n++;
}

static int has(const names *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], name)) return 1;
    return 0;
}

static void names_free(names *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

/* Declarations at the start of a line that name an fm_ function but lack FM_API (a public
 * function that would not be exported): the first one into *first, the count returned. */
static size_t unannotated(const char *text, char *first, size_t size) {
    size_t n = 0;
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (*line == ' ' || *line == '#' || *line == '/' || *line == '*' || *line == '}' ||
            *line == '\n' || !strncmp(line, "FM_API", 6) || !strncmp(line, "typedef", 7) ||
            !strncmp(line, "static", 6) || !strncmp(line, "extern \"C\"", 10))
            continue;
        const char *end = strpbrk(line, "(;\n");
        const char *fm = strstr(line, "fm_");
        if (end && *end == '(' && fm && fm < end) {
            if (!n++) snprintf(first, size, "%.*s", (int)(end - line), line);
        }
    }
    return n;
}

/* Every "FM_API ... fm_name(" or "FM_API ... fm_name;" in one header text. */
static void declared_in(names *out, const char *text) {
    for (const char *p = strstr(text, "FM_API "); p; p = strstr(p + 1, "FM_API ")) {
        if (p > text && p[-1] != '\n') continue; /* only declarations at the start of a line */
        const char *end = strpbrk(p, "(;");
        const char *id = NULL;
        for (const char *q = p; end && q < end; q++)
            if (!strncmp(q, "fm_", 3) &&
                (q == p || !(q[-1] == '_' || (q[-1] >= 'a' && q[-1] <= 'z'))))
                id = q;
        if (!id) continue;
        size_t len = 0;
        while (id[len] == '_' || (id[len] >= 'a' && id[len] <= 'z') ||
               (id[len] >= '0' && id[len] <= '9'))
            len++;
        add(out, id, len);
    }
}

static size_t public_declarations(const char *root, names *out, char *first_bad, size_t size) {
    size_t bad = 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/include/fusemap", root);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strstr(e->d_name, ".h")) continue;
        char *p = fm_test_join(dir, e->d_name);
        char *text = p ? fm_test_read_file(p, NULL) : NULL;
        if (text) declared_in(out, text);
        if (text) bad += unannotated(text, first_bad, size);
        free(text), free(p);
    }
    if (d) closedir(d);
    return bad;
}

/* Dynamic symbols libfusemap.so defines (nm -D --defined-only); 0 on success. */
static int exported(const char *so, names *out) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' 2>/dev/null", so);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[1024], type, name[512];
    unsigned long long addr;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "%llx %c %511s", &addr, &type, name) == 3 && strcmp(name, "_init") &&
            strcmp(name, "_fini") && strncmp(name, "__odr_asan", 10)) /* ASan's ODR markers */
            add(out, name, strlen(name));
    return pclose(p) == 0 ? 0 : -1;
}

static void test_declared_in_parser(void) {
    names n = {0};
    declared_in(&n, "FM_API const char *fm_a(int x);\nFM_API extern const fm_spec fm_b;\n"
                    "/* FM_API fm_c( in a comment mid-line */\nstatic inline int fm_d(void);\n"
                    "FM_API fm_status fm_e(const fm_x *fm_param,\n    int y);\n");
    CHECK_EQ_INT(3, n.n);
    CHECK(has(&n, "fm_a") && has(&n, "fm_b") && has(&n, "fm_e") && !has(&n, "fm_c") &&
          !has(&n, "fm_d"));
    names_free(&n);
    char first[128] = "";
    CHECK_EQ_INT(1,
                 (long long)unannotated(
                     "FM_API int fm_ok(void);\nint fm_bad(void);\nstatic inline int fm_i(void);\n",
                     first, sizeof first));
    CHECK_EQ_STR("int fm_bad", first);
}

static void test_exports_match_public_headers(void) {
    const char *cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    const char *root = getenv("FM_SRC_ROOT") ? getenv("FM_SRC_ROOT") : ".";
    char so[4200];
    const char *slash = strrchr(cli, '/');
    snprintf(so, sizeof so, "%.*s/libfusemap.so", slash ? (int)(slash - cli) : 1,
             slash ? cli : ".");
    names decl = {0}, exp = {0};
    char first_bad[128] = "";
    size_t bad = public_declarations(root, &decl, first_bad, sizeof first_bad);
    CHECK_MSG(bad == 0,
              "expected every public function declared with FM_API, %zu without; first: %s", bad,
              first_bad);
    int rc = exported(so, &exp);
    CHECK_MSG(rc == 0 && exp.n > 0, "nm -D on %s: expected the exported symbols, got %zu (rc %d)",
              so, exp.n, rc);
    CHECK_MSG(decl.n > 100, "expected the public API declarations, found %zu", decl.n);
    size_t extra = 0, missing = 0;
    for (size_t i = 0; i < exp.n; i++)
        if (!has(&decl, exp.v[i])) {
            if (extra++ < 10) fprintf(stderr, "  exported but not public: %s\n", exp.v[i]);
        }
    for (size_t i = 0; i < decl.n; i++)
        if (!has(&exp, decl.v[i])) {
            if (missing++ < 10)
                fprintf(stderr, "  declared FM_API but not exported: %s\n", decl.v[i]);
        }
    CHECK_MSG(extra == 0, "expected only public symbols exported, seen %zu others (listed above)",
              extra);
    CHECK_MSG(missing == 0,
              "expected every FM_API declaration exported, %zu missing (listed above)", missing);
    CHECK(!has(&exp, "fm_fault_set") && !has(&exp, "fm_k_linear") &&
          !has(&exp, "fm_fusion_discovery_count"));
    names_free(&decl), names_free(&exp);
}

int main(void) {
    RUN(test_declared_in_parser);
    RUN(test_exports_match_public_headers);
    TEST_END();
}
