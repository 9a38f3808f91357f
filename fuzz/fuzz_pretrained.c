/* Fuzz harness: whole-directory loading. The input is one option byte and a directory archive
 * (fuzz_common.h: config.json, model.safetensors or an index and shards, anything else); it is
 * written to a scratch directory and loaded with fm_from_pretrained twice (config.json's own
 * fusion_config, then an explicit one), each success saved with fm_save_pretrained into a
 * second directory. Oracle: an original-layout save loads again with the same options. */
#include <stdbool.h>
#include <string.h>

#include "fusemap/fusion.h"
#include "fusemap/models.h"
#include "fusion/testing.h"
#include "fuzz_common.h"

/* Option byte: bits 0-1 dtype (auto, F32, BF16, F16), bits 2-3 the explicit fusion_config,
 * bit 4 strict, bit 5 runtime-format save, bit 6 small shards on save, bit 7 meta_only. */
static const char *const prh_fusion[4] = {"{\"patch_embeddings\": true}", "{}",
                                          "{\"patch_embeddings\": false}",
                                          "{\"patch_embeddings\": {}}"};
static const fm_dtype prh_dtype[4] = {FM_DTYPE_INVALID, FM_DTYPE_F32, FM_DTYPE_BF16, FM_DTYPE_F16};

static void prh_options(uint8_t f, fm_load_options *lo, fm_save_pretrained_options *so) {
    fm_load_options_init(lo);
    lo->dtype = prh_dtype[f & 3];
    lo->strict = (f >> 4) & 1;
    lo->meta_only = (f >> 7) & 1;
    fm_save_pretrained_options_init(so);
    so->runtime_format = (f >> 5) & 1;
    if ((f >> 6) & 1) so->max_shard_size = 2048;
}

/* Reads what a loaded model exposes, so views into the mapped files are touched. */
static void prh_inspect(const fm_model *m) {
    fm_named_tensor *sd = NULL;
    size_t n = 0;
    uint32_t h = fmz_touch(fm_model_type(m), strlen(fm_model_type(m)));
    if (fm_model_fusion_config(m))
        h ^= fmz_touch(fm_model_fusion_config(m), strlen(fm_model_fusion_config(m)));
    if (fm_model_state_dict(m, &sd, &n, NULL) == FM_OK)
        for (size_t i = 0; i < n; i++)
            h ^= fmz_touch(sd[i].tensor.data, (size_t)sd[i].tensor.nbytes);
    fm_named_tensors_free(sd, n);
    fmz_sink(h);
}

/* Saves m into out; when that works in the original layout, out must load again. */
static void prh_save(const fm_model *m, const char *out, const fm_load_options *lo,
                     const fm_save_pretrained_options *so) {
    fm_error err;
    fmz_rmtree(out);
    fm_status st = fm_save_pretrained(m, out, so, &err);
    fmz_note("  save (runtime_format %d): %s %s", so->runtime_format, fm_status_name(st),
             st ? err.msg : "");
    if (st != FM_OK || so->runtime_format) return;
    fm_load_options again = *lo;
    again.fusion_config = NULL; /* the saved config.json records the fusion_config in effect */
    fm_model *m2 = NULL;
    fm_load_report rep;
    if (fm_from_pretrained(out, &again, &m2, &rep, &err) != FM_OK)
        fmz_fail("pretrained: a saved model does not load again", err.msg);
    fm_load_report_free(&rep);
    fm_model_free(m2);
}

/* Returns the status of the load. */
static fm_status prh_load(const char *in, const char *out, const fm_load_options *lo,
                          const fm_save_pretrained_options *so) {
    fm_model *m = NULL;
    fm_load_report rep;
    fm_error err;
    fm_status st = fm_from_pretrained(in, lo, &m, &rep, &err);
    fmz_note("load (fusion %s, dtype %s, strict %d, meta %d): %s %s",
             lo->fusion_config ? lo->fusion_config : "(stored)",
             lo->dtype == FM_DTYPE_INVALID ? "auto" : fm_dtype_name(lo->dtype), lo->strict,
             lo->meta_only, fm_status_name(st), st ? err.msg : "");
    if (st == FM_OK) {
        prh_inspect(m);
        if (!lo->meta_only) prh_save(m, out, lo, so);
    } else if (m) {
        fmz_fail("pretrained", "output set on failure");
    }
    fm_load_report_free(&rep);
    fm_model_free(m);
    return st;
}

int fm_fuzz_pretrained(const uint8_t *data, size_t size);
int fm_fuzz_pretrained(const uint8_t *data, size_t size) {
    fmz_reader r = {data, size};
    uint8_t flags = fmz_u8(&r);
    fmz_file files[FMZ_MAX_FILES];
    size_t n = fmz_archive_parse(r.p, r.n, files, FMZ_MAX_FILES);
    char in[4096], out[4096];
    if (fmz_path("pre_in", in, sizeof in) || fmz_path("pre_out", out, sizeof out)) return 0;
    if (fmz_dir_fresh(in) || fmz_write_files(in, files, n)) return 0;
    fm_load_options lo;
    fm_save_pretrained_options so;
    prh_options(flags, &lo, &so);
    fmz_verdict(prh_load(in, out, &lo, &so) == FM_OK); /* the verdict: the stored fusion_config */
    lo.fusion_config = prh_fusion[(flags >> 2) & 3];
    prh_load(in, out, &lo, &so);
    fmz_rmtree(in);
    fmz_rmtree(out);
    fm_fusion_cache_clear(); /* fuzzed configs would otherwise grow the discovery cache */
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_pretrained)
