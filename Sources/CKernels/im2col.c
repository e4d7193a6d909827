// im2col.c — the adjoint of a convolution's implicit im2col (gemm.h: akn_conv_b, akn_col2im); the
// forward im2col is never materialized: the GEMM's packing gathers it (gemm_tile.inc, pack_conv).
#include "gemm.h"

#include <string.h>

#include "backend.h"
#include "simd.h"

enum { TABLE_MAX = 4096 };  // taps x positions of a small layer's offset table (16 KB on the stack)

/// One channel's columns added into its plane, rows [rlo, rhi) only: the loop over taps, output rows
/// and the run of output columns whose input lies inside the row. Compiled once per instruction
/// set. A stride-2 run goes 16 columns at a time: 32 input floats loaded, the 16 terms added to
/// their even lanes, the odd lanes stored back untouched (a shuffle, not an add of zero, so even a
/// -0 keeps its sign), only where all 32 lie inside the row (the next row may be another thread's).
/// Every element receives the same terms in the same order as one at a time.
#define ADD_CHANNEL_BODY                                                                                 \
    {                                                                                                    \
        int taps = g->kh * g->kw;                                                                        \
        for (int t = 0; t < taps; t++) {                                                                 \
            int ki = t / g->kw, kj = t % g->kw;                                                          \
            const float *src = cs + (size_t)t * ldc;                                                     \
            int joff = kj * g->dw - g->pl;                                                               \
            /* Output columns whose input column lies in [0, w): [lo, hi). */                           \
            int lo = joff < 0 ? (-joff + g->sw - 1) / g->sw : 0;                                         \
            if (lo > g->ow) lo = g->ow;                                                                  \
            int hi = g->w - 1 - joff < 0 ? lo : (g->w - 1 - joff) / g->sw + 1;                           \
            if (hi > g->ow) hi = g->ow;                                                                  \
            if (hi < lo) hi = lo;                                                                        \
            for (int o = 0; o < oh; o++) {                                                               \
                int ih = o * g->sh + ki * g->dh - g->pt;                                                 \
                if (ih < rlo || ih >= rhi) continue;                                                     \
                float *dst = xc + (size_t)ih * g->w;                                                     \
                const float *s = src + (size_t)o * g->ow;                                                \
                if (g->sw == 1) {                                                                        \
                    float *d = dst + joff;                                                               \
                    for (int q = lo; q < hi; q++) d[q] += s[q];                                          \
                } else if (g->sw == 2) {                                                                 \
                    int q = lo, iw = lo * 2 + joff;                                                      \
                    for (; q + 16 <= hi && iw + 32 <= g->w; q += 16, iw += 32) {                         \
                        akn_v16 sv, d0, d1;                                                              \
                        memcpy(&sv, s + q, sizeof sv);                                                   \
                        memcpy(&d0, dst + iw, sizeof d0);                                                \
                        memcpy(&d1, dst + iw + 16, sizeof d1);                                           \
                        akn_v16 a0 = d0 + __builtin_shufflevector(sv, sv, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7); \
                        akn_v16 a1 = d1 + __builtin_shufflevector(sv, sv, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, \
                                                              14, 14, 15, 15);                           \
                        d0 = __builtin_shufflevector(a0, d0, 0, 17, 2, 19, 4, 21, 6, 23, 8, 25, 10, 27, 12, 29, 14, 31); \
                        d1 = __builtin_shufflevector(a1, d1, 0, 17, 2, 19, 4, 21, 6, 23, 8, 25, 10, 27, 12, 29, 14, 31); \
                        memcpy(dst + iw, &d0, sizeof d0);                                                \
                        memcpy(dst + iw + 16, &d1, sizeof d1);                                           \
                    }                                                                                    \
                    for (; q < hi; q++, iw += 2) dst[iw] += s[q];                                        \
                } else {                                                                                 \
                    int iw = lo * g->sw + joff;                                                          \
                    for (int q = lo; q < hi; q++, iw += g->sw) dst[iw] += s[q];                          \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

#define ADD_CHANNEL_ARGS const float *cs, long ldc, const akn_conv_b *g, int oh, float *xc, int rlo, int rhi

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void add_channel_avx512(ADD_CHANNEL_ARGS) ADD_CHANNEL_BODY

__attribute__((target("avx2,fma")))
static void add_channel_avx2(ADD_CHANNEL_ARGS) ADD_CHANNEL_BODY

static void add_channel_portable(ADD_CHANNEL_ARGS) ADD_CHANNEL_BODY

typedef void (*add_channel_fn)(ADD_CHANNEL_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const add_channel_fn g_add_channel[3] = {add_channel_portable, add_channel_avx2, add_channel_avx512};

void akn_col2im(const float *col, long ldc, long col_sample, const akn_conv_b *g, int oh, int c, int bands, int r0,
                int r1, long u0, long u1, float *x, long x_sample) {
    if (c <= 0 || bands <= 0 || u0 >= u1) return;
    if (r0 < 0) r0 = 0;
    if (r1 > g->h) r1 = g->h;
    int taps = g->kh * g->kw, ohw = oh * g->ow;
    long plane = (long)g->h * g->w;
    // A small layer (a few positions per tap, as at 4x4 or 2x2): one table of each tap's input offset
    // per position (-1 in the padding), built once per call, so a channel is a plain indexed loop
    // instead of the per-row bounds arithmetic (which costs as much as the GEMM there). Same order
    // of terms: taps, then positions.
    int table[TABLE_MAX];
    int use_table = bands == 1 && (long)taps * ohw <= TABLE_MAX;
    if (use_table)
        for (int t = 0; t < taps; t++)
            for (int pos = 0; pos < ohw; pos++) {
                int iy = (pos / g->ow) * g->sh - g->pt + (t / g->kw) * g->dh;
                int ix = (pos % g->ow) * g->sw - g->pl + (t % g->kw) * g->dw;
                table[t * ohw + pos] = (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w) ? iy * g->w + ix : -1;
            }
    for (long u = u0; u < u1; u++) {
        long s = u / ((long)c * bands);
        int ci = (int)((u / bands) % c), band = (int)(u % bands);
        const float *cs = col + s * col_sample + (size_t)ci * taps * ldc;
        float *xc = x + s * x_sample + ci * plane;
        if (use_table) {
            for (int t = 0; t < taps; t++) {
                const float *src = cs + (size_t)t * ldc;
                const int *tb = table + t * ohw;
                for (int pos = 0; pos < ohw; pos++)
                    if (tb[pos] >= 0) xc[tb[pos]] += src[pos];
            }
        } else {
            g_add_channel[abk_isa()](cs, ldc, g, oh, xc, r0 + (int)((long)(r1 - r0) * band / bands),
                                     r0 + (int)((long)(r1 - r0) * (band + 1) / bands));
        }
    }
}

// ---- A strided 1x1 convolution's input, subsampled (and its adjoint) ----

/// out[p][i][j] = x[p][i * sh][j * sw] over planes [p0, p1): a stride-2 row 16 outputs at a time
/// (two loads, the even lanes kept), only where all 32 inputs lie inside the row.
#define SUBSAMPLE_BODY                                                                                   \
    {                                                                                                    \
        for (long p = p0; p < p1; p++) {                                                                 \
            const float *xp = x + p * (long)h * w;                                                       \
            float *op = out + p * (long)oh * ow;                                                         \
            for (int i = 0; i < oh; i++) {                                                               \
                const float *src = xp + (long)i * sh * w;                                                \
                float *dst = op + (long)i * ow;                                                          \
                int j = 0;                                                                               \
                if (sw == 1) {                                                                           \
                    memcpy(dst, src, sizeof(float) * (size_t)ow);                                        \
                    continue;                                                                            \
                }                                                                                        \
                if (sw == 2)                                                                             \
                    for (; j + 16 <= ow && 2 * j + 32 <= w; j += 16) {                                   \
                        akn_v16 a, b;                                                                    \
                        memcpy(&a, src + 2 * j, sizeof a);                                               \
                        memcpy(&b, src + 2 * j + 16, sizeof b);                                          \
                        akn_v16 e = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30); \
                        memcpy(dst + j, &e, sizeof e);                                                   \
                    }                                                                                    \
                for (; j < ow; j++) dst[j] = src[(long)j * sw];                                          \
            }                                                                                            \
        }                                                                                                \
    }

/// dx[p] = 0 but dx[p][i * sh][j * sw] = g[p][i][j] (the exact bits), over planes [p0, p1).
#define SUBSAMPLE_ADJOINT_BODY                                                                           \
    {                                                                                                    \
        for (long p = p0; p < p1; p++) {                                                                 \
            const float *gp = g + p * (long)oh * ow;                                                     \
            float *xp = dx + p * (long)h * w;                                                            \
            memset(xp, 0, sizeof(float) * (size_t)h * (size_t)w);                                        \
            for (int i = 0; i < oh; i++) {                                                               \
                const float *src = gp + (long)i * ow;                                                    \
                float *dst = xp + (long)i * sh * w;                                                      \
                int j = 0;                                                                               \
                if (sw == 2)                                                                             \
                    for (; j + 16 <= ow && 2 * j + 32 <= w; j += 16) {                                   \
                        akn_v16 s, z = {0};                                                              \
                        memcpy(&s, src + j, sizeof s);                                                   \
                        akn_v16 lo = __builtin_shufflevector(s, z, 0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16); \
                        akn_v16 hi = __builtin_shufflevector(s, z, 8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16); \
                        memcpy(dst + 2 * j, &lo, sizeof lo);                                             \
                        memcpy(dst + 2 * j + 16, &hi, sizeof hi);                                        \
                    }                                                                                    \
                for (; j < ow; j++) dst[(long)j * sw] = src[j];                                          \
            }                                                                                            \
        }                                                                                                \
    }

#define SUBSAMPLE_ARGS const float *restrict x, int h, int w, int sh, int sw, int oh, int ow, long p0, long p1, \
                       float *restrict out
#define SUBSAMPLE_ADJOINT_ARGS const float *restrict g, int h, int w, int sh, int sw, int oh, int ow, long p0, \
                               long p1, float *restrict dx

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void subsample_avx512(SUBSAMPLE_ARGS) SUBSAMPLE_BODY
__attribute__((target("avx2,fma")))
static void subsample_avx2(SUBSAMPLE_ARGS) SUBSAMPLE_BODY
static void subsample_portable(SUBSAMPLE_ARGS) SUBSAMPLE_BODY
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void subsample_adjoint_avx512(SUBSAMPLE_ADJOINT_ARGS) SUBSAMPLE_ADJOINT_BODY
__attribute__((target("avx2,fma")))
static void subsample_adjoint_avx2(SUBSAMPLE_ADJOINT_ARGS) SUBSAMPLE_ADJOINT_BODY
static void subsample_adjoint_portable(SUBSAMPLE_ADJOINT_ARGS) SUBSAMPLE_ADJOINT_BODY

typedef void (*subsample_fn)(SUBSAMPLE_ARGS);
typedef void (*subsample_adjoint_fn)(SUBSAMPLE_ADJOINT_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const subsample_fn g_subsample[3] = {subsample_portable, subsample_avx2, subsample_avx512};
static const subsample_adjoint_fn g_subsample_adjoint[3] = {subsample_adjoint_portable, subsample_adjoint_avx2,
                                                            subsample_adjoint_avx512};

void akn_subsample(const float *x, int h, int w, int sh, int sw, int oh, int ow, long p0, long p1, float *out) {
    if (sh < 1 || sw < 1 || oh < 1 || ow < 1 || (long)(oh - 1) * sh >= h || (long)(ow - 1) * sw >= w) return;
    g_subsample[abk_isa()](x, h, w, sh, sw, oh, ow, p0, p1, out);
}

void akn_subsample_adjoint(const float *g, int h, int w, int sh, int sw, int oh, int ow, long p0, long p1, float *dx) {
    if (sh < 1 || sw < 1 || oh < 1 || ow < 1 || (long)(oh - 1) * sh >= h || (long)(ow - 1) * sw >= w) return;
    g_subsample_adjoint[abk_isa()](g, h, w, sh, sw, oh, ow, p0, p1, dx);
}
