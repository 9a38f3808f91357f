/* Internal test hooks of the fusion layer: the discovery cache, observed and emptied by tests.
 * Not exported from libfusemap.so. */
#ifndef FUSEMAP_FUSION_TESTING_H
#define FUSEMAP_FUSION_TESTING_H

#include <stdint.h>

/* Empties the discovery cache (fused classes stay registered). */
void fm_fusion_cache_clear(void);
/* Discovery runs since start (tests use it to observe the cache). */
uint64_t fm_fusion_discovery_count(void);

#endif
