/*
 * backend.h — adamant's compute backend: CPU feature detection and GEMM.
 *
 * GEMM comes from OpenBLAS, loaded with dlopen so that adamant can choose
 * its kernel before OpenBLAS initialises: Debian's DYNAMIC_ARCH build falls
 * back to slow Prescott kernels on CPU models it does not know. When the CPU
 * reports AVX-512 (F, BW, DQ, VL) *and* the OS enables the ZMM state (XCR0
 * bits 1,2,5,6,7), adamant asks for the SkylakeX kernels; with AVX2+FMA (and
 * the YMM state enabled) for Haswell ones. A user's own OPENBLAS_CORETYPE
 * always wins. If OpenBLAS cannot be loaded a portable (slow) GEMM is used
 * and abk_info() says so.
 */
#ifndef ADAMANT_BACKEND_H
#define ADAMANT_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/** CPU facts from CPUID and XGETBV. */
typedef struct abk_cpu {
    char vendor[13];
    int family, model;
    int avx2, fma, avx512;  /**< CPUID feature bits (avx512 = F+BW+DQ+VL) */
    int os_avx, os_avx512;  /**< XCR0 says the OS saves YMM / ZMM state */
} abk_cpu;

/** Reads the CPU's features (cheap; no side effects). */
void abk_cpu_features(abk_cpu *out);

/**
 * Instruction-set levels of adamant's kernel paths. The level in force is the highest the CPU
 * *and* the OS support (CPUID feature bits and XCR0 state), capped by the environment variable
 * ADAMANT_ISA (avx512, avx2, scalar or auto) read once at first use, or by abk_set_isa. The
 * OpenBLAS kernel is chosen from the level in force when OpenBLAS is first loaded (SkylakeX,
 * Haswell, Prescott); it cannot change afterwards within a process.
 */
enum { ABK_ISA_AUTO = -2, ABK_ISA_SCALAR = 0, ABK_ISA_AVX2 = 1, ABK_ISA_AVX512 = 2 };

/** Highest level this CPU and OS support. */
int abk_isa_supported(void);
/** Level in force. */
int abk_isa(void);
/** Sets the level (ABK_ISA_AUTO = the highest supported). Returns 0, or -1 if the CPU lacks it. */
int abk_set_isa(int level);
/** "scalar", "avx2", "avx512" ("unknown" otherwise). */
const char *abk_isa_name(int level);
/** Level named by `name` (case-insensitive; "auto" or "" = ABK_ISA_AUTO), or -1. */
int abk_isa_parse(const char *name);
/** Why ADAMANT_ISA could not be honoured (unknown name, or a level the CPU lacks), or NULL. */
const char *abk_isa_error(void);

/** Loads OpenBLAS once (thread-safe). Returns 1 if OpenBLAS is in use, 0 for the fallback GEMM. */
int abk_init(void);

/** Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C. */
void abk_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc);

/**
 * Threads adamant splits its work over (0 = one per available CPU, the default). OpenBLAS itself is
 * kept single-threaded: adamant runs independent GEMMs (batch chunks, column blocks) on its threads.
 */
void abk_set_threads(int n);
int abk_get_threads(void);

/** A part of a parallel job: part `part` of `parts`. */
typedef void (*abk_task_fn)(void *ctx, int part, int parts);

/**
 * Runs fn(ctx, i, parts) for i in [0, parts) on adamant's persistent worker threads (part 0 on the
 * caller) and returns when all are done. Called from inside a job, or while another thread's job
 * runs, it runs the parts itself, one after another.
 */
void abk_parallel(int parts, abk_task_fn fn, void *ctx);

/**
 * Runs fn(ctx, i, parts) for i in [0, parts) on up to `threads` threads (the caller and
 * threads - 1 workers), each taking the next unclaimed part until none is left: a thread the host
 * slows down (another process on its core) takes fewer parts instead of holding the others up.
 */
void abk_parallel_units(int threads, int parts, abk_task_fn fn, void *ctx);

/**
 * Whether malloc can hand out `bytes` now (the block is freed at once): a probe before an
 * allocation whose failure would otherwise abort (Swift arrays trap when the heap refuses).
 */
int abk_can_allocate(size_t bytes);

/** Returns the heap's free pages to the OS (after loading, whose transient copies glibc would keep). */
void abk_trim_heap(void);

/** GEMM kernel name as the BLAS reports it (e.g. "SkylakeX"), or "portable". */
const char *abk_kernel(void);

/** One-line description: library, version/config, kernel, threads, CPU features. */
const char *abk_info(void);

#ifdef __cplusplus
}
#endif
#endif
