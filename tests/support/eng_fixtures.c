/* Loading-engine test helpers (see eng_fixtures.h). */
#include "eng_fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int eng_unmaps;

uint64_t eng_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

int64_t eng_rand_range(uint64_t *s, int64_t lo, int64_t hi) {
    return lo + (int64_t)(eng_rand(s) % (uint64_t)(hi - lo + 1));
}

void eng_fill(fm_tensor *t, uint64_t *s) {
    uint8_t *p = t->data;
    for (uint64_t i = 0; i < t->nbytes; i++)
        p[i] = (uint8_t)(eng_rand(s) >> 32);
}

fm_shape eng_shape(int ndim, const int64_t *dims) {
    fm_shape s;
    if (fm_shape_make(&s, ndim, dims) != FM_OK) {
        fprintf(stderr, "eng_shape: bad shape\n");
        exit(2);
    }
    return s;
}

fm_tensor eng_tensor(fm_dtype dt, int ndim, const int64_t *dims, uint64_t *state) {
    fm_tensor t;
    fm_shape s = eng_shape(ndim, dims);
    if (fm_tensor_alloc(&t, dt, &s, NULL) != FM_OK) {
        fprintf(stderr, "eng_tensor: allocation failed\n");
        exit(2);
    }
    eng_fill(&t, state);
    return t;
}

bool eng_same_bytes(const fm_tensor *a, const fm_tensor *b) {
    return a->dtype == b->dtype && fm_shape_equal(&a->shape, &b->shape) && a->nbytes == b->nbytes &&
           (a->nbytes == 0 || memcmp(a->data, b->data, (size_t)a->nbytes) == 0);
}

static void unmap_cb(void *base, uint64_t len, void *ctx) {
    (void)len;
    (void)ctx;
    free(base);
    eng_unmaps++;
}

fm_storage *eng_mapping(uint64_t bytes, uint64_t *state) {
    uint8_t *buf = malloc(bytes ? bytes : 1);
    fm_storage *s = NULL;
    if (!buf || fm_storage_wrap_mapping(buf, bytes, unmap_cb, NULL, &s, NULL) != FM_OK) {
        fprintf(stderr, "eng_mapping: allocation failed\n");
        exit(2);
    }
    for (uint64_t i = 0; i < bytes; i++)
        buf[i] = (uint8_t)(eng_rand(state) >> 32);
    return s;
}

void eng_ckpt_add(eng_ckpt *c, const char *name, fm_tensor *t) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->names = realloc(c->names, c->cap * sizeof *c->names);
        c->t = realloc(c->t, c->cap * sizeof *c->t);
        if (!c->names || !c->t) exit(2);
    }
    c->names[c->n] = strdup(name);
    c->t[c->n++] = *t;
    memset(t, 0, sizeof *t);
}

void eng_ckpt_add_view(eng_ckpt *c, const char *name, fm_storage *s, uint64_t offset, fm_dtype dt,
                       int ndim, const int64_t *dims) {
    fm_tensor t;
    fm_shape sh = eng_shape(ndim, dims);
    if (fm_tensor_view(&t, s, (uint8_t *)fm_storage_data(s) + offset, dt, &sh, NULL) != FM_OK) {
        fprintf(stderr, "eng_ckpt_add_view: view outside the mapping\n");
        exit(2);
    }
    eng_ckpt_add(c, name, &t);
}

const fm_tensor *eng_ckpt_find(const eng_ckpt *c, const char *name) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0) return &c->t[i];
    return NULL;
}

static const char *src_name(void *ctx, size_t i) {
    return ((eng_ckpt *)ctx)->names[i];
}
static void src_info(void *ctx, size_t i, fm_dtype *dt, fm_shape *s) {
    *dt = ((eng_ckpt *)ctx)->t[i].dtype;
    *s = ((eng_ckpt *)ctx)->t[i].shape;
}
static fm_status src_get(void *ctx, size_t i, fm_tensor *out, fm_error *err) {
    (void)err;
    fm_tensor_ref(out, &((eng_ckpt *)ctx)->t[i]);
    return FM_OK;
}

fm_tensor_source eng_ckpt_source(eng_ckpt *c) {
    fm_tensor_source s = {c->n, src_name, src_info, src_get, c};
    return s;
}

void eng_ckpt_free(eng_ckpt *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->names[i]);
        fm_tensor_free(&c->t[i]);
    }
    free(c->names);
    free(c->t);
    memset(c, 0, sizeof *c);
}
