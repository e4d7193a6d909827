// gemm_bench.c — adamant's GEMM (Sources/CKernels/gemm.h) against OpenBLAS's sgemm, one thread,
// on the shapes of ResNet layers, on every instruction-set path this machine has. Prints GFLOP/s
// and the largest difference. Build and run with benchmarks/kernels/run.sh.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "gemm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    // (m, n, k): 1x1 convolutions of ResNet-50 stages 1-4 at batch 1, a 3x3 one by im2col, a stem.
    static const int shapes[][3] = {{256, 3136, 64},  {64, 3136, 256},  {128, 784, 512}, {1024, 196, 256},
                                    {256, 196, 1024}, {2048, 49, 512},  {512, 49, 4608}, {64, 12544, 147}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    abk_init();
    printf("%s\n", abk_info());
    printf("%-8s %6s %6s %6s %12s %12s %8s %10s\n", "isa", "m", "n", "k", "adamant", "openblas", "ratio", "max |diff|");
    for (int level = abk_isa_supported(); level >= ABK_ISA_SCALAR; level--) {
        abk_set_isa(level);
        for (int s = 0; s < nshapes; s++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
            float *c = malloc(sizeof(float) * m * n), *c2 = malloc(sizeof(float) * m * n);
            for (int i = 0; i < m * k; i++) a[i] = rand() / (float)RAND_MAX - 0.5f;
            for (int i = 0; i < k * n; i++) b[i] = rand() / (float)RAND_MAX - 0.5f;
            float *pa = malloc(sizeof(float) * akn_gemm_packed_a_size(m, k));
            akn_gemm_pack_a(a, k, 0, m, k, pa);
            float *scratch = malloc(sizeof(float) * akn_gemm_scratch_size(k, n));
            akn_gemm_cols io = {.per = n, .b = b, .ldb = n, .c = c, .ldc = n};
            double t, t0, mine, theirs;
            int reps = 0;
            akn_gemm(m, n, k, pa, &io, 0, m, 0, n, scratch);
            t0 = now();
            do { akn_gemm(m, n, k, pa, &io, 0, m, 0, n, scratch); reps++; } while ((t = now() - t0) < 0.3);
            mine = 2.0 * m * n * k * reps / t / 1e9;
            abk_sgemm(0, 0, m, n, k, 1, a, k, b, n, 0, c2, n);
            reps = 0;
            t0 = now();
            do { abk_sgemm(0, 0, m, n, k, 1, a, k, b, n, 0, c2, n); reps++; } while ((t = now() - t0) < 0.3);
            theirs = 2.0 * m * n * k * reps / t / 1e9;
            double err = 0;
            for (int i = 0; i < m * n; i++) err = fmax(err, fabs((double)c[i] - c2[i]));
            printf("%-8s %6d %6d %6d %8.1f GF/s %8.1f GF/s %7.2fx %10.2e\n", abk_isa_name(level), m, n, k, mine, theirs,
                   mine / theirs, err);
            free(a); free(b); free(c); free(c2); free(pa); free(scratch);
        }
    }
    printf("(OpenBLAS runs its own kernel, %s, chosen at load; adamant's path changes per row group)\n", abk_kernel());
    return 0;
}
