// winograd_isa.h — the per-ISA Winograd transforms, F(4x4, 3x3) and F(2x2, 3x3) (internal to CKernels; see winograd.h).
#ifndef ADAMANT_WINOGRAD_ISA_H
#define ADAMANT_WINOGRAD_ISA_H
#include <stddef.h>
#define AKN_WINO_DECLARE(suffix)                                                                          \
    void akn_wino_input_##suffix(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, \
                                 size_t ldv, size_t xi_stride, size_t col0);                              \
    void akn_wino_output_##suffix(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w,  \
                                  int m0, int m1, const float *scale, const float *bias, const float *res,   \
                                  int relu, float *y);                                                       \
    void akn_wino2_input_##suffix(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, \
                                  size_t ldv, size_t xi_stride, size_t col0);                             \
    void akn_wino2_output_##suffix(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, \
                                   int m0, int m1, const float *scale, const float *bias, const float *res,  \
                                   int relu, float *y);
AKN_WINO_DECLARE(avx512)
AKN_WINO_DECLARE(avx2)
AKN_WINO_DECLARE(scalar)
#endif
