/* Internal pieces of the config.json tree (src/io/config.c) shared with tests: the text size
 * limit and Python's float repr. */
#ifndef FM_IO_CONFIG_INTERNAL_H
#define FM_IO_CONFIG_INTERNAL_H

#include <stddef.h>

/* Largest JSON text fm_config_parse / fm_config_load accept (FM_ERR_LIMIT above). */
#define FM_CONFIG_MAX_BYTES ((size_t)64 << 20)

/* Room for any fm_py_float_repr result plus the NUL ("-2.2250738585072014e-308" is 24). */
#define FM_PY_FLOAT_REPR_MAX 32

/* Writes Python's repr() of a finite double into buf (size >= FM_PY_FLOAT_REPR_MAX): the
 * shortest digit string that reads back as v (nearest to v among the shortest), fixed notation
 * with at least one fractional digit when the decimal exponent is in [-4, 16), otherwise
 * "d[.ddd]e[+-]XX". Non-finite values give "NaN", "Infinity", "-Infinity" (json.dumps' spelling).
 * Returns the length. */
size_t fm_py_float_repr(double v, char *buf);

#endif
