// simd.h — the vector types of adamant's portable C kernels (internal to CKernels): clang/gcc vector
// extensions of 8 and 16 lanes, which each ISA's build lowers to its own registers (one ZMM or two
// YMM for 16 floats; SSE pairs on the portable path). Aligned to a float only: kernels load and
// store them with memcpy at any address.
#ifndef ADAMANT_SIMD_H
#define ADAMANT_SIMD_H

typedef float akn_v4 __attribute__((vector_size(16), aligned(4)));
typedef float akn_v8 __attribute__((vector_size(32), aligned(4)));
typedef int akn_vi8 __attribute__((vector_size(32), aligned(4)));
typedef float akn_v16 __attribute__((vector_size(64), aligned(4)));
typedef int akn_vi16 __attribute__((vector_size(64), aligned(4)));

#endif
