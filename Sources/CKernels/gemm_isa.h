// gemm_isa.h — the per-ISA GEMM tiles (internal to CKernels; see gemm.h).
#ifndef ADAMANT_GEMM_ISA_H
#define ADAMANT_GEMM_ISA_H
void akn_gemm_tile_avx512(int k, const float *a, int npa, const float *b, int npb, float *tile);
void akn_gemm_tile_avx2(int k, const float *a, int npa, const float *b, int npb, float *tile);
void akn_gemm_tile_scalar(int k, const float *a, int npa, const float *b, int npb, float *tile);
#endif
