// ab_builds — two builds of libadamant in one process, their calls alternated: is a change faster?
//
// On a shared machine the speed of the same build drifts by 10-15 % from one minute to the next,
// so two builds timed one after the other (or in alternating processes) differ by as much as most
// kernel changes. Here both libraries are loaded with dlopen (RTLD_LOCAL: each keeps its own Swift
// runtime, thread pool and buffers), load the same model, and take turns on the same input, the
// order swapped every iteration; each iteration gives one ratio B / A from two calls a few
// milliseconds apart, so a drift of the machine affects both sides of a pair alike. It prints the
// medians and the median [quartiles] of the per-pair ratios, and whether both builds returned the
// same bits (logits, or input gradients with `g`). Run a build against a copy of itself first: its
// ratio (about 1.00) and quartiles show how much this machine's noise leaves.
//
//   cc -O2 benchmarks/ab/ab_builds.c -ldl -o /tmp/ab_builds
//   /tmp/ab_builds old/libadamant.so new/libadamant.so model.onnx [threads=2] [iterations=30] [batch=1] [p|g]
//
// Only the public C ABI (include/adamant.h) is used, resolved per library with dlsym.
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../include/adamant.h"

typedef struct {
    void *handle;
    // (the header's own declarations give the types: a signature change cannot go unnoticed here)
    __typeof__(&adm_set_num_threads) set_num_threads;
    __typeof__(&adm_model_load) model_load;
    __typeof__(&adm_model_input_shape) model_input_shape;
    __typeof__(&adm_model_num_classes) model_num_classes;
    __typeof__(&adm_context_create) context_create;
    __typeof__(&adm_predict) predict;
    __typeof__(&adm_gradient) gradient;
    __typeof__(&adm_last_error) last_error;
    adm_model *model;
    adm_context *context;
} build;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *need(void *handle, const char *path, const char *name) {
    void *p = dlsym(handle, name);
    if (!p) {
        fprintf(stderr, "ab_builds: %s has no %s\n", path, name);
        exit(2);
    }
    return p;
}

static void open_build(build *b, const char *path, const char *model, size_t threads) {
    b->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!b->handle) {
        fprintf(stderr, "ab_builds: %s\n", dlerror());
        exit(2);
    }
    b->set_num_threads = need(b->handle, path, "adm_set_num_threads");
    b->model_load = need(b->handle, path, "adm_model_load");
    b->model_input_shape = need(b->handle, path, "adm_model_input_shape");
    b->model_num_classes = need(b->handle, path, "adm_model_num_classes");
    b->context_create = need(b->handle, path, "adm_context_create");
    b->predict = need(b->handle, path, "adm_predict");
    b->gradient = need(b->handle, path, "adm_gradient");
    b->last_error = need(b->handle, path, "adm_last_error");
    if (b->set_num_threads((int32_t)threads) != ADM_OK || b->model_load(model, NULL, &b->model) != ADM_OK ||
        b->context_create(b->model, &b->context) != ADM_OK) {
        fprintf(stderr, "ab_builds: %s: %s\n", path, b->last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s LIB_A LIB_B MODEL [threads=2] [iterations=30] [batch=1] [p|g]\n", argv[0]);
        return 2;
    }
    size_t threads = argc > 4 ? (size_t)atoi(argv[4]) : 2, batch = argc > 6 ? (size_t)atoi(argv[6]) : 1;
    int iterations = argc > 5 ? atoi(argv[5]) : 30, grad = argc > 7 && argv[7][0] == 'g';
    if (threads < 1 || iterations < 1 || batch < 1) {
        fprintf(stderr, "ab_builds: threads, iterations and batch must be positive\n");
        return 2;
    }
    build b[2];
    open_build(&b[0], argv[1], argv[3], threads);
    open_build(&b[1], argv[2], argv[3], threads);
    size_t c, h, w, classes;
    if (b[0].model_input_shape(b[0].model, &c, &h, &w) != ADM_OK || b[0].model_num_classes(b[0].model, &classes) != ADM_OK) {
        fprintf(stderr, "ab_builds: %s\n", b[0].last_error());
        return 1;
    }
    size_t n = batch * c * h * w, outs = grad ? n : batch * classes;
    float *x = malloc(n * sizeof *x), *out[2] = {malloc(outs * sizeof(float)), malloc(outs * sizeof(float))};
    int64_t *labels = calloc(batch, sizeof *labels);
    double *t[2] = {malloc(iterations * sizeof(double)), malloc(iterations * sizeof(double))};
    double *ratio = malloc(iterations * sizeof(double));
    if (!x || !out[0] || !out[1] || !labels || !t[0] || !t[1] || !ratio) {
        fprintf(stderr, "ab_builds: out of memory\n");
        return 1;
    }
    srand(1);
    for (size_t i = 0; i < n; i++) x[i] = (float)rand() / (float)RAND_MAX;
    for (size_t i = 0; i < batch; i++) labels[i] = (int64_t)(i % classes);
    // Two untimed rounds (first-call work: plans, pools), then `iterations` timed ones.
    for (int it = -2; it < iterations; it++) {
        for (int k = 0; k < 2; k++) {
            int j = (it & 1) ? 1 - k : k;  // which build goes first alternates
            double t0 = now_ms();
            adm_status s = grad ? b[j].gradient(b[j].context, 0, ADM_LOSS_CE, x, n, batch, labels, batch, NULL, 0, out[j], outs)
                                : b[j].predict(b[j].context, 0, x, n, batch, out[j], outs);
            if (s != ADM_OK) {
                fprintf(stderr, "ab_builds: %s: %s\n", argv[1 + j], b[j].last_error());
                return 1;
            }
            if (it >= 0) t[j][it] = now_ms() - t0;
        }
    }
    for (int i = 0; i < iterations; i++) ratio[i] = t[1][i] / t[0][i];
    int same = memcmp(out[0], out[1], outs * sizeof(float)) == 0;
    qsort(t[0], iterations, sizeof(double), by_value);
    qsort(t[1], iterations, sizeof(double), by_value);
    qsort(ratio, iterations, sizeof(double), by_value);
    printf("%s, batch %zu, %zu threads, %d pairs: A %.3f ms, B %.3f ms (medians); B/A %.3f [%.3f-%.3f]; %s\n",
           grad ? "gradient" : "predict", batch, threads, iterations, t[0][iterations / 2], t[1][iterations / 2],
           ratio[iterations / 2], ratio[iterations / 4], ratio[(3 * iterations) / 4],
           same ? "same bits" : "results DIFFER");
    return same ? 0 : 3;
}
