/*
 * kernels.h — adamant's hand-written compute kernels (the rest of the math is OpenBLAS GEMM).
 *
 * Direct 3x3 convolution, stride 1, padding 1, dilation 1, one group — the bulk of a ResNet's
 * work. The input is zero-padded once; outputs are computed over the padded width so that every
 * inner loop reads contiguous memory, with 8 output channels x 16 positions held in registers.
 * Variants are compiled for AVX-512 and AVX2+FMA and a portable (scalar/SSE) one; each call runs
 * the variant of the instruction-set level in force (abk_isa: CPUID *and* XCR0, capped by
 * ADAMANT_ISA or abk_set_isa). The same kernel computes the input
 * gradient, with the weights transposed and flipped (akn_pack_conv3x3 with transpose = 1).
 */
#ifndef ADAMANT_KERNELS_H
#define ADAMANT_KERNELS_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/**
 * Packs the weights of a convolution with `m` output and `c` input channels into the kernel's
 * layout: blocks of 8 output channels, [ceil(m/8)][c][3][3][8], zero-filled past m. Without
 * transpose, w is [m][c][3][3]. With transpose, w is the weight [c][m][3][3] of the convolution
 * being differentiated, and the packed one is its adjoint: w[i][o] flipped spatially.
 * `out` must hold akn_packed_size(m, c) floats.
 */
size_t akn_packed_size(int out_channels, int in_channels);
void akn_pack_conv3x3(const float *w, int m, int c, int transpose, float *out);

/** Scratch floats akn_conv3x3 needs for one sample (padded input + slack). */
size_t akn_scratch_size(int c, int h, int w);

/** Floats of the per-call output buffer `tmp` of akn_conv3x3 (one block of 8 channels). */
size_t akn_tmp_size(int h, int w);

/**
 * y[m0..m1) (one sample, [M][H][W] layout) = conv3x3(x [C][H][W], packed) + bias (NULL = none),
 * then ReLU if relu != 0. `scratch` holds akn_scratch_size floats; the padded input is built there
 * when `pad_input` is non-zero (the caller may build it once and call several m ranges, e.g. on
 * several threads, with pad_input = 0). `tmp` (akn_tmp_size floats) is private to the call.
 * m0 and m1 must be multiples of 8 except that m1 may equal m (the channel count).
 */
void akn_conv3x3(const float *x, int c, int h, int w, const float *packed, int m, int m0, int m1,
                 const float *bias, int relu, float *y, float *scratch, int pad_input, float *tmp);

/** ReLU backward: out[i] = y[i] > 0 ? g[i] : 0 (y: the ReLU's input or output; no aliasing). */
void akn_relu_mask(const float *y, const float *g, float *out, size_t n);


#ifdef __cplusplus
}
#endif
#endif
