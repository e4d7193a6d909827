// conv3x3_isa.h — the per-ISA entry points of the channel-blocked direct kernel (internal).
#ifndef ADAMANT_CONV3X3_ISA_H
#define ADAMANT_CONV3X3_ISA_H
#include <stddef.h>
/// akn_conv_c16's arguments (kernels.h); each entry returns -1 for a window and stride it lacks.
#define AKN_C16_ARGS                                                                                          \
    const float *xp, int c, int wp, size_t plane, int k, int s, int oh, int ow, const float *wb, int m, int cb0,   \
        int cb1, int y0, int y1, const float *scale, const float *bias, const float *res, int relu, float *y
int akn_conv_c16_avx512(AKN_C16_ARGS);
int akn_conv_c16_avx2(AKN_C16_ARGS);
int akn_conv_c16_scalar(AKN_C16_ARGS);
/// akn_conv3x3_c16_unpadded's arguments (kernels.h); each entry returns -1 where it lacks the kernel.
#define AKN_C16_UNPADDED_ARGS                                                                                 \
    const float *x, int c, int h, int w, const float *wb, int m, int cb0, int cb1, int y0, int y1,            \
        const float *scale, const float *bias, const float *res, int relu, float *y
int akn_conv3x3_c16_unpadded_avx512(AKN_C16_UNPADDED_ARGS);
int akn_conv3x3_c16_unpadded_avx2(AKN_C16_UNPADDED_ARGS);
int akn_conv3x3_c16_unpadded_scalar(AKN_C16_UNPADDED_ARGS);
/// akn_conv_c16_s2_adjoint's arguments (kernels.h); each entry returns -1 for a geometry it lacks.
#define AKN_C16_S2A_ARGS                                                                                      \
    const float *dzp, int m, int oh, int ow, const float *wb, int c, int h, int w, int cb0, int cb1, int y0, int y1, \
        float *dx
int akn_conv_c16_s2_adjoint_avx512(AKN_C16_S2A_ARGS);
int akn_conv_c16_s2_adjoint_avx2(AKN_C16_S2A_ARGS);
int akn_conv_c16_s2_adjoint_scalar(AKN_C16_S2A_ARGS);
/// akn_conv_s2_adjoint_few's arguments (kernels.h); each entry returns -1 for a geometry it lacks.
#define AKN_S2F_ARGS                                                                                          \
    const float *dzp, int m, int oh, int ow, const float *wt, int c, int h, int w, int y0, int y1, float *dx
int akn_conv_s2_adjoint_few_avx512(AKN_S2F_ARGS);
int akn_conv_s2_adjoint_few_avx2(AKN_S2F_ARGS);
int akn_conv_s2_adjoint_few_scalar(AKN_S2F_ARGS);
#endif
