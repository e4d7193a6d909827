// conv3x3_isa.h — the per-ISA entry points of the channel-blocked direct 3x3 kernel (internal).
#ifndef ADAMANT_CONV3X3_ISA_H
#define ADAMANT_CONV3X3_ISA_H
#define AKN_C16_ARGS                                                                                          \
    const float *xp, int c, int h, int w, const float *wb, int cb0, int cb1, int y0, int y1, const float *scale, \
        const float *bias, const float *res, int relu, float *y
void akn_conv3x3_c16_avx512(AKN_C16_ARGS);
void akn_conv3x3_c16_avx2(AKN_C16_ARGS);
void akn_conv3x3_c16_scalar(AKN_C16_ARGS);
#endif
