/* Internal: what the architectures' class inits share when they build their children. */
#ifndef FUSEMAP_MODELS_BUILD_UTIL_H
#define FUSEMAP_MODELS_BUILD_UTIL_H

#include "fusemap/nn.h"

/* Creates a child or returns the failure (the enclosing init has `ctx` and `err` in scope). */
#define MK(parent, name, cls, args)                                                                \
    do {                                                                                           \
        fm_status st_ = fm_module_create(ctx, parent, name, cls, args, NULL, err);                 \
        if (st_ != FM_OK) return st_;                                                              \
    } while (0)

#endif
