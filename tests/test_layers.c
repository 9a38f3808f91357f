/* The layering rule, checked on the source tree: layers depend one way (core -> tensor -> io ->
 * image, text -> nn -> loading -> fusion -> models -> api -> cli), no file includes a header of
 * a higher layer (internal "layer/x.h" or public "fusemap/x.h"), image and text do not include
 * each other, cli uses public headers only, and no architecture name appears in the sources of
 * the generic layers (public headers may cite one as an example). The checker runs first on small
 * synthetic trees with planted violations. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "check.h"
#include "file_util.h"

typedef struct layer {
    const char *dir;
    int rank;
} layer;

static const layer layers[] = {{"core", 0},   {"tensor", 1}, {"io", 2},      {"image", 3},
                               {"text", 3},   {"nn", 4},     {"loading", 5}, {"fusion", 6},
                               {"models", 7}, {"api", 8}};
#define N_LAYERS (sizeof layers / sizeof *layers)

/* Public headers and the layer they belong to. */
static const struct {
    const char *name;
    const char *layer;
} public_headers[] = {
    {"core.h", "core"},     {"version.h", "core"},    {"tensor.h", "tensor"},
    {"io.h", "io"},         {"image.h", "image"},     {"tokenizer.h", "text"},
    {"chat.h", "text"},     {"nn.h", "nn"},           {"loading.h", "loading"},
    {"fusion.h", "fusion"}, {"qwen2_vl.h", "models"}, {"qwen3_vl.h", "models"},
    {"models.h", "api"},    {"generate.h", "api"},    {"fusemap.h", "api"},
};

static const layer *find_layer(const char *dir) {
    for (size_t i = 0; i < N_LAYERS; i++)
        if (!strcmp(layers[i].dir, dir)) return &layers[i];
    return NULL;
}

/* The layer a quoted include names, or NULL when it is not a library header ("x.h" local). */
static const layer *include_layer(const char *inc, int *unknown_public) {
    char first[64];
    const char *slash = strchr(inc, '/');
    *unknown_public = 0;
    if (!slash || (size_t)(slash - inc) >= sizeof first) return NULL;
    memcpy(first, inc, (size_t)(slash - inc));
    first[slash - inc] = '\0';
    if (strcmp(first, "fusemap")) return find_layer(first);
    for (size_t i = 0; i < sizeof public_headers / sizeof *public_headers; i++)
        if (!strcmp(public_headers[i].name, slash + 1)) return find_layer(public_headers[i].layer);
    *unknown_public = 1; /* a new public header must be placed in the table above */
    return NULL;
}

static int contains_arch_name(const char *text) {
    for (const char *p = text; *p; p++)
        if (!strncasecmp(p, "qwen", 4) || !strncasecmp(p, "glm4", 4)) return 1;
    return 0;
}

typedef struct scan {
    int violations;
    char first[512];
} scan;

static void violation(scan *s, const char *fmt, const char *a, const char *b) {
    if (!s->violations++) snprintf(s->first, sizeof s->first, fmt, a, b);
    fprintf(stderr, "  layering: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Checks one file of layer `own` (NULL: cli, public headers only). */
static void check_file(scan *s, const char *path, const layer *own, int is_cli, int names_matter) {
    size_t len = 0;
    char *text = fm_test_read_file(path, &len);
    if (!text) {
        violation(s, "%s: unreadable%s", path, "");
        return;
    }
    if (names_matter && own && own->rank <= 6 && contains_arch_name(text))
        violation(s, "%s names an architecture in the generic layer %s", path, own->dir);
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char inc[256];
        if (sscanf(line, " #include \"%255[^\"]\"", inc) == 1) {
            int unknown = 0;
            const layer *to = include_layer(inc, &unknown);
            if (unknown)
                violation(s, "%s includes %s, a public header missing from the layer table", path,
                          inc);
            else if (is_cli && to && strncmp(inc, "fusemap/", 8))
                violation(s, "%s (cli) includes internal %s", path, inc);
            else if (own && to && to->rank > own->rank)
                violation(s, "%s includes %s (a higher layer)", path, inc);
            else if (own && to && to->rank == own->rank && to != own)
                violation(s, "%s includes %s (a sibling layer)", path, inc);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
}

static int is_source(const char *name) {
    size_t n = strlen(name);
    return n > 2 && name[n - 2] == '.' && (name[n - 1] == 'c' || name[n - 1] == 'h');
}

static void walk(scan *s, const char *dir, const layer *own, int is_cli) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = fm_test_join(dir, e->d_name);
        struct stat st;
        if (p && stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            walk(s, p, own, is_cli);
        else if (p && is_source(e->d_name))
            check_file(s, p, own, is_cli, 1);
        free(p);
    }
    closedir(d);
}

/* src/<layer>/..., include/fusemap/<header> (each in its own layer), cli/. */
static scan check_tree(const char *root) {
    scan s = {0, ""};
    for (size_t i = 0; i < N_LAYERS; i++) {
        char *p = fm_test_join(root, "src"), *q = p ? fm_test_join(p, layers[i].dir) : NULL;
        if (q) walk(&s, q, &layers[i], 0);
        free(p), free(q);
    }
    for (size_t i = 0; i < sizeof public_headers / sizeof *public_headers; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/include/fusemap/%s", root, public_headers[i].name);
        struct stat st;
        if (stat(path, &st) == 0) check_file(&s, path, find_layer(public_headers[i].layer), 0, 0);
    }
    char *c = fm_test_join(root, "cli");
    if (c) walk(&s, c, NULL, 1);
    free(c);
    return s;
}

/* ---- the checker fails on planted violations ---------------------------------------------- */
static void plant(const char *root, const char *rel, const char *text) {
    char path[4200], dir[4200];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + strlen(root) + 1; *p; p++)
        if (*p == '/') *p = '\0', mkdir(dir, 0755), *p = '/';
    CHECK(fm_test_write_file(path, text, strlen(text)) == 0);
}

static void test_checker_finds_planted_violations(void) {
    static const struct {
        const char *file, *text, *expect;
    } cases[] = {
        {"src/nn/a.c", "#include \"models/some_arch/x.h\"\n", "higher layer"},
        {"src/loading/b.c", "#include \"fusemap/models.h\"\n", "higher layer"},
        {"src/fusion/c.c", "/* reads the Qwen2 config */\n", "names an architecture"},
        {"src/image/d.c", "#include \"text/tok.h\"\n", "sibling layer"},
        {"cli/e.c", "#include \"nn/kernels.h\"\n", "internal"},
        {"src/io/f.c", "#include \"fusemap/brand_new.h\"\n", "missing from the layer table"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *root = fm_test_tmpdir("layers");
        plant(root, "src/core/ok.c", "#include \"fusemap/core.h\"\n");
        plant(root, "src/api/ok.c", "#include \"models/qwen2_vl/x.h\"\n#include \"nn/run.h\"\n");
        plant(root, cases[i].file, cases[i].text);
        scan s = check_tree(root);
        CHECK_MSG(s.violations == 1, "planted case %zu (%s): expected 1 violation, seen %d", i,
                  cases[i].file, s.violations);
        CHECK_CONTAINS(s.first, cases[i].expect);
        fm_test_rmtree(root);
        free(root);
    }
}

static void test_source_tree_is_layered(void) {
    const char *root = getenv("FM_SRC_ROOT") ? getenv("FM_SRC_ROOT") : ".";
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/src/core", root);
    struct stat st;
    int found = stat(probe, &st) == 0;
    CHECK_MSG(found,
              "source tree not found at %s (run from the repository root or set FM_SRC_ROOT)",
              root);
    if (!found) return;
    scan s = check_tree(root);
    CHECK_MSG(s.violations == 0, "expected no layering violation, seen %d; first: %s", s.violations,
              s.first);
}

int main(void) {
    RUN(test_checker_finds_planted_violations);
    RUN(test_source_tree_is_layered);
    TEST_END();
}
