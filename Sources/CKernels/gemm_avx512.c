// gemm_avx512.c — the GEMM tile for AVX-512 (F, VL, BW, DQ) + FMA: 12 x 32 tiles in 24 ZMM registers.
#include "gemm_isa.h"
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#define AKN_TILE_DISPATCH akn_gemm_tile_avx512
#define AKN_PACK_DISPATCH akn_gemm_pack_b_avx512
#define AKN_GEMV_DISPATCH akn_gemm_gemv_avx512
#define AKN_GEMV_T_DISPATCH akn_gemm_gemv_t_avx512
#define AKN_TILE_OFF_DISPATCH akn_gemm_tile_off_avx512
#define AKN_GEMV_REGS 28
#define AKN_GEMV_PAIRS 1
#include <immintrin.h>
// 16 floats src[idx[j]] (0 where idx[j] < 0) into d: one masked gather.
#define AKN_GATHER16(d, src, idx)                                                                  \
    {                                                                                              \
        __m512i i_ = _mm512_loadu_si512((const void *)(idx));                                      \
        __mmask16 m_ = _mm512_cmpge_epi32_mask(i_, _mm512_setzero_si512());                        \
        _mm512_storeu_ps((d), _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m_, i_, (src), 4));    \
    }
// Lanes 0-7 from src + hb[0] and 8-15 from src + hb[1], each lane l of a half at (l mod 8) * sw
// (sw 1 or 2), lanes whose offset is negative zeroed: two loads masked to the elements the lanes
// use (hm) and one two-source permute.
#define AKN_HALVES(d, src, hb, hm, o, sw)                                                          \
    {                                                                                              \
        __m512 lo_ = _mm512_maskz_loadu_ps((__mmask16)(hm)[0], (src) + (hb)[0]);                  \
        __m512 hi_ = _mm512_maskz_loadu_ps((__mmask16)(hm)[1], (src) + (hb)[1]);                  \
        __m512i ix_ = (sw) == 1 ? _mm512_set_epi32(23, 22, 21, 20, 19, 18, 17, 16, 7, 6, 5, 4, 3, 2, 1, 0) \
                                : _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0); \
        __mmask16 z_ = _mm512_cmpge_epi32_mask(_mm512_loadu_si512((const void *)(o)), _mm512_setzero_si512()); \
        _mm512_storeu_ps((d), _mm512_maskz_permutex2var_ps(z_, lo_, ix_, hi_));                    \
    }
// nr runs of lanes, run r's lane l at src + tb[r] + sw * l (sw 1 or 2) where bit sw * l of tm[r]
// is set, zero elsewhere: one masked load per run of the elements its lanes use (the runs' are
// disjoint), for stride 2 two per run (elements 0-15 and 16-31) and one two-source permute of the
// even elements.
#define AKN_RUNS(d, src, tb, tm, sw, nr)                                                           \
    {                                                                                              \
        if ((sw) == 1) {                                                                           \
            __m512 v_ = _mm512_maskz_loadu_ps((__mmask16)(tm)[0], (src) + (tb)[0]);               \
            for (int r_ = 1; r_ < (nr); r_++) v_ = _mm512_mask_loadu_ps(v_, (__mmask16)(tm)[r_], (src) + (tb)[r_]); \
            _mm512_storeu_ps((d), v_);                                                             \
        } else {                                                                                   \
            __m512 lo_ = _mm512_maskz_loadu_ps((__mmask16)(tm)[0], (src) + (tb)[0]);              \
            __m512 hi_ = _mm512_maskz_loadu_ps((__mmask16)((tm)[0] >> 16), (src) + (tb)[0] + 16);  \
            for (int r_ = 1; r_ < (nr); r_++) {                                                    \
                lo_ = _mm512_mask_loadu_ps(lo_, (__mmask16)(tm)[r_], (src) + (tb)[r_]);            \
                hi_ = _mm512_mask_loadu_ps(hi_, (__mmask16)((tm)[r_] >> 16), (src) + (tb)[r_] + 16); \
            }                                                                                      \
            __m512i ix_ = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0); \
            _mm512_storeu_ps((d), _mm512_permutex2var_ps(lo_, ix_, hi_));                          \
        }                                                                                          \
    }
// s[0], s[2], ..., s[30] into d: two loads (the second of 15 floats) and one two-source permute.
#define AKN_EVEN16(d, s)                                                                           \
    {                                                                                              \
        __m512 lo_ = _mm512_loadu_ps((s)), hi_ = _mm512_maskz_loadu_ps(0x7fff, (s) + 16);          \
        __m512i ix_ = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);  \
        _mm512_storeu_ps((d), _mm512_permutex2var_ps(lo_, ix_, hi_));                              \
    }
#include "gemm_tile.inc"
#pragma clang attribute pop
