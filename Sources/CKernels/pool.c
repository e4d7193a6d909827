// pool.c — max pooling over one NCHW plane without dilation (see kernels.h).
#include "kernels.h"

/// The window of output index o along one axis: its first input index, and the range [lo, hi) of
/// kernel taps that fall inside [0, size).
static inline void window(int o, int stride, int pad, int k, int size, int *start, int *lo, int *hi) {
    *start = o * stride - pad;
    *lo = *start < 0 ? -*start : 0;
    *hi = *start + k > size ? size - *start : k;
}

void akn_maxpool_plane(const float *x, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow,
                       float *y) {
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, sh, pt, kh, h, &h0, &ki0, &ki1);
        for (int j = 0; j < ow; j++) {
            int w0, kj0, kj1;
            window(j, sw, pl, kw, w, &w0, &kj0, &kj1);
            float m = -__builtin_inff();
            for (int ki = ki0; ki < ki1; ki++) {
                const float *row = x + (size_t)(h0 + ki) * w + w0;
                for (int kj = kj0; kj < kj1; kj++) {
                    float v = row[kj];
                    if (v > m || m != m) m = v;
                }
            }
            y[(size_t)i * ow + j] = m;
        }
    }
}

void akn_maxpool_plane_backward(const float *x, const float *g, int h, int w, int kh, int kw, int sh, int sw, int pt,
                                int pl, int oh, int ow, float *dx) {
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, sh, pt, kh, h, &h0, &ki0, &ki1);
        for (int j = 0; j < ow; j++) {
            int w0, kj0, kj1;
            window(j, sw, pl, kw, w, &w0, &kj0, &kj1);
            if (ki0 >= ki1 || kj0 >= kj1) continue;  // a window entirely in the padding
            // The first largest tap (the gradient goes to one tap only), without branches.
            long best = (long)(h0 + ki0) * w + w0 + kj0;
            float m = x[best];
            for (int ki = ki0; ki < ki1; ki++) {
                long base = (long)(h0 + ki) * w + w0;
                for (int kj = kj0; kj < kj1; kj++) {
                    float v = x[base + kj];
                    int better = v > m;
                    m = better ? v : m;
                    best = better ? base + kj : best;
                }
            }
            dx[best] += g[(size_t)i * ow + j];
        }
    }
}
