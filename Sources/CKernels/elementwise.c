// elementwise.c — small memory-bound kernels (see kernels.h).
#include "kernels.h"

#include <string.h>

#include "backend.h"
#include "simd.h"

void akn_relu_mask(const float *y, const float *g, float *out, size_t n) {
    // 8 at a time with a bit mask (no branch on the data; out may be g).
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        akn_v8 yv, gv;
        memcpy(&yv, y + i, sizeof yv);
        memcpy(&gv, g + i, sizeof gv);
        gv = (akn_v8)((akn_vi8)gv & (akn_vi8)(yv > (akn_v8){0}));
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

// ---- A gradient pass's compact kept values: which elements are positive, one bit each ----

// One body per instruction set (the loops vectorize to compares and shifts; the same bits on all).
#define PACK_BODY                                                                                     \
    {                                                                                                 \
        size_t words = n / 64;                                                                        \
        for (size_t w = 0; w < words; w++) {                                                          \
            const float *s = x + w * 64;                                                              \
            uint64_t b = 0;                                                                           \
            for (int l = 0; l < 64; l++) b |= (uint64_t)(s[l] > 0.0f) << l;                           \
            bits[w] = b;                                                                              \
        }                                                                                             \
        if (n % 64) {                                                                                 \
            uint64_t b = 0;                                                                           \
            for (size_t l = 0; l < n % 64; l++) b |= (uint64_t)(x[words * 64 + l] > 0.0f) << l;       \
            bits[words] = b;                                                                          \
        }                                                                                             \
    }
#define UNPACK_BODY                                                                                   \
    {                                                                                                 \
        for (size_t i = 0; i < n; i++) out[i] = (bits[i >> 6] >> (i & 63)) & 1 ? 1.0f : 0.0f;         \
    }

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void pack_avx512(const float *restrict x, size_t n, uint64_t *restrict bits) PACK_BODY
__attribute__((target("avx2,fma")))
static void pack_avx2(const float *restrict x, size_t n, uint64_t *restrict bits) PACK_BODY
static void pack_portable(const float *restrict x, size_t n, uint64_t *restrict bits) PACK_BODY

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void unpack_avx512(const uint64_t *restrict bits, size_t n, float *restrict out) UNPACK_BODY
__attribute__((target("avx2,fma")))
static void unpack_avx2(const uint64_t *restrict bits, size_t n, float *restrict out) UNPACK_BODY
static void unpack_portable(const uint64_t *restrict bits, size_t n, float *restrict out) UNPACK_BODY

typedef void (*pack_fn)(const float *, size_t, uint64_t *);
typedef void (*unpack_fn)(const uint64_t *, size_t, float *);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const pack_fn g_pack[3] = {pack_portable, pack_avx2, pack_avx512};
static const unpack_fn g_unpack[3] = {unpack_portable, unpack_avx2, unpack_avx512};

void akn_pack_positive(const float *x, size_t n, uint64_t *bits) { g_pack[abk_isa()](x, n, bits); }

void akn_unpack_positive(const uint64_t *bits, size_t n, float *out) { g_unpack[abk_isa()](bits, n, out); }
