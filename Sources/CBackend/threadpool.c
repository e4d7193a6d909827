// threadpool.c — adamant's persistent worker threads (see backend.h, abk_parallel).
//
// Workers are created once and wait for a job by spinning briefly on a generation counter, then
// sleeping on a condition variable, so back-to-back parallel regions (one per layer) start in well
// under a microsecond while an idle process burns no CPU.
//
// Parts are claimed, not assigned: the caller and every awake worker take the next unclaimed part
// until none is left, and the caller returns once every part is done. A worker the OS has not
// scheduled yet (the host's own threads busy on the other cores) therefore delays nothing: the
// caller runs its parts. Which thread runs a part never changes a result, since a part is a fixed
// range of the work. The claim word packs the job's generation, its part count and the next part,
// so a claim is valid only for the job that is current at that moment (no ABA), and the job's
// fields stay put while any claimed part is unfinished.
//
// One job at a time: a caller that finds the pool busy (another host thread's job, or a nested
// call from inside a job) runs its job itself, serially.
#define _GNU_SOURCE
#include "backend.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

enum { MAX_WORKERS = 255, SPIN = 20000, CALLER_SPIN = 20000 };

static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;  // held by the caller of a running job
static pthread_mutex_t g_sleep = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static _Atomic unsigned long g_generation = 0;
// generation (23 bits) | parts (9 bits) | next unclaimed part (32 bits)
static _Atomic uint64_t g_claim = 0;
static _Atomic int g_done = 0;  // parts of the current job finished
static int g_workers = 0;       // started so far (guarded by g_submit)
static abk_task_fn g_fn;
static void *g_ctx;
static __thread int t_in_job = 0;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// Claims and runs parts of the current job until none is left.
static void run_parts(void) {
    for (;;) {
        uint64_t v = atomic_load_explicit(&g_claim, memory_order_acquire);
        int parts = (int)((v >> 32) & 0x1FF), next = (int)(v & 0xFFFFFFFFu);
        if (next >= parts) return;
        if (!atomic_compare_exchange_weak_explicit(&g_claim, &v, v + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        // The claimed part is unfinished, so the job (and g_fn, g_ctx) is still current.
        g_fn(g_ctx, next, parts);
        atomic_fetch_add_explicit(&g_done, 1, memory_order_acq_rel);
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    unsigned long seen = 0;
    t_in_job = 1;  // a nested abk_parallel from a job runs serially
    for (;;) {
        unsigned long gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&g_generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN) { cpu_relax(); continue; }
            pthread_mutex_lock(&g_sleep);
            while ((gen = atomic_load_explicit(&g_generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&g_wake, &g_sleep);
            pthread_mutex_unlock(&g_sleep);
            break;
        }
        seen = gen;
        run_parts();
    }
    return NULL;
}

void abk_parallel(int parts, abk_task_fn fn, void *ctx) {
    if (parts <= 1 || t_in_job || pthread_mutex_trylock(&g_submit) != 0) {
        for (int i = 0; i < parts; i++) fn(ctx, i, parts);
        return;
    }
    if (parts > MAX_WORKERS + 1) parts = MAX_WORKERS + 1;
    while (g_workers < parts - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 8 << 20);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker_main, NULL) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        g_workers++;
    }
    if (g_workers < parts - 1) parts = g_workers + 1;  // could not start more threads
    // No part of the previous job is unclaimed or running: publish this one.
    g_fn = fn;
    g_ctx = ctx;
    atomic_store_explicit(&g_done, 0, memory_order_relaxed);
    unsigned long gen = atomic_load_explicit(&g_generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&g_claim, ((uint64_t)(gen & 0x7FFFFF) << 41) | ((uint64_t)parts << 32), memory_order_release);
    pthread_mutex_lock(&g_sleep);
    atomic_store_explicit(&g_generation, gen, memory_order_release);
    pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_sleep);
    t_in_job = 1;
    run_parts();
    t_in_job = 0;
    // Parts claimed by workers may still run: wait for them, spinning (a part takes microseconds).
    // (After a long wait -- a worker preempted mid-part -- yield, so a CPU quota or a shared core
    // is not burnt spinning.)
    int spins = 0;
    while (atomic_load_explicit(&g_done, memory_order_acquire) < parts) {
        if (++spins < CALLER_SPIN) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&g_submit);
}

/// abk_parallel_units' job: its parts, claimed in order by the threads of one abk_parallel job.
typedef struct {
    _Atomic int next;
    int parts;
    abk_task_fn fn;
    void *ctx;
} units_job;

static void run_units(void *ctx, int part, int parts) {
    (void)part;
    (void)parts;
    units_job *j = ctx;
    for (int u; (u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->parts;) j->fn(j->ctx, u, j->parts);
}

void abk_parallel_units(int threads, int parts, abk_task_fn fn, void *ctx) {
    if (parts <= 0) return;
    if (threads > parts) threads = parts;
    if (threads <= 1) {
        for (int i = 0; i < parts; i++) fn(ctx, i, parts);
        return;
    }
    units_job j = {0, parts, fn, ctx};
    abk_parallel(threads, run_units, &j);
}
