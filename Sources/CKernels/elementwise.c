// elementwise.c — small memory-bound kernels (see kernels.h).
#include "kernels.h"

#include <string.h>

typedef float vf __attribute__((vector_size(32), aligned(4)));
typedef int vi __attribute__((vector_size(32), aligned(4)));

void akn_relu_mask(const float *y, const float *g, float *out, size_t n) {
    // 8 at a time with a bit mask (no branch on the data; out may be g).
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vf yv, gv;
        memcpy(&yv, y + i, sizeof yv);
        memcpy(&gv, g + i, sizeof gv);
        gv = (vf)((vi)gv & (vi)(yv > (vf){0}));
        memcpy(out + i, &gv, sizeof gv);
    }
    for (; i < n; i++) out[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

void akn_add_inplace(float *acc, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}
