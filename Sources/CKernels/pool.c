// pool.c — max pooling over one NCHW plane without dilation (see kernels.h).
#include "kernels.h"

void akn_maxpool_plane(const float *x, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow,
                       float *y) {
    for (int i = 0; i < oh; i++) {
        int h0 = i * sh - pt;
        int ki0 = h0 < 0 ? -h0 : 0, ki1 = h0 + kh > h ? h - h0 : kh;
        for (int j = 0; j < ow; j++) {
            int w0 = j * sw - pl;
            int kj0 = w0 < 0 ? -w0 : 0, kj1 = w0 + kw > w ? w - w0 : kw;
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
        int h0 = i * sh - pt;
        int ki0 = h0 < 0 ? -h0 : 0, ki1 = h0 + kh > h ? h - h0 : kh;
        for (int j = 0; j < ow; j++) {
            int w0 = j * sw - pl;
            int kj0 = w0 < 0 ? -w0 : 0, kj1 = w0 + kw > w ? w - w0 : kw;
            long best = -1;
            for (int ki = ki0; ki < ki1; ki++)
                for (int kj = kj0; kj < kj1; kj++) {
                    long t = (long)(h0 + ki) * w + w0 + kj;
                    if (best < 0 || x[t] > x[best]) best = t;
                }
            if (best >= 0) dx[best] += g[(size_t)i * ow + j];
        }
    }
}
