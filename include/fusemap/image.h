/* fusemap image input: PNG/JPEG decoding to RGB8 (Pillow rules), Pillow-exact bicubic resize
 * and Qwen2-VL image preprocessing (smart_resize, normalise, patches). See docs/preprocessing.md.
 */
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
    uint8_t orientation; /* EXIF Orientation tag found in the file (1..8), 0 when absent */
} fm_image;

typedef enum fm_image_format {
    FM_IMAGE_FORMAT_UNKNOWN = 0,
    FM_IMAGE_FORMAT_PNG,
    FM_IMAGE_FORMAT_JPEG
} fm_image_format;

/* Format from the leading magic bytes (PNG signature, JPEG SOI FF D8 FF). */
fm_image_format fm_image_sniff(const void *bytes, size_t len);
/* "PNG", "JPEG" or "unknown"; never NULL. */
const char *fm_image_format_name(fm_image_format f);

/* Uninitialised RGB8 image of width x height (both > 0, product <= FM_IMAGE_MAX_PIXELS).
 * Caller frees with fm_image_free. */
fm_status fm_image_alloc(fm_image *img, uint32_t width, uint32_t height, fm_error *err);
/* Frees the pixels and zeroes the struct; accepts NULL and a zeroed image. */
void fm_image_free(fm_image *img);

/* Decodes a PNG or JPEG held in memory (borrowed for the call) into RGB8, converting as
 * Pillow's Image.convert("RGB") does: gray replicated, palette looked up, alpha dropped
 * without compositing, 16-bit RGB(A)/gray+alpha reduced to the high byte, 16-bit gray
 * clamped to 255 (Pillow's "I" -> "RGB" rule), CMYK JPEG with Adobe (inverted) polarity.
 * EXIF orientation is recorded in out->orientation, not applied. `label` names the input in
 * errors. Bad input (empty, unknown magic, truncated, corrupt, too many pixels) gives
 * FM_ERR_IMAGE; *out is untouched on failure. Caller frees *out with fm_image_free. */
fm_status fm_image_decode(const void *bytes, size_t len, const char *label, fm_image *out,
                          fm_error *err);
/* Reads the file at `path` and decodes it as fm_image_decode. Open/read failures give
 * FM_ERR_IO (FM_ERR_NOT_FOUND when the file does not exist). */
fm_status fm_image_load(const char *path, fm_image *out, fm_error *err);
/* Applies img->orientation in place as Pillow's ImageOps.exif_transpose (2: mirror,
 * 3: rotate 180, 4: flip, 5: transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate 90
 * counter-clockwise), then sets orientation to 1 (0 stays 0). Width and height swap for
 * 5..8. On failure the image is unchanged. */
fm_status fm_image_apply_orientation(fm_image *img, fm_error *err);

/* ---- resizing ---------------------------------------------------------------------------
 * Pillow's Image.resize(..., BICUBIC) bit-for-bit (libImaging/Resample.c, 8 bits per
 * channel): Keys cubic a = -0.5 with support scaled by the downscale factor (antialias),
 * 22-bit fixed-point weights, horizontal pass first into a uint8 intermediate, a pass skipped
 * when its size is unchanged. `src` is src_h rows of src_w pixels with `channels` (1..4)
 * interleaved bytes; `dst` (dst_h * dst_w * channels bytes, caller-owned, not overlapping
 * src) receives the result. Each channel is resampled independently (no premultiplied
 * alpha, unlike Pillow's RGBA path). */
fm_status fm_resize_bicubic_u8(const uint8_t *src, uint32_t src_w, uint32_t src_h,
                               uint32_t channels, uint8_t *dst, uint32_t dst_w, uint32_t dst_h,
                               fm_error *err);
/* Resized copy of an RGB8 image (a plain copy when the size is unchanged, as Pillow does).
 * Caller frees *out with fm_image_free. */
fm_status fm_image_resize_bicubic(const fm_image *src, uint32_t width, uint32_t height,
                                  fm_image *out, fm_error *err);

/* ---- Qwen2-VL preprocessing ---------------------------------------------------------------
 * Qwen2VLImageProcessor, PIL path (transformers v4 slow processor / v5
 * Qwen2VLImageProcessorPil): spec qwen2-vl.md section 3. */

/* The newest smart_resize: (height, width) -> multiples of `factor` with
 * min_pixels <= area <= max_pixels (Python rounding: halves to even), the shrink branch
 * clamped to at least `factor`. FM_ERR_IMAGE when max(h,w)/min(h,w) > 200;
 * FM_ERR_INVALID_ARG for non-positive sizes or limits, min_pixels > max_pixels, or a result
 * beyond uint32. */
fm_status fm_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                          int64_t max_pixels, int64_t *out_height, int64_t *out_width,
                          fm_error *err);

/* Preprocessor parameters. Defaults (fm_qwen2vl_preproc_params_init) are the class
 * defaults of spec section 3.2; hub checkpoints override min/max pixels in their
 * preprocessor_config.json, so read it (fm_qwen2vl_preproc_params_load). */
typedef struct fm_qwen2vl_preproc_params {
    bool do_resize;              /* true */
    int resample;                /* PIL code; only 3 (BICUBIC) is supported */
    int64_t min_pixels;          /* 3136 (size.shortest_edge) */
    int64_t max_pixels;          /* 1003520 (size.longest_edge) */
    bool do_rescale;             /* true */
    double rescale_factor;       /* 1/255 */
    bool do_normalize;           /* true */
    double image_mean[3];        /* OpenAI CLIP mean */
    double image_std[3];         /* OpenAI CLIP std */
    int64_t patch_size;          /* 14 */
    int64_t temporal_patch_size; /* 2 */
    int64_t merge_size;          /* 2 */
} fm_qwen2vl_preproc_params;

void fm_qwen2vl_preproc_params_init(fm_qwen2vl_preproc_params *p);
/* Range checks (positive sizes, min <= max, std != 0, resample 3): FM_ERR_CONFIG otherwise. */
fm_status fm_qwen2vl_preproc_params_validate(const fm_qwen2vl_preproc_params *p, fm_error *err);
/* Overrides *p (initialised by the caller) with the keys found in a preprocessor_config.json
 * text: min_pixels / max_pixels (these win over size.shortest_edge / size.longest_edge),
 * size, patch_size, temporal_patch_size, merge_size, image_mean, image_std (3 numbers or one),
 * rescale_factor, do_resize, do_rescale, do_normalize, resample, do_convert_rgb (must be true
 * or absent: decoded images are RGB already). Unknown keys are ignored. Duplicate keys, syntax
 * errors (with line:column), wrong types or out-of-range values give FM_ERR_JSON / FM_ERR_CONFIG
 * naming `origin` and the key; *p is untouched on failure. */
fm_status fm_qwen2vl_preproc_params_parse(const char *text, size_t len, const char *origin,
                                          fm_qwen2vl_preproc_params *p, fm_error *err);
/* Same, from a file. */
fm_status fm_qwen2vl_preproc_params_load_file(const char *path, fm_qwen2vl_preproc_params *p,
                                              fm_error *err);
/* Initialises *p to the defaults, then applies DIR/preprocessor_config.json when it exists
 * (a missing file is not an error; an unreadable or invalid one is, and leaves *p at the
 * defaults). *found (may be NULL) tells whether the file was applied. */
fm_status fm_qwen2vl_preproc_params_load(const char *dir, fm_qwen2vl_preproc_params *p, bool *found,
                                         fm_error *err);

/* Target size and grid of one still image: (*out_h, *out_w) the resize target, grid_thw =
 * (1, out_h / patch, out_w / patch). With do_resize false the size must already be a
 * multiple of patch_size * merge_size (FM_ERR_IMAGE otherwise). Output pointers may be NULL. */
fm_status fm_qwen2vl_image_geometry(uint32_t width, uint32_t height,
                                    const fm_qwen2vl_preproc_params *p, int64_t *out_h,
                                    int64_t *out_w, int64_t grid_thw[3], fm_error *err);

/* Preprocesses n still images (borrowed for the call) as the processor's
 * `images=[...]` call: per image resize -> rescale/normalise -> temporal repeat to
 * temporal_patch_size frames -> patches in spatial-merge order. Outputs (fresh owned tensors;
 * caller frees each with fm_tensor_free; untouched on failure):
 *   pixel_values F32 [sum of grid_t*gh*gw, 3 * temporal_patch_size * patch_size^2]
 *   grid_thw     I64 [n, 3] = (1, gh, gw) per image. */
fm_status fm_qwen2vl_preprocess(const fm_image *imgs, size_t n, const fm_qwen2vl_preproc_params *p,
                                fm_tensor *pixel_values, fm_tensor *grid_thw, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
