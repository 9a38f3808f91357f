/* `fusemap inspect DIR --modules [--fuse NAME]... [--fusion-config JSON] [--json]`: the
 * module tree as built (dotted name, class name, parameter shapes and dtypes), fused modules
 * marked with their new class and the class they replace. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

typedef struct walk_ctx {
    json_t *list; /* NULL for text output */
} walk_ctx;

static void print_params(fm_module *m) {
    for (size_t i = 0; i < fm_module_param_count(m); i++) {
        const fm_param *p = fm_module_param(m, i);
        char s[128];
        printf("%s%s %s %s", i ? ", " : "  ", p->name,
               fm_shape_format(&p->tensor.shape, s, sizeof s), fm_dtype_name(p->tensor.dtype));
    }
}

static json_t *module_json(fm_module *m) {
    json_t *o = json_object(), *ps = json_array();
    json_object_set_new(o, "name", json_string(fm_module_path(m)));
    json_object_set_new(o, "class", json_string(fm_module_class_of(m)->name));
    if (strcmp(fm_module_class_of(m)->name, fm_module_requested_class(m)))
        json_object_set_new(o, "replaces", json_string(fm_module_requested_class(m)));
    for (size_t i = 0; i < fm_module_param_count(m); i++) {
        const fm_param *p = fm_module_param(m, i);
        json_t *po = json_object(), *shape = json_array();
        for (int d = 0; d < p->tensor.shape.ndim; d++)
            json_array_append_new(shape, json_integer(p->tensor.shape.dims[d]));
        json_object_set_new(po, "name", json_string(p->name));
        json_object_set_new(po, "shape", shape);
        json_object_set_new(po, "dtype", json_string(fm_dtype_name(p->tensor.dtype)));
        json_array_append_new(ps, po);
    }
    json_object_set_new(o, "params", ps);
    return o;
}

static int visit(fm_module *m, int depth, void *vctx) {
    walk_ctx *w = vctx;
    if (w->list) return json_array_append_new(w->list, module_json(m)), 0;
    const char *name = fm_module_path(m)[0] ? fm_module_path(m) : "(root)";
    printf("%*s%-*s %s", 2 * depth, "", 56 - 2 * depth > 8 ? 56 - 2 * depth : 8, name,
           fm_module_class_of(m)->name);
    if (strcmp(fm_module_class_of(m)->name, fm_module_requested_class(m)))
        printf(" [replaces %s]", fm_module_requested_class(m));
    print_params(m);
    putchar('\n');
    return 0;
}

int fm_cli_inspect_modules(const char *dir, const char *fusion_config, bool json) {
    fm_load_options lo;
    fm_load_options_init(&lo);
    lo.fusion_config = fusion_config;
    fm_model *m = NULL;
    fm_load_report rep;
    fm_error err;
    fm_status st = fm_from_pretrained(dir, &lo, &m, &rep, &err);
    if (st != FM_OK) {
        fm_load_report_free(&rep);
        return fm_cli_fail(&err);
    }
    walk_ctx w = {json ? json_array() : NULL};
    if (!json) {
        printf("model: %s (%s), fusion_config: %s\n", fm_model_architecture(m), fm_model_type(m),
               fm_model_fusion_config(m) ? fm_model_fusion_config(m) : "none");
        for (size_t i = 0; i < rep.n_fused; i++)
            printf("fused: %s\n", rep.fused[i]);
    }
    fm_module_walk(fm_model_root(m), visit, &w);
    int rc = 0;
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "model_type", json_string(fm_model_type(m)));
        json_object_set_new(doc, "architecture", json_string(fm_model_architecture(m)));
        json_object_set_new(doc, "fusion_config",
                            fm_model_fusion_config(m)
                                ? json_loads(fm_model_fusion_config(m), 0, NULL)
                                : json_null());
        json_object_set_new(doc, "modules", w.list);
        rc = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) ? 1 : 0;
        putchar('\n');
        json_decref(doc);
    }
    fm_load_report_free(&rep);
    fm_model_free(m);
    return rc ? fm_cli_errorf("inspect: cannot write the output") : 0;
}
