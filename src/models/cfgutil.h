/* Internal: reading config.json fields for the architectures, with the bounds every size in a
 * config gets (README "Limits") and errors that name the file and the key. */
#ifndef FUSEMAP_MODELS_CFGUTIL_H
#define FUSEMAP_MODELS_CFGUTIL_H

#include <stdint.h>

#include "fusemap/io.h"

/* Every size in a config is bounded: a hostile config cannot make a build allocate a giant
 * tree or overflow the kernels' int sizes. */
#define FM_CFG_MAX_DIM ((int64_t)1 << 20) /* widths, heads, vocabulary: <= 1,048,576 */
#define FM_CFG_MAX_DEPTH ((int64_t)4096)  /* blocks / layers */

/* `prefix` ("vision_config." / "text_config." / "") + key in one config. */
typedef struct fm_cfg_keys {
    const fm_config *cfg;
    const char *origin;
    const char *prefix;
} fm_cfg_keys;

/* Integer at key (absent or null -> dflt); non-integers and values outside [min, max] are
 * refused naming the key. */
fm_status fm_cfg_int(const fm_cfg_keys *k, const char *key, int64_t dflt, int64_t min, int64_t max,
                     int64_t *out, fm_error *err);
/* Positive number at key (absent or null -> dflt). */
fm_status fm_cfg_positive(const fm_cfg_keys *k, const char *key, double dflt, double *out,
                          fm_error *err);
/* "%s: key '%s': %lld is not divisible by %s (%lld)". */
fm_status fm_cfg_need_divisible(const char *origin, const char *key, int64_t a, int64_t b,
                                const char *what, fm_error *err);

#endif
