/* The table of built-in architectures and the library's start-up. Adding an architecture is a
 * folder under src/models/ plus one line here. */
#include <pthread.h>
#include <stdio.h>

#include "api/model_internal.h"
#include "models/qwen2_5_vl/qwen2_5_vl.h"
#include "models/qwen2_vl/qwen2_vl.h"
#include "models/qwen3_vl/qwen3_vl.h"

typedef struct architecture {
    const char *model_type;
    fm_status (*reg)(fm_error *err); /* registers classes, builder and key mapping */
} architecture;

static const architecture architectures[] = {
    {"qwen2_vl", fm_qwen2vl_register},
    {"qwen2_5_vl", fm_qwen25vl_register}, /* after qwen2_vl: shares its classes */
    {"qwen3_vl", fm_qwen3vl_register},
};

#define N_ARCH (sizeof architectures / sizeof *architectures)

const char *const *fm_model_types(size_t *n) {
    static const char *names[N_ARCH];
    for (size_t i = 0; i < N_ARCH; i++)
        names[i] = architectures[i].model_type;
    *n = N_ARCH;
    return names;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static fm_status init_status;
static fm_error init_err;

static void init_all(void) {
    fm_status st = fm_nn_register_builtins(&init_err);
    for (size_t i = 0; st == FM_OK && i < N_ARCH; i++) {
        st = architectures[i].reg(&init_err);
        if (st != FM_OK) fm_error_prefix(&init_err, "registering %s", architectures[i].model_type);
    }
    init_status = st;
}

fm_status fm_init(fm_error *err) {
    pthread_once(&init_once, init_all);
    if (init_status != FM_OK && err) *err = init_err;
    return init_status;
}

/* "qwen2_vl, ..." into buf. */
void fm_model_types_text(char *buf, size_t size) {
    size_t n = 0, w = 0;
    const char *const *names = fm_model_types(&n);
    buf[0] = '\0';
    for (size_t i = 0; i < n && w < size; i++)
        w += (size_t)snprintf(buf + w, size - w, "%s%s", i ? ", " : "", names[i]);
}
