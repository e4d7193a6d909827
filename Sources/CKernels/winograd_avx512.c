// winograd_avx512.c — Winograd F(4x4, 3x3) and F(2x2, 3x3) transforms for the avx512 path (winograd_tf.inc, winograd2_tf.inc).
#include "winograd_isa.h"
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#define AKN_WINO_SUFFIX avx512
#include "winograd_tf.inc"
#include "winograd2_tf.inc"
#pragma clang attribute pop
