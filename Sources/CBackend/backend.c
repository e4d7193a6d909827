// backend.c — see backend.h.
#define _GNU_SOURCE
#include "backend.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

// ---- Instruction-set level: detected once, capped by ADAMANT_ISA or abk_set_isa -------------------
static const char *const g_isa_names[] = {"scalar", "avx2", "avx512"};
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;
static int g_isa_supported = ABK_ISA_SCALAR;
static volatile int g_isa = ABK_ISA_SCALAR;
static char g_isa_error[256];

const char *abk_isa_name(int level) {
    return level >= ABK_ISA_SCALAR && level <= ABK_ISA_AVX512 ? g_isa_names[level] : "unknown";
}

int abk_isa_parse(const char *name) {
    if (!name) return -1;
    for (int i = ABK_ISA_SCALAR; i <= ABK_ISA_AVX512; i++)
        if (strcasecmp(name, g_isa_names[i]) == 0) return i;
    if (strcasecmp(name, "auto") == 0 || name[0] == 0) return ABK_ISA_AUTO;
    return -1;
}

static void isa_once(void) {
    abk_cpu cpu;
    abk_cpu_features(&cpu);
    if (cpu.avx512 && cpu.fma && cpu.os_avx512) g_isa_supported = ABK_ISA_AVX512;
    else if (cpu.avx2 && cpu.fma && cpu.os_avx) g_isa_supported = ABK_ISA_AVX2;
    g_isa = g_isa_supported;
    const char *env = getenv("ADAMANT_ISA");
    if (env && env[0]) {
        int want = abk_isa_parse(env);
        if (want == -1)
            snprintf(g_isa_error, sizeof g_isa_error,
                     "ADAMANT_ISA='%.40s' is not an instruction set (use avx512, avx2, scalar or auto)", env);
        else if (want > g_isa_supported)
            snprintf(g_isa_error, sizeof g_isa_error,
                     "ADAMANT_ISA=%s, but this CPU and OS support at most %s (CPUID and XCR0)", g_isa_names[want],
                     g_isa_names[g_isa_supported]);
        else if (want != ABK_ISA_AUTO)
            g_isa = want;
    }
}

int abk_isa_supported(void) { pthread_once(&g_isa_once, isa_once); return g_isa_supported; }
int abk_isa(void) { pthread_once(&g_isa_once, isa_once); return g_isa; }
const char *abk_isa_error(void) { pthread_once(&g_isa_once, isa_once); return g_isa_error[0] ? g_isa_error : NULL; }

int abk_set_isa(int level) {
    pthread_once(&g_isa_once, isa_once);
    if (level == ABK_ISA_AUTO) level = g_isa_supported;
    if (level < ABK_ISA_SCALAR || level > g_isa_supported) return -1;
    g_isa = level;
    g_isa_error[0] = 0;
    return 0;
}

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
    // The GEMM kernel follows adamant's instruction-set level: an explicit ADAMANT_ISA (or an
    // abk_set_isa before the first GEMM) decides; otherwise a user's own OPENBLAS_CORETYPE wins.
    static const char *const cores[] = {"Prescott", "Haswell", "SkylakeX"};
    int level = abk_isa();
    const char *wanted = cores[level];
    const char *user = getenv("OPENBLAS_CORETYPE");
    const char *isaEnv = getenv("ADAMANT_ISA");
    int explicitIsa = (abk_isa_parse(isaEnv) >= 0 && abk_isa_error() == NULL) || level != abk_isa_supported();
    int setEnv = explicitIsa || user == NULL || user[0] == 0;
    char saved[64] = "";
    if (setEnv && user) snprintf(saved, sizeof saved, "%s", user);
    if (setEnv) setenv("OPENBLAS_CORETYPE", wanted, 1);
    // OpenBLAS reads OPENBLAS_NUM_THREADS when it starts its pool: start it small, then set explicitly.
    const char *userThreads = getenv("OPENBLAS_NUM_THREADS");
    int setThreads = userThreads == NULL;
    if (setThreads) setenv("OPENBLAS_NUM_THREADS", "1", 1);
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
    if (setEnv) { if (saved[0]) setenv("OPENBLAS_CORETYPE", saved, 1); else unsetenv("OPENBLAS_CORETYPE"); }
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
             "isa=%s (up to %s) blas=%s kernel=%s threads=%d (adamant-managed; BLAS calls single-threaded) cpu=%s family=%d model=%d avx2=%d fma=%d avx512=%d os_avx512=%d",
             abk_isa_name(abk_isa()), abk_isa_name(abk_isa_supported()),
             g_sgemm ? (g_config ? g_config() : "OpenBLAS") : "portable (OpenBLAS not found)", g_kernel, g_threads,
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

/// The probe's block escapes through this volatile pointer: a malloc whose only use is free() may
/// otherwise be folded away by the optimizer as if it had succeeded.
static void *volatile g_probe;

int abk_can_allocate(size_t bytes) {
    g_probe = malloc(bytes);
    if (g_probe == NULL) return 0;
    free(g_probe);
    g_probe = NULL;
    return 1;
}

void abk_trim_heap(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
