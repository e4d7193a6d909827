// gemm_avx512.c — the GEMM tile for AVX-512 (F, VL, BW, DQ) + FMA: 12 x 32 tiles in 24 ZMM registers.
#include "gemm_isa.h"
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#define AKN_TILE_DISPATCH akn_gemm_tile_avx512
#define AKN_PACK_DISPATCH akn_gemm_pack_b_avx512
#include "gemm_tile.inc"
#pragma clang attribute pop
