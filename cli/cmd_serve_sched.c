/* fusemap serve: jobs and the scheduler. One thread owns the model and a batch of KV-cache slots
 * (fm_batch): requests wait in one FIFO queue; while a slot is free the oldest waiting request is
 * prefilled (one at a time, between decode steps, so running streams keep flowing), and every
 * step decodes one token of every running request in one batched forward. A job whose client is
 * gone is ended at the next step and its slot freed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "serve.h"

struct srv_sched {
    fm_model *m;
    fm_batch *b;
    srv_sched_options o;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;  /* work arrived, a job was cancelled, shutdown */
    srv_job *head, *tail;
    int queued;
    srv_job **slot_job; /* [slots]: the job in each slot, or NULL */
    int running;        /* slots holding a job */
    uint64_t served;
    uint64_t decode_tokens; /* tokens made by decode steps (not by prefills) */
    double decode_s;        /* seconds spent in decode steps */
    bool draining, drained, quit;
    double deadline; /* draining: running jobs are cancelled after this (monotonic seconds) */
};

/* ---- jobs -------------------------------------------------------------------------------------
 */

srv_job *srv_job_new(void) {
    srv_job *j = fm_calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->refs = 1;
    fm_generate_options_init(&j->go);
    return j;
}

void srv_job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    fm_free(j->ids);
    fm_tensor_free(&j->pv), fm_tensor_free(&j->grid);
    for (size_t i = 0; i < j->n_stops; i++)
        fm_free(j->stops[i]);
    fm_free(j->text);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    fm_free(j);
}

void srv_job_fail_locked(srv_job *j, int status, const char *type, const char *code,
                         const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err_msg, sizeof j->err_msg, fmt, ap);
    va_end(ap);
    j->err_status = status, j->err_type = type, j->err_code = code;
    j->state = JOB_DONE;
    pthread_cond_broadcast(&j->cv);
}

/* Ends the text at the first stop sequence, else holds back its longest tail that could begin
 * one (it is sent once the text goes another way). Only text after `old` is new. */
static void apply_stops(srv_job *j, size_t old) {
    size_t from = old >= j->max_stop ? old - j->max_stop + 1 : 0, best = SIZE_MAX, hold = 0;
    for (size_t i = 0; i < j->n_stops; i++) {
        size_t sl = strlen(j->stops[i]);
        const char *p =
            j->len - from >= sl ? memmem(j->text + from, j->len - from, j->stops[i], sl) : NULL;
        if (p && (size_t)(p - j->text) < best) best = (size_t)(p - j->text);
    }
    if (best != SIZE_MAX) {
        j->len = j->visible = best, j->stop_hit = true;
        return;
    }
    for (size_t i = 0; i < j->n_stops; i++) {
        size_t sl = strlen(j->stops[i]);
        for (size_t k = sl - 1 < j->len ? sl - 1 : j->len; k > hold; k--)
            if (!memcmp(j->text + j->len - k, j->stops[i], k)) {
                hold = k;
                break;
            }
    }
    if (j->len - hold > j->visible) j->visible = j->len - hold;
}

/* The sequence's streaming callback (scheduler thread): appends the text; false stops the
 * sequence (a stop sequence reached, or no memory for the text). */
static bool on_token(void *ctx, int32_t id, const char *text, size_t len) {
    srv_job *j = ctx;
    pthread_mutex_lock(&j->mu);
    if (id >= 0) j->n_tokens++;
    if (len && !j->stop_hit) {
        if (j->len + len + 1 > j->cap) {
            size_t cap = (j->len + len + 1) * 2;
            char *t = fm_realloc(j->text, cap);
            if (!t) {
                j->cancel = true; /* finished below as a failure */
                srv_job_fail_locked(j, 500, "server_error", "out_of_memory",
                                    "out of memory for the generated text");
                pthread_mutex_unlock(&j->mu);
                return false;
            }
            j->text = t, j->cap = cap;
        }
        size_t old = j->len;
        memcpy(j->text + j->len, text, len);
        j->len += len;
        j->text[j->len] = '\0';
        if (j->n_stops)
            apply_stops(j, old);
        else
            j->visible = j->len;
    }
    bool go_on = !j->stop_hit; /* a cancelled job is ended by reap() before the next step */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return go_on;
}

/* ---- the scheduler -----------------------------------------------------------------------------
 */

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Finishes the job of slot i (its sequence ended, failed or is being cancelled); under s->mu. */
static void finish_slot(srv_sched *s, int i, bool shutdown) {
    srv_job *j = s->slot_job[i];
    fm_generate_result r = {0};
    fm_error e;
    fm_status st = fm_batch_end(s->b, i, &r, &e);
    pthread_mutex_lock(&j->mu);
    if (j->state != JOB_DONE) {
        if (st != FM_OK)
            srv_job_fail_locked(j, st == FM_ERR_NOMEM ? 503 : 500, "server_error",
                                fm_status_name(st), "generation failed: %s", e.msg);
        else if (shutdown && r.stop == FM_STOP_CANCELLED && !j->stop_hit && !j->cancel)
            srv_job_fail_locked(j, 503, "server_error", "shutting_down",
                                "the server is shutting down");
        else {
            j->finish = j->stop_hit || r.stop == FM_STOP_EOS ? "stop" : "length";
            if (!j->stop_hit) j->visible = j->len;
            j->state = JOB_DONE;
            pthread_cond_broadcast(&j->cv);
        }
    }
    pthread_mutex_unlock(&j->mu);
    fm_generate_result_free(&r);
    s->slot_job[i] = NULL;
    s->running--;
    s->served++;
    srv_job_unref(j);
}

static bool job_cancelled(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    bool c = j->cancel;
    pthread_mutex_unlock(&j->mu);
    return c;
}

/* Ends finished, cancelled and (past the drain deadline) every running job; drops cancelled and
 * (when draining) every queued job. Under s->mu. */
static void reap(srv_sched *s) {
    bool late = s->draining && mono_s() >= s->deadline;
    for (int i = 0; i < s->o.slots; i++)
        if (s->slot_job[i] && (fm_batch_finished(s->b, i) || job_cancelled(s->slot_job[i]) || late))
            finish_slot(s, i, late);
    for (srv_job **p = &s->head; *p;) {
        srv_job *j = *p;
        bool cancelled = job_cancelled(j);
        if (!cancelled && !s->draining) {
            p = &j->next;
            continue;
        }
        *p = j->next;
        if (s->tail == j) s->tail = NULL;
        s->queued--;
        pthread_mutex_lock(&j->mu);
        if (!cancelled)
            srv_job_fail_locked(j, 503, "server_error", "shutting_down",
                                "the server is shutting down");
        j->state = JOB_DONE;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        srv_job_unref(j);
    }
    if (!s->head) s->tail = NULL;
}

/* Prefills job j into a free slot (s->mu not held). */
static void start_job(srv_sched *s, srv_job *j) {
    j->go.on_token = on_token, j->go.ctx = j;
    int seq = -1;
    fm_error e;
    fm_status st = fm_batch_start(s->b, j->ids, j->n_ids, j->pv.data ? &j->pv : NULL,
                                  j->pv.data ? &j->grid : NULL, &j->go, &seq, &e);
    fm_tensor_free(&j->pv), fm_tensor_free(&j->grid); /* the prefill is done with them */
    pthread_mutex_lock(&s->mu);
    if (seq >= 0) s->slot_job[seq] = j, s->running++;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&j->mu);
    if (st != FM_OK && seq < 0) {
        bool input = st == FM_ERR_INPUT || st == FM_ERR_LIMIT;
        srv_job_fail_locked(j, input ? 400 : 500, input ? "invalid_request_error" : "server_error",
                            fm_status_name(st), "%s", e.msg);
    } else if (j->state == JOB_QUEUED) {
        j->state = JOB_RUNNING;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    if (seq < 0) srv_job_unref(j);
}

static void *sched_main(void *arg) {
    srv_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        reap(s);
        srv_job *j = NULL;
        if (!s->draining && s->head && s->running < s->o.slots) {
            j = s->head;
            s->head = j->next;
            if (!s->head) s->tail = NULL;
            s->queued--;
        }
        if (!j && !s->running) {
            if (s->draining) break;
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        if (j) start_job(s, j);
        fm_error e;
        int rows = fm_batch_running(s->b);
        double t0 = mono_s();
        if (rows) fm_batch_step(s->b, &e); /* failures land in their jobs */
        double dt = mono_s() - t0;
        pthread_mutex_lock(&s->mu);
        s->decode_tokens += (uint64_t)rows, s->decode_s += rows ? dt : 0;
    }
    s->drained = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

fm_status srv_sched_start(fm_model *m, const srv_sched_options *o, srv_sched **out, fm_error *err) {
    *out = NULL;
    srv_sched *s = fm_calloc(1, sizeof *s);
    if (!s) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    s->m = m, s->o = *o;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    fm_batch_options bo;
    fm_batch_options_init(&bo);
    bo.slots = o->slots, bo.capacity = o->capacity, bo.kv_dtype = o->kv_dtype,
    bo.threads = o->threads;
    fm_status st = fm_batch_new(m, &bo, &s->b, err);
    if (st == FM_OK && !(s->slot_job = fm_calloc((size_t)o->slots, sizeof *s->slot_job)))
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (st == FM_OK) {
        int rc = pthread_create(&s->thread, NULL, sched_main, s);
        if (rc) st = fm_error_set(err, FM_ERR_INTERNAL, "cannot start a thread: %s", strerror(rc));
        s->thread_started = rc == 0;
    }
    if (st != FM_OK) {
        srv_sched_free(s);
        return st;
    }
    *out = s;
    return FM_OK;
}

int srv_sched_submit(srv_sched *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    int rc = s->draining ? 2 : s->queued >= s->o.max_queue ? 1 : 0;
    if (!rc) {
        srv_job_ref(j);
        j->state = JOB_QUEUED, j->next = NULL;
        if (s->tail)
            s->tail->next = j;
        else
            s->head = j;
        s->tail = j;
        s->queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void srv_sched_wake(srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_stats_get(srv_sched *s, srv_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    out->slots = s->o.slots, out->running = s->running, out->queued = s->queued;
    out->served = s->served;
    out->decode_tokens = s->decode_tokens, out->decode_s = s->decode_s;
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_drain(srv_sched *s, double grace_s) {
    pthread_mutex_lock(&s->mu);
    if (!s->draining) s->draining = true, s->deadline = mono_s() + grace_s;
    pthread_cond_signal(&s->cv);
    while (!s->drained && s->thread_started) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts); /* re-checks the deadline on wake */
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_free(srv_sched *s) {
    if (!s) return;
    if (s->thread_started) {
        srv_sched_drain(s, 0);
        pthread_join(s->thread, NULL);
    }
    fm_batch_free(s->b);
    fm_free(s->slot_job);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    fm_free(s);
}
