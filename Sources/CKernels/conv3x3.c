// conv3x3.c — direct 3x3 convolution for layers with few channels (see kernels.h).
#include "kernels.h"

#include <string.h>

#include "backend.h"
#include "simd.h"

#define MB 6   /* output channels per register block: the GEMM's A panel (gemm.h), so the forward
                  weights are the convolution's GEMM-packed ones, [m/6][c][3][3][6] */
#define VL 32  /* most positions per register block (2 vectors on AVX-512, 1 elsewhere) */
size_t akn_scratch_size(int c, int h, int w) {
    // padded input [C][H+2][W+2] + slack for the last block's over-read + one output block
    return (size_t)c * (h + 2) * (w + 2) + 2 * VL + (size_t)MB * VL + 64;
}

// Builds the zero-padded input [C][H+2][W+2] (+ slack), with the optional mask and channel scale;
// compiled once per instruction set (only the border is zeroed, the interior written once).
#define PAD_BODY                                                                                      \
    {                                                                                                 \
        int wp = w + 2;                                                                               \
        size_t plane = (size_t)(h + 2) * wp;                                                          \
        for (int i = 0; i < c; i++) {                                                                 \
            float *pl = xp + i * plane;                                                               \
            float s = scale ? scale[i] : 1.0f;                                                        \
            for (int pr = r0; pr < r1; pr++) {                                                        \
                float *row = pl + (size_t)pr * wp;                                                    \
                if (pr == 0 || pr == h + 1) {                                                         \
                    memset(row, 0, (size_t)wp * sizeof(float));                                       \
                    continue;                                                                         \
                }                                                                                     \
                int r = pr - 1;                                                                       \
                float *dst = row + 1;                                                                 \
                const float *src = x + ((size_t)i * h + r) * w;                                       \
                row[0] = 0.0f;                                                                        \
                if (mask) {                                                                           \
                    const float *mk = mask + ((size_t)i * h + r) * w;                                 \
                    int q = 0;                                                                        \
                    for (; q + 16 <= w; q += 16) { /* (mask > 0 ? x * s : 0), 16 at a time */         \
                        akn_v16 xv, mv;                                                               \
                        memcpy(&xv, src + q, sizeof xv);                                              \
                        memcpy(&mv, mk + q, sizeof mv);                                               \
                        xv = xv * s;                                                                  \
                        xv = (akn_v16)((akn_vi16)xv & (akn_vi16)(mv > (akn_v16){0}));                 \
                        memcpy(dst + q, &xv, sizeof xv);                                              \
                    }                                                                                 \
                    for (; q < w; q++) dst[q] = mk[q] > 0 ? src[q] * s : 0.0f;                        \
                } else if (scale) {                                                                   \
                    for (int q = 0; q < w; q++) dst[q] = src[q] * s;                                  \
                } else {                                                                              \
                    /* 8 at a time, inline: a library call per row cost more than its copy on         \
                       the short rows of a CIFAR network's 8x8 and 16x16 maps (the empty asm          \
                       hides the index from the compiler, which would make a memcpy call of           \
                       the loops again) */                                                            \
                    int q = 0;                                                                        \
                    for (; q + 8 <= w; q += 8) {                                                      \
                        akn_v8 v;                                                                     \
                        __asm__("" : "+r"(q));                                                        \
                        memcpy(&v, src + q, sizeof v);                                                \
                        memcpy(dst + q, &v, sizeof v);                                                \
                    }                                                                                 \
                    for (; q < w; q++) {                                                              \
                        __asm__("" : "+r"(q));                                                        \
                        dst[q] = src[q];                                                              \
                    }                                                                                 \
                }                                                                                     \
                dst[w] = 0.0f; /* right pad */                                                        \
            }                                                                                         \
            /* a band's buffer: the kernels' junk lanes read past its last row; keep them zeros */    \
            if (tail) memset(pl + (size_t)r1 * wp, 0, (size_t)tail * sizeof(float));                 \
        }                                                                                             \
        if (last) memset(xp + (size_t)c * plane, 0, 2 * VL * sizeof(float));                          \
    }

/* x, mask, scale and xp start at the first channel to pad; padded rows [r0, r1) of each channel
   (0 and h + 1 the zero rows), then `tail` zeros after them; `last`: these are the input's last
   channels (then the slack after them is zeroed too). */
#define PAD_ARGS const float *restrict x, const float *restrict mask, const float *restrict scale, int c, int h, int w, \
                 int r0, int r1, int tail, float *restrict xp, int last

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void pad_avx512(PAD_ARGS) PAD_BODY

__attribute__((target("avx2,fma")))
static void pad_avx2(PAD_ARGS) PAD_BODY

static void pad_portable(PAD_ARGS) PAD_BODY

typedef void (*pad_fn)(PAD_ARGS);
static const pad_fn g_pad[3] = {pad_portable, pad_avx2, pad_avx512};

// The position blocks of one block of output channels: `wb` (WBASE, per input channel i) and
// WEXPR give output j's weight for tap (ky, kx); the forward reads them from its panel (wv). The
// weights of channel i + 8 (forward) or of the panel two on (adjoint) are prefetched: a deep
// network's weights come from memory, and the hardware prefetcher alone lags.
#define CONV_BLOCKS(NV, ADJ, WBASE, WEXPR)                                                                 \
    for (int p0 = y0 * wp; p0 < y1 * wp; p0 += 16 * (NV)) {                                           \
        akn_v16 acc[MB][NV];                                                                          \
        for (int j = 0; j < MB; j++)                                                                  \
            for (int u = 0; u < (NV); u++) acc[j][u] = (akn_v16){0};                                  \
        for (int i = 0; i < c; i++) {                                                                 \
            const float *xi = xp + i * plane + p0;                                                    \
            const float *wk = pk + (size_t)i * 9 * MB;                                                \
            const float *wb = WBASE;                                                                  \
            (void)wb;                                                                                 \
            if (!(ADJ)) {                                                                             \
                for (int l = 0; l < 9 * MB; l += 16) __builtin_prefetch(wk + 8 * 9 * MB + l);        \
            } else if (i + 2 * MB < c) {                                                              \
                const float *nx = packed + ((size_t)(i / MB + 2) * block0 + (size_t)b * MB) * 9 * MB; \
                for (int l = 0; l < 4; l++) __builtin_prefetch(nx + ((i % MB) * 4 + l) * 16);        \
            }                                                                                         \
            for (int ky = 0; ky < 3; ky++) {                                                          \
                for (int kx = 0; kx < 3; kx++) {                                                      \
                    akn_v16 v[NV];                                                                    \
                    for (int u = 0; u < (NV); u++) memcpy(&v[u], xi + ky * wp + kx + 16 * u, sizeof(akn_v16)); \
                    const float *wv = wk + (ky * 3 + kx) * MB;                                        \
                    (void)wv;                                                                         \
                    for (int j = 0; j < MB; j++) {                                                    \
                        float wt = WEXPR;                                                             \
                        for (int u = 0; u < (NV); u++) acc[j][u] += v[u] * wt;                        \
                    }                                                                                 \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
        for (int j = 0; j < MB; j++)                                                                  \
            for (int u = 0; u < (NV); u++)                                                            \
                memcpy(tmp + (size_t)j * stride + p0 + 16 * u, &acc[j][u], sizeof(akn_v16));          \
    }

// The kernel body, compiled once per instruction set: NV vectors of 16 positions x 6 output
// channels in registers (12 accumulators on AVX-512 with NV = 2, 6 x 2 YMM halves on AVX2 with
// NV = 1). `tmp` holds one block of output channels over the padded width (vector stores),
// compacted into y through the epilogue afterwards.
#define CONV_BODY(NV, ADJ)                                                                                 \
    {                                                                                                 \
        int wp = w + 2;                                                                               \
        size_t plane = (size_t)(h + 2) * wp;                                                          \
        int positions = h * wp; /* outputs over the padded width; 2 junk columns per row */           \
        int stride = positions + VL;                                                                  \
        for (int b = m0 / MB; b * MB < m1; b++) {                                                     \
            const float *pk = (ADJ) ? packed : packed + (size_t)(b - block0) * c * 9 * MB;            \
            /* ADJ: the forward's panels read in place, [c/6][cf][3][3][6] (c the forward's outputs, \
               cf = block0 its inputs): output j of block b is forward input channel 6 b + j (the \
               last one for rows past cf, which are never stored), tap t the forward's 8 - t */    \
            size_t aoff[MB];                                                                          \
            for (int j = 0; j < MB; j++)                                                              \
                aoff[j] = (size_t)(b * MB + j < block0 ? b * MB + j : block0 - 1) * 9 * MB;           \
            (void)pk;                                                                                 \
            (void)aoff;                                                                               \
            /* ADJ with a whole block (its 6 outputs all < cf): output j's weights sit 54 floats   \
               apart from one base, so every weight is base + a constant (as in the forward) */     \
            if ((ADJ) && b * MB + MB <= block0)                                                       \
                CONV_BLOCKS(NV, 1, packed + ((size_t)(i / MB) * block0 + (size_t)b * MB) * 9 * MB + i % MB, \
                            wb[j * 9 * MB + (8 - ky * 3 - kx) * MB])                                  \
            else                                                                                      \
                CONV_BLOCKS(NV, ADJ, packed + (size_t)(i / MB) * block0 * 9 * MB + i % MB,            \
                            (ADJ) ? wb[aoff[j] + (8 - ky * 3 - kx) * MB] : wv[j])                     \
            for (int j = 0; j < MB; j++) {                                                            \
                int o = b * MB + j;                                                                   \
                if (o >= m1) break;                                                                   \
                float bv = bias ? bias[o] : 0.0f, sc = scale ? scale[o] : 1.0f;                       \
                for (int r = y0; r < y1; r++) {                                                       \
                    const float *src = tmp + (size_t)j * stride + (size_t)r * wp;                     \
                    float *dst = y + ((size_t)o * h + r) * w;                                         \
                    if (scale) for (int q = 0; q < w; q++) dst[q] = src[q] * sc + bv;                 \
                    else for (int q = 0; q < w; q++) dst[q] = src[q] + bv;                            \
                    if (res) {                                                                        \
                        const float *rr = res + ((size_t)o * h + r) * w;                              \
                        for (int q = 0; q < w; q++) dst[q] += rr[q];                                  \
                    }                                                                                 \
                    if (relu)                                                                         \
                        for (int q = 0; q < w; q++) {                                                 \
                            float v = dst[q];                                                         \
                            dst[q] = v > 0 ? v : (v != v ? v : 0.0f);                                 \
                        }                                                                             \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
    }

#define CONV_ARGS const float *xp, int c, int h, int w, const float *packed, int block0, int m0, int m1, int y0, int y1, \
                  const float *scale, const float *bias, const float *res, int relu, float *y, float *tmp

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void conv_avx512(CONV_ARGS) CONV_BODY(2, 0)

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void conv_adj_avx512(CONV_ARGS) CONV_BODY(2, 1)

__attribute__((target("avx2,fma")))
static void conv_avx2(CONV_ARGS) CONV_BODY(1, 0)

__attribute__((target("avx2,fma")))
static void conv_adj_avx2(CONV_ARGS) CONV_BODY(1, 1)

static void conv_portable(CONV_ARGS) CONV_BODY(1, 0)

static void conv_adj_portable(CONV_ARGS) CONV_BODY(1, 1)

typedef void (*conv_fn)(CONV_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const conv_fn g_conv[3] = {conv_portable, conv_avx2, conv_avx512};
/// The adjoint reading the forward's panels in place (akn_conv3x3_adjoint).
static const conv_fn g_conv_adj[3] = {conv_adj_portable, conv_adj_avx2, conv_adj_avx512};

void akn_conv3x3(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, const float *packed,
                 int block0, int m0, int m1, int y0, int y1, const float *scale, const float *bias, const float *res, int relu,
                 float *y, float *scratch, int pad, float *tmp) {
    if (pad) g_pad[abk_isa()](x, in_mask, in_scale, c, h, w, 0, h + 2, 0, scratch, 1);
    if (m1 <= m0) return;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (y1 <= y0) return;
    g_conv[abk_isa()](scratch, c, h, w, packed, block0, m0, m1, y0, y1, scale, bias, res, relu, y, tmp);
}

void akn_conv3x3_adjoint(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w,
                         const float *forward, int m0, int m1, int cf, int y0, int y1, float *y, float *scratch, int pad,
                         float *tmp) {
    if (pad) g_pad[abk_isa()](x, in_mask, in_scale, c, h, w, 0, h + 2, 0, scratch, 1);
    if (m1 > cf) m1 = cf;
    if (m1 <= m0) return;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (y1 <= y0) return;
    // (the kernel's block0 carries cf: its panel addressing)
    g_conv_adj[abk_isa()](scratch, c, h, w, forward, cf, m0, m1, y0, y1, NULL, NULL, NULL, 0, y, tmp);
}

void akn_conv3x3_pad(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, int c0, int c1,
                     float *scratch) {
    if (c0 < 0) c0 = 0;
    if (c1 > c) c1 = c;
    if (c1 <= c0) return;
    size_t plane = (size_t)(h + 2) * (w + 2), in = (size_t)h * w;
    g_pad[abk_isa()](x + c0 * in, in_mask ? in_mask + c0 * in : NULL, in_scale ? in_scale + c0 : NULL, c1 - c0, h, w, 0,
                     h + 2, 0, scratch + c0 * plane, c1 == c);
}

void akn_conv3x3_pad_band(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, int y0, int y1,
                          float *scratch) {
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (y1 <= y0 || c <= 0) return;
    // output rows [y0, y1) read padded rows [y0, y1 + 2); the kernels' discarded lanes read up to
    // 2 VL + 2 floats past them
    g_pad[abk_isa()](x, in_mask, in_scale, c, h, w, y0, y1 + 2, 2 * VL + 16, scratch, 1);
}

size_t akn_tmp_size(int h, int w) { return (size_t)MB * ((size_t)h * (w + 2) + VL); }

/// Blocks [b0, b1) of `block` output channels, [blocks][cols][3][3][block], gathered from the
/// GEMM-packed forward panels of W [m][c][3][3]. Forward: block b holds outputs o = block*b + j;
/// adjoint: its outputs are the forward's inputs ci = block*b + j, its inputs the forward's outputs,
/// tap t the forward's 8 - t. Rows past the layer's (a partial last block) are zero.
/// Inlined into each caller, so that adjoint and block are constants there (a per-call gather on
/// the backward path of large layers; the generic loop took twice as long).
static inline __attribute__((always_inline)) void gather_blocks(const float *packed, int m, int c, int taps, int adjoint,
                                                                int block, int b0, int b1, float *out) {
    int rows = adjoint ? c : m, cols = adjoint ? m : c;
    for (int b = b0; b < b1; b++)
        for (int q = 0; q < cols; q++)
            for (int t = 0; t < taps; t++)
                for (int j = 0; j < block; j++) {
                    int row = block * b + j;
                    int o = adjoint ? q : row, ci = adjoint ? row : q, tap = adjoint ? taps - 1 - t : t;
                    out[(((size_t)b * cols + q) * taps + t) * block + j] =
                        row < rows ? packed[(((size_t)(o / MB) * c + ci) * taps + tap) * MB + o % MB] : 0.0f;
                }
}

void akn_conv3x3_adjoint_weights(const float *packed, int cf, int mf, int b0, int b1, float *out) {
    gather_blocks(packed, mf, cf, 9, 1, MB, b0, b1, out);
}

// ---- The channel-blocked kernel (conv3x3_c16.inc): dispatch and its weight layout ----

#include "conv3x3_isa.h"

typedef int (*c16_fn)(AKN_C16_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const c16_fn g_c16[3] = {akn_conv_c16_scalar, akn_conv_c16_avx2, akn_conv_c16_avx512};

int akn_conv_c16(const float *xp, int c, int wp, size_t plane, int k, int s, int oh, int ow, const float *wb, int m,
                 int cb0, int cb1, int y0, int y1, const float *scale, const float *bias, const float *res, int relu,
                 float *y) {
    if (!((k == 3 && (s == 1 || s == 2)) || (k == 1 && s == 2))) return -1;
    if (y0 < 0) y0 = 0;
    if (y1 > oh) y1 = oh;
    if (cb1 > (m + 15) / 16) cb1 = (m + 15) / 16;
    if (cb1 <= cb0 || y1 <= y0 || ow <= 0) return 0;
    return g_c16[abk_isa()](xp, c, wp, plane, k, s, oh, ow, wb, m, cb0, cb1, y0, y1, scale, bias, res, relu, y);
}

void akn_conv3x3_c16(const float *xp, int c, int h, int w, const float *wb, int cb0, int cb1, int y0, int y1,
                     const float *scale, const float *bias, const float *res, int relu, float *y) {
    (void)akn_conv_c16(xp, c, w + 2, (size_t)(h + 2) * (w + 2), 3, 1, h, w, wb, 16 * cb1, cb0, cb1, y0, y1, scale, bias,
                       res, relu, y);
}

typedef int (*c16s2a_fn)(AKN_C16_S2A_ARGS);
static const c16s2a_fn g_c16s2a[3] = {akn_conv_c16_s2_adjoint_scalar, akn_conv_c16_s2_adjoint_avx2,
                                      akn_conv_c16_s2_adjoint_avx512};

int akn_conv_c16_s2_adjoint(const float *dzp, int m, int oh, int ow, const float *wb, int c, int h, int w, int cb0,
                            int cb1, int y0, int y1, float *dx) {
    if (m <= 0 || c <= 0 || h <= 0 || w % 4 || w < 4 || ow != w / 2 || oh != (h + 1) / 2) return -1;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (cb1 > (c + 15) / 16) cb1 = (c + 15) / 16;
    if (cb1 <= cb0 || y1 <= y0) return 0;
    return g_c16s2a[abk_isa()](dzp, m, oh, ow, wb, c, h, w, cb0, cb1, y0, y1, dx);
}

int akn_conv_c16_s2_adjoint_preferred(int c, int m, int h, int w) {
    // AMD family 25 (avx2), against the im2col input gradient (GEMM of the columns, col2im): see
    // Conv.usesStridedC16Adjoint for the measurements; a last block of 8 channels (its other 8 lanes
    // zero weights, not stored) as the forward's (cifar10_resnet_2b's 8 -> 16 layer). AVX-512 runs
    // the same tiles 8 positions wide (not measured there).
    (void)m;
    (void)h;
    int blocks = c % 16 == 0 || (c % 16 == 8 && abk_isa() == ABK_ISA_AVX2);
    return abk_isa() >= ABK_ISA_AVX2 && blocks && w % 4 == 0 && w >= 8;
}

typedef int (*s2f_fn)(AKN_S2F_ARGS);
static const s2f_fn g_s2f[3] = {akn_conv_s2_adjoint_few_scalar, akn_conv_s2_adjoint_few_avx2, akn_conv_s2_adjoint_few_avx512};

int akn_conv_s2_adjoint_few(const float *dzp, int m, int oh, int ow, const float *wt, int c, int h, int w, int y0, int y1,
                            float *dx) {
    if (m <= 0 || c < 1 || c > 4 || h <= 0 || ow <= 0 || ow % 8 || w != 2 * ow || oh != (h + 1) / 2) return -1;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (y1 <= y0) return 0;
    return g_s2f[abk_isa()](dzp, m, oh, ow, wt, c, h, w, y0, y1, dx);
}

int akn_conv_s2_adjoint_few_preferred(int c, int m, int h, int w) {
    // AMD family 25 (avx2), against the phased input gradient (a GEMM of c x 4 phase rows: 12 of
    // a 3-channel stem's, most of its row tiles empty): see Conv.usesStridedFewAdjoint.
    (void)m;
    (void)h;
    return abk_isa() >= ABK_ISA_AVX2 && c >= 1 && c <= 4 && w % 16 == 0 && w > 0;
}

typedef int (*c16u_fn)(AKN_C16_UNPADDED_ARGS);
static const c16u_fn g_c16u[3] = {akn_conv3x3_c16_unpadded_scalar, akn_conv3x3_c16_unpadded_avx2,
                                  akn_conv3x3_c16_unpadded_avx512};

int akn_conv3x3_c16_unpadded(const float *x, int c, int h, int w, const float *wb, int m, int cb0, int cb1, int y0,
                             int y1, const float *scale, const float *bias, const float *res, int relu, float *y) {
    if (!akn_conv3x3_c16_unpadded_available(w)) return -1;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    if (cb1 > (m + 15) / 16) cb1 = (m + 15) / 16;
    if (cb1 <= cb0 || y1 <= y0) return 0;
    return g_c16u[abk_isa()](x, c, h, w, wb, m, cb0, cb1, y0, y1, scale, bias, res, relu, y);
}

int akn_conv3x3_c16_unpadded_available(int w) { return abk_isa() != ABK_ISA_AVX512 && w >= 8 && w % 4 == 0; }

int akn_conv3x3_c16_preferred(int c, int m, int h, int w) {
    // Measured (single thread, avx512, against akn_conv3x3): +18 % at 16x16 and +24 % at 8x8 (rows of
    // whole 16- and 8-wide tiles), and at 32x32 (two 16-wide tiles) on a 16-channel CIFAR chain, one
    // thread 410 -> 354 us, two 246 -> 210; behind it where rows split into narrow tiles (14x14:
    // -30 %). On AVX2 (4-wide tiles, the epilogue's 4 x 8 transposes; AMD family 25, one thread, per
    // layer of mbn_resnet20 at batch 1): 16x16 78 -> 60 us, 8x8 77 -> 62 us, 32x32 66 -> 60 us.
    // Outputs must come in whole blocks of 16.
    (void)c;
    (void)h;
    return abk_isa() >= ABK_ISA_AVX2 && m % 16 == 0 && (w == 8 || w == 16 || w == 32);
}

int akn_conv_c16_strided_preferred(int c, int m, int oh, int ow) {
    // AVX2 as AVX-512 (AMD family 25, one thread, mbn_resnet20 at batch 1, against im2col + GEMM):
    // 3x3/2 to 16x16 59 -> 35 us, to 8x8 47 -> 32 us; 1x1/2 12.7 -> 10.3 us and 10.3 -> 6.7 us.
    // A last block of 8 (its other 8 lanes computed on zero weights, not stored) on AVX2: the 3 -> 8
    // channel 3x3/2 stem of cifar10_resnet_2b (against phased; 2 threads, ab_builds pairs, the whole
    // model's forward): 0.934x at batch 128, 0.957x at batch 1.
    (void)c;
    (void)oh;
    int blocks = m % 16 == 0 || (m % 16 == 8 && abk_isa() == ABK_ISA_AVX2);
    return abk_isa() >= ABK_ISA_AVX2 && blocks && (ow == 8 || ow == 16 || ow == 32);
}

void akn_conv3x3_c16_weights(const float *packed, int m, int c, int adjoint, int b0, int b1, float *out) {
    gather_blocks(packed, m, c, 9, adjoint, 16, b0, b1, out);
}

void akn_conv_c16_weights(const float *packed, int m, int c, int taps, int b0, int b1, float *out) {
    if (taps == 9) gather_blocks(packed, m, c, 9, 0, 16, b0, b1, out);
    else if (taps == 1) gather_blocks(packed, m, c, 1, 0, 16, b0, b1, out);
}
