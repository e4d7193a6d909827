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

void akn_pgd_linf_step(float *adv, const float *x0, const float *g, size_t n, float step, float eps, float lo, float hi) {
    // Swift's max(v, a) is (a >= v ? a : v) and min(v, b) is (b < v ? b : v): the same selects here,
    // so the result is the one the scalar Swift loop gave, bit for bit (step * s is exact).
    for (size_t i = 0; i < n; i++) {
        float gv = g[i];
        float s = gv > 0 ? 1.0f : (gv < 0 ? -1.0f : 0.0f);
        float v = adv[i] + step * s;
        float a = x0[i] - eps, b = x0[i] + eps;
        v = a >= v ? a : v;
        v = b < v ? b : v;
        v = lo >= v ? lo : v;
        v = hi < v ? hi : v;
        adv[i] = v;
    }
}
