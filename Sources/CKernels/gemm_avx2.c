// gemm_avx2.c — the GEMM tile for AVX2 + FMA: 6 x 16 tiles in 12 YMM registers.
#include "gemm_isa.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define AKN_TILE_DISPATCH akn_gemm_tile_avx2
#define AKN_PACK_DISPATCH akn_gemm_pack_b_avx2
#define AKN_GEMV_DISPATCH akn_gemm_gemv_avx2
#define AKN_GEMV_T_DISPATCH akn_gemm_gemv_t_avx2
#define AKN_TILE_OFF_DISPATCH akn_gemm_tile_off_avx2
// W^T's blocks prefetched 4 ahead, not 16: a 6 x 16 tile's pass over a block takes ~40 cycles, and with
// W's blocks 12 or 48 KB apart (512 or 2048 channels) every block falls in the same few L1 sets, which
// hold about 8 blocks: lines fetched 16 ahead were evicted before use. ResNet-50's 2048 x 512 and
// 512 x 2048 input-gradient GEMMs at 49 columns: 1.38-1.39x the packed-A time -> 1.31x; at 196
// columns 1.15 -> 1.09x (one thread, B prepacked; AMD EPYC family 25 model 1).
#define AKN_PF_BLOCKS 4
#include <immintrin.h>
// 8 floats src[idx[j]] (0 where idx[j] < 0) into d: one masked gather (AKN_GATHER8 alone: a panel
// whose lanes 8-15 are all padding or past n).
#define AKN_GATHER8(d, src, idx)                                                                   \
    {                                                                                              \
        __m256i i_ = _mm256_loadu_si256((const __m256i *)(idx));                                   \
        __m256 m_ = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i_, _mm256_set1_epi32(-1)));            \
        _mm256_storeu_ps((d), _mm256_mask_i32gather_ps(_mm256_setzero_ps(), (src), i_, m_, 4));    \
    }
// The same for 16: two of them.
#define AKN_GATHER16(d, src, idx)                                                                  \
    {                                                                                              \
        AKN_GATHER8((d), (src), (idx))                                                             \
        AKN_GATHER8((d) + 8, (src), (idx) + 8)                                                     \
    }
#include "gemm_tile.inc"
#pragma clang attribute pop
