// elementwise.c — small memory-bound kernels (see kernels.h).
#include "kernels.h"

void akn_relu_mask(const float *y, const float *g, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

void akn_add_inplace(float *acc, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}
