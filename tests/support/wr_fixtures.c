/* Writer/save test helpers: temporary trees, file reads, byte-filled tensors, directory snapshots.
 */
#include "wr_fixtures.h"

#include "file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *wrfx_mkdtemp(void) {
    return fm_test_tmpdir("wr");
}
char *wrfx_join(const char *a, const char *b) {
    return fm_test_join(a, b);
}
int wrfx_rmrf(const char *path) {
    return fm_test_rmtree(path);
}
uint8_t *wrfx_read(const char *path, size_t *len) {
    return (uint8_t *)fm_test_read_file(path, len);
}
int wrfx_write(const char *path, const void *data, size_t len) {
    return fm_test_write_file(path, data, len);
}

bool wrfx_exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

uint64_t wrfx_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int wrfx_tensor(fm_tensor *t, fm_dtype dt, int ndim, const int64_t *dims, const void *bytes,
                uint64_t seed) {
    fm_shape s;
    if (fm_shape_make(&s, ndim, dims) != FM_OK) return -1;
    if (fm_tensor_alloc(t, dt, &s, NULL) != FM_OK) return -1;
    uint8_t *p = t->data;
    if (bytes) {
        if (t->nbytes) memcpy(p, bytes, (size_t)t->nbytes);
    } else {
        for (uint64_t i = 0; i < t->nbytes; i += 8) {
            uint64_t r = wrfx_rand(&seed);
            size_t k = t->nbytes - i < 8 ? (size_t)(t->nbytes - i) : 8;
            memcpy(p + i, &r, k);
        }
    }
    return 0;
}

/* ---- snapshots --------------------------------------------------------------------------- */
static int snap_add(wrfx_snap *s, const char *rel, const char *full) {
    struct stat sb;
    if (lstat(full, &sb) != 0) return -1;
    wrfx_snap_entry *v = realloc(s->v, (s->n + 1) * sizeof *v);
    if (!v) return -1;
    s->v = v;
    wrfx_snap_entry *e = &s->v[s->n++];
    memset(e, 0, sizeof *e);
    e->path = strdup(rel);
    e->mode = sb.st_mode & 07777;
    if (S_ISREG(sb.st_mode)) {
        e->type = 'f';
        e->data = wrfx_read(full, &e->len);
    } else if (S_ISLNK(sb.st_mode)) {
        e->type = 'l';
        e->data = calloc(4097, 1);
        ssize_t r = e->data ? readlink(full, (char *)e->data, 4096) : -1;
        e->len = r > 0 ? (size_t)r : 0;
        e->mode = 0;
    } else if (S_ISDIR(sb.st_mode)) {
        e->type = 'd';
    } else {
        e->type = '?';
    }
    return 0;
}

static int snap_walk(wrfx_snap *s, const char *root, const char *rel) {
    char *dirpath = rel[0] ? wrfx_join(root, rel) : strdup(root);
    DIR *d = dirpath ? opendir(dirpath) : NULL;
    if (!d) {
        free(dirpath);
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *r2 = rel[0] ? wrfx_join(rel, e->d_name) : strdup(e->d_name);
        char *full = wrfx_join(dirpath, e->d_name);
        rc = snap_add(s, r2, full);
        if (rc == 0 && s->v[s->n - 1].type == 'd') rc = snap_walk(s, root, r2);
        free(r2);
        free(full);
    }
    closedir(d);
    free(dirpath);
    return rc;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const wrfx_snap_entry *)a)->path, ((const wrfx_snap_entry *)b)->path);
}

int wrfx_snapshot(const char *dir, wrfx_snap *out) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (lstat(dir, &sb) != 0) {
        out->missing = true;
        return 0;
    }
    if (snap_add(out, ".", dir) != 0 || snap_walk(out, dir, "") != 0) return -1;
    qsort(out->v, out->n, sizeof *out->v, cmp_entry);
    return 0;
}

void wrfx_snap_free(wrfx_snap *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].path);
        free(s->v[i].data);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

int wrfx_snap_equal(const wrfx_snap *a, const wrfx_snap *b, char *why, size_t why_len) {
    if (a->missing != b->missing) {
        snprintf(why, why_len, "directory %s", a->missing ? "appeared" : "disappeared");
        return 0;
    }
    for (size_t i = 0; i < a->n || i < b->n; i++) {
        if (i >= a->n || i >= b->n || strcmp(a->v[i].path, b->v[i].path)) {
            snprintf(why, why_len, "entry lists differ at #%zu ('%s' vs '%s')", i,
                     i < a->n ? a->v[i].path : "-", i < b->n ? b->v[i].path : "-");
            return 0;
        }
        const wrfx_snap_entry *x = &a->v[i], *y = &b->v[i];
        if (x->type != y->type || x->mode != y->mode || x->len != y->len ||
            (x->len && memcmp(x->data, y->data, x->len))) {
            snprintf(why, why_len, "'%s' changed (type %c/%c, mode %o/%o, %zu/%zu bytes)", x->path,
                     x->type, y->type, x->mode, y->mode, x->len, y->len);
            return 0;
        }
    }
    return 1;
}

int wrfx_count_prefix(const char *parent, const char *prefix) {
    DIR *d = opendir(parent);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}
