/*
 * gemm.h — adamant's own single-precision GEMM for convolutions and dense layers.
 *
 *   C[m x n] = epilogue( A[m x k] . B[k x n] ),  epilogue(v) = relu?(v * scale + bias + R)
 *
 * A (the weights) is packed once, at load, in panels of 6 rows: [ceil(m/6)][k][6], zero-filled
 * past m. B (activations) is packed per call in panels of 16 columns: [ceil(n/16)][k][16]. Columns
 * may come from several samples: column j is position j % per of sample j / per, so a batch of
 * small images makes one wide GEMM.
 *
 * Deterministic by construction: every element of C is the same chain of multiply-adds over k, in
 * order, from zero, whatever its position in a register tile, the tile shape, the column range a
 * call covers or the thread that runs it. So results never depend on the batch size, batch-mates
 * or the thread count. The register tile (12x32 on AVX-512, 6x16 on AVX2+FMA and portable C) is
 * chosen per call from the instruction-set level in force (abk_isa).
 */
#ifndef ADAMANT_GEMM_H
#define ADAMANT_GEMM_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/** Rows per A panel and columns per B panel. */
enum { AKN_GEMM_MR = 6, AKN_GEMM_NR = 16 };

/** Floats of a packed A for an m x k matrix. */
size_t akn_gemm_packed_a_size(int m, int k);

/**
 * Packs A into panels. Without `trans`, A[i][p] = a[i * lda + p]; with it, A[i][p] = a[p * lda + i]
 * (e.g. the transposed weight of a convolution's input gradient).
 */
void akn_gemm_pack_a(const float *a, long lda, int trans, int m, int k, float *out);

/**
 * A convolution's input read as its im2col matrix (implicit GEMM): with akn_gemm_cols.conv set, B's
 * row p = (ci * kh + ki) * kw + kj and column j = (sample j / per, output position j % per = oy * ow + ox)
 * hold x[ci][oy * sh - pt + ki * dh][ox * sw - pl + kj * dw] of that sample (0 in the padding), x's
 * channel ci at b + sample * b_sample + ci * ldb (ldb >= h * w). The packing gathers them straight
 * from x: no im2col buffer, and the values (hence the results) are those of an explicit im2col.
 * bmask and bscale must be NULL.
 */
typedef struct akn_conv_b {
    int h, w, ow;            /**< input plane and output width */
    int kh, kw, sh, sw, dh, dw;
    int pt, pl;              /**< top and left padding */
} akn_conv_b;

/** Where the columns of B, C and an optional residual R live: column j = (sample j / per, position j % per). */
typedef struct akn_gemm_cols {
    int per;                 /**< columns per sample (> 0) */
    const float *b;          /**< B[p][j] at b + sample * b_sample + p * ldb + position */
    long ldb, b_sample;
    float *c;                /**< C[i][j] at c + sample * c_sample + i * ldc + position */
    long ldc, c_sample;
    const float *r;          /**< optional residual, added before the ReLU: same mapping as C */
    long ldr, r_sample;
    const float *bscale;     /**< optional, one per row of B: B[p][j] is multiplied by bscale[p] when packed */
    const float *bmask;      /**< optional, laid out like B: B[p][j] counts only where bmask > 0 (a ReLU's mask) */
    const float *scale;      /**< optional, one per row of C: C = acc * scale + bias (else acc + bias) */
    const float *bias;       /**< optional, one per row of C */
    int relu;                /**< apply max(x, 0) last (NaN stays NaN) */
    const akn_conv_b *conv;  /**< optional: B is the im2col of a convolution's input (akn_conv_b) */
} akn_gemm_cols;

/** Scratch floats akn_gemm needs for a call covering `cols` columns (packed B block + one tile). */
size_t akn_gemm_scratch_size(int k, int cols);

/**
 * Computes rows [m0, m1) and columns [n0, n1) of C (m0 a multiple of 6, n0 of 16, or the ends).
 * `pa` is the packed A of the whole m x k matrix. Independent calls on disjoint ranges may run on
 * different threads, each with its own scratch.
 */
void akn_gemm(int m, int n, int k, const float *pa, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
              float *scratch);

/**
 * The same for C[m x n] = epilogue(W^T . B) where W is k x m, given as its packed panels
 * (akn_gemm_pack_a of W with rows = k, cols = m): the tiles read W^T straight from them, so a layer's
 * input gradient needs neither a second copy of its weights nor a per-call transpose. Bit-identical
 * to akn_gemm on the packed W^T. The tiles may read up to AKN_GEMM_SLACK floats past W's last
 * panel (into rows they never store): allocate W's panels with that slack.
 */
void akn_gemm_transposed(int m, int n, int k, const float *pw, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
                         float *scratch);

/** Columns up to which akn_gemm (packed A) runs one column at a time, rows in the vector lanes. */
#define AKN_GEMM_NARROW 4

/** Floats of slack after a packed W read by akn_gemm_transposed. */
enum { AKN_GEMM_SLACK = 64 };

/**
 * Gathers the packed panels of rows [r0, r1) (r0 a multiple of 6) of A = W^T (m x k) from W's
 * packed panels into `out`, a packed A of akn_gemm_packed_a_size(m, k) floats laid out as
 * akn_gemm_pack_a would write it (the reference akn_gemm_transposed is tested against).
 */
void akn_gemm_gather_transposed(const float *pw, int m, int k, int r0, int r1, float *out);

/**
 * This thread's scratch buffer number `slot` (0-4), grown to at least `floats` and kept for the
 * next call (kernels' per-thread scratch: no allocation per layer). NULL if it cannot grow.
 * Slot 0: GEMM B chunks (akn_gemm_scratch_size); 1: the direct kernel's tile; 2: a B packed whole
 * and shared by the threads of one GEMM; 3: a GEMM tile; 4: a direct 3x3 band's padded input.
 */
float *akn_thread_scratch(int slot, size_t floats);

/** Floats of B packed whole (akn_gemm_pack_b) for k x n. */
size_t akn_gemm_packed_b_size(int k, int n);

/**
 * Packs columns [j0, j1) of B (j0 a multiple of 64 or n) into `out`, B's whole packed panels
 * ([ceil(n/16)][k][16], with bmask and bscale applied as akn_gemm does): disjoint ranges may be
 * packed on different threads, so threads that split C by rows share one packing of B.
 */
void akn_gemm_pack_b(const akn_gemm_cols *io, int k, int n, int j0, int j1, float *out);

/**
 * The same packing split by rows of B: rows [p0, p1) of every column into `out` (B's whole packed
 * panels, as akn_gemm_pack_b). Threads that split C by rows then each pack the rows of B that they
 * wrote as the previous layer's rows of C: read from their own cache instead of the other core's.
 * With io->conv (an implicit im2col), p0 and p1 must be whole input channels (multiples of
 * kh * kw, or k): a layer whose columns make one chunk is then packed by all its threads.
 */
void akn_gemm_pack_b_rows(const akn_gemm_cols *io, int k, int n, int p0, int p1, float *out);

/**
 * akn_gemm (or, with `transposed`, akn_gemm_transposed) on a B packed whole by akn_gemm_pack_b:
 * bit-identical results. `tile` holds 12 * 32 + 16 floats.
 */
void akn_gemm_prepacked(int m, int n, int k, const float *pa, int transposed, const float *pb, const akn_gemm_cols *io,
                        int m0, int m1, int n0, int n1, float *tile);

/**
 * A convolution with few input channels and a large window (a ResNet's 7x7/2 stem) computed
 * directly, with akn_gemm's tiles and packed A (its weights, m x c * kh * kw): per unit of output
 * rows [oy0, oy1) of sample s, the input rows they read are split once into sw phases (element
 * j * sw + ph of a row at phase ph, column j), so each tap's 16 columns of an output row are
 * consecutive floats, read in place (no packed B, no gather). io as for akn_gemm with io->conv set
 * (bmask, bscale NULL); every element is akn_gemm's chain over the implicit im2col's rows, so the
 * same bits as akn_gemm on it. Disjoint units may run on different threads, each with its own
 * scratch of akn_conv_phased_scratch_size(g, c, oy1 - oy0) floats.
 */
size_t akn_conv_phased_scratch_size(const akn_conv_b *g, int c, int rows);
void akn_conv_phased(const akn_gemm_cols *io, int c, int m, const float *pa, int s, int oy0, int oy1, float *scratch);
/**
 * The input gradient of a strided convolution (dilation 1) as one GEMM per row of its input's phase
 * grid: input element (ci, sh qy + py, sw qx + px) is row (ci, py, px) (c * sh * sw rows) at column
 * (qy, qx), a sum over (co, dy, dx) of A[(ci, py, px)][(co, dy, dx)] * dz'[co][qy + dy][qx + dx], where
 * A holds the tap (py + pt - sh dy, px + pl - sw dx) of W[co][ci] or 0 (the dy, dx range covers every
 * phase's taps: akn_phased_adjoint_dims gives rows x depth) and dz' = (mask > 0 ? dz : 0) * scale[co].
 * The tiles read dz' in place from a band of it (no im2col columns, no col2im). `pa`: A packed
 * (akn_gemm_pack_a); akn_phased_adjoint_weights writes A [rows][depth] from W [m][c][kh][kw].
 * Phase-grid rows [q0, q1) of one sample's dx [c][h][w] are written (not added), every element
 * by one chain: disjoint ranges may run on different threads, each with its own scratch of
 * akn_phased_adjoint_scratch_size(g, c, m, q1 - q0) floats.
 */
void akn_phased_adjoint_dims(const akn_conv_b *g, int c, int m, int *rows, int *depth);
void akn_phased_adjoint_weights(const akn_conv_b *g, int c, int m, const float *w, float *out);
size_t akn_phased_adjoint_scratch_size(const akn_conv_b *g, int c, int m, int rows);
void akn_phased_adjoint(const akn_conv_b *g, int c, int m, int oh, const float *pa, const float *dz, const float *mask,
                        const float *scale, int q0, int q1, float *dx, float *scratch);
/**
 * The adjoint of the implicit im2col (akn_conv_b): adds im2col columns back into the input. `col`
 * holds per sample (col_sample floats apart) the rows p = (ci * kh + ki) * kw + kj of its c channels,
 * ldc floats apart, oh * ow positions each; x's channel ci of sample s is at x + s * x_sample +
 * ci * (h * w). Runs units [u0, u1) of (sample, channel, band) = (u / (c * bands), (u / bands) % c,
 * u % bands), a band being input rows [r0 + (r1 - r0) * band / bands, r0 + (r1 - r0) * (band + 1) /
 * bands) (r0 = 0, r1 = h: all; a smaller range when the columns hit only those rows): disjoint units
 * may run on different threads. Each input element receives its terms in the order (ki, kj, oy, ox),
 * whatever the units, so results never depend on the split. The columns of output rows [oy0, oy1)
 * alone are added with g->pt lowered by oy0 * sh and oh = oy1 - oy0; such bands, taken from the
 * last to the first, add every element's terms in the same order as one call on all the columns.
 */
void akn_col2im(const float *col, long ldc, long col_sample, const akn_conv_b *g, int oh, int c, int bands, int r0,
                int r1, long u0, long u1, float *x, long x_sample);

/**
 * A strided 1x1 convolution's input (its im2col): out[p][i][j] = x[p][i * sh][j * sw] for planes
 * [p0, p1) of h x w (out: oh x ow each), so the layer runs as a 1x1 stride-1 GEMM. Requires
 * (oh - 1) * sh < h and (ow - 1) * sw < w (else does nothing).
 */
void akn_subsample(const float *x, int h, int w, int sh, int sw, int oh, int ow, long p0, long p1, float *out);

/**
 * Its adjoint: planes [p0, p1) of dx (h x w) set to zero except dx[p][i * sh][j * sw] = g[p][i][j]
 * (the exact values, signed zeros included).
 */
void akn_subsample_adjoint(const float *g, int h, int w, int sh, int sw, int oh, int ow, long p0, long p1, float *dx);

/** Columns per chunk a call packs at once (callers splitting work use multiples of it). */
int akn_gemm_chunk_cols(void);

#ifdef __cplusplus
}
#endif
#endif
