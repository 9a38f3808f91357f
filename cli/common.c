/* Shared CLI helpers: fusion options, dtype names, the load report printer, timing. */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"

int fm_cli_fusion_arg(fm_cli_fusion *f, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--fuse") && strcmp(a, "--fusion-config")) return 0;
    if (*i + 1 >= argc) return fm_cli_usage_error("%s needs a value", a), -1;
    const char *v = argv[++*i];
    if (!strcmp(a, "--fusion-config")) {
        f->json = v;
        return 1;
    }
    if (f->n_fuse == (int)(sizeof f->fuse / sizeof *f->fuse))
        return fm_cli_usage_error("too many --fuse"), -1;
    if (!*v || strpbrk(v, "\"\\"))
        return fm_cli_usage_error("--fuse: invalid family name '%s'", v), -1;
    f->fuse[f->n_fuse++] = v;
    return 1;
}

const char *fm_cli_fusion_config(fm_cli_fusion *f) {
    if (f->json && f->n_fuse) return NULL; /* both given: every command rejects that as usage */
    if (f->json) return f->json;
    if (!f->n_fuse) return NULL;
    size_t n = 3;
    for (int i = 0; i < f->n_fuse; i++)
        n += strlen(f->fuse[i]) + 12;
    f->built = malloc(n);
    if (!f->built) return NULL;
    char *w = f->built;
    *w++ = '{';
    for (int i = 0; i < f->n_fuse; i++)
        w += sprintf(w, "%s\"%s\": true", i ? ", " : "", f->fuse[i]);
    strcpy(w, "}");
    return f->built;
}

void fm_cli_fusion_free(fm_cli_fusion *f) {
    free(f->built);
    f->built = NULL;
}

int fm_cli_parse_dtype(const char *s, fm_dtype *out) {
    static const struct {
        const char *a, *b;
        fm_dtype dt;
    } names[] = {{"auto", "auto", FM_DTYPE_INVALID},
                 {"f32", "float32", FM_DTYPE_F32},
                 {"bf16", "bfloat16", FM_DTYPE_BF16},
                 {"f16", "float16", FM_DTYPE_F16}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i].a) || !strcmp(s, names[i].b)) return *out = names[i].dt, 0;
    return -2;
}

static void section(FILE *out, const char *title, char **v, size_t n) {
    if (!n) return;
    fprintf(out, "  %s (%zu):\n", title, n);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "    %s\n", v[i]);
}

void fm_cli_print_report(FILE *out, const char *dir, const fm_load_report *r) {
    fprintf(out, "load report for %s:\n", dir);
    section(out, "fused modules", r->fused, r->n_fused);
    section(out, "transforms fired", r->fired, r->n_fired);
    section(out, "missing keys", r->missing, r->n_missing);
    section(out, "unexpected keys", r->unexpected, r->n_unexpected);
    for (size_t i = 0; i < r->n_mismatched; i++) {
        char a[128], b[128];
        if (!i) fprintf(out, "  shape mismatches (%zu):\n", r->n_mismatched);
        fprintf(out, "    %s: checkpoint %s vs model %s\n", r->mismatched[i].key,
                fm_shape_format(&r->mismatched[i].checkpoint_shape, a, sizeof a),
                fm_shape_format(&r->mismatched[i].model_shape, b, sizeof b));
    }
    for (size_t i = 0; i < r->n_conversion_errors; i++) {
        if (!i) fprintf(out, "  conversion errors (%zu):\n", r->n_conversion_errors);
        fprintf(out, "    %s: %s\n", r->conversion_errors[i].key, r->conversion_errors[i].message);
    }
    if (!r->n_fused && !r->n_fired && !r->n_missing && !r->n_unexpected && !r->n_mismatched &&
        !r->n_conversion_errors)
        fprintf(out, "  clean: every key loaded as stored\n");
}

double fm_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
