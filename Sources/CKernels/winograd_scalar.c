// winograd_scalar.c — Winograd F(4x4, 3x3) and F(2x2, 3x3) transforms for the scalar path (winograd_tf.inc, winograd2_tf.inc).
#include "winograd_isa.h"
#define AKN_WINO_SUFFIX scalar
#include "winograd_tf.inc"
#include "winograd2_tf.inc"
