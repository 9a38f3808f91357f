/* The Qwen2-VL hub <-> runtime key mapping (qwen2-vl.md §3): hub checkpoints name the tower
 * visual.* and the decoder model.*; the runtime tree (transformers v5) has model.visual.* and
 * model.language_model.*. Registered under the class names transformers keys it by (Qwen2.5-VL
 * shares it, as in transformers' alias table). */
#include "loading/defaults.h"
#include "models/qwen2_vl/qwen2_vl.h"

static fm_status qwen2_vl_list(fm_transform_list *l, fm_error *err) {
    static const char *const pairs[][2] = {
        {"^visual", "model.visual"},
        {"^model(?!\\.(language_model|visual))", "model.language_model"},
    };
    l->items = NULL;
    l->count = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        fm_transform *t = NULL;
        fm_status st = fm_transform_renaming_new(pairs[i][0], pairs[i][1], &t, err);
        if (st == FM_OK) st = fm_transform_list_append(l, t, err);
        if (st != FM_OK) {
            fm_transform_list_free(l);
            return st;
        }
    }
    return FM_OK;
}

fm_status fm_qwen2vl_register_mapping(fm_error *err) {
    static const char *const keys[] = {"Qwen2VLForConditionalGeneration",
                                       "Qwen2_5_VLForConditionalGeneration"};
    fm_transform_list l;
    fm_status st = qwen2_vl_list(&l, err);
    for (size_t i = 0; st == FM_OK && i < sizeof keys / sizeof *keys; i++)
        st = fm_conversion_mapping_register_default(keys[i], &l, err);
    fm_transform_list_free(&l);
    return st;
}
