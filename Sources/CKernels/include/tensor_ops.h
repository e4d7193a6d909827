/*
 * tensor_ops.h — kernels of the non-convolution ops robust-ML models add to plain ResNets
 * (non-local / feature-denoising blocks, Wide-ResNets, ResNeXt): softmax rows, 2-D transposes,
 * scalar and elementwise arithmetic. Portable C in GCC/Clang vector extensions (the same code and
 * the same arithmetic on every instruction-set level), each output computed in a fixed order that
 * depends only on the row length: results never depend on the batch, the split or the threads.
 */
#ifndef ADAMANT_TENSOR_OPS_H
#define ADAMANT_TENSOR_OPS_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/**
 * Softmax of `rows` contiguous rows of `len` floats: y = exp(x - max) / sum(exp(x - max)), exp a
 * polynomial with relative error below 2 ulp (Cephes' expf). y may be x.
 */
void akn_softmax_rows(const float *x, float *y, size_t rows, size_t len);

/** Softmax backward over rows: dx = y * (g - sum(g * y)) per row. dx may be g. */
void akn_softmax_backward_rows(const float *y, const float *g, float *dx, size_t rows, size_t len);

/**
 * 2-D transpose of a strided block: dst[i * ldd + j] = src[j * lds + i] for i < rows, j < cols
 * (rows = the source's contiguous extent), in 8 x 8 tiles.
 */
void akn_transpose_block(const float *src, long lds, float *dst, long ldd, size_t rows, size_t cols);

/** y[i] = op(x[i], s) for op 0: +, 1: -, 2: *, 3: /, 4: s - x, 5: s / x. y may be x. */
void akn_scalar_op(const float *x, float s, float *y, size_t n, int op);

/** y[i] = op(a[i], b[i]) for op 0: +, 1: -, 2: *, 3: /. y may be a or b. */
void akn_binary_op(const float *a, const float *b, float *y, size_t n, int op);

/** dot = sum of a[i] * b[i] in Double, in a fixed order (a broadcast operand's gradient). */
double akn_dot(const float *a, const float *b, size_t n);

/** sum of a[i] in Double, in a fixed order. */
double akn_sum(const float *a, size_t n);

#ifdef __cplusplus
}
#endif
#endif
