// winograd.c — weight transforms and the per-ISA dispatch of the Winograd F(4x4, 3x3) and
// F(2x2, 3x3) transforms (see winograd.h; the transforms themselves are in winograd_tf.inc and
// winograd2_tf.inc).
#include "winograd.h"

#include "backend.h"
#include "gemm.h"
#include "winograd_isa.h"

int akn_wino_tiles(int h, int w) { return ((h + 3) / 4) * ((w + 3) / 4); }

enum { QB = 64 };  // kernels transformed together (the inner, vectorized loops)

/// Row r of each of the `xis` transformed matrices, columns [q0, q0 + nq) (u[xi][t]), into its packed
/// GEMM-A panels ([rows/6][cols][6] each, `per` floats apart).
static void store_row(float *out, size_t per, int xis, const float (*u)[QB], int r, int q0, int nq, int cols) {
    for (int xi = 0; xi < xis; xi++) {
        float *dst = out + (size_t)xi * per + ((size_t)(r / 6) * cols + q0) * 6 + r % 6;
        for (int t = 0; t < nq; t++) dst[(size_t)t * 6] = u[xi][t];
    }
}

/// The padding rows of each matrix's last panel (written by whoever covers the last row).
static void zero_padding_rows(float *out, size_t per, int xis, int rows, int cols) {
    if (rows % 6 == 0) return;
    for (int xi = 0; xi < xis; xi++)
        for (int r = rows; r < (rows + 5) / 6 * 6; r++)
            for (int q = 0; q < cols; q++) out[(size_t)xi * per + ((size_t)(r / 6) * cols + q) * 6 + r % 6] = 0.0f;
}

void akn_wino_weights(const float *w, int m, int c, int adjoint, int r0, int r1, float *out) {
    const float g6 = 1.0f / 6, g12 = 1.0f / 12, g24 = 1.0f / 24;
    int rows = adjoint ? c : m, cols = adjoint ? m : c;
    size_t per = akn_gemm_packed_a_size(rows, cols);
    if (r1 > rows) r1 = rows;
    float K[9][QB], T[6][3][QB], U[36][QB];
    for (int r = r0; r < r1; r++) {
        for (int q0 = 0; q0 < cols; q0 += QB) {
            int nq = cols - q0 < QB ? cols - q0 : QB;
            // Kernel (r, q): forward w[r][q]; adjoint w[q][r] flipped in both axes.
            for (int t = 0; t < nq; t++) {
                int q = q0 + t;
                const float *k = adjoint ? w + ((size_t)q * c + r) * 9 : w + ((size_t)r * c + q) * 9;
                for (int e = 0; e < 9; e++) K[e][t] = adjoint ? k[8 - e] : k[e];
            }
            // T = G g (6 x 3), then U = T G' (6 x 6), with G's rows (1/4, 0, 0), (-1/6, -1/6, -1/6),
            // (-1/6, 1/6, -1/6), (1/24, 1/12, 1/6), (1/24, -1/12, 1/6), (0, 0, 1).
            for (int j = 0; j < 3; j++) {
                const float *a = K[j], *b = K[3 + j], *d = K[6 + j];
                for (int t = 0; t < nq; t++) {
                    T[0][j][t] = 0.25f * a[t];
                    T[1][j][t] = -g6 * (a[t] + b[t] + d[t]);
                    T[2][j][t] = -g6 * (a[t] - b[t] + d[t]);
                    T[3][j][t] = g24 * a[t] + g12 * b[t] + g6 * d[t];
                    T[4][j][t] = g24 * a[t] - g12 * b[t] + g6 * d[t];
                    T[5][j][t] = d[t];
                }
            }
            for (int i = 0; i < 6; i++) {
                const float *a = T[i][0], *b = T[i][1], *d = T[i][2];
                for (int t = 0; t < nq; t++) {
                    U[i * 6 + 0][t] = 0.25f * a[t];
                    U[i * 6 + 1][t] = -g6 * (a[t] + b[t] + d[t]);
                    U[i * 6 + 2][t] = -g6 * (a[t] - b[t] + d[t]);
                    U[i * 6 + 3][t] = g24 * a[t] + g12 * b[t] + g6 * d[t];
                    U[i * 6 + 4][t] = g24 * a[t] - g12 * b[t] + g6 * d[t];
                    U[i * 6 + 5][t] = d[t];
                }
            }
            store_row(out, per, 36, (const float (*)[QB])U, r, q0, nq, cols);
        }
    }
    if (r1 == rows) zero_padding_rows(out, per, 36, rows, cols);
}

// The per-ISA transforms, one entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2,
// ABK_ISA_AVX512), for F(4x4, 3x3) and F(2x2, 3x3).
typedef void (*input_fn)(const float *, const float *, int, int, const float *, int, int, float *, size_t, size_t, size_t);
typedef void (*output_fn)(const float *, size_t, size_t, size_t, int, int, int, int, const float *, const float *,
                          const float *, int, float *);
static const input_fn g_input4[3] = {akn_wino_input_scalar, akn_wino_input_avx2, akn_wino_input_avx512};
static const output_fn g_output4[3] = {akn_wino_output_scalar, akn_wino_output_avx2, akn_wino_output_avx512};
static const input_fn g_input2[3] = {akn_wino2_input_scalar, akn_wino2_input_avx2, akn_wino2_input_avx512};
static const output_fn g_output2[3] = {akn_wino2_output_scalar, akn_wino2_output_avx2, akn_wino2_output_avx512};

void akn_wino_input(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, size_t ldv,
                    size_t xi_stride, size_t col0) {
    g_input4[abk_isa()](x, mask, h, w, chscale, c0, c1, v, ldv, xi_stride, col0);
}

void akn_wino_output(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, int m0, int m1,
                     const float *scale, const float *bias, const float *res, int relu, float *y) {
    g_output4[abk_isa()](mbuf, ldm, xi_stride, col0, h, w, m0, m1, scale, bias, res, relu, y);
}

// ---- F(2x2, 3x3) ----

int akn_wino2_tiles(int h, int w) { return ((h + 1) / 2) * ((w + 1) / 2); }

int akn_wino2_adjoint_xi(int xi) {
    // G J = P G with J the 3-element reversal and P swapping rows 0 and 3 of G, so the transform of
    // a flipped kernel is P U P': index i of each axis maps to 3 - i for i in {0, 3}, else i.
    static const int perm[4] = {3, 1, 2, 0};
    return perm[xi / 4] * 4 + perm[xi % 4];
}

void akn_wino2_weights(const float *w, int m, int c, int r0, int r1, float *out) {
    size_t per = akn_gemm_packed_a_size(m, c);
    if (r1 > m) r1 = m;
    float K[9][QB], T[4][3][QB], U[16][QB];
    for (int r = r0; r < r1; r++) {
        for (int q0 = 0; q0 < c; q0 += QB) {
            int nq = c - q0 < QB ? c - q0 : QB;
            for (int t = 0; t < nq; t++) {
                const float *k = w + ((size_t)r * c + q0 + t) * 9;
                for (int e = 0; e < 9; e++) K[e][t] = k[e];
            }
            // T = G g (4 x 3), then U = T G' (4 x 4), G's rows (1, 0, 0), (1/2, 1/2, 1/2),
            // (1/2, -1/2, 1/2), (0, 0, 1).
            for (int j = 0; j < 3; j++) {
                const float *a = K[j], *b = K[3 + j], *d = K[6 + j];
                for (int t = 0; t < nq; t++) {
                    T[0][j][t] = a[t];
                    T[1][j][t] = 0.5f * (a[t] + b[t] + d[t]);
                    T[2][j][t] = 0.5f * (a[t] - b[t] + d[t]);
                    T[3][j][t] = d[t];
                }
            }
            for (int i = 0; i < 4; i++) {
                const float *a = T[i][0], *b = T[i][1], *d = T[i][2];
                for (int t = 0; t < nq; t++) {
                    U[i * 4 + 0][t] = a[t];
                    U[i * 4 + 1][t] = 0.5f * (a[t] + b[t] + d[t]);
                    U[i * 4 + 2][t] = 0.5f * (a[t] - b[t] + d[t]);
                    U[i * 4 + 3][t] = d[t];
                }
            }
            store_row(out, per, 16, (const float (*)[QB])U, r, q0, nq, c);
        }
    }
    if (r1 == m) zero_padding_rows(out, per, 16, m, c);
}

void akn_wino2_weights_panels(const float *panels, int m, int c, int p0, int p1, float *out) {
    size_t per = akn_gemm_packed_a_size(m, c);
    int panelCount = (m + 5) / 6;
    if (p1 > panelCount) p1 = panelCount;
    for (int p = p0; p < p1; p++) {
        for (int q = 0; q < c; q++) {
            // Kernel (6p + j, q), tap e at k[e * 6 + j]: a panel's 6 rows side by side, as are its
            // outputs in each matrix's panel (the same arithmetic as akn_wino2_weights, per element).
            const float *k = panels + ((size_t)p * c + q) * 54;
            float T[4][3][6];
            for (int x = 0; x < 3; x++)
                for (int j = 0; j < 6; j++) {
                    float a = k[x * 6 + j], b = k[(3 + x) * 6 + j], d = k[(6 + x) * 6 + j];
                    T[0][x][j] = a;
                    T[1][x][j] = 0.5f * (a + b + d);
                    T[2][x][j] = 0.5f * (a - b + d);
                    T[3][x][j] = d;
                }
            float *dst = out + ((size_t)p * c + q) * 6;
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 6; j++) {
                    float a = T[i][0][j], b = T[i][1][j], d = T[i][2][j];
                    dst[(size_t)(i * 4 + 0) * per + j] = a;
                    dst[(size_t)(i * 4 + 1) * per + j] = 0.5f * (a + b + d);
                    dst[(size_t)(i * 4 + 2) * per + j] = 0.5f * (a - b + d);
                    dst[(size_t)(i * 4 + 3) * per + j] = d;
                }
        }
    }
}

void akn_wino2_input(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, size_t ldv,
                     size_t xi_stride, size_t col0) {
    g_input2[abk_isa()](x, mask, h, w, chscale, c0, c1, v, ldv, xi_stride, col0);
}

void akn_wino2_output(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, int m0, int m1,
                      const float *scale, const float *bias, const float *res, int relu, float *y) {
    g_output2[abk_isa()](mbuf, ldm, xi_stride, col0, h, w, m0, m1, scale, bias, res, relu, y);
}
