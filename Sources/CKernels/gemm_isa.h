// gemm_isa.h — the per-ISA GEMM tiles (internal to CKernels; see gemm.h).
#ifndef ADAMANT_GEMM_ISA_H
#define ADAMANT_GEMM_ISA_H
#include "gemm.h"
#define AKN_GEMM_TILE_ARGS int k, const float *a, long astride, int npa, const float *b, int npb, const akn_gemm_cols *io, int r0, \
                           int r1, int c0, int c1, float *tile
void akn_gemm_tile_avx512(AKN_GEMM_TILE_ARGS);
void akn_gemm_tile_avx2(AKN_GEMM_TILE_ARGS);
void akn_gemm_tile_scalar(AKN_GEMM_TILE_ARGS);
/* Packs columns [j0, j0 + cols) of B (cols <= 64) into 16-column panels, with bmask and bscale. */
void akn_gemm_pack_b_avx512(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out);
void akn_gemm_pack_b_avx2(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out);
void akn_gemm_pack_b_scalar(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out);
/* A few columns (<= 16) of C from B's rows bs floats apart (a packed panel: 16; one column read in place:
   B's ldb), rows in the lanes (see gemm_tile.inc). */
void akn_gemm_gemv_avx512(int k, const float *pa, const float *b, size_t bs, const akn_gemm_cols *io, int m0, int m1, int c0,
                          int cols);
void akn_gemm_gemv_avx2(int k, const float *pa, const float *b, size_t bs, const akn_gemm_cols *io, int m0, int m1, int c0,
                        int cols);
void akn_gemm_gemv_scalar(int k, const float *pa, const float *b, size_t bs, const akn_gemm_cols *io, int m0, int m1, int c0,
                          int cols);
/* The same for A = W^T read from W's packed panels (astride floats apart), 1 to 4 columns of a packed panel. */
void akn_gemm_gemv_t_avx512(int k, const float *pw, long astride, const float *b, const akn_gemm_cols *io, int m0, int m1,
                            int c0, int cols, float *tile);
void akn_gemm_gemv_t_avx2(int k, const float *pw, long astride, const float *b, const akn_gemm_cols *io, int m0, int m1,
                          int c0, int cols, float *tile);
void akn_gemm_gemv_t_scalar(int k, const float *pw, long astride, const float *b, const akn_gemm_cols *io, int m0, int m1,
                            int c0, int cols, float *tile);
/* The tile with B's row p read in place at b + off[p] (akn_conv_phased). */
#define AKN_GEMM_TILE_OFF_ARGS int k, const float *a, int npa, const float *b, int npb, const int *off, const akn_gemm_cols *io, \
                               int r0, int r1, int c0, int c1, float *tile
void akn_gemm_tile_off_avx512(AKN_GEMM_TILE_OFF_ARGS);
void akn_gemm_tile_off_avx2(AKN_GEMM_TILE_OFF_ARGS);
void akn_gemm_tile_off_scalar(AKN_GEMM_TILE_OFF_ARGS);
#endif
