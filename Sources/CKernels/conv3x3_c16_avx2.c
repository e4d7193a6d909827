// conv3x3_c16_avx2.c — the channel-blocked direct 3x3 kernel for the avx2 path (conv3x3_c16.inc).
#include "conv3x3_isa.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define AKN_C16_SUFFIX avx2
#define AKN_C16_MAXP 4
#include <immintrin.h>
// The ReLU in two instructions instead of four: max(0, v) keeps v when it is NaN (the second
// operand), and + 0 turns -0 into +0: the same results as the portable form.
#define AKN_C16_RELU8(v) ((akn_v8)_mm256_max_ps(_mm256_setzero_ps(), (__m256)(v)) + 0.0f)
#include "conv3x3_c16.inc"
#pragma clang attribute pop
