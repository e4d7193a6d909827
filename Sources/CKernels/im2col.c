// im2col.c — the adjoint of a convolution's implicit im2col (gemm.h: akn_conv_b, akn_col2im); the
// forward im2col is never materialized: the GEMM's packing gathers it (gemm_tile.inc, pack_conv).
#include "gemm.h"

enum { TABLE_MAX = 4096 };  // taps x positions of a small layer's offset table (16 KB on the stack)

/// One channel's columns added into its plane, rows [rlo, rhi) only: the loop over taps, output rows
/// and the run of output columns whose input lies inside the row.
static void add_channel(const float *cs, long ldc, const akn_conv_b *g, int oh, float *xc, int rlo, int rhi) {
    int taps = g->kh * g->kw;
    for (int t = 0; t < taps; t++) {
        int ki = t / g->kw, kj = t % g->kw;
        const float *src = cs + (size_t)t * ldc;
        int joff = kj * g->dw - g->pl;
        // Output columns whose input column lies in [0, w): [lo, hi).
        int lo = joff < 0 ? (-joff + g->sw - 1) / g->sw : 0;
        if (lo > g->ow) lo = g->ow;
        int hi = g->w - 1 - joff < 0 ? lo : (g->w - 1 - joff) / g->sw + 1;
        if (hi > g->ow) hi = g->ow;
        if (hi < lo) hi = lo;
        for (int o = 0; o < oh; o++) {
            int ih = o * g->sh + ki * g->dh - g->pt;
            if (ih < rlo || ih >= rhi) continue;
            float *dst = xc + (size_t)ih * g->w;
            const float *s = src + (size_t)o * g->ow;
            if (g->sw == 1) {
                float *d = dst + joff;
                for (int q = lo; q < hi; q++) d[q] += s[q];
            } else {
                int iw = lo * g->sw + joff;
                for (int q = lo; q < hi; q++, iw += g->sw) dst[iw] += s[q];
            }
        }
    }
}

void akn_col2im(const float *col, long ldc, long col_sample, const akn_conv_b *g, int oh, int c, int bands, long u0,
                long u1, float *x, long x_sample) {
    if (c <= 0 || bands <= 0 || u0 >= u1) return;
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
            add_channel(cs, ldc, g, oh, xc, (int)((long)g->h * band / bands), (int)((long)g->h * (band + 1) / bands));
        }
    }
}
