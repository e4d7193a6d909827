/*
 * winograd.h — 3x3 stride-1 pad-1 convolution by Winograd F(4x4, 3x3) (Lavin & Gray, 2016).
 *
 * Each 4x4 output tile comes from a 6x6 input tile: Y = A' [ (G g G') .* (B' d B) ] A. The 36
 * element-wise products over the channels are 36 GEMMs (gemm.h): M_xi[m x N] = U_xi[m x c] . V_xi[c x N],
 * N = tiles of every sample in the call. 2.25 multiply-adds instead of 9 per output, at the price of
 * transforms and a slightly larger rounding error (measured against direct convolution in the tests).
 *
 * Layouts: V and M are [36][rows][N] (row stride N); a sample's tiles are columns col0 .. col0 + T,
 * T = ceil(h/4) * ceil(w/4), row-major over tiles. The input gradient of such a convolution is the
 * same convolution with transposed, flipped weights (akn_wino_weights with adjoint = 1).
 */
#ifndef ADAMANT_WINOGRAD_H
#define ADAMANT_WINOGRAD_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/** Tiles per sample for an h x w image. */
int akn_wino_tiles(int h, int w);

/**
 * Transforms 3x3 weights into 36 packed GEMM A matrices, each akn_gemm_packed_a_size(rows, cols)
 * floats, one after another: rows [r0, r1) of each (callers split rows over threads). Forward: w is
 * [m][c][3][3], rows = m, cols = c. Adjoint: w is the same [m][c][3][3] array and the result is the
 * input gradient's weights: rows = c, cols = m, spatially flipped.
 */
void akn_wino_weights(const float *w, int m, int c, int adjoint, int r0, int r1, float *out);

/**
 * Input transform of channels [c0, c1) of one sample x [c][h][w] (zero padding of 1), where given,
 * x counting only where mask > 0 (same layout as x) and each channel multiplied by chscale[ch]:
 * writes V[xi][ch][col0 + t].
 */
void akn_wino_input(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, size_t ldv,
                    size_t xi_stride, size_t col0);

/**
 * Output transform of channels [m0, m1) of one sample: y[ch][h][w] = relu?( (tile * scale[ch] or
 * tile) + bias[ch] + res[ch][h][w] ) with each of scale, bias, res optional (NULL).
 */
void akn_wino_output(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, int m0, int m1,
                     const float *scale, const float *bias, const float *res, int relu, float *y);

/*
 * F(2x2, 3x3): each 2x2 output tile from a 4x4 input tile, 16 GEMMs, 4 multiply-adds instead of 9
 * per output, with weights 16/9 the size of the layer's (36/9 for F(4x4, 3x3)) and a smaller
 * rounding error. For 14x14 images (49 tiles exactly; F(4x4, 3x3) would cover 16x16). The same
 * layouts with 16 in place of 36: V and M are [16][rows][N], T = ceil(h/2) * ceil(w/2).
 * Its input gradient needs no second set of weights: the transform of the flipped kernel is the
 * forward transform with the indices 0 and 3 of each axis swapped, so the adjoint's U'_xi [c x m]
 * is the transpose of the forward U_{akn_wino2_adjoint_xi(xi)} (read by akn_gemm_transposed).
 */

/** Tiles per sample for an h x w image under F(2x2, 3x3). */
int akn_wino2_tiles(int h, int w);

/** The forward matrix whose transpose is the input gradient's matrix xi (see above). */
int akn_wino2_adjoint_xi(int xi);

/**
 * Transforms 3x3 weights w [m][c][3][3] into 16 packed GEMM A matrices U_xi [m x c], each
 * akn_gemm_packed_a_size(m, c) floats, one after another: rows [r0, r1) of each. The plain
 * reference: models build the same bits from their GEMM panels (akn_wino2_weights_panels).
 */
void akn_wino2_weights(const float *w, int m, int c, int r0, int r1, float *out);

/**
 * The same matrices from the layer's GEMM-packed weights (akn_gemm_pack_a of w [m][c*9]: panels of 6
 * rows, [ceil(m/6)][c][3][3][6], zero past m): panels [p0, p1) of each U_xi, bit for bit those of
 * akn_wino2_weights (the padding rows come out zero), reading and writing whole panels.
 */
void akn_wino2_weights_panels(const float *panels, int m, int c, int p0, int p1, float *out);

/** akn_wino_input for F(2x2, 3x3): writes V[xi][ch][col0 + t], xi < 16. */
void akn_wino2_input(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, size_t ldv,
                     size_t xi_stride, size_t col0);

/** akn_wino_output for F(2x2, 3x3). */
void akn_wino2_output(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, int m0, int m1,
                      const float *scale, const float *bias, const float *res, int relu, float *y);

#ifdef __cplusplus
}
#endif
#endif
