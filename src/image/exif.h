/* EXIF Orientation as Pillow's Image.getexif() reads it (internal to src/image/). */
#ifndef FUSEMAP_IMAGE_EXIF_H
#define FUSEMAP_IMAGE_EXIF_H

#include <stddef.h>
#include <stdint.h>

/* What a TIFF/EXIF block says about tag 0x0112 (Orientation) of IFD0. */
typedef enum fm_exif_tag {
    FM_EXIF_ABSENT = 0,  /* no usable block, or IFD0 holds no 0x0112 entry Pillow keeps */
    FM_EXIF_PRESENT = 1, /* an entry is there; *value says whether it selects an orientation */
} fm_exif_tag;

/* Reads the Orientation of an EXIF block (`p`, `n` bytes, borrowed for the call): a PNG eXIf
 * payload or a JPEG APP1 payload. Leading "Exif\0\0" prefixes are skipped (as many as there
 * are, as Pillow >= 10 does). *value is set to 1..8 when the stored value equals that integer
 * in Python's sense (SHORT/LONG/signed/LONG8 integers, FLOAT/DOUBLE, RATIONAL/SRATIONAL with a
 * non-zero denominator; the first element when the count is above 1), else 0 — out-of-range
 * numbers and BYTE/ASCII/UNDEFINED values, which Pillow's exif_transpose ignores. Blocks Pillow
 * cannot parse at all (a header that is not TIFF, BigTIFF, fewer than 8 bytes) give ABSENT. */
fm_exif_tag fm_exif_orientation(const uint8_t *p, size_t n, uint8_t *value);

#endif
