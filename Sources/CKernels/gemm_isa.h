// gemm_isa.h — the per-ISA GEMM tiles (internal to CKernels; see gemm.h).
#ifndef ADAMANT_GEMM_ISA_H
#define ADAMANT_GEMM_ISA_H
#include "gemm.h"
#define AKN_GEMM_TILE_ARGS int k, const float *a, int npa, const float *b, int npb, const akn_gemm_cols *io, int r0, \
                           int r1, int c0, int c1, float *tile
void akn_gemm_tile_avx512(AKN_GEMM_TILE_ARGS);
void akn_gemm_tile_avx2(AKN_GEMM_TILE_ARGS);
void akn_gemm_tile_scalar(AKN_GEMM_TILE_ARGS);
#endif
