/* Internal to the fusion subsystem. */
#ifndef FUSEMAP_FUSION_INTERNAL_H
#define FUSEMAP_FUSION_INTERNAL_H

#include "fusemap/fusion.h"

/* True when fusion_config (may be NULL) enables family `key` (true or an options object). */
bool fm_fusion_family_enabled(const fm_config *fc, const char *key);

#endif
