/* Generation options and results (fm_generate itself is a batch of one slot: src/api/batch.c). */
#include <string.h>

#include "api/model_internal.h"
#include "fusemap/generate.h"

void fm_generate_options_init(fm_generate_options *o) {
    memset(o, 0, sizeof *o);
    fm_sampling_options_init(&o->sampling);
    o->max_new_tokens = 20;
    o->kv_dtype = FM_DTYPE_F32;
}

void fm_generate_result_free(fm_generate_result *r) {
    if (!r) return;
    fm_free(r->tokens);
    fm_free(r->text);
    memset(r, 0, sizeof *r);
}
