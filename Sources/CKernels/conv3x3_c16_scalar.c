// conv3x3_c16_scalar.c — the channel-blocked direct 3x3 kernel for the scalar path (conv3x3_c16.inc).
#include "conv3x3_isa.h"
#define AKN_C16_SUFFIX scalar
#define AKN_C16_MAXP 4
#include "conv3x3_c16.inc"
