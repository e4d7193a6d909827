// threadpool.c — adamant's persistent worker threads (see backend.h, abk_parallel).
//
// Workers are created once and wait for a job by spinning briefly on a generation counter, then
// sleeping on a condition variable, so back-to-back parallel regions (one per layer) start in well
// under a microsecond while an idle process burns no CPU. One job at a time: a caller that finds
// the pool busy (another host thread's job, or a nested call from inside a job) runs its job
// itself, serially; results never depend on which thread ran which part.
#define _GNU_SOURCE
#include "backend.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { MAX_WORKERS = 255, SPIN = 20000 };

static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;  // held by the caller of a running job
static pthread_mutex_t g_sleep = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static _Atomic unsigned long g_generation = 0;
static _Atomic int g_remaining = 0;
static int g_workers = 0;  // started so far (guarded by g_submit)
static abk_task_fn g_fn;
static void *g_ctx;
static int g_parts;
static __thread int t_in_job = 0;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *arg) {
    int id = (int)(long)arg;  // 1-based: part 0 is the caller's
    unsigned long seen = 0;
    t_in_job = 1;             // a nested abk_parallel from a job runs serially
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
        // Every started worker checks in for every job (even one it has no part in), so the job's
        // fields are never rewritten while a worker may still read them.
        if (id < g_parts) g_fn(g_ctx, id, g_parts);
        atomic_fetch_sub_explicit(&g_remaining, 1, memory_order_acq_rel);
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
        if (pthread_create(&t, &attr, worker_main, (void *)(long)(g_workers + 1)) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        g_workers++;
    }
    if (g_workers < parts - 1) parts = g_workers + 1;  // could not start more threads
    g_fn = fn;
    g_ctx = ctx;
    g_parts = parts;
    atomic_store_explicit(&g_remaining, g_workers, memory_order_release);
    pthread_mutex_lock(&g_sleep);
    atomic_fetch_add_explicit(&g_generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_sleep);
    t_in_job = 1;
    fn(ctx, 0, parts);
    t_in_job = 0;
    while (atomic_load_explicit(&g_remaining, memory_order_acquire) > 0) cpu_relax();
    pthread_mutex_unlock(&g_submit);
}
