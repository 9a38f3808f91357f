/* Benchmark: fm_from_pretrained of a generated Qwen2-VL-2B checkpoint (vision tower + text
 * decoder, bf16, about 4.4 GB; --small for a reduced one), touching every parameter, against
 * a plain read of the same files in the same run (warm page cache for both), with dtype auto
 * and with dtype f32; each load runs in its own child process so its peak RSS is its own.
 * Also the meta build of a Qwen2-VL-7B-sized config. One JSON object per line. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void preset(fm_qfix *q, int small) {
    fm_qfix_init(q);
    q->depth = small ? 4 : 32, q->embed_dim = 1280, q->num_heads = 16, q->hidden_size = 1536,
    q->mlp_ratio = 4;
    q->text_layers = small ? 4 : 28, q->text_hidden = 1536, q->text_heads = 12,
    q->text_kv_heads = 2;
    q->text_inter = 8960, q->vocab = small ? 32000 : 151936, q->tie = true;
    q->dtype = FM_DTYPE_BF16, q->max_shard = 1000000000ull, q->scale = 0.02f;
}

/* Sum of 64-bit words: the same work for every mode, so the comparison is of the I/O path. */
static uint64_t sum_bytes(const uint8_t *p, uint64_t n) {
    uint64_t s = 0, w;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8)
        memcpy(&w, p + i, 8), s += w;
    for (; i < n; i++)
        s += p[i];
    return s;
}

/* The checkpoint's files (from its index or model.safetensors) and their total size. */
static uint64_t dir_bytes(const char *dir, char files[][4200], int *nf) {
    fm_checkpoint *c = NULL;
    fm_error err;
    uint64_t total = 0;
    *nf = 0;
    if (fm_checkpoint_open(dir, &c, &err) != FM_OK) return fprintf(stderr, "%s\n", err.msg), 0;
    for (size_t i = 0; i < fm_checkpoint_shard_count(c) && *nf < 128; i++) {
        struct stat st;
        const char *path = fm_st_path(fm_checkpoint_shard(c, i));
        snprintf(files[(*nf)++], 4200, "%s", path);
        if (stat(path, &st) == 0) total += (uint64_t)st.st_size;
    }
    fm_checkpoint_close(c);
    return total;
}

static double plain_read(char files[][4200], int nf, uint64_t *sum) {
    static uint8_t buf[8 << 20];
    double t0 = now();
    *sum = 0;
    for (int i = 0; i < nf; i++) {
        int fd = open(files[i], O_RDONLY);
        ssize_t r;
        while (fd >= 0 && (r = read(fd, buf, sizeof buf)) > 0)
            *sum += sum_bytes(buf, (uint64_t)r);
        if (fd >= 0) close(fd);
    }
    return now() - t0;
}

/* In a child: load with `dt`, touch every parameter; write seconds to the pipe. */
static void child_load(const char *dir, fm_dtype dt, int fd) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.dtype = dt;
    fm_model *m = NULL;
    fm_error err;
    double t0 = now();
    if (fm_from_pretrained(dir, &o, &m, NULL, &err) != FM_OK)
        fprintf(stderr, "load: %s\n", err.msg), _exit(1);
    fm_named_tensor *sd = NULL;
    size_t n = 0;
    uint64_t s = 0;
    fm_model_state_dict(m, &sd, &n, &err);
    for (size_t i = 0; i < n; i++)
        s += sum_bytes(sd[i].tensor.data, sd[i].tensor.nbytes);
    double t = now() - t0;
    fm_named_tensors_free(sd, n);
    fm_model_free(m);
    if (write(fd, &t, sizeof t) != sizeof t || s == 42) _exit(2);
    _exit(0);
}

static double timed_child(const char *dir, fm_dtype dt, long *max_rss_kb) {
    int p[2];
    double t = -1;
    if (pipe(p)) return -1;
    pid_t pid = fork();
    if (pid == 0) close(p[0]), child_load(dir, dt, p[1]);
    close(p[1]);
    if (read(p[0], &t, sizeof t) != sizeof t) t = -1;
    close(p[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    *max_rss_kb = ru.ru_maxrss;
    return t;
}

static double meta_build_ms(const char *tmpdir) {
    char dir[4200];
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = 32, q.embed_dim = 1280, q.num_heads = 16, q.hidden_size = 3584;
    q.text_layers = 28, q.text_hidden = 3584, q.text_heads = 28, q.text_kv_heads = 4,
    q.text_inter = 18944;
    q.vocab = 152064;
    snprintf(dir, sizeof dir, "%s/meta7b", tmpdir);
    mkdir(dir, 0755);
    char *cfg = fm_qfix_config_text(&q), path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (f) fputs(cfg, f), fclose(f);
    free(cfg);
    fm_load_options o;
    fm_load_options_init(&o);
    o.meta_only = true;
    double best = 1e9;
    for (int r = 0; r < 20; r++) {
        fm_model *m = NULL;
        fm_error err;
        double t0 = now();
        if (fm_from_pretrained(dir, &o, &m, NULL, &err) != FM_OK)
            return fprintf(stderr, "%s\n", err.msg), -1;
        double t = now() - t0;
        fm_model_free(m);
        if (t < best) best = t;
    }
    return best * 1e3;
}

int main(int argc, char **argv) {
    int small = 0, reps = 2;
    const char *data = "build/bench-data";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small"))
            small = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc)
            data = argv[++i];
        else
            return fprintf(stderr,
                           "usage: load_pretrained [--small] [--reps N] [--data-dir DIR]\n"),
                   2;
    }
    char dir[4200], done[4300];
    snprintf(dir, sizeof dir, "%s/qwen2vl-2b%s", data, small ? "-small" : "");
    snprintf(done, sizeof done, "%s/.complete", dir);
    mkdir(data, 0755);
    if (access(done, F_OK) != 0) { /* in a child, so this process's RSS stays small */
        double t0 = now();
        pid_t pid = fork();
        if (pid == 0) {
            fm_qfix q;
            fm_error err;
            preset(&q, small);
            if (fm_qfix_write(dir, &q, &err) != FM_OK)
                fprintf(stderr, "generate: %s\n", err.msg), _exit(1);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) return 1;
        FILE *f = fopen(done, "w");
        if (f) fclose(f);
        printf("{\"bench\":\"load_pretrained_generate\",\"dir\":\"%s\",\"seconds\":%.1f}\n", dir,
               now() - t0);
        fflush(stdout);
    }
    static char files[128][4200];
    int nf = 0;
    uint64_t bytes = dir_bytes(dir, files, &nf), sum = 0;
    double best_read = 1e9, best_auto = 1e9, best_f32 = 1e9;
    long rss_auto = 0, rss_f32 = 0, rss;
    plain_read(files, nf, &sum); /* warm the page cache: every mode below reads warm */
    for (int r = 0; r < reps; r++) {
        double t = plain_read(files, nf, &sum);
        if (t < best_read) best_read = t;
        t = timed_child(dir, FM_DTYPE_INVALID, &rss);
        if (t > 0 && t < best_auto) best_auto = t, rss_auto = rss;
        t = timed_child(dir, FM_DTYPE_F32, &rss);
        if (t > 0 && t < best_f32) best_f32 = t, rss_f32 = rss;
    }
    printf("{\"bench\":\"load_pretrained\",\"dtype\":\"auto\",\"bytes\":%llu,\"files\":%d,\"read_"
           "s\":%.3f,"
           "\"load_touch_s\":%.3f,\"over_read\":%.3f,\"peak_rss_bytes\":%llu,\"rss_over_bytes\":%."
           "3f}\n",
           (unsigned long long)bytes, nf, best_read, best_auto, best_auto / best_read,
           (unsigned long long)rss_auto * 1024ull, (double)rss_auto * 1024.0 / (double)bytes);
    printf("{\"bench\":\"load_pretrained\",\"dtype\":\"f32\",\"bytes\":%llu,\"read_s\":%.3f,\"load_"
           "touch_s\":%.3f,"
           "\"over_read\":%.3f,\"peak_rss_bytes\":%llu}\n",
           (unsigned long long)bytes, best_read, best_f32, best_f32 / best_read,
           (unsigned long long)rss_f32 * 1024ull);
    printf("{\"bench\":\"meta_build\",\"config\":\"qwen2-vl-7b\",\"ms\":%.3f}\n",
           meta_build_ms(data));
    return 0;
}
