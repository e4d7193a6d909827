// gemm_scalar.c — the portable GEMM tile (baseline x86-64 / any CPU; no FMA): 6 x 16 tiles.
#include "gemm_isa.h"
#define AKN_TILE_DISPATCH akn_gemm_tile_scalar
#define AKN_PACK_DISPATCH akn_gemm_pack_b_scalar
#define AKN_GEMV_DISPATCH akn_gemm_gemv_scalar
#define AKN_GEMV_T_DISPATCH akn_gemm_gemv_t_scalar
#define AKN_TILE_OFF_DISPATCH akn_gemm_tile_off_scalar
#include "gemm_tile.inc"
