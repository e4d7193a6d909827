// winograd_avx2.c — Winograd F(4x4, 3x3) and F(2x2, 3x3) transforms for the avx2 path (winograd_tf.inc, winograd2_tf.inc).
#include "winograd_isa.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define AKN_WINO_SUFFIX avx2
#include "winograd_tf.inc"
#include "winograd2_tf.inc"
#pragma clang attribute pop
