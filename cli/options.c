/* The one option parser of the commands (driven by each command's option table), the shared
 * options, and the error and warning printers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

static void vprint_line(const char *kind, const char *fmt, va_list ap) {
    fprintf(stderr, "fusemap: %s: ", kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int fm_cli_fail(const fm_error *err) {
    fprintf(stderr, "fusemap: error: %s\n",
            err && err->msg[0] ? err->msg : fm_status_text(err ? err->status : FM_ERR_INTERNAL));
    return 1;
}

int fm_cli_usage(const fm_cli_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_line("error", fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr,
                "usage: fusemap %s\n(run 'fusemap %s --help' for its options and examples)\n",
                cmd->help->usage, cmd->name);
    else
        fputs("usage: fusemap COMMAND [options]\n(run 'fusemap --help' for the commands)\n",
              stderr);
    return 2;
}

int fm_cli_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_line("error", fmt, ap);
    va_end(ap);
    return 1;
}

void fm_cli_warnf(bool quiet, const char *fmt, ...) {
    if (quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vprint_line("warning", fmt, ap);
    va_end(ap);
}

void fm_cli_common_free(fm_cli_common *c) {
    free(c->fusion.built);
    c->fusion.built = NULL;
}

/* The table entry for "--name" or an alias (the part before '=' when eq is set). */
static const fm_cli_opt *find_opt(const fm_cli_help *h, const char *s, size_t len) {
    for (size_t i = 0; i < h->n_opts; i++) {
        const fm_cli_opt *o = &h->opts[i];
        if ((strlen(o->name) == len && !strncmp(o->name, s, len)) ||
            (o->alias && strlen(o->alias) == len && !strncmp(o->alias, s, len)))
            return o;
    }
    return NULL;
}

static int shared_opt(const fm_cli_command *cmd, fm_cli_common *c, int id, const char *v) {
    fm_cli_fusion *f = &c->fusion;
    if (id == FM_CLI_OPT_QUIET)
        c->quiet = true;
    else if (id == FM_CLI_OPT_STRICT)
        c->strict = true;
    else if (id == FM_CLI_OPT_FUSION_CONFIG)
        f->json = v;
    else if (f->n_fuse == (int)(sizeof f->fuse / sizeof *f->fuse))
        return fm_cli_usage(cmd, "at most %d --fuse", f->n_fuse);
    else if (!*v || strpbrk(v, "\"\\"))
        return fm_cli_usage(cmd, "--fuse: invalid family name '%s'", v);
    else
        f->fuse[f->n_fuse++] = v;
    return 0;
}

/* One option argv[*i] (starting with '-'); consumes its value. */
static int one_opt(const fm_cli_command *cmd, int argc, char **argv, int *i, fm_cli_common *c,
                   fm_cli_opt_fn fn, void *ctx) {
    const char *s = argv[*i], *eq = !strncmp(s, "--", 2) ? strchr(s, '=') : NULL;
    const fm_cli_opt *o = find_opt(cmd->help, s, eq ? (size_t)(eq - s) : strlen(s));
    if (!o)
        return fm_cli_usage(cmd, "%s: unknown option '%.*s'", cmd->name,
                            eq ? (int)(eq - s) : (int)strlen(s), s);
    const char *v = NULL;
    if (o->arg && eq)
        v = eq + 1;
    else if (o->arg && *i + 1 < argc)
        v = argv[++*i];
    else if (o->arg)
        return fm_cli_usage(cmd, "%s needs a value (%s)", o->name, o->arg);
    else if (eq)
        return fm_cli_usage(cmd, "%s takes no value", o->name);
    if (o->id < FM_CLI_OPT_OWN) return shared_opt(cmd, c, o->id, v);
    return fn(cmd, ctx, o->id, v);
}

int fm_cli_parse(const fm_cli_command *cmd, int argc, char **argv, fm_cli_common *common,
                 fm_cli_opt_fn fn, void *ctx) {
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int rc;
        if (!options_done && !strcmp(s, "--")) {
            options_done = true;
            continue;
        }
        if (!options_done && (!strcmp(s, "-h") || !strcmp(s, "--help"))) {
            fm_cli_print_command_help(stdout, cmd);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        if (options_done || s[0] != '-' || !s[1])
            rc = fn(cmd, ctx, FM_CLI_ARG, s);
        else
            rc = one_opt(cmd, argc, argv, &i, common, fn, ctx);
        if (rc) return rc;
    }
    if (common->fusion.json && common->fusion.n_fuse)
        return fm_cli_usage(cmd, "use either --fuse or --fusion-config, not both");
    return FM_CLI_GO;
}
