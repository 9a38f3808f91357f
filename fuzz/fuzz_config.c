/* Fuzz harness: config.json and fusion_config parsing. The input is JSON text: fm_config_parse,
 * then typed reads over the whole tree, fusion_config validation, the Qwen2-VL config parser,
 * setters, and dump -> parse -> dump (must be a fixed point) as an oracle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusion.h"
#include "fusemap/io.h"
#include "fusemap/nn.h"
#include "fuzz_common.h"

/* Typed reads of every member of the object at `key` ("" = root), nested objects recursively
 * (paths are dotted, so keys holding '.' simply resolve elsewhere or to nothing). */
static void cfh_walk(const fm_config *c, const char *key, int depth) {
    size_t n = fm_config_object_size(c, key);
    for (size_t i = 0; i < n && i < 64; i++) {
        const char *k = fm_config_object_key(c, key, i);
        char path[512];
        if (!k ||
            snprintf(path, sizeof path, "%s%s%s", key, *key ? "." : "", k) >= (int)sizeof path)
            continue;
        int64_t iv;
        double dv;
        bool bv;
        const char *sv;
        switch (fm_config_type(c, path)) {
        case FM_JSON_INT:
        case FM_JSON_REAL:
            fm_config_get_double(c, path, &dv, NULL);
            break;
        case FM_JSON_BOOL:
            fm_config_get_bool(c, path, &bv, NULL);
            break;
        case FM_JSON_STRING:
            if (fm_config_get_string(c, path, &sv, NULL) == FM_OK)
                fmz_sink(fmz_touch(sv, strlen(sv)));
            break;
        case FM_JSON_ARRAY:
            for (size_t j = 0; j < fm_config_array_size(c, path) && j < 64; j++)
                fm_config_array_int(c, path, j, &iv, NULL);
            break;
        case FM_JSON_OBJECT:
            if (depth < 8) cfh_walk(c, path, depth + 1);
            break;
        default:
            break;
        }
        fm_config_get_int(c, path, &iv, NULL); /* wrong-type reads must fail cleanly */
        fm_config_get_string(c, path, &sv, NULL);
    }
}

/* dump(parse(dump(c))) == dump(c), and a clone dumps the same. */
static void cfh_fixed_point(const fm_config *c) {
    char *d1 = NULL, *d2 = NULL, *d3 = NULL, *compact = NULL;
    size_t l1 = 0, l2 = 0, l3 = 0;
    fm_config *re = NULL, *cl = NULL;
    fm_error err;
    if (fm_config_dump(c, &d1, &l1, &err) != FM_OK) return; /* e.g. a NaN cannot be written */
    if (fm_config_parse(d1, l1, "dumped", &re, &err) != FM_OK)
        fmz_fail("config: dump does not parse", err.msg);
    if (fm_config_dump(re, &d2, &l2, &err) != FM_OK) fmz_fail("config: re-dump failed", err.msg);
    if (l1 != l2 || memcmp(d1, d2, l1)) fmz_fail("config: dump is not a fixed point", d1);
    if (fm_config_clone(c, &cl, NULL) == FM_OK && fm_config_dump(cl, &d3, &l3, NULL) == FM_OK &&
        (l3 != l1 || memcmp(d1, d3, l1)))
        fmz_fail("config: clone dumps differently", d1);
    if (fm_config_dump_compact(c, &compact, NULL) == FM_OK)
        fmz_sink(fmz_touch(compact, strlen(compact)));
    fm_free(d1), fm_free(d2), fm_free(d3), fm_free(compact);
    fm_config_free(re);
    fm_config_free(cl);
}

/* fusion_config checks on the root and on a nested "fusion_config", and the model parser. */
static void cfh_semantics(const fm_config *c) {
    fm_fusion_config_validate(c, "fuzz", NULL);
    fm_config *fc = NULL;
    if (fm_config_get_subtree(c, "fusion_config", &fc, NULL) == FM_OK)
        fm_fusion_config_validate(fc, "fuzz", NULL);
    fm_config_free(fc);
    const fm_model_builder *b = fm_model_builder_find("qwen2_vl", NULL);
    void *mc = NULL;
    if (b && b->parse_config(c, "fuzz", &mc, NULL) == FM_OK) b->free_config(mc);
}

/* Setters on a clone: replace the first key, add keys, nest a copy of the tree, remove. */
static void cfh_mutate(const fm_config *c) {
    fm_config *m = NULL;
    if (fm_config_clone(c, &m, NULL) != FM_OK) return;
    const char *k0 = fm_config_object_key(m, "", 0);
    char *first = k0 ? strdup(k0) : NULL;
    if (first) fm_config_set_int(m, first, -1, NULL);
    fm_config_set_string(m, "fuzz_added", "v\x01\"\\", NULL);
    fm_config_set_subtree(m, "fuzz_nested.copy", c, NULL);
    if (first) fm_config_remove(m, first, NULL);
    cfh_fixed_point(m);
    free(first);
    fm_config_free(m);
}

int fm_fuzz_config(const uint8_t *data, size_t size);
int fm_fuzz_config(const uint8_t *data, size_t size) {
    fm_config *c = NULL;
    fm_error err;
    fm_status st = fm_config_parse((const char *)data, size, "fuzz.json", &c, &err);
    fmz_note("config_parse (%zu bytes): %s %s", size, fm_status_name(st), st ? err.msg : "");
    fmz_verdict(st == FM_OK);
    if (st != FM_OK) {
        if (c) fmz_fail("config", "output set on failure");
        return 0;
    }
    cfh_walk(c, "", 0);
    cfh_semantics(c);
    cfh_fixed_point(c);
    cfh_mutate(c);
    fm_config_free(c);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_config)
