/* Fuzz harness: the transform pattern compiler (Python-re translation, PCRE2 compile, target
 * normalisation, reversibility checks) through fm_transform_renaming_new /
 * fm_transform_converter_new and fm_patch_map_add, then renaming keys with what compiled.
 * Input: a header (flags, then 2 bytes per op), then '\n'-separated lines: the source
 * patterns, the target patterns, then keys to rename. Oracle: a clone renames exactly as the
 * original does. */
#include <stdlib.h>
#include <string.h>

#include "fusemap/loading.h"
#include "fusemap/nn.h"
#include "fuzz_common.h"

#define PTH_MAX_LINES 24
#define PTH_MAX_KEY 512

typedef struct pth_input {
    char *buf; /* owned: the text part, '\n' replaced by NUL */
    const char *lines[PTH_MAX_LINES];
    size_t n_lines;
    bool converter, patch_map;
    size_t ns, nt, nops;
    fm_op_desc ops[2];
} pth_input;

/* Flags: bit0 converter, bits1-2 sources-1, bits3-4 targets-1, bit5 two ops, bit6 patch map. */
static void pth_header(fmz_reader *r, pth_input *in) {
    uint8_t f = fmz_u8(r);
    in->converter = f & 1, in->patch_map = (f >> 6) & 1;
    in->ns = in->converter ? 1 + ((f >> 1) & 3) : 1;
    in->nt = in->converter ? 1 + ((f >> 3) & 3) : 1;
    in->nops = 1 + ((f >> 5) & 1);
    for (size_t i = 0; i < in->nops; i++) {
        uint8_t a = fmz_u8(r), b = fmz_u8(r);
        fm_op_desc *op = &in->ops[i];
        memset(op, 0, sizeof *op);
        op->kind = (fm_op_kind)((a & 7) % FM_OP_KIND_COUNT);
        op->dim = (int)((a >> 3) & 7) - 4;
        op->dim1 = (int)(b & 7) - 4;
        op->in_channels = 1 + ((b >> 3) & 3);
        for (int k = 0; k < 3; k++)
            op->kernel[k] = 1 + ((b >> (5 + k)) & 1);
    }
}

static int pth_parse(const uint8_t *data, size_t size, pth_input *in) {
    fmz_reader r = {data, size};
    memset(in, 0, sizeof *in);
    pth_header(&r, in);
    if (!(in->buf = malloc(r.n + 1))) return -1;
    memcpy(in->buf, r.p, r.n);
    in->buf[r.n] = '\0';
    char *p = in->buf, *end = in->buf + r.n;
    while (in->n_lines < PTH_MAX_LINES && p <= end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl) *nl = '\0';
        in->lines[in->n_lines++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    return in->n_lines >= in->ns + in->nt ? 0 : -1;
}

/* Renames each key with t and its clone (same result required), and with the reverse. */
static void pth_rename_all(const fm_transform *t, const pth_input *in, size_t first_key) {
    fm_transform *cl = NULL, *rev = NULL;
    if (fm_transform_clone(t, &cl, NULL) != FM_OK) return;
    fm_transform_reverse(t, &rev, NULL);
    for (size_t i = first_key; i < in->n_lines; i++) {
        if (strlen(in->lines[i]) > PTH_MAX_KEY) continue;
        char *a = NULL, *b = NULL, *c = NULL;
        int ba = -2, bb = -2, bc;
        fm_status sa = fm_transform_rename(t, in->lines[i], &a, &ba, NULL);
        fm_status sb = fm_transform_rename(cl, in->lines[i], &b, &bb, NULL);
        if (sa != sb || ba != bb || (sa == FM_OK && strcmp(a, b)))
            fmz_fail("pattern: a clone renames differently", in->lines[i]);
        if (sa == FM_OK && rev && strlen(a) <= 4 * PTH_MAX_KEY)
            fm_transform_rename(rev, a, &c, &bc, NULL);
        fm_free(a), fm_free(b), fm_free(c);
    }
    fmz_sink(fmz_touch(fm_transform_describe(t), strlen(fm_transform_describe(t))));
    fm_transform_free(cl);
    fm_transform_free(rev);
}

/* The patch registry compiles regex keys the same way; resolve every key through a map. */
static void pth_patch_map(const pth_input *in, size_t first_key) {
    static const fm_module_class cls = {.name = "FuzzPatched"};
    fm_patch_map *m = fm_patch_map_new();
    if (!m) return;
    for (size_t i = 0; i < in->ns; i++)
        fm_patch_map_add(m, in->lines[i], &cls, i % 2 == 1, NULL);
    for (size_t i = first_key; i < in->n_lines; i++)
        if (strlen(in->lines[i]) <= PTH_MAX_KEY)
            fmz_sink(fm_patch_map_resolve(m, in->lines[i]) != NULL);
    fm_patch_map_free(m);
}

int fm_fuzz_pattern(const uint8_t *data, size_t size);
int fm_fuzz_pattern(const uint8_t *data, size_t size) {
    pth_input in;
    if (pth_parse(data, size, &in) == 0) {
        fm_transform *t = NULL;
        fm_error err;
        const char *const *src = in.lines, *const *tgt = in.lines + in.ns;
        fm_status st = in.converter ? fm_transform_converter_new(src, in.ns, tgt, in.nt, in.ops,
                                                                 in.nops, &t, &err)
                                    : fm_transform_renaming_new(src[0], tgt[0], &t, &err);
        fmz_note("%s '%s' -> '%s': %s %s", in.converter ? "converter" : "renaming", src[0], tgt[0],
                 fm_status_name(st), st ? err.msg : "");
        fmz_verdict(st == FM_OK);
        if (st == FM_OK)
            pth_rename_all(t, &in, in.ns + in.nt);
        else if (t)
            fmz_fail("pattern", "output set on failure");
        fm_transform_free(t);
        if (in.patch_map) pth_patch_map(&in, in.ns + in.nt);
    }
    free(in.buf);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_pattern)
