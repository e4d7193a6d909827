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

void akn_mean_planes(const float *x, size_t planes, size_t inner, float *y) {
    for (size_t p = 0; p < planes; p++) {
        const float *s = x + p * inner;
        // 16 running sums (one per lane), then added in order, then the tail: a fixed order that
        // vectorizes on every ISA and never depends on the batch.
        float acc[16] = {0};
        size_t i = 0;
        for (; i + 16 <= inner; i += 16)
            for (int l = 0; l < 16; l++) acc[l] += s[i + l];
        float t = 0.0f;
        for (int l = 0; l < 16; l++) t += acc[l];
        for (; i < inner; i++) t += s[i];
        y[p] = t / (float)inner;
    }
}

long akn_first_nonfinite(const float *x, size_t n) {
    // 16 at a time: a value is NaN or infinite exactly when its exponent bits are all ones.
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        unsigned any = 0;
        for (int l = 0; l < 16; l++) {
            unsigned u;
            memcpy(&u, x + i + l, sizeof u);
            any |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (any) break;
    }
    for (; i < n; i++) {
        unsigned u;
        memcpy(&u, x + i, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) return (long)i;
    }
    return -1;
}

void akn_copy_scaled_planes(const float *src, float *dst, size_t planes, size_t inner, const float *divisors,
                            size_t channels) {
    for (size_t p = 0; p < planes; p++) {
        const float *s = src + p * inner;
        float *d = dst + p * inner;
        if (divisors) {
            float v = divisors[p % channels];
            for (size_t i = 0; i < inner; i++) d[i] = s[i] / v;
        } else {
            memcpy(d, s, inner * sizeof(float));
        }
    }
}
