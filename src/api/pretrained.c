/* fm_from_pretrained / fm_save_pretrained: config.json -> builder -> fusion plan -> patched
 * build on meta -> weight-loading engine -> model; and the reverse path to an atomic save. */
#include <stdio.h>
#include <string.h>

#include "api/model_internal.h"
#include "fusemap/fusion.h"
#include "fusemap/models.h"

void fm_load_options_init(fm_load_options *o) {
    memset(o, 0, sizeof *o);
    o->dtype = FM_DTYPE_INVALID;
}

void fm_save_pretrained_options_init(fm_save_pretrained_options *o) {
    memset(o, 0, sizeof *o);
    o->max_shard_size = 0; /* as loaded: a sharded source keeps its layout, else 50 GB */
}

void fm_model_free(fm_model *m) {
    if (!m) return;
    fm_run_ctx_free(m->rc);
    fm_module_free(m->root);
    fm_param_refs_free(m->params, m->n_params);
    fm_transform_list_free(&m->fired);
    if (m->builder && m->model_cfg) m->builder->free_config(m->model_cfg);
    fm_config_free(m->config);
    fm_free(m->fusion_json);
    fm_free(m->dir);
    fm_free(m->model_type);
    fm_free(m->architecture);
    for (size_t i = 0; i < m->n_src; i++)
        fm_free(m->src_names[i]);
    fm_free(m->src_names);
    fm_free(m->src_shard);
    fm_free(m);
}

fm_module *fm_model_root(const fm_model *m) {
    return m->root;
}
const char *fm_model_type(const fm_model *m) {
    return m->model_type;
}
const char *fm_model_architecture(const fm_model *m) {
    return m->architecture;
}
const fm_config *fm_model_config(const fm_model *m) {
    return m->config;
}
const char *fm_model_fusion_config(const fm_model *m) {
    return m->fusion_json;
}

static fm_param *param_of(const fm_model *m, size_t i) {
    return fm_module_param(m->params[i].module, m->params[i].index);
}

const fm_tensor *fm_model_param(const fm_model *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &param_of(m, i)->tensor;
    return NULL;
}

static const char *tied_target(const fm_model *m, const char *name) {
    return m->builder->tied_to ? m->builder->tied_to(m->model_cfg, name) : NULL;
}

/* ---- config -------------------------------------------------------------------------------- */
static fm_status read_identity(fm_model *m, const char *origin, fm_error *err) {
    const char *mt = NULL;
    if (fm_config_type(m->config, "model_type") != FM_JSON_STRING)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key 'model_type': missing or not a string",
                            origin);
    fm_config_get_string(m->config, "model_type", &mt, NULL);
    m->builder = fm_model_builder_find(mt, NULL);
    if (!m->builder) {
        char types[256];
        fm_model_types_text(types, sizeof types);
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: unsupported model_type '%s' (supported: %s)", origin, mt, types);
    }
    m->model_type = fm_strdup(m->builder->model_type);
    m->architecture = fm_strdup(m->builder->architecture);
    if (!m->model_type || !m->architecture) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    return m->builder->parse_config(m->config, origin, &m->model_cfg, err);
}

/* The fusion_config in effect: the explicit option wins (even "{}"), else config.json's. */
static fm_status resolve_fusion_config(fm_model *m, const fm_load_options *o, const char *origin,
                                       fm_config **out, fm_error *err) {
    *out = NULL;
    fm_status st = FM_OK;
    if (o->fusion_config) {
        st = fm_config_parse(o->fusion_config, strlen(o->fusion_config), "--fusion-config", out,
                             err);
    } else {
        fm_json_type t = fm_config_type(m->config, "fusion_config");
        if (t == FM_JSON_ABSENT || t == FM_JSON_NULL) return FM_OK;
        st = fm_config_get_subtree(m->config, "fusion_config", out, err);
    }
    if (st != FM_OK) return st;
    if (fm_config_root_type(*out) != FM_JSON_OBJECT) {
        fm_config_free(*out);
        *out = NULL;
        return fm_error_set(err, FM_ERR_FUSION, "%s: fusion_config must be a JSON object",
                            o->fusion_config ? "--fusion-config" : origin);
    }
    st = fm_fusion_config_validate(*out, o->fusion_config ? "--fusion-config" : origin, err);
    if (st == FM_OK) st = fm_config_dump_compact(*out, &m->fusion_json, err);
    if (st != FM_OK) {
        fm_config_free(*out);
        *out = NULL;
    }
    return st;
}

static fm_status mapping_for(const fm_model *m, fm_transform_list *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    fm_status st = fm_conversion_mapping_get(m->architecture, out, NULL);
    if (st == FM_ERR_NOT_FOUND) st = fm_conversion_mapping_get(m->model_type, out, NULL);
    if (st == FM_ERR_NOT_FOUND) {
        memset(out, 0, sizeof *out);
        return FM_OK;
    }
    if (st != FM_OK)
        return fm_error_set(err, st, "cannot read the conversion mapping of %s", m->architecture);
    return FM_OK;
}

/* ---- report helpers ------------------------------------------------------------------------ */
static fm_status report_push(char ***v, size_t *n, const char *s, fm_error *err) {
    char **nv = fm_realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return fm_error_set(err, FM_ERR_NOMEM, "out of memory building the load report");
    *v = nv;
    nv[*n] = fm_strdup(s);
    if (!nv[*n]) return fm_error_set(err, FM_ERR_NOMEM, "out of memory building the load report");
    (*n)++;
    return FM_OK;
}

static void report_remove(char **v, size_t *n, const char *s) {
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(v[i], s)) continue;
        fm_free(v[i]);
        memmove(&v[i], &v[i + 1], (*n - i - 1) * sizeof *v);
        (*n)--;
        return;
    }
}

static fm_status record_fusions(const fm_fusion_plan *plan, fm_load_report *r, fm_error *err) {
    for (size_t i = 0; i < plan->n; i++) {
        char line[1024];
        const fm_module_class *orig = plan->classes[i]->data;
        snprintf(line, sizeof line, "%s: %s -> %s (%s)", plan->paths[i], orig ? orig->name : "?",
                 plan->classes[i]->name, plan->families[i]);
        fm_status st = report_push(&r->fused, &r->n_fused, line, err);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

/* ---- build ------------------------------------------------------------------------------------
 */
static fm_status build_tree(fm_model *m, const fm_fusion_plan *plan, fm_dtype dt, fm_error *err) {
    fm_patch_map *patches = NULL;
    fm_build_ctx *ctx = NULL;
    fm_status st = fm_patch_snapshot(&patches, err);
    fm_build_options bo = {patches, dt, m->model_cfg};
    if (st == FM_OK) st = fm_build_ctx_new(&bo, &ctx, err);
    for (size_t i = 0; st == FM_OK && plan && i < plan->n; i++)
        st = fm_build_ctx_override(ctx, plan->paths[i], plan->classes[i], err);
    if (st == FM_OK) st = m->builder->build(ctx, m->model_cfg, &m->root, err);
    if (st == FM_OK) st = fm_module_named_params(m->root, &m->params, &m->n_params, err);
    fm_build_ctx_free(ctx);
    fm_patch_map_free(patches);
    return st;
}

/* ---- checkpoint as an engine source -----------------------------------------------------------
 */
static const char *src_name(void *ctx, size_t i) {
    return fm_checkpoint_entry_at(ctx, i)->name;
}
static void src_info(void *ctx, size_t i, fm_dtype *dt, fm_shape *shape) {
    const fm_ckpt_entry *e = fm_checkpoint_entry_at(ctx, i);
    *dt = e->dtype;
    *shape = e->shape;
}
static fm_status src_get(void *ctx, size_t i, fm_tensor *out, fm_error *err) {
    return fm_checkpoint_tensor(ctx, i, out, err);
}

/* Remembers a sharded source's layout (key -> shard) and its index's total_parameters. */
static fm_status record_layout(fm_model *m, const fm_checkpoint *ck, fm_error *err) {
    if (!fm_checkpoint_is_sharded(ck)) return FM_OK;
    size_t n = fm_checkpoint_count(ck);
    m->src_names = fm_calloc(n ? n : 1, sizeof *m->src_names);
    m->src_shard = fm_calloc(n ? n : 1, sizeof *m->src_shard);
    if (!m->src_names || !m->src_shard)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory loading %s", m->dir);
    for (size_t i = 0; i < n; i++, m->n_src++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(ck, i);
        m->src_shard[i] = e->shard_index;
        if (!(m->src_names[i] = fm_strdup(e->name)))
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    }
    m->src_n_shards = (uint32_t)fm_checkpoint_shard_count(ck);
    char path[4200];
    fm_config *idx = NULL;
    int64_t tp = 0;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", m->dir);
    if (fm_config_load(path, &idx, NULL) == FM_OK &&
        fm_config_get_int(idx, "metadata.total_parameters", &tp, NULL) == FM_OK)
        m->src_has_total_params = true, m->src_total_params = (uint64_t)tp;
    fm_config_free(idx);
    return FM_OK;
}

static fm_status load_weights(fm_model *m, const fm_load_options *o,
                              const fm_transform_list *transforms, fm_load_report *rep,
                              fm_error *err) {
    fm_checkpoint *ck = NULL;
    fm_status st = fm_checkpoint_open(m->dir, &ck, err);
    if (st == FM_OK) st = record_layout(m, ck, err);
    if (st != FM_OK) return fm_checkpoint_close(ck), st;
    fm_param_spec *specs = fm_calloc(m->n_params ? m->n_params : 1, sizeof *specs);
    size_t *which = fm_calloc(m->n_params ? m->n_params : 1, sizeof *which);
    fm_tensor *loaded = fm_calloc(m->n_params ? m->n_params : 1, sizeof *loaded);
    size_t ns = 0;
    if (!specs || !which || !loaded)
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory loading %s", m->dir);
    for (size_t i = 0; st == FM_OK && i < m->n_params; i++) {
        if (tied_target(m, m->params[i].name)) continue;
        fm_param *p = param_of(m, i);
        specs[ns] = (fm_param_spec){m->params[i].name, p->tensor.dtype, p->tensor.shape};
        which[ns++] = i;
    }
    fm_tensor_source src = {fm_checkpoint_count(ck), src_name, src_info, src_get, ck};
    fm_weights_load_options wo;
    fm_weights_load_options_init(&wo);
    wo.cast = o->dtype;
    if (st == FM_OK)
        st = fm_weights_load(transforms, &src, specs, ns, &wo, loaded, &m->fired, rep, err);
    for (size_t k = 0; k < ns; k++) {
        fm_param *p = param_of(m, which[k]);
        if (st == FM_OK && loaded[k].data) {
            fm_tensor_free(&p->tensor);
            p->tensor = loaded[k];
        } else {
            fm_tensor_free(&loaded[k]);
        }
    }
    fm_free(specs);
    fm_free(which);
    fm_free(loaded);
    fm_checkpoint_close(ck);
    return st;
}

/* Tied parameters share their target's tensor; a checkpoint copy of a tied key is not "unexpected".
 */
static fm_status tie_weights(fm_model *m, fm_load_report *rep, fm_error *err) {
    for (size_t i = 0; i < m->n_params; i++) {
        const char *target = tied_target(m, m->params[i].name);
        if (!target) continue;
        const fm_tensor *t = fm_model_param(m, target);
        if (!t) return fm_error_set(err, FM_ERR_INTERNAL, "tied target %s not found", target);
        fm_param *p = param_of(m, i);
        fm_tensor ref;
        fm_tensor_ref(&ref, t);
        fm_tensor_free(&p->tensor);
        p->tensor = ref;
        report_remove(rep->unexpected, &rep->n_unexpected, m->params[i].name);
    }
    return FM_OK;
}

static fm_status check_strict(const fm_model *m, const fm_load_report *rep,
                              const fm_fusion_plan *plan, fm_error *err) {
    if (rep->n_missing)
        return fm_error_set(err, FM_ERR_MISSING_KEYS, "%s: %zu missing key(s) (strict), first: %s",
                            m->dir, rep->n_missing, rep->missing[0]);
    if (rep->n_unexpected)
        return fm_error_set(err, FM_ERR_UNEXPECTED_KEYS,
                            "%s: %zu unexpected key(s) (strict), first: %s", m->dir,
                            rep->n_unexpected, rep->unexpected[0]);
    if (plan->n_unmatched)
        return fm_error_set(err, FM_ERR_FUSION,
                            "%s: fusion '%s' was requested but matches no module (strict)", m->dir,
                            plan->unmatched[0]);
    return FM_OK;
}

static fm_status model_new(const char *dir, fm_model **out, fm_error *err) {
    fm_model *m = fm_calloc(1, sizeof *m);
    *out = m;
    if (!m || !(m->dir = fm_strdup(dir)))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory loading %s", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    return fm_config_load(path, &m->config, err);
}

fm_status fm_from_pretrained(const char *dir, const fm_load_options *opts, fm_model **out,
                             fm_load_report *report, fm_error *err) {
    fm_load_options defaults;
    fm_load_report local;
    fm_load_report *rep = report ? report : &local;
    fm_config *fusion = NULL;
    fm_fusion_plan plan;
    fm_transform_list transforms;
    fm_model *m = NULL;
    char origin[4200];
    memset(rep, 0, sizeof *rep);
    memset(&plan, 0, sizeof plan);
    memset(&transforms, 0, sizeof transforms);
    if (!opts) fm_load_options_init(&defaults), opts = &defaults;
    *out = NULL;
    snprintf(origin, sizeof origin, "%s/config.json", dir);
    fm_status st = fm_init(err);
    if (st == FM_OK) st = model_new(dir, &m, err);
    if (m) m->cast = opts->dtype;
    if (st == FM_OK) st = read_identity(m, origin, err);
    if (st == FM_OK) st = resolve_fusion_config(m, opts, origin, &fusion, err);
    if (st == FM_OK) st = mapping_for(m, &transforms, err);
    if (st == FM_OK)
        st = fm_fusion_plan_make(m->builder, m->model_cfg, m->config, fusion, &transforms, &plan,
                                 err);
    for (size_t i = 0; st == FM_OK && i < plan.transforms.count; i++) { /* moved, not copied */
        fm_transform *t = plan.transforms.items[i];
        plan.transforms.items[i] = NULL; /* append owns t from here, even when it fails */
        st = fm_transform_list_append(&transforms, t, err);
    }
    fm_dtype meta_dt = opts->dtype == FM_DTYPE_INVALID ? FM_DTYPE_F32 : opts->dtype;
    if (st == FM_OK) st = build_tree(m, &plan, meta_dt, err);
    if (st == FM_OK && !opts->meta_only) st = load_weights(m, opts, &transforms, rep, err);
    if (st == FM_OK && !opts->meta_only) st = tie_weights(m, rep, err);
    if (st == FM_OK) st = record_fusions(&plan, rep, err);
    if (st == FM_OK && opts->strict) st = check_strict(m, rep, &plan, err);
    fm_config_free(fusion);
    fm_fusion_plan_free(&plan);
    fm_transform_list_free(&transforms);
    if (!report) fm_load_report_free(&local);
    if (st != FM_OK) {
        fm_model_free(m);
        return st;
    }
    *out = m;
    return FM_OK;
}

/* ---- save ----------------------------------------------------------------------------------- */
fm_status fm_model_state_dict(const fm_model *m, fm_named_tensor **out, size_t *n, fm_error *err) {
    fm_named_tensor *v = fm_calloc(m->n_params ? m->n_params : 1, sizeof *v);
    size_t k = 0;
    *out = NULL;
    *n = 0;
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory building the state dict");
    for (size_t i = 0; i < m->n_params; i++) {
        if (tied_target(m, m->params[i].name)) continue;
        const fm_tensor *t = &param_of(m, i)->tensor;
        if (!t->data) {
            fm_named_tensors_free(v, k);
            return fm_error_set(err, FM_ERR_MISSING_KEYS,
                                "cannot save: parameter %s was never loaded", m->params[i].name);
        }
        v[k].name = fm_strdup(m->params[i].name);
        fm_tensor_ref(&v[k].tensor, t);
        if (!v[k++].name) {
            fm_named_tensors_free(v, k);
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory building the state dict");
        }
    }
    *out = v;
    *n = k;
    return FM_OK;
}

fm_status fm_model_save_state_dict(const fm_model *m, bool runtime_format, fm_named_tensor **out,
                                   size_t *n, fm_error *err) {
    fm_named_tensor *state = NULL;
    size_t ns = 0;
    fm_status st = fm_model_state_dict(m, &state, &ns, err);
    if (st != FM_OK || runtime_format) {
        *out = state;
        *n = ns;
        return st;
    }
    st = fm_weights_revert(&m->fired, state, ns, out, n, err);
    fm_named_tensors_free(state, ns);
    return st;
}

static const char *dtype_torch_name(fm_dtype dt) {
    switch (dt) {
    case FM_DTYPE_F32:
        return "float32";
    case FM_DTYPE_BF16:
        return "bfloat16";
    case FM_DTYPE_F16:
        return "float16";
    default:
        return NULL;
    }
}

/* config.json to write: every original key, plus fusion_config and the dtype after a cast. */
static fm_status config_text(const fm_model *m, char **text, size_t *len, fm_error *err) {
    fm_config *c = NULL, *fc = NULL;
    fm_status st = fm_config_clone(m->config, &c, err);
    if (st == FM_OK && m->fusion_json) {
        st = fm_config_parse(m->fusion_json, strlen(m->fusion_json), "fusion_config", &fc, err);
        if (st == FM_OK) st = fm_config_set_subtree(c, "fusion_config", fc, err);
    }
    const char *tn = dtype_torch_name(m->cast);
    if (st == FM_OK && tn && fm_config_type(c, "torch_dtype") == FM_JSON_STRING)
        st = fm_config_set_string(c, "torch_dtype", tn, err);
    if (st == FM_OK && tn && fm_config_type(c, "dtype") == FM_JSON_STRING)
        st = fm_config_set_string(c, "dtype", tn, err);
    if (st == FM_OK) st = fm_config_dump(c, text, len, err);
    fm_config_free(fc);
    fm_config_free(c);
    return st;
}

/* Shard of each tensor in the source checkpoint, or NULL when the source was one file or a
 * tensor is not in it (then the greedy split applies). Caller frees. */
static uint32_t *source_layout(const fm_model *m, const fm_named_tensor *sd, size_t n) {
    if (!m->n_src || !n) return NULL;
    uint32_t *v = fm_malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++) {
        size_t j = 0;
        while (j < m->n_src && strcmp(m->src_names[j], sd[i].name))
            j++;
        if (j == m->n_src) return fm_free(v), NULL;
        v[i] = m->src_shard[j];
    }
    return v;
}

fm_status fm_save_pretrained(const fm_model *m, const char *dir,
                             const fm_save_pretrained_options *opts, fm_error *err) {
    fm_save_pretrained_options defaults;
    if (!opts) fm_save_pretrained_options_init(&defaults), opts = &defaults;
    fm_named_tensor *sd = NULL;
    size_t n = 0, clen = 0;
    char *ctext = NULL;
    fm_st_item *items = NULL;
    fm_status st = fm_model_save_state_dict(m, opts->runtime_format, &sd, &n, err);
    if (st == FM_OK) st = config_text(m, &ctext, &clen, err);
    if (st == FM_OK && !(items = fm_calloc(n ? n : 1, sizeof *items)))
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory saving %s", dir);
    uint64_t params = 0;
    for (size_t i = 0; st == FM_OK && i < n; i++) {
        items[i] = (fm_st_item){sd[i].name, &sd[i].tensor};
        params += fm_tensor_numel(&sd[i].tensor);
    }
    uint32_t *shard_of = NULL;
    if (st == FM_OK) {
        fm_save_options so;
        fm_save_options_init(&so);
        so.total_parameters = params;
        if (opts->max_shard_size)
            so.max_shard_size = opts->max_shard_size;
        else if (!opts->runtime_format && (shard_of = source_layout(m, sd, n)))
            so.shard_of = shard_of, so.n_shards = m->src_n_shards,
            so.write_total_parameters = m->src_has_total_params,
            so.total_parameters = m->src_total_params;
        fm_extra_file cfg = {"config.json", ctext, clen};
        st = fm_checkpoint_save(dir, items, n, &cfg, 1, &so, err);
    }
    fm_free(shard_of);
    fm_free(items);
    fm_free(ctext);
    fm_named_tensors_free(sd, n);
    return st;
}
