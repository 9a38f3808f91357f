/* Durability of saves, seen through the io observer (core/io_trace.h):
 * - the protocol: every file written for a save (shards, index, config.json, extras, copies)
 *   and every directory created for it is fsynced before the commit rename, and the parent
 *   directory after it; fm_st_write_file fsyncs its temporary file before renaming it over the
 *   target and the directory after;
 * - deterministic crash points: a child process ends (_exit, no cleanup) just before the N-th
 *   write, fsync or rename of a save, for every N until the save completes; the destination is
 *   then exactly the old or exactly the new checkpoint (both outcomes must occur), and a later
 *   save over the debris works. Done for the rename-exchange commit and for the fallback without
 *   RENAME_EXCHANGE, and for the safetensors writer. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/io_trace.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "io/fsutil.h"
#include "qwen_fixture.h"

#define CRASH_EXIT 77
#define MAX_EVENTS 4096

static char *tmp;

/* ---- recording ------------------------------------------------------------------------------- */
typedef struct io_ev {
    fm_fault_kind kind;
    char path[PATH_MAX], path2[PATH_MAX];
} io_ev;

static io_ev *evs;
static int n_ev;

static void record(void *ctx, fm_fault_kind kind, const char *path, const char *path2) {
    (void)ctx;
    if (n_ev == MAX_EVENTS) return;
    evs[n_ev].kind = kind;
    snprintf(evs[n_ev].path, PATH_MAX, "%s", path ? path : "");
    snprintf(evs[n_ev].path2, PATH_MAX, "%s", path2 ? path2 : "");
    n_ev++;
}

static const char *kind_name(fm_fault_kind k) {
    return k == FM_FAULT_OPEN    ? "open"
           : k == FM_FAULT_WRITE ? "write"
           : k == FM_FAULT_FSYNC ? "fsync"
                                 : "rename";
}

static void dump_events(void) {
    for (int i = 0; i < n_ev; i++)
        fprintf(stderr, "    #%d %s %s%s%s\n", i, kind_name(evs[i].kind), evs[i].path,
                evs[i].path2[0] ? " -> " : "", evs[i].path2);
}

static int under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && path[n] == '/';
}

static int find_ev(fm_fault_kind kind, const char *path, int from, int to) {
    for (int i = from; i < to; i++)
        if (evs[i].kind == kind && !strcmp(evs[i].path, path)) return i;
    return -1;
}

static int last_ev(fm_fault_kind kind, const char *path, int to) {
    int last = -1;
    for (int i = 0; i < to; i++)
        if (evs[i].kind == kind && !strcmp(evs[i].path, path)) last = i;
    return last;
}

/* The parent directory of an absolute path (static buffer). */
static const char *parent_of(const char *path) {
    static char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    char *s = strrchr(p, '/');
    if (s == p)
        s[1] = '\0';
    else if (s)
        *s = '\0';
    return p;
}

/* ---- the protocol of fm_save_pretrained --------------------------------------------------------
 */

/* Directories below `root` (relative paths, "" excluded), into out[]; returns the count. */
typedef char rel_path[PATH_MAX];
static int subdirs(const char *root, const char *rel, rel_path *out, int n, int max) {
    char path[2 * PATH_MAX + 2];
    snprintf(path, sizeof path, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char full[2 * PATH_MAX + 2];
        if (snprintf(full, sizeof full, "%s/%s", path, e->d_name) >= (int)sizeof full) continue;
        struct stat sb;
        if (lstat(full, &sb) == 0 && S_ISDIR(sb.st_mode) && n < max &&
            strlen(rel) + strlen(e->d_name) + 2 < sizeof out[n]) {
            strcpy(out[n], rel);
            if (rel[0]) strcat(out[n], "/");
            strcat(out[n], e->d_name);
            n = subdirs(root, out[n], out, n + 1, max);
        }
    }
    if (d) closedir(d);
    return n;
}

/* Checks the recorded events of one save into `target` (a realpath): one commit rename onto
 * target; every file written below the staging directory fsynced after its last write and before
 * the commit; the staging directory and each of its subdirectories fsynced after the files and
 * before the commit; nothing written below target itself; the parent fsynced after the commit. */
static void check_save_protocol(const char *target, const char *what) {
    int commit = -1;
    for (int i = 0; i < n_ev; i++)
        if (evs[i].kind == FM_FAULT_RENAME && !strcmp(evs[i].path2, target)) {
            CHECK_MSG(commit < 0, "%s: one commit rename onto the target (#%d and #%d)", what,
                      commit, i);
            commit = i;
        }
    CHECK_MSG(commit >= 0, "%s: a rename onto %s commits the save", what, target);
    if (commit < 0) {
        dump_events();
        return;
    }
    const char *staging = evs[commit].path;
    int files = 0, last_file_sync = -1, bad = 0;
    for (int i = 0; i < n_ev; i++) {
        if (evs[i].kind != FM_FAULT_WRITE) continue;
        CHECK_MSG(!under(evs[i].path, target), "%s: event #%d writes %s inside the live target",
                  what, i, evs[i].path);
        if (!under(evs[i].path, staging) || last_ev(FM_FAULT_WRITE, evs[i].path, n_ev) != i)
            continue;
        files++;
        CHECK_MSG(i < commit, "%s: %s written after the commit (#%d, commit #%d)", what,
                  evs[i].path, i, commit);
        int sync = find_ev(FM_FAULT_FSYNC, evs[i].path, i + 1, commit);
        if (sync < 0) bad++;
        CHECK_MSG(sync >= 0, "%s: %s (last written at #%d) is fsynced before the commit (#%d)",
                  what, evs[i].path, i, commit);
        if (sync > last_file_sync) last_file_sync = sync;
    }
    CHECK_MSG(files >= 2, "%s: the save wrote %d files into the staging directory", what, files);
    int dsync = last_ev(FM_FAULT_FSYNC, staging, commit);
    CHECK_MSG(dsync > last_file_sync, "%s: staging directory fsynced (#%d) after its files (#%d)",
              what, dsync, last_file_sync);
    static rel_path dirs[64];
    int nd = subdirs(target, "", dirs, 0, 64);
    for (int k = 0; k < nd; k++) {
        char p[2 * PATH_MAX + 2];
        if (snprintf(p, sizeof p, "%s/%s", staging, dirs[k]) >= (int)sizeof p) continue;
        CHECK_MSG(last_ev(FM_FAULT_FSYNC, p, commit) >= 0,
                  "%s: subdirectory %s fsynced before the commit", what, p);
    }
    int psync = find_ev(FM_FAULT_FSYNC, parent_of(target), commit + 1, n_ev);
    CHECK_MSG(psync > commit, "%s: parent %s fsynced after the commit (#%d)", what,
              parent_of(target), commit);
    if (fm_t_case_failed || bad) dump_events();
}

/* ---- fixtures
 * ------------------------------------------------------------------------------------ */
static fm_model *load(const char *dir) {
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(dir, NULL, &m, NULL, &err), &err);
    return m;
}

/* Two models: `a` sharded (several shards and an index), `b` a single file. */
static void make_models(fm_model **a, fm_model **b) {
    char da[PATH_MAX], db[PATH_MAX];
    fm_qfix q;
    fm_error err;
    snprintf(da, sizeof da, "%s/src-a", tmp);
    snprintf(db, sizeof db, "%s/src-b", tmp);
    fm_qfix_init(&q);
    q.max_shard = 120000, q.seed = 1;
    CHECK_OK(fm_qfix_write(da, &q, &err), &err);
    fm_qfix_init(&q);
    q.seed = 2;
    CHECK_OK(fm_qfix_write(db, &q, &err), &err);
    *a = load(da);
    *b = load(db);
}

static char *make_dir(const char *name) {
    char *p = fm_test_join(tmp, name);
    mkdir(p, 0755);
    return p;
}

/* dir := a save of m, plus the files a user keeps beside the weights (carried over by saves):
 * a README and notes/ (a subdirectory). */
static void put_checkpoint(fm_model *m, const char *dir) {
    fm_error err;
    fm_test_rmtree(dir);
    CHECK_OK(fm_save_pretrained(m, dir, NULL, &err), &err);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/README.md", dir);
    CHECK(fm_test_write_file(p, "# tiny\n", 7) == 0);
    snprintf(p, sizeof p, "%s/notes", dir);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/notes/a.txt", dir);
    CHECK(fm_test_write_file(p, "kept\n", 5) == 0);
}

static int exists(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0;
}

/* Same files, same bytes, and the same notes/ subdirectory (or none in both). */
static int same_tree(const char *a, const char *b) {
    char na[PATH_MAX], nb[PATH_MAX];
    snprintf(na, sizeof na, "%s/notes", a);
    snprintf(nb, sizeof nb, "%s/notes", b);
    static const char *const skip[] = {"notes", NULL};
    if (!fm_test_same_dir_quiet(a, b, skip) || exists(na) != exists(nb)) return 0;
    return !exists(na) || fm_test_same_dir_quiet(na, nb, NULL);
}

/* Removes the hidden siblings (".NAME.fusemap-*") a crashed save leaves in `parent`. */
static int remove_debris(const char *parent) {
    DIR *d = opendir(parent);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] != '.' || !strstr(e->d_name, ".fusemap-")) continue;
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", parent, e->d_name);
        fm_test_rmtree(p);
        n++;
    }
    if (d) closedir(d);
    return n;
}

/* ---- protocol tests
 * ------------------------------------------------------------------------------- */
static void test_save_protocol(void) {
    fm_model *a = NULL, *b = NULL;
    make_models(&a, &b);
    REQUIRE(a && b);
    char *parent = make_dir("proto"), dst[PATH_MAX], real[PATH_MAX];
    snprintf(dst, sizeof dst, "%s/ck", parent);
    fm_error err;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 120000;
    /* a fresh directory */
    n_ev = 0;
    fm_io_observe(record, NULL);
    fm_status st = fm_save_pretrained(a, dst, &so, &err);
    fm_io_observe(NULL, NULL);
    REQUIRE_OK(st, &err);
    REQUIRE(realpath(dst, real));
    check_save_protocol(real, "fresh sharded save");
    /* over an existing checkpoint with carried files and a subdirectory, by exchange ... */
    put_checkpoint(b, dst);
    n_ev = 0;
    fm_io_observe(record, NULL);
    st = fm_save_pretrained(a, dst, &so, &err);
    fm_io_observe(NULL, NULL);
    CHECK_OK(st, &err);
    check_save_protocol(real, "sharded save over a checkpoint (exchange)");
    /* ... and by the fallback without RENAME_EXCHANGE */
    put_checkpoint(a, dst);
    fm_fs_set_exchange_disabled(true);
    n_ev = 0;
    fm_io_observe(record, NULL);
    st = fm_save_pretrained(b, dst, NULL, &err);
    fm_io_observe(NULL, NULL);
    fm_fs_set_exchange_disabled(false);
    CHECK_OK(st, &err);
    check_save_protocol(real, "single-file save over a checkpoint (fallback)");
    fm_model_free(a), fm_model_free(b);
    free(parent);
}

/* fm_st_write_file: temporary file beside the target, written, fsynced, renamed over the target,
 * then the directory fsynced. */
static void test_writer_protocol(void) {
    char *dir = make_dir("writer"), real[PATH_MAX], path[PATH_MAX + 32];
    REQUIRE(realpath(dir, real));
    snprintf(path, sizeof path, "%s/out.safetensors", real);
    float v[6] = {1, 2, 3, 4, 5, 6};
    fm_tensor t = {FM_DTYPE_F32, {2, {2, 3}}, v, sizeof v, NULL};
    fm_st_item it = {"x", &t};
    fm_error err;
    for (int round = 0; round < 2; round++) { /* a new file, then a replacement */
        n_ev = 0;
        fm_io_observe(record, NULL);
        fm_status st = fm_st_write_file(path, &it, 1, NULL, &err);
        fm_io_observe(NULL, NULL);
        REQUIRE_OK(st, &err);
        int r = -1;
        for (int i = 0; i < n_ev; i++)
            if (evs[i].kind == FM_FAULT_RENAME && !strcmp(evs[i].path2, path)) r = i;
        REQUIRE_MSG(r >= 0, "round %d: a rename onto %s", round, path);
        const char *tmpf = evs[r].path;
        CHECK_MSG(strcmp(parent_of(tmpf), real) == 0, "temporary file %s beside the target", tmpf);
        int w = last_ev(FM_FAULT_WRITE, tmpf, r);
        CHECK_MSG(w >= 0, "round %d: the data is written to the temporary file", round);
        int s = find_ev(FM_FAULT_FSYNC, tmpf, w + 1, r);
        CHECK_MSG(s > w,
                  "round %d: temporary file fsynced after its last write (#%d), before the "
                  "rename (#%d)",
                  round, w, r);
        CHECK_MSG(find_ev(FM_FAULT_FSYNC, real, r + 1, n_ev) > r,
                  "round %d: directory fsynced after the rename (#%d)", round, r);
        for (int i = 0; i < n_ev; i++)
            CHECK_MSG(!(evs[i].kind == FM_FAULT_WRITE && !strcmp(evs[i].path, path)),
                      "round %d: event #%d writes the target in place", round, i);
        if (fm_t_case_failed) dump_events();
        v[0] += 1;
    }
    free(dir);
}

/* ---- crash sweeps
 * ----------------------------------------------------------------------------------- */
typedef struct crash_ctx {
    long at, seen;
} crash_ctx;

static void crash_at(void *ctx, fm_fault_kind kind, const char *path, const char *path2) {
    crash_ctx *c = ctx;
    (void)path, (void)path2;
    if (kind == FM_FAULT_WRITE || kind == FM_FAULT_FSYNC || kind == FM_FAULT_RENAME)
        if (++c->seen == c->at) _exit(CRASH_EXIT);
}

/* Runs `save` in a child that ends before its n-th write/fsync/rename; returns 1 when the child
 * crashed there, 0 when it completed first, -1 on anything else. */
typedef fm_status (*save_fn)(void *arg, fm_error *err);
static int run_child(save_fn save, void *arg, long n) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        crash_ctx c = {n, 0};
        fm_error err;
        fm_io_observe(crash_at, &c);
        fm_status st = save(arg, &err);
        if (st != FM_OK) fprintf(stderr, "child: save failed: %s\n", err.msg);
        _exit(st == FM_OK ? 0 : 3);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status) == CRASH_EXIT ? 1 : WEXITSTATUS(status) == 0 ? 0 : -1;
}

typedef struct pre_save {
    fm_model *m;
    const char *dst;
} pre_save;

static fm_status do_save(void *arg, fm_error *err) {
    pre_save *p = arg;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 120000;
    return fm_save_pretrained(p->m, p->dst, &so, err);
}

/* Every crash point of saving `to` over a destination holding `from` (or nothing when from is
 * NULL). old_ref / new_ref: the expected trees before and after. `fallback`: without
 * RENAME_EXCHANGE, where the target is briefly absent between the two renames (the old tree is
 * then complete in a ".NAME.fusemap-old-*" sibling: checked too). */
static void sweep(fm_model *from, fm_model *to, const char *old_ref, const char *new_ref,
                  bool fallback, const char *what) {
    char *parent = make_dir(what), dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%s/ck", parent);
    pre_save ps = {to, dst};
    int n_old = 0, n_new = 0, n_absent = 0, done = 0;
    long n;
    fm_fs_set_exchange_disabled(fallback);
    for (n = 1; n < 2000 && !done; n++) {
        fm_test_rmtree(dst);
        remove_debris(parent);
        if (from) put_checkpoint(from, dst);
        int r = run_child(do_save, &ps, n);
        REQUIRE_MSG(r >= 0, "%s: the child saving with a crash at event %ld ended abnormally", what,
                    n);
        if (r == 0) done = 1;
        int is_old = from && exists(dst) && same_tree(dst, old_ref);
        int is_new = exists(dst) && same_tree(dst, new_ref);
        int absent = !from ? !exists(dst) : 0;
        if (fallback && from && !exists(dst)) { /* between the fallback's two renames */
            DIR *d = opendir(parent);
            for (struct dirent *e; d && (e = readdir(d));) {
                char p[PATH_MAX + 300];
                snprintf(p, sizeof p, "%s/%s", parent, e->d_name);
                if (strstr(e->d_name, ".fusemap-old-") && same_tree(p, old_ref)) absent = 1;
            }
            if (d) closedir(d);
        }
        CHECK_MSG(is_old || is_new || absent,
                  "%s: crash before event %ld leaves neither the old nor the new checkpoint", what,
                  n);
        CHECK_MSG(!done || is_new, "%s: the completed save left the new checkpoint", what);
        n_old += is_old, n_new += is_new, n_absent += absent && !is_old && !is_new;
        if (getenv("FM_TEST_VERBOSE"))
            fprintf(stderr, "  %s: crash at %ld: old %d new %d absent %d done %d\n", what, n,
                    is_old, is_new, absent, done);
        if (!done) { /* a save after the crash completes over whatever was left */
            fm_error err;
            CHECK_OK(do_save(&ps, &err), &err);
            /* (with the target absent, the files kept beside the weights are in the backup) */
            CHECK_MSG(!exists(dst) || absent || same_tree(dst, new_ref),
                      "%s: saving again after the crash at %ld", what, n);
        }
    }
    fm_fs_set_exchange_disabled(false);
    CHECK_MSG(done, "%s: the save completed within the sweep", what);
    CHECK_MSG(n_new > 0 && (n_old > 0 || !from), "%s: both outcomes occurred (old %d, new %d)",
              what, n_old, n_new);
    CHECK_MSG(!from || n_old > 3, "%s: several crash points before the commit (%d)", what, n_old);
    fprintf(stderr, "  %s: %ld crash points: %d old, %d new, %d %s\n", what, n - 2, n_old,
            n_new - 1, n_absent, from ? "between the fallback's renames" : "absent");
    fm_test_rmtree(parent);
    free(parent);
}

static void test_crash_points(void) {
    fm_model *a = NULL, *b = NULL;
    make_models(&a, &b);
    REQUIRE(a && b);
    char *ra = fm_test_join(tmp, "ref-a"), *rb = fm_test_join(tmp, "ref-b");
    char *rab = fm_test_join(tmp, "ref-a-then-b"), *rba = fm_test_join(tmp, "ref-b-then-a");
    char *fresh = fm_test_join(tmp, "ref-fresh-a");
    fm_error err;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 120000;
    put_checkpoint(a, ra);
    put_checkpoint(b, rb);
    put_checkpoint(a, rab);
    CHECK_OK(fm_save_pretrained(b, rab, &so, &err), &err);
    put_checkpoint(b, rba);
    CHECK_OK(fm_save_pretrained(a, rba, &so, &err), &err);
    CHECK_OK(fm_save_pretrained(a, fresh, &so, &err), &err);
    sweep(NULL, a, NULL, fresh, false, "fresh-sharded");
    sweep(a, b, ra, rab, false, "sharded-to-single");
    sweep(b, a, rb, rba, false, "single-to-sharded");
    sweep(b, a, rb, rba, true, "single-to-sharded-fallback");
    fm_model_free(a), fm_model_free(b);
    free(ra), free(rb), free(rab), free(rba), free(fresh);
}

/* The writer: crash anywhere in fm_st_write_file leaves the old file or the new one. */
typedef struct wr_arg {
    const char *path;
    fm_st_item *it;
} wr_arg;
static fm_status do_write(void *arg, fm_error *err) {
    wr_arg *w = arg;
    return fm_st_write_file(w->path, w->it, 1, NULL, err);
}

static void test_writer_crash_points(void) {
    char *dir = make_dir("wcrash"), path[PATH_MAX], oldp[PATH_MAX], newp[PATH_MAX];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    snprintf(oldp, sizeof oldp, "%s/old.ref", dir);
    snprintf(newp, sizeof newp, "%s/new.ref", dir);
    float v[512];
    for (int i = 0; i < 512; i++)
        v[i] = (float)i;
    fm_tensor t = {FM_DTYPE_F32, {1, {512}}, v, sizeof v, NULL};
    fm_st_item it = {"x", &t};
    fm_error err;
    CHECK_OK(fm_st_write_file(oldp, &it, 1, NULL, &err), &err);
    v[7] = -1;
    CHECK_OK(fm_st_write_file(newp, &it, 1, NULL, &err), &err);
    wr_arg w = {path, &it};
    int n_old = 0, n_new = 0, done = 0;
    for (long n = 1; n < 100 && !done; n++) {
        v[7] = 7;
        CHECK_OK(fm_st_write_file(path, &it, 1, NULL, &err), &err); /* the old file */
        v[7] = -1;
        int r = run_child(do_write, &w, n);
        REQUIRE(r >= 0);
        done = r == 0;
        int is_old = fm_test_same_file(path, oldp), is_new = fm_test_same_file(path, newp);
        CHECK_MSG(is_old || is_new, "writer crash before event %ld: neither old nor new", n);
        n_old += is_old, n_new += is_new;
        remove_debris(dir);
    }
    CHECK(done && n_old > 0 && n_new > 0);
    free(dir);
}

int main(void) {
    evs = calloc(MAX_EVENTS, sizeof *evs);
    /* The order of operations is what is checked (through the observer), and a simulated crash
     * keeps the page cache: a memory file system gives the same results without thousands of
     * slow disk fsyncs. */
    struct stat sb;
    if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
        setenv("FM_TEST_TMP", "/dev/shm", 1);
    tmp = fm_test_tmpdir("durability");
    if (!evs || !tmp) return 1;
    RUN(test_save_protocol);
    RUN(test_writer_protocol);
    RUN(test_crash_points);
    RUN(test_writer_crash_points);
    fm_test_rmtree(tmp);
    free(tmp);
    free(evs);
    TEST_END();
}
