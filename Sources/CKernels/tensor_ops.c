// tensor_ops.c — softmax, transposes and elementwise arithmetic (see tensor_ops.h).
#include "tensor_ops.h"

#include <math.h>
#include <string.h>

#include "backend.h"
#include "simd.h"

static inline akn_v8 load8(const float *p) { akn_v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, akn_v8 v) { memcpy(p, &v, sizeof v); }
static inline akn_v8 splat(float s) { return (akn_v8){s, s, s, s, s, s, s, s}; }
static inline akn_v8 sel(akn_vi8 mask, akn_v8 a, akn_v8 b) { return (akn_v8)(((akn_vi8)a & mask) | ((akn_vi8)b & ~mask)); }

// exp(x) for x <= 0 and x > -inf mostly (softmax's shifted logits); Cephes expf's reduction and
// polynomial, 2^n from the exponent bits. Inputs are clamped to [-87.3, 88.3] (NaN stays NaN).
static inline akn_v8 exp8(akn_v8 x) {
    const akn_v8 hi = splat(88.3762626647949f), lo = splat(-87.3365478515625f);
    x = sel(x > hi, hi, sel(x < lo, lo, x));  // NaN compares false: stays NaN
    const akn_v8 magic = splat(12582912.0f);  // 1.5 * 2^23: round to nearest
    akn_v8 t = x * splat(1.44269504088896341f) + magic;
    akn_v8 n = t - magic;
    akn_v8 r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    akn_v8 p = splat(1.9875691500E-4f);
    p = p * r + splat(1.3981999507E-3f);
    p = p * r + splat(8.3334519073E-3f);
    p = p * r + splat(4.1665795894E-2f);
    p = p * r + splat(1.6666665459E-1f);
    p = p * r + splat(5.0000001201E-1f);
    akn_v8 y = p * r * r + r + splat(1.0f);
    akn_vi8 e = (__builtin_convertvector(n, akn_vi8) + 127) << 23;
    return y * (akn_v8)e;
}

static inline float exp1(float x) {
    float in[8] = {x, 0, 0, 0, 0, 0, 0, 0}, out[8];
    store8(out, exp8(load8(in)));
    return out[0];
}

static inline float hmax8(akn_v8 v) {
    float m = v[0];
    for (int l = 1; l < 8; l++) m = (v[l] > m || m != m) ? v[l] : m;
    return m;
}

static inline float hsum8(akn_v8 v) {
    float s = 0.0f;
    for (int l = 0; l < 8; l++) s += v[l];
    return s;
}

void akn_softmax_rows(const float *x, float *y, size_t rows, size_t len) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        size_t i = 0;
        float m = -INFINITY;
        if (len >= 8) {
            akn_v8 mv = load8(xr);
            for (i = 8; i + 8 <= len; i += 8) {
                akn_v8 v = load8(xr + i);
                mv = sel(v > mv, v, mv);
            }
            m = hmax8(mv);
        }
        for (; i < len; i++) m = (xr[i] > m || m != m) ? xr[i] : m;
        if (m == -INFINITY) m = 0.0f;  // a row of -inf: NaN as exp(-inf + inf) would give, via 0/0
        akn_v8 sv = splat(0.0f), mv = splat(m);
        for (i = 0; i + 8 <= len; i += 8) {
            akn_v8 e = exp8(load8(xr + i) - mv);
            store8(yr + i, e);
            sv += e;
        }
        float s = hsum8(sv);
        for (; i < len; i++) { float e = exp1(xr[i] - m); yr[i] = e; s += e; }
        float inv = 1.0f / s;
        akn_v8 iv = splat(inv);
        for (i = 0; i + 8 <= len; i += 8) store8(yr + i, load8(yr + i) * iv);
        for (; i < len; i++) yr[i] *= inv;
    }
}

void akn_softmax_backward_rows(const float *y, const float *g, float *dx, size_t rows, size_t len) {
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * len, *gr = g + r * len;
        float *dr = dx + r * len;
        akn_v8 dv = splat(0.0f);
        size_t i = 0;
        for (; i + 8 <= len; i += 8) dv += load8(yr + i) * load8(gr + i);
        float d = hsum8(dv);
        for (; i < len; i++) d += yr[i] * gr[i];
        akn_v8 d8 = splat(d);
        for (i = 0; i + 8 <= len; i += 8) store8(dr + i, load8(yr + i) * (load8(gr + i) - d8));
        for (; i < len; i++) dr[i] = yr[i] * (gr[i] - d);
    }
}

void akn_transpose_block(const float *src, long lds, float *dst, long ldd, size_t rows, size_t cols) {
    for (size_t j0 = 0; j0 < cols; j0 += 8) {
        size_t j1 = j0 + 8 < cols ? j0 + 8 : cols;
        for (size_t i0 = 0; i0 < rows; i0 += 8) {
            size_t i1 = i0 + 8 < rows ? i0 + 8 : rows;
            for (size_t i = i0; i < i1; i++)
                for (size_t j = j0; j < j1; j++) dst[i * ldd + j] = src[j * lds + i];
        }
    }
}

// x op s and a op b, elementwise: one variant per instruction-set level (the vector width only;
// every element is the same single IEEE operation, so the level changes no result: KernelTests).
// One thread, 128 CIFAR images divided by a per-channel std (393K floats): 61 -> 26 us on AVX-512.
#define SCALAR_OP_BODY                                                                              \
    {                                                                                               \
        switch (op) {                                                                               \
        case 0: for (size_t i = 0; i < n; i++) y[i] = x[i] + s; break;                              \
        case 1: for (size_t i = 0; i < n; i++) y[i] = x[i] - s; break;                              \
        case 2: for (size_t i = 0; i < n; i++) y[i] = x[i] * s; break;                              \
        case 3: for (size_t i = 0; i < n; i++) y[i] = x[i] / s; break;                              \
        case 4: for (size_t i = 0; i < n; i++) y[i] = s - x[i]; break;                              \
        default: for (size_t i = 0; i < n; i++) y[i] = s / x[i]; break;                             \
        }                                                                                           \
    }
#define BINARY_OP_BODY                                                                              \
    {                                                                                               \
        switch (op) {                                                                               \
        case 0: for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i]; break;                           \
        case 1: for (size_t i = 0; i < n; i++) y[i] = a[i] - b[i]; break;                           \
        case 2: for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i]; break;                           \
        default: for (size_t i = 0; i < n; i++) y[i] = a[i] / b[i]; break;                          \
        }                                                                                           \
    }
#define AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define AVX2_TARGET __attribute__((target("avx2")))
AVX512_TARGET static void scalar_op_avx512(const float *x, float s, float *y, size_t n, int op) SCALAR_OP_BODY
AVX2_TARGET static void scalar_op_avx2(const float *x, float s, float *y, size_t n, int op) SCALAR_OP_BODY
static void scalar_op_portable(const float *x, float s, float *y, size_t n, int op) SCALAR_OP_BODY
AVX512_TARGET static void binary_op_avx512(const float *a, const float *b, float *y, size_t n, int op) BINARY_OP_BODY
AVX2_TARGET static void binary_op_avx2(const float *a, const float *b, float *y, size_t n, int op) BINARY_OP_BODY
static void binary_op_portable(const float *a, const float *b, float *y, size_t n, int op) BINARY_OP_BODY

typedef void (*scalar_op_fn)(const float *, float, float *, size_t, int);
typedef void (*binary_op_fn)(const float *, const float *, float *, size_t, int);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const scalar_op_fn g_scalar_op[3] = {scalar_op_portable, scalar_op_avx2, scalar_op_avx512};
static const binary_op_fn g_binary_op[3] = {binary_op_portable, binary_op_avx2, binary_op_avx512};

void akn_scalar_op(const float *x, float s, float *y, size_t n, int op) { g_scalar_op[abk_isa()](x, s, y, n, op); }

void akn_binary_op(const float *a, const float *b, float *y, size_t n, int op) { g_binary_op[abk_isa()](a, b, y, n, op); }

double akn_dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

double akn_sum(const float *a, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i];
    return s;
}
