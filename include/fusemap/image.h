/* fusemap image input: PNG/JPEG decoding to RGB8 (Pillow rules) and Pillow-exact bicubic resize.
 * Each architecture's preprocessing (resize policy, normalisation, patches) is in its model
 * header (fusemap/qwen2_vl.h) and behind fm_model_preprocess_images. See docs/preprocessing.md. */
#ifndef FUSEMAP_IMAGE_H
#define FUSEMAP_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decoding refuses images with more pixels than this: Pillow's DecompressionBombError limit
 * (2 x Image.MAX_IMAGE_PIXELS = 2 x 89,478,485). Checked from the header, before any pixel
 * memory is allocated. */
#define FM_IMAGE_MAX_PIXELS 178956970ull
/* JPEG files with more scans than this are refused (bounds the work of crafted
 * progressive files; real encoders use about 10). */
#define FM_IMAGE_JPEG_MAX_SCANS 1000
/* fm_image_load refuses files larger than this (bytes). */
#define FM_IMAGE_MAX_FILE_BYTES (1ull << 30)

/* An 8-bit RGB image: `height` rows of `width` pixels, 3 bytes each (R, G, B), no padding.
 * A small value type; `data` is owned: release with fm_image_free. */
typedef struct fm_image {
    uint32_t width, height;
    uint8_t *data;       /* owned; 3 * width * height bytes */
    uint8_t orientation; /* EXIF Orientation found in the file (1..8); 0 when absent, malformed
                            or a value Pillow's exif_transpose ignores */
} fm_image;

typedef enum fm_image_format {
    FM_IMAGE_FORMAT_UNKNOWN = 0,
    FM_IMAGE_FORMAT_PNG,
    FM_IMAGE_FORMAT_JPEG
} fm_image_format;

/* Format from the leading magic bytes (PNG signature, JPEG SOI FF D8 FF). */
FM_API fm_image_format fm_image_sniff(const void *bytes, size_t len);
/* "PNG", "JPEG" or "unknown"; never NULL. */
FM_API const char *fm_image_format_name(fm_image_format f);

/* Uninitialised RGB8 image of width x height (both > 0, product <= FM_IMAGE_MAX_PIXELS).
 * Caller frees with fm_image_free. */
FM_API fm_status fm_image_alloc(fm_image *img, uint32_t width, uint32_t height, fm_error *err);
/* Frees the pixels and zeroes the struct; accepts NULL and a zeroed image. */
FM_API void fm_image_free(fm_image *img);

/* Decodes a PNG or JPEG held in memory (borrowed for the call) into RGB8, converting as
 * Pillow's Image.convert("RGB") does: gray replicated, palette looked up, alpha dropped
 * without compositing, 16-bit RGB(A)/gray+alpha reduced to the high byte, 16-bit gray
 * clamped to 255 (Pillow's "I" -> "RGB" rule), CMYK JPEG with Adobe (inverted) polarity.
 * EXIF orientation is recorded in out->orientation, not applied: IFD0 tag 0x0112 of the last
 * PNG eXIf chunk, before or after IDAT (as Pillow >= 10.1's exif_transpose reads it), or of the
 * first JPEG APP1 Exif segment (docs/preprocessing.md); bad EXIF is ignored, never an error.
 * `label` names the input in errors. Bad input (empty, unknown magic, truncated, corrupt, too many
 * pixels) gives FM_ERR_IMAGE; *out is untouched on failure. Caller frees *out with fm_image_free.
 */
FM_API fm_status fm_image_decode(const void *bytes, size_t len, const char *label, fm_image *out,
                                 fm_error *err);
/* fm_image_decode refusing images of more than max_pixels pixels (at most FM_IMAGE_MAX_PIXELS;
 * larger values mean that), checked from the header before any pixel memory is allocated: for
 * untrusted input with a tighter budget (a server's requests). */
FM_API fm_status fm_image_decode_limited(const void *bytes, size_t len, const char *label,
                                         uint64_t max_pixels, fm_image *out, fm_error *err);
/* Reads the file at `path` and decodes it as fm_image_decode. Open/read failures give
 * FM_ERR_IO (FM_ERR_NOT_FOUND when the file does not exist). */
FM_API fm_status fm_image_load(const char *path, fm_image *out, fm_error *err);
/* Applies img->orientation in place as Pillow's ImageOps.exif_transpose (2: mirror,
 * 3: rotate 180, 4: flip, 5: transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate 90
 * counter-clockwise), then sets orientation to 1 (0 stays 0). Width and height swap for
 * 5..8. On failure the image is unchanged. */
FM_API fm_status fm_image_apply_orientation(fm_image *img, fm_error *err);

/* ---- resizing ---------------------------------------------------------------------------
 * Pillow's Image.resize(..., BICUBIC) bit-for-bit (libImaging/Resample.c, 8 bits per
 * channel): Keys cubic a = -0.5 with support scaled by the downscale factor (antialias),
 * 22-bit fixed-point weights, horizontal pass first into a uint8 intermediate, a pass skipped
 * when its size is unchanged. `src` is src_h rows of src_w pixels with `channels` (1..4)
 * interleaved bytes; `dst` (dst_h * dst_w * channels bytes, caller-owned, not overlapping
 * src) receives the result. Each channel is resampled independently (no premultiplied
 * alpha, unlike Pillow's RGBA path). */
FM_API fm_status fm_resize_bicubic_u8(const uint8_t *src, uint32_t src_w, uint32_t src_h,
                                      uint32_t channels, uint8_t *dst, uint32_t dst_w,
                                      uint32_t dst_h, fm_error *err);
/* Resized copy of an RGB8 image (a plain copy when the size is unchanged, as Pillow does).
 * Caller frees *out with fm_image_free. */
FM_API fm_status fm_image_resize_bicubic(const fm_image *src, uint32_t width, uint32_t height,
                                         fm_image *out, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
