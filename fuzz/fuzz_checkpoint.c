/* Fuzz harness: checkpoint directories (fm_checkpoint_open): the shard index JSON, the shards
 * it names and their agreement. Input: a directory archive (fuzz_common.h); files named
 * "up_<name>" land in the parent directory as <name>, so an index that escapes the directory
 * finds a real file there and the containment check is tested, not just "file missing". */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/io.h"
#include "fuzz_common.h"

static int ckh_write(const char *parent, const char *dir, const fmz_file *files, size_t n) {
    for (size_t i = 0; i < n; i++) {
        fmz_file f = files[i];
        const char *where = dir;
        if (!strncmp(f.name, "up_", 3) && f.name[3]) {
            memmove(f.name, f.name + 3, strlen(f.name + 3) + 1);
            where = parent;
        }
        if (fmz_write_files(where, &f, 1)) return -1;
    }
    return 0;
}

/* Every shard the checkpoint opened must lie inside the directory. */
static void ckh_check_contained(const fm_checkpoint *c, const char *dir) {
    char root[PATH_MAX], real[PATH_MAX];
    if (!realpath(dir, root)) return;
    size_t rl = strlen(root);
    for (size_t s = 0; s < fm_checkpoint_shard_count(c); s++) {
        const char *p = fm_st_path(fm_checkpoint_shard(c, s));
        if (!p || !realpath(p, real)) fmz_fail("checkpoint", "shard path cannot be resolved");
        if (strncmp(real, root, rl) || real[rl] != '/')
            fmz_fail("checkpoint: shard outside the directory", real);
    }
}

static void ckh_walk(const fm_checkpoint *c) {
    uint32_t h = 0;
    size_t ns = fm_checkpoint_shard_count(c);
    for (size_t i = 0; i < fm_checkpoint_count(c); i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        if (!e || e->shard_index >= ns)
            fmz_fail("checkpoint", "entry missing or shard_index out of range");
        if (e->index_in_shard >= fm_st_count(fm_checkpoint_shard(c, e->shard_index)))
            fmz_fail("checkpoint", "index_in_shard out of range");
        long j = fm_checkpoint_find(c, e->name);
        if (j < 0 || strcmp(fm_checkpoint_entry_at(c, (size_t)j)->name, e->name))
            fmz_fail("checkpoint", "fm_checkpoint_find misses an entry");
        fm_tensor t;
        if (fm_checkpoint_tensor(c, i, &t, NULL) == FM_OK) {
            if (t.nbytes != e->nbytes) fmz_fail("checkpoint", "view size differs from the entry");
            h ^= fmz_touch(t.data, (size_t)t.nbytes);
            fm_tensor_free(&t);
        }
        h ^= fmz_touch(e->shard, strlen(e->shard));
    }
    fmz_sink(h ^ (uint32_t)fm_checkpoint_is_sharded(c) ^ fmz_touch(fm_checkpoint_dir(c), 1));
}

int fm_fuzz_checkpoint(const uint8_t *data, size_t size);
int fm_fuzz_checkpoint(const uint8_t *data, size_t size) {
    fmz_file files[FMZ_MAX_FILES];
    size_t n = fmz_archive_parse(data, size, files, FMZ_MAX_FILES);
    char parent[4096], dir[4096];
    if (fmz_path("ck", parent, sizeof parent) || fmz_path("ck/model", dir, sizeof dir)) return 0;
    if (fmz_dir_fresh(parent) || fmz_dir_fresh(dir) || ckh_write(parent, dir, files, n)) return 0;
    fm_checkpoint *c = NULL;
    fm_error err;
    fm_status st = fm_checkpoint_open(dir, &c, &err);
    fmz_note("checkpoint (%zu files): %s %s", n, fm_status_name(st), st ? err.msg : "");
    fmz_verdict(st == FM_OK);
    if (st == FM_OK) {
        ckh_check_contained(c, dir);
        ckh_walk(c);
        fm_checkpoint_close(c);
    } else if (c) {
        fmz_fail("checkpoint", "output set on failure");
    }
    fmz_rmtree(parent);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_checkpoint)
