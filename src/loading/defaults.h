/* Internal: how the library's own architectures register their conversion mappings as the
 * registry's defaults (restored by fm_conversion_mapping_reset). */
#ifndef FUSEMAP_LOADING_DEFAULTS_H
#define FUSEMAP_LOADING_DEFAULTS_H

#include "fusemap/loading.h"

/* Registers a deep copy of `list` under key, both live and as a default. */
fm_status fm_conversion_mapping_register_default(const char *key, const fm_transform_list *list,
                                                 fm_error *err);

#endif
