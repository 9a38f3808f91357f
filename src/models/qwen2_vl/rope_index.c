/* Qwen2-VL's get_rope_index for text and images (generation.md §4.2): text runs take consecutive
 * positions on all three axes; an image's tokens take (next + frame·step, next + row, next + col)
 * in raster order (step 1 for Qwen2-VL; 0 for Qwen2.5-VL, whose images have
 * second_per_grid_t = 0) and the text after it continues at max position + 1. */
#include <string.h>

#include "models/qwen2_vl/qwen2_vl.h"

/* Index of the image token starting the next image at or after `from` (a vision_start followed
 * by the image token), or n when there is none. */
static int64_t next_image(const fm_qwen2_text_config *t, const int64_t *ids, int64_t n,
                          int64_t from) {
    for (int64_t i = from; i + 1 < n; i++)
        if (ids[i] == t->vision_start_token_id && ids[i + 1] == t->image_token_id) return i + 1;
    return n;
}

static void text_run(int64_t *pos3, int64_t n, int64_t from, int64_t to, int64_t *next) {
    for (int64_t i = from; i < to; i++, (*next)++)
        pos3[i] = pos3[n + i] = pos3[2 * n + i] = *next;
}

fm_status fm_qwen2vl_rope_index_step(const fm_qwen2_text_config *t, int64_t merge,
                                     int64_t frame_step, const int64_t *ids, int64_t n,
                                     const int64_t *grid, int64_t n_images, int64_t *pos3,
                                     int64_t *next, fm_error *err) {
    int64_t st = 0, nxt = 0, img = 0;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] == t->video_token_id)
            return fm_error_set(err, FM_ERR_UNSUPPORTED,
                                "token %lld is a video token (%lld): videos are not supported",
                                (long long)i, (long long)t->video_token_id);
    for (int64_t ed = next_image(t, ids, n, 0); ed < n; ed = next_image(t, ids, n, st)) {
        if (img >= n_images)
            return fm_error_set(err, FM_ERR_INPUT,
                                "the prompt has more images than the %lld grids given",
                                (long long)n_images);
        int64_t gt = grid[3 * img], gh = grid[3 * img + 1] / merge, gw = grid[3 * img + 2] / merge;
        int64_t count = gt * gh * gw;
        if (gt < 1 || gh < 1 || gw < 1 || ed + count > n)
            return fm_error_set(
                err, FM_ERR_INPUT,
                "image %lld: grid (%lld, %lld, %lld) needs %lld image tokens at %lld, "
                "the prompt has %lld tokens",
                (long long)img, (long long)grid[3 * img], (long long)grid[3 * img + 1],
                (long long)grid[3 * img + 2], (long long)count, (long long)ed, (long long)n);
        for (int64_t k = ed; k < ed + count; k++)
            if (ids[k] != t->image_token_id)
                return fm_error_set(
                    err, FM_ERR_INPUT,
                    "image %lld: expected %lld image tokens from %lld, token %lld is %lld",
                    (long long)img, (long long)count, (long long)ed, (long long)k,
                    (long long)ids[k]);
        text_run(pos3, n, st, ed, &nxt);
        for (int64_t f = 0, k = ed; f < gt; f++)
            for (int64_t r = 0; r < gh; r++)
                for (int64_t c = 0; c < gw; c++, k++)
                    pos3[k] = nxt + f * frame_step, pos3[n + k] = nxt + r,
                    pos3[2 * n + k] = nxt + c;
        int64_t span = (gt - 1) * frame_step + 1, mx = span > gh ? span : gh;
        nxt += mx > gw ? mx : gw;
        st = ed + count;
        img++;
    }
    if (img != n_images)
        return fm_error_set(err, FM_ERR_INPUT, "%lld image grids given, the prompt has %lld images",
                            (long long)n_images, (long long)img);
    text_run(pos3, n, st, n, &nxt);
    *next = nxt;
    return FM_OK;
}

fm_status fm_qwen2vl_rope_index(const fm_qwen2_text_config *t, int64_t merge, const int64_t *ids,
                                int64_t n, const int64_t *grid, int64_t n_images, int64_t *pos3,
                                int64_t *next, fm_error *err) {
    return fm_qwen2vl_rope_index_step(t, merge, 1, ids, n, grid, n_images, pos3, next, err);
}
