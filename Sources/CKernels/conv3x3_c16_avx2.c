// conv3x3_c16_avx2.c — the channel-blocked direct 3x3 kernel for the avx2 path (conv3x3_c16.inc).
#include "conv3x3_isa.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define AKN_C16_SUFFIX avx2
#define AKN_C16_MAXP 4
#include "conv3x3_c16.inc"
#pragma clang attribute pop
