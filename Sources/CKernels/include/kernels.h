/*
 * kernels.h — adamant's small elementwise kernels. The convolution and dense kernels are in
 * gemm.h (adamant's own GEMM, one register tile per instruction set) and winograd.h (3x3
 * convolutions by Winograd F(4x4, 3x3) on that GEMM). Every kernel has an AVX-512, an AVX2+FMA
 * and a portable variant where it matters; each call runs the variant of the instruction-set level
 * in force (abk_isa: CPUID *and* XCR0, capped by ADAMANT_ISA or abk_set_isa).
 */
#ifndef ADAMANT_KERNELS_H
#define ADAMANT_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/**
 * Direct 3x3 convolution, stride 1, padding 1, one group: used for layers with few channels, where
 * Winograd's transforms cost more than they save. The input is zero-padded once; outputs are computed
 * over the padded width so every inner loop reads contiguous memory, 6 output channels x 16 or 32 positions
 * in registers (6 x 32 on AVX-512). The weights are the convolution's GEMM-packed ones
 * (akn_gemm_pack_a of [m][c*9], gemm.h): blocks of 6 output channels, [ceil(m/6)][c][3][3][6], zero
 * past m. The input gradient runs the same kernel on the transposed, flipped panels that
 * akn_conv3x3_adjoint_weights gathers from them per call (no second resident copy of the weights).
 */
/** Scratch floats akn_conv3x3 needs for one sample (padded input + slack). */
size_t akn_scratch_size(int c, int h, int w);

/** Floats of the per-call output buffer `tmp` of akn_conv3x3 (one block of 8 channels). */
size_t akn_tmp_size(int h, int w);

/**
 * Rows [y0, y1) of channels [m0, m1) of y (one sample, [M][H][W]) = relu?(conv3x3(x' [C][H][W]) * scale + bias + res), each of scale,
 * bias, res optional (NULL), where x' = x, or where given, x' = (in_mask > 0 ? x : 0) * in_scale[c]
 * (a ReLU's backward mask and a BN scale, applied to an incoming gradient). `scratch` holds
 * akn_scratch_size floats; the padded x' is built there when `pad_input` is non-zero (build it once,
 * then call several m ranges with pad_input = 0). `tmp` (akn_tmp_size floats) is private to the call.
 * m0 and m1 are multiples of 6 except m1 = m; `packed` starts at block `block0` of 6 output channels
 * (0: the whole packed weight). Every output's arithmetic is the same whatever the ranges, so
 * callers may split channels and rows over threads freely.
 */
void akn_conv3x3(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, const float *packed,
                 int block0, int m0, int m1, int y0, int y1, const float *scale, const float *bias, const float *res,
                 int relu, float *y, float *scratch, int pad_input, float *tmp);

/**
 * The input gradient of a 3x3/s1/p1 convolution with cf inputs and c outputs, straight from its
 * forward GEMM panels `forward` ([c/6][cf][3][3][6]): rows [y0, y1) of channels [m0, m1) of
 * y [cf][H][W] = conv3x3 of x' [c][H][W] (x' as for akn_conv3x3: masked and scaled where given) with
 * the transposed, flipped weights. The same arithmetic as akn_conv3x3 on akn_conv3x3_adjoint_weights'
 * panels, bit for bit, without building them. m0 a multiple of 6.
 */
void akn_conv3x3_adjoint(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w,
                         const float *forward, int m0, int m1, int cf, int y0, int y1, float *y, float *scratch, int pad_input,
                         float *tmp);

/**
 * Channels [c0, c1) of akn_conv3x3's padded input (pad_input) in `scratch`: disjoint ranges may be
 * built on different threads (the range ending at c also zeroes the slack after the planes).
 */
void akn_conv3x3_pad(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, int c0, int c1,
                     float *scratch);

/**
 * The padded input's rows that output rows [y0, y1) of akn_conv3x3 / akn_conv3x3_c16 read (padded
 * rows [y0, y1 + 2) of every channel, and the zeros the kernels' discarded lanes read after them),
 * in a scratch of akn_scratch_size floats laid out as the whole padded input: a band's own copy,
 * built on the thread that computes the band.
 */
void akn_conv3x3_pad_band(const float *x, const float *in_mask, const float *in_scale, int c, int h, int w, int y0, int y1,
                          float *scratch);

/**
 * Blocks [b0, b1) of the packed weights of the adjoint (input gradient) of a 3x3 convolution with
 * cf inputs and mf outputs whose forward panels are `packed`: [ceil(cf/6)][mf][3][3][6], the
 * kernel transposed and flipped, zero past cf. Whole: (cf + 5) / 6 * mf * 54 floats.
 */
void akn_conv3x3_adjoint_weights(const float *packed, int cf, int mf, int b0, int b1, float *out);

/**
 * The channel-blocked direct 3x3 kernel: 16 output channels (one vector) x up to 16 positions of one
 * output row in registers (4 on AVX2 and portable C), or on AVX-512, for two blocks of a range, 32
 * channels x 8 positions, so no lane computes padding columns or missing channels. The same arithmetic as akn_conv3x3, bit for bit, so a layer may run either. `xp` is the
 * padded input akn_conv3x3 builds in its scratch (pad_input = 1, m1 = m0); `wb` holds
 * akn_conv3x3_c16_weights. Computes rows [y0, y1) of the blocks [cb0, cb1) of 16 output channels of
 * y (one sample, [16 * blocks][H][W]), with akn_conv3x3's optional epilogue.
 */
void akn_conv3x3_c16(const float *xp, int c, int h, int w, const float *wb, int cb0, int cb1, int y0, int y1,
                     const float *scale, const float *bias, const float *res, int relu, float *y);

/**
 * akn_conv3x3_c16 (3x3, stride 1, padded by 1) read from the unpadded input x ([c][h][w], one sample):
 * no padded copy. The zeros of the padding are multiplied and added where the padded kernel reads
 * them, so the results are its bits. m outputs (a last block past m as akn_conv_c16's). Returns -1
 * where it lacks the kernel (akn_conv3x3_c16_unpadded_available false): then pad and run
 * akn_conv3x3_c16.
 */
int akn_conv3x3_c16_unpadded(const float *x, int c, int h, int w, const float *wb, int m, int cb0, int cb1, int y0,
                             int y1, const float *scale, const float *bias, const float *res, int relu, float *y);

/**
 * Whether akn_conv3x3_c16_unpadded runs a width of w on the ISA in force: on the 4-wide paths (AVX2,
 * scalar), widths from 8 in multiples of 4. (AVX-512's 16-wide tiles keep the padded input.)
 */
int akn_conv3x3_c16_unpadded_available(int w);

/**
 * The channel-blocked direct kernel for any window and stride it has (3x3 with stride 1 or 2, 1x1
 * with stride 2; returns -1 for others): output (oy, ox) of the oh x ow output reads the k x k
 * window at xp + s (oy wp + ox) of each of the c input planes (`plane` floats apart, rows `wp`
 * apart), so xp is the padded input for a padded layer, the input itself for 1x1. `wb` holds
 * akn_conv_c16_weights (k = 1) or akn_conv3x3_c16_weights (k = 3). Computes rows [y0, y1) of the
 * blocks [cb0, cb1) of 16 output channels of y (one sample, [m][oh][ow]; a last block past m has its
 * first m % 16 channels stored, and only their scale, bias and residual read), with the epilogue of
 * akn_conv3x3_c16; every output the chain of multiply-adds over (input channel, ky, kx) in order
 * from zero. akn_conv3x3_c16 is this kernel with k = 3, s = 1 and m = 16 * cb1.
 */
int akn_conv_c16(const float *xp, int c, int wp, size_t plane, int k, int s, int oh, int ow, const float *wb, int m,
                 int cb0, int cb1, int y0, int y1, const float *scale, const float *bias, const float *res, int relu,
                 float *y);

/**
 * The input gradient of a 3x3, stride-2 convolution padded by 1 on every side (akn_conv_c16's k = 3,
 * s = 2), channel-blocked, written (not added) into dx: dx[ci][y][x] = the sum of W[o][ci][ky][kx] *
 * dz'[o][(y + 1 - ky) / 2][(x + 1 - kx) / 2] over the forward's outputs o and the taps with y + 1 - ky
 * and x + 1 - kx even: a quarter of the positions take one tap, half two and a quarter four, so it
 * does the forward's multiply-adds and no more (im2col + col2im writes and adds 9 columns per output
 * position). Each element is one chain over (o, ky, kx) in order from zero, except that an odd x
 * sums its kx = 0 and kx = 2 terms in two such chains, added last: fixed by the element alone, so
 * no split of rows or blocks over threads changes a result. `dzp`: dz' = dz with the mask and
 * scale applied, padded by 1 as akn_conv3x3_pad_band lays it out ([m][oh + 2][ow + 2]; dx rows
 * [y0, y1) read its padded rows [y0 / 2, (y1 - 1) / 2 + 3)); `wb`: akn_conv3x3_c16_weights with
 * adjoint = 1 (c rows in blocks of 16, m columns). Computes rows [y0, y1) of blocks [cb0, cb1) of 16
 * channels of dx (one sample, [c][h][w]; a last block past c stores its first c % 16). Needs w a
 * multiple of 4, ow = w / 2 and oh = (h + 1) / 2 (the forward's output); returns -1 otherwise.
 */
int akn_conv_c16_s2_adjoint(const float *dzp, int m, int oh, int ow, const float *wb, int c, int h, int w, int cb0,
                            int cb1, int y0, int y1, float *dx);

/** Whether akn_conv_c16_s2_adjoint beats im2col's input gradient for c inputs and m outputs of an h x w input. */
int akn_conv_c16_s2_adjoint_preferred(int c, int m, int h, int w);

/**
 * The input gradient of a 3x3, stride-2 convolution padded by 1 with few input channels (c <= 4: a
 * CIFAR ResNet's stem), positions in the lanes: the same dx as akn_conv_c16_s2_adjoint (written, not
 * added), from the same padded band of dz' (akn_conv3x3_pad_band), with the plain weights `wt`
 * [m][c][3][3]. Each element is one chain over (o, ky) in order from zero (an odd column: two, its
 * kx = 0 and kx = 2 terms, added last), whatever the rows asked. Computes rows [y0, y1) of every
 * channel of dx (one sample, [c][h][w]). Needs c in 1...4, ow a multiple of 8, w = 2 ow and
 * oh = (h + 1) / 2; returns -1 otherwise.
 */
int akn_conv_s2_adjoint_few(const float *dzp, int m, int oh, int ow, const float *wt, int c, int h, int w, int y0, int y1,
                            float *dx);

/** Whether akn_conv_s2_adjoint_few beats the phased input gradient for c inputs and m outputs of an h x w input. */
int akn_conv_s2_adjoint_few_preferred(int c, int m, int h, int w);

/** Whether akn_conv_c16 with a stride of 2 beats im2col + GEMM for c inputs, m outputs, an oh x ow output. */
int akn_conv_c16_strided_preferred(int c, int m, int oh, int ow);

/**
 * Blocks [b0, b1) of akn_conv_c16's forward weights, [ceil(m/16)][c][taps][16], from the GEMM-packed
 * panels of a convolution with `taps` = 9 (3x3) or 1 (1x1) taps, m outputs and c inputs (a last
 * block's rows past m are zeros).
 */
void akn_conv_c16_weights(const float *packed, int m, int c, int taps, int b0, int b1, float *out);

/** Whether akn_conv3x3_c16 beats akn_conv3x3 for c inputs, m outputs, h x w, on the ISA in force. */
int akn_conv3x3_c16_preferred(int c, int m, int h, int w);

/**
 * Blocks [b0, b1) of the channel-blocked weights, [rows/16][cols][3][3][16], gathered from a 3x3
 * convolution's GEMM-packed forward panels (m outputs, c inputs). Forward (adjoint = 0): rows = m,
 * cols = c. Adjoint (the input gradient): rows = c, cols = m, the kernel transposed and flipped.
 * Rows past `rows` in a last block are zeros. Whole: ceil(rows/16) * 16 * cols * 9 floats.
 */
void akn_conv3x3_c16_weights(const float *packed, int m, int c, int adjoint, int b0, int b1, float *out);

/** ReLU backward: out[i] = y[i] > 0 ? g[i] : 0 (y: the ReLU's input or output; out may be g). */
void akn_relu_mask(const float *y, const float *g, float *out, size_t n);

/**
 * One L-infinity PGD step, fused: adv = clip(clip(adv + step * sign(g), x0 - eps, x0 + eps), lo, hi)
 * elementwise (sign(0) = sign(NaN) = 0; step carries the attack's direction).
 */
void akn_pgd_linf_step(float *adv, const float *x0, const float *g, size_t n, float step, float eps, float lo, float hi);

/** y[p] = the mean of x[p * inner .. (p + 1) * inner) for each of `planes` planes (global average pooling). */
void akn_mean_planes(const float *x, size_t planes, size_t inner, float *y);

/** The index of the first NaN or infinite value of x[0..n), or -1. */
long akn_first_nonfinite(const float *x, size_t n);

/**
 * dst = src, plane by plane (`planes` of `inner` floats), each plane p divided by divisors[p % channels]
 * when divisors is not NULL (a gradient taken back through a per-channel normalization).
 */
void akn_copy_scaled_planes(const float *src, float *dst, size_t planes, size_t inner, const float *divisors,
                            size_t channels);

/**
 * Bit i % 64 of bits[i / 64] = (x[i] > 0) for i < n (NaN: 0), the last word's unused bits 0: a
 * value a gradient pass keeps only as a ReLU mask. Callers may split x at multiples of 64.
 */
void akn_pack_positive(const float *x, size_t n, uint64_t *bits);

/** out[i] = 1 where bit i % 64 of bits[i / 64] is set, else 0, for i < n (akn_pack_positive's inverse mask). */
void akn_unpack_positive(const uint64_t *bits, size_t n, float *out);

/** acc[i] += x[i] (gradient accumulation). */
void akn_add_inplace(float *acc, const float *x, size_t n);

/**
 * Max pooling of one [h][w] plane into [oh][ow] (no dilation; pt/pl: top/left pads): each output is
 * the largest valid tap, visited row by row (a NaN tap is replaced by a later tap, as in the
 * reference loop). The backward adds g to dx at the first largest tap of each window.
 */
void akn_maxpool_plane(const float *x, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow,
                       float *y);
void akn_maxpool_plane_backward(const float *x, const float *g, int h, int w, int kh, int kw, int sh, int sw, int pt,
                                int pl, int oh, int ow, float *dx);

#ifdef __cplusplus
}
#endif
#endif
