/* EXIF Orientation (tag 0x0112 of IFD0) read the way Pillow's Image.getexif() reads it:
 * Exif.load -> TiffImagePlugin.ImageFileDirectory_v2.load, then exif_transpose's lookup. */
#include "image/exif.h"

#include <string.h>

static uint32_t rd16(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? rd16(p, 1) | rd16(p + 2, 1) << 16 : rd16(p, 0) << 16 | rd16(p + 2, 0);
}
static uint64_t rd64(const uint8_t *p, int le) {
    uint64_t a = rd32(p, le), b = rd32(p + 4, le);
    return le ? a | b << 32 : a << 32 | b;
}

/* Bytes per value of the TIFF field types Pillow loads (its _load_dispatch); 0: a type it
 * skips (the entry is dropped as if absent). */
static unsigned unit_size(uint32_t type) {
    static const uint8_t sz[17] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8};
    return type < 17 ? sz[type] : 0;
}

/* The integer 1..8 that the first stored value equals in Python (dict lookup by equality), or
 * 0. BYTE and UNDEFINED load as bytes, ASCII as str: never equal to an int. */
static uint8_t value_as_orientation(uint32_t type, const uint8_t *d, int le) {
    int64_t v, num, den;
    double f;
    switch (type) {
    case 3:
        v = rd16(d, le);
        break; /* SHORT */
    case 8:
        v = (int16_t)rd16(d, le);
        break; /* SSHORT */
    case 4:
    case 13:
        v = rd32(d, le);
        break; /* LONG, IFD */
    case 9:
        v = (int32_t)rd32(d, le);
        break; /* SLONG */
    case 6:
        v = (int8_t)d[0];
        break; /* SBYTE */
    case 16:
        v = rd64(d, le) > 8 ? 0 : (int64_t)rd64(d, le);
        break; /* LONG8 */
    case 5:
    case 10: /* (S)RATIONAL: a Fraction */
        num = type == 5 ? (int64_t)rd32(d, le) : (int32_t)rd32(d, le);
        den = type == 5 ? (int64_t)rd32(d + 4, le) : (int32_t)rd32(d + 4, le);
        v = den != 0 && num % den == 0 ? num / den : 0; /* denominator 0 is NaN */
        break;
    case 11:
    case 12: { /* FLOAT, DOUBLE */
        if (type == 11) {
            uint32_t bits = rd32(d, le);
            float x;
            memcpy(&x, &bits, 4);
            f = x;
        } else {
            uint64_t bits = rd64(d, le);
            memcpy(&f, &bits, 8);
        }
        v = f >= 1 && f <= 8 && f == (double)(int64_t)f ? (int64_t)f : 0;
        break;
    }
    default:
        return 0; /* BYTE, ASCII, UNDEFINED */
    }
    return v >= 1 && v <= 8 ? (uint8_t)v : 0;
}

fm_exif_tag fm_exif_orientation(const uint8_t *p, size_t n, uint8_t *value) {
    *value = 0;
    while (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0)
        p += 6, n -= 6;
    /* Pillow's accepted headers: II/MM with 42 in either byte order; BigTIFF (43) and blocks
     * under 8 bytes make it raise, which exif_transpose does not catch: read as no EXIF. */
    if (n < 8 || p[0] != p[1] || (p[0] != 'I' && p[0] != 'M')) return FM_EXIF_ABSENT;
    int le = p[0] == 'I';
    if (!((p[2] == 42 && p[3] == 0) || (p[2] == 0 && p[3] == 42))) return FM_EXIF_ABSENT;
    uint64_t off = rd32(p + 4, le);
    if (off + 2 > n) return FM_EXIF_ABSENT; /* a short read ends the IFD: nothing kept */
    uint32_t count = rd16(p + off, le);
    fm_exif_tag found = FM_EXIF_ABSENT;
    for (uint64_t i = 0, e = off + 2; i < count && e + 12 <= n; i++, e += 12) {
        const uint8_t *ent = p + e;
        uint32_t tag = rd16(ent, le), type = rd16(ent + 2, le);
        uint64_t size = (uint64_t)rd32(ent + 4, le) * unit_size(type);
        if (!unit_size(type) || size == 0) continue; /* unsupported type / empty: skipped */
        const uint8_t *data = ent + 8;
        if (size > 4) {
            uint64_t at = rd32(ent + 8, le);
            if (at + size > n) break; /* Pillow's read of the value fails: the rest is dropped */
            data = p + at;
        }
        if (tag == 0x0112) { /* a later duplicate replaces an earlier one, as in Pillow's dict */
            found = FM_EXIF_PRESENT;
            *value = value_as_orientation(type, data, le);
        }
    }
    return found;
}
