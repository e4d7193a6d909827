// backend.c — see backend.h.
#define _GNU_SOURCE
#include "backend.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*str_fn)(void);

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static sgemm_fn g_sgemm = NULL;
static set_threads_fn g_set_threads = NULL;
static str_fn g_corename = NULL, g_config = NULL;
static int g_threads = 1;
static char g_info[512];
static char g_kernel[64] = "portable";
static pthread_mutex_t g_info_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *g_conv_variant = "not loaded";

void abk_register_kernel_info(const char *conv_variant) { g_conv_variant = conv_variant; }

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

void abk_cpu_features(abk_cpu *out) {
    memset(out, 0, sizeof *out);
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned maxLeaf = a;
    memcpy(out->vendor, &b, 4); memcpy(out->vendor + 4, &d, 4); memcpy(out->vendor + 8, &c, 4);
    out->vendor[12] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    int baseFamily = (a >> 8) & 0xf, baseModel = (a >> 4) & 0xf;
    out->family = baseFamily == 0xf ? baseFamily + ((a >> 20) & 0xff) : baseFamily;
    out->model = (baseFamily == 6 || baseFamily == 0xf) ? (baseModel | (((a >> 16) & 0xf) << 4)) : baseModel;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    out->fma = (c >> 12) & 1;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    out->os_avx = osxsave && avx && (xcr0 & 0x6) == 0x6;
    out->os_avx512 = out->os_avx && (xcr0 & 0xe6) == 0xe6;
    if (maxLeaf >= 7) {
        __get_cpuid_count(7, 0, &a, &b, &c, &d);
        out->avx2 = (b >> 5) & 1;
        int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        out->avx512 = f && dq && bw && vl;
    }
}

static int available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void load_once(void) {
    abk_cpu cpu;
    abk_cpu_features(&cpu);
    const char *wanted = NULL;
    if (cpu.avx512 && cpu.os_avx512) wanted = "SkylakeX";
    else if (cpu.avx2 && cpu.fma && cpu.os_avx) wanted = "Haswell";
    const char *user = getenv("OPENBLAS_CORETYPE");
    int setEnv = (user == NULL || user[0] == 0) && wanted != NULL;
    if (setEnv) setenv("OPENBLAS_CORETYPE", wanted, 1);
    // OpenBLAS reads OPENBLAS_NUM_THREADS when it starts its pool: start it small, then set explicitly.
    const char *userThreads = getenv("OPENBLAS_NUM_THREADS");
    int setThreads = userThreads == NULL;
    if (setThreads) setenv("OPENBLAS_NUM_THREADS", "1", 1);
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
    if (setEnv) unsetenv("OPENBLAS_CORETYPE");
    if (setThreads) unsetenv("OPENBLAS_NUM_THREADS");
    if (h) {
        g_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
        g_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
        g_corename = (str_fn)dlsym(h, "openblas_get_corename");
        g_config = (str_fn)dlsym(h, "openblas_get_config");
        if (!g_sgemm) g_set_threads = NULL;
    }
    if (g_sgemm && g_corename) snprintf(g_kernel, sizeof g_kernel, "%s", g_corename());
    g_threads = available_cpus();
    // adamant owns parallelism: it splits work across its own threads, and every GEMM call runs
    // single-threaded inside OpenBLAS, so a multi-threaded host is never oversubscribed.
    if (g_set_threads) g_set_threads(1);
}

int abk_init(void) {
    pthread_once(&g_once, load_once);
    return g_sgemm != NULL;
}

void abk_set_threads(int n) {
    abk_init();
    if (n <= 0) n = available_cpus();
    g_threads = n;
}

int abk_get_threads(void) {
    abk_init();
    return g_threads;
}

const char *abk_kernel(void) {
    abk_init();
    return g_kernel;
}

const char *abk_info(void) {
    abk_init();
    abk_cpu cpu;
    abk_cpu_features(&cpu);
    pthread_mutex_lock(&g_info_lock);
    snprintf(g_info, sizeof g_info,
             "blas=%s kernel=%s conv3x3=%s threads=%d (adamant-managed; BLAS calls single-threaded) cpu=%s family=%d model=%d avx2=%d fma=%d avx512=%d os_avx512=%d",
             g_sgemm ? (g_config ? g_config() : "OpenBLAS") : "portable (OpenBLAS not found)", g_kernel, g_conv_variant, g_threads,
             cpu.vendor, cpu.family, cpu.model, cpu.avx2, cpu.fma, cpu.avx512, cpu.os_avx512);
    pthread_mutex_unlock(&g_info_lock);
    return g_info;
}

// Portable fallback, only used when OpenBLAS is missing.
static void naive_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < n; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (int p = 0; p < k; p++) {
            float av = alpha * (ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
            if (av == 0.0f) continue;
            if (!tb) {
                const float *bp = b + (size_t)p * ldb;
                for (int j = 0; j < n; j++) ci[j] += av * bp[j];
            } else {
                for (int j = 0; j < n; j++) ci[j] += av * b[(size_t)j * ldb + p];
            }
        }
    }
}

void abk_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
               int ldb, float beta, float *c, int ldc) {
    abk_init();
    if (m <= 0 || n <= 0) return;
    if (g_sgemm) {
        // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
        g_sgemm(101, trans_a ? 112 : 111, trans_b ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
        naive_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
}
