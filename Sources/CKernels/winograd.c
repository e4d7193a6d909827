// winograd.c — weight transform and the per-ISA dispatch of the Winograd F(4x4, 3x3) transforms
// (see winograd.h; the transforms themselves are in winograd_tf.inc).
#include "winograd.h"

#include "backend.h"
#include "gemm.h"
#include "winograd_isa.h"

int akn_wino_tiles(int h, int w) { return ((h + 3) / 4) * ((w + 3) / 4); }

void akn_wino_weights(const float *w, int m, int c, int adjoint, float *out) {
    static const double G[6][3] = {
        {1.0 / 4, 0, 0},
        {-1.0 / 6, -1.0 / 6, -1.0 / 6},
        {-1.0 / 6, 1.0 / 6, -1.0 / 6},
        {1.0 / 24, 1.0 / 12, 1.0 / 6},
        {1.0 / 24, -1.0 / 12, 1.0 / 6},
        {0, 0, 1},
    };
    int rows = adjoint ? c : m, cols = adjoint ? m : c;
    size_t per = akn_gemm_packed_a_size(rows, cols);
    // Rows of U_xi in GEMM-A panel order: [rows/6][cols][6].
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++) {
            // Forward: kernel w[r][q]; adjoint: w[q][r] flipped in both axes.
            const float *k = adjoint ? w + ((size_t)q * c + r) * 9 : w + ((size_t)r * c + q) * 9;
            double g[3][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = adjoint ? k[(2 - i) * 3 + (2 - j)] : k[i * 3 + j];
            double tmp[6][3];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 3; j++) tmp[i][j] = G[i][0] * g[0][j] + G[i][1] * g[1][j] + G[i][2] * g[2][j];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++) {
                    double u = tmp[i][0] * G[j][0] + tmp[i][1] * G[j][1] + tmp[i][2] * G[j][2];
                    out[(size_t)(i * 6 + j) * per + ((size_t)(r / 6) * cols + q) * 6 + r % 6] = (float)u;
                }
        }
    // Zero the padding rows of the last panel.
    if (rows % 6)
        for (int xi = 0; xi < 36; xi++)
            for (int r = rows; r < (rows + 5) / 6 * 6; r++)
                for (int q = 0; q < cols; q++) out[(size_t)xi * per + ((size_t)(r / 6) * cols + q) * 6 + r % 6] = 0.0f;
}

void akn_wino_input(const float *x, const float *mask, int h, int w, const float *chscale, int c0, int c1, float *v, size_t ldv,
                    size_t xi_stride, size_t col0) {
    switch (abk_isa()) {
    case ABK_ISA_AVX512: akn_wino_input_avx512(x, mask, h, w, chscale, c0, c1, v, ldv, xi_stride, col0); break;
    case ABK_ISA_AVX2: akn_wino_input_avx2(x, mask, h, w, chscale, c0, c1, v, ldv, xi_stride, col0); break;
    default: akn_wino_input_scalar(x, mask, h, w, chscale, c0, c1, v, ldv, xi_stride, col0); break;
    }
}

void akn_wino_output(const float *mbuf, size_t ldm, size_t xi_stride, size_t col0, int h, int w, int m0, int m1,
                     const float *scale, const float *bias, const float *res, int relu, float *y) {
    switch (abk_isa()) {
    case ABK_ISA_AVX512:
        akn_wino_output_avx512(mbuf, ldm, xi_stride, col0, h, w, m0, m1, scale, bias, res, relu, y);
        break;
    case ABK_ISA_AVX2: akn_wino_output_avx2(mbuf, ldm, xi_stride, col0, h, w, m0, m1, scale, bias, res, relu, y); break;
    default: akn_wino_output_scalar(mbuf, ldm, xi_stride, col0, h, w, m0, m1, scale, bias, res, relu, y); break;
    }
}
