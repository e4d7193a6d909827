// conv3x3_c16_avx512.c — the channel-blocked direct 3x3 kernel for the avx512 path (conv3x3_c16.inc).
#include "conv3x3_isa.h"
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#define AKN_C16_SUFFIX avx512
#define AKN_C16_MAXP 16
#include "conv3x3_c16.inc"
#pragma clang attribute pop
