// gemm_avx2.c — the GEMM tile for AVX2 + FMA: 6 x 16 tiles in 12 YMM registers.
#include "gemm_isa.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define AKN_TILE_DISPATCH akn_gemm_tile_avx2
#define AKN_PACK_DISPATCH akn_gemm_pack_b_avx2
#include "gemm_tile.inc"
#pragma clang attribute pop
