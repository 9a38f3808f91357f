/* config.json field readers shared by the architectures: bounded integers, positive numbers,
 * divisibility, each error naming the file and the full key. */
#include <stdio.h>

#include "models/cfgutil.h"

static void full_key(const fm_cfg_keys *k, const char *key, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", k->prefix, key);
}

fm_status fm_cfg_int(const fm_cfg_keys *k, const char *key, int64_t dflt, int64_t min, int64_t max,
                     int64_t *out, fm_error *err) {
    char fk[160];
    full_key(k, key, fk, sizeof fk);
    fm_json_type t = fm_config_type(k->cfg, fk);
    if (t == FM_JSON_ABSENT || t == FM_JSON_NULL) {
        *out = dflt;
        return FM_OK;
    }
    fm_status st = fm_config_get_int(k->cfg, fk, out, err);
    if (st != FM_OK) return st;
    if (*out < min || *out > max)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': must be in [%lld, %lld], got %lld",
                            k->origin, fk, (long long)min, (long long)max, (long long)*out);
    return FM_OK;
}

fm_status fm_cfg_positive(const fm_cfg_keys *k, const char *key, double dflt, double *out,
                          fm_error *err) {
    char fk[160];
    full_key(k, key, fk, sizeof fk);
    fm_json_type t = fm_config_type(k->cfg, fk);
    if (t == FM_JSON_ABSENT || t == FM_JSON_NULL) {
        *out = dflt;
        return FM_OK;
    }
    fm_status st = fm_config_get_double(k->cfg, fk, out, err);
    if (st == FM_OK && !(*out > 0))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': must be positive, got %g", k->origin,
                            fk, *out);
    return st;
}

fm_status fm_cfg_need_divisible(const char *origin, const char *key, int64_t a, int64_t b,
                                const char *what, fm_error *err) {
    if (b > 0 && a % b == 0) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': %lld is not divisible by %s (%lld)",
                        origin, key, (long long)a, what, (long long)b);
}
