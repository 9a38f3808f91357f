/* Benchmark: one next-token choice (fm_sampler_next) at the Qwen2 vocabulary (151936) for the
 * usual configurations, with a 1024-id history; one JSON line per configuration. */
/* Usage: sampling [--vocab N] [--steps N]. Logits are Gaussian (sd 2.5) plus a few peaks, fresh
 * per step, generated outside the timed region. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fusemap/generate.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rs = 0x853c49e6748fea9bu;
static double runif(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return ((double)(rs >> 11) + 0.5) / 9007199254740992.0;
}

static void fill_logits(float *l, int64_t v, double peak) {
    for (int64_t i = 0; i < v; i += 2) { /* Box-Muller pairs */
        double r = sqrt(-2 * log(runif())) * 2.5, a = 6.283185307179586 * runif();
        l[i] = (float)(r * cos(a));
        if (i + 1 < v) l[i + 1] = (float)(r * sin(a));
    }
    for (int k = 0; k < 5; k++)
        l[(int64_t)(runif() * (double)v)] += (float)(peak * (1 + k));
}

typedef struct config {
    const char *name;
    bool do_sample;
    double t, top_p, min_p, penalty, peak;
    int64_t top_k;
} config;

int main(int argc, char **argv) {
    int64_t vocab = 151936;
    int steps = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--vocab")) vocab = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    }
    const config cfgs[] = {
        {"greedy", false, 1, 1, 0, 1, 4, 50},
        {"greedy+penalty", false, 1, 1, 0, 1.05, 4, 50},
        {"qwen2_vl_instruct", true, 0.1, 0.001, 0, 1.05, 4, 1},
        {"hf_default_sampling", true, 1, 1, 0, 1, 4, 50},
        {"temperature_only", true, 0.8, 1, 0, 1, 4, 0},
        {"top_p_0.9_peaked", true, 0.7, 0.9, 0, 1, 4, 0},
        {"top_p_0.9_flat", true, 1.0, 0.9, 0, 1, 0, 0},
        {"top_k_40_top_p_0.95", true, 0.7, 0.95, 0, 1.1, 4, 40},
        {"min_p_0.05", true, 1.0, 1, 0.05, 1, 4, 0},
    };
    float *l = malloc((size_t)vocab * sizeof *l);
    int32_t *hist = malloc((1024 + (size_t)steps) * sizeof *hist);
    if (!l || !hist) return 1;
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        fm_sampling_options o;
        fm_sampler *s = NULL;
        fm_error err;
        fm_sampling_options_init(&o);
        o.do_sample = cfgs[c].do_sample;
        o.temperature = cfgs[c].t;
        o.top_k = cfgs[c].top_k;
        o.top_p = cfgs[c].top_p;
        o.min_p = cfgs[c].min_p;
        o.repetition_penalty = cfgs[c].penalty;
        if (fm_sampler_new(&o, vocab, &s, &err) != FM_OK) {
            fprintf(stderr, "sampling: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < 1024; i++)
            hist[i] = (int32_t)(runif() * (double)vocab);
        double total = 0, worst = 0, best = 1e9;
        for (int k = 0; k < steps; k++) {
            fill_logits(l, vocab, cfgs[c].peak);
            double t0 = now_s();
            if (fm_sampler_next(s, l, hist, 1024 + (size_t)k, &hist[1024 + k], &err) != FM_OK) {
                fprintf(stderr, "sampling: %s\n", err.msg);
                return 1;
            }
            double dt = now_s() - t0;
            total += dt;
            worst = dt > worst ? dt : worst;
            best = dt < best ? dt : best;
        }
        printf("{\"bench\":\"sampling\",\"config\":\"%s\",\"vocab\":%lld,\"steps\":%d,"
               "\"us_per_token\":%.1f,\"best_us\":%.1f,\"worst_us\":%.1f}\n",
               cfgs[c].name, (long long)vocab, steps, total / steps * 1e6, best * 1e6, worst * 1e6);
        fm_sampler_free(s);
    }
    free(l);
    free(hist);
    return 0;
}
