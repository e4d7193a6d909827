// elementwise.c — small memory-bound kernels (see kernels.h).
#include "kernels.h"

void akn_relu_mask(const float *restrict y, const float *restrict g, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = y[i] > 0.0f ? g[i] : 0.0f;
}
