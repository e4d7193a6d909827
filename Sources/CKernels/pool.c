// pool.c — max pooling over one NCHW plane without dilation (see kernels.h).
#include "kernels.h"

/// The window of output index o along one axis: its first input index, and the range [lo, hi) of
/// kernel taps that fall inside [0, size).
static inline void window(int o, int stride, int pad, int k, int size, int *start, int *lo, int *hi) {
    *start = o * stride - pad;
    *lo = *start < 0 ? -*start : 0;
    *hi = *start + k > size ? size - *start : k;
}

/// max with the generic loop's NaN rule (a NaN so far is replaced by the next tap), as a select.
#define MAXSEL(v, m) (((v) > (m) || (m) != (m)) ? (v) : (m))

void akn_maxpool_plane(const float *x, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow,
                       float *y) {
    // Output columns whose window lies inside the row, [jlo, jhi): the 3-wide windows there run as
    // straight-line code the compiler vectorizes over j (the ResNet stem's 3x3/2 pool), taps in the
    // generic order, so the results are the same.
    int jlo = (pl + sw - 1) / sw, jhi = ow;
    while (jhi > jlo && (jhi - 1) * sw - pl + kw > w) jhi--;
    if (kw != 3 || jhi < jlo) jlo = jhi = 0;
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, sh, pt, kh, h, &h0, &ki0, &ki1);
        if (jhi > jlo && ki0 < ki1) {
            float *yr = y + (size_t)i * ow;
            const float *r0 = x + (size_t)(h0 + ki0) * w - pl;
            for (int j = jlo; j < jhi; j++) {
                const float *p = r0 + (size_t)j * sw;
                float m = -__builtin_inff();
                m = MAXSEL(p[0], m);
                m = MAXSEL(p[1], m);
                m = MAXSEL(p[2], m);
                yr[j] = m;
            }
            for (int ki = ki0 + 1; ki < ki1; ki++) {
                const float *rk = x + (size_t)(h0 + ki) * w - pl;
                for (int j = jlo; j < jhi; j++) {
                    const float *p = rk + (size_t)j * sw;
                    float m = yr[j];
                    m = MAXSEL(p[0], m);
                    m = MAXSEL(p[1], m);
                    m = MAXSEL(p[2], m);
                    yr[j] = m;
                }
            }
        }
        for (int j = 0; j < ow; j++) {
            if (j == jlo && jhi > jlo && ki0 < ki1) {
                j = jhi - 1;
                continue;
            }
            int w0, kj0, kj1;
            window(j, sw, pl, kw, w, &w0, &kj0, &kj1);
            float m = -__builtin_inff();
            for (int ki = ki0; ki < ki1; ki++) {
                const float *row = x + (size_t)(h0 + ki) * w + w0;
                for (int kj = kj0; kj < kj1; kj++) {
                    float v = row[kj];
                    m = MAXSEL(v, m);  // a select, not a branch (half of them would mispredict)
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
