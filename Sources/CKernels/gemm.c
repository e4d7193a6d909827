// gemm.c — packing and the ISA-independent GEMM driver (see gemm.h); the register tiles are in
// gemm_avx512.c, gemm_avx2.c and gemm_scalar.c.
#include "gemm.h"

#include <string.h>

#include "backend.h"
#include "gemm_isa.h"

enum { CHUNK = 64 };  // columns packed at once: 4 panels of 16

typedef void (*tile_fn)(AKN_GEMM_TILE_ARGS);

/// One entry per instruction-set level: the tile function and the largest tile it takes, in panels.
static const struct {
    tile_fn fn;
    int max_pa, max_pb;
} g_tiles[3] = {
    {akn_gemm_tile_scalar, 1, 1},
    {akn_gemm_tile_avx2, 1, 1},
    {akn_gemm_tile_avx512, 2, 2},
};

size_t akn_gemm_packed_a_size(int m, int k) { return (size_t)((m + 5) / 6) * (size_t)k * 6; }

void akn_gemm_pack_a(const float *a, long lda, int trans, int m, int k, float *out) {
    int panels = (m + 5) / 6;
    for (int q = 0; q < panels; q++)
        for (int p = 0; p < k; p++)
            for (int i = 0; i < 6; i++) {
                int r = q * 6 + i;
                float v = 0;
                if (r < m) v = trans ? a[(size_t)p * lda + r] : a[(size_t)r * lda + p];
                out[((size_t)q * k + p) * 6 + i] = v;
            }
}

int akn_gemm_chunk_cols(void) { return CHUNK; }

size_t akn_gemm_scratch_size(int k, int cols) {
    (void)cols;
    return (size_t)k * CHUNK + 12 * 32 + 16;
}

/// Packs columns [j0, j0 + cols) of B (cols <= CHUNK) into panels [cols/16][k][16], zero past n,
/// with the mask and the row scale applied: (bmask > 0 ? b : 0) * bscale.
static void pack_b(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out) {
    int panels = (cols + 15) / 16;
    for (int q = 0; q < panels; q++) {
        float *dst = out + (size_t)q * k * 16;
        int c0 = j0 + q * 16;
        int valid = n - c0 < 16 ? n - c0 : 16;
        int s0 = c0 / io->per, pos0 = c0 % io->per;
        if (valid == 16 && pos0 + 16 <= io->per) {
            // 16 contiguous positions of one sample: copy rows.
            size_t off = (size_t)s0 * io->b_sample + pos0;
            const float *src = io->b + off, *mk = io->bmask ? io->bmask + off : NULL;
            for (int p = 0; p < k; p++) {
                const float *sp = src + (size_t)p * io->ldb;
                float *dp = dst + (size_t)p * 16;
                float sc = io->bscale ? io->bscale[p] : 1.0f;
                if (mk) {
                    const float *mp = mk + (size_t)p * io->ldb;
                    for (int jj = 0; jj < 16; jj++) dp[jj] = mp[jj] > 0 ? sp[jj] * sc : 0.0f;
                } else if (io->bscale) {
                    for (int jj = 0; jj < 16; jj++) dp[jj] = sp[jj] * sc;
                } else {
                    memcpy(dp, sp, 16 * sizeof(float));
                }
            }
            continue;
        }
        size_t off[16];
        for (int jj = 0; jj < 16; jj++) {
            int j = c0 + jj;
            off[jj] = jj < valid ? (size_t)(j / io->per) * io->b_sample + j % io->per : 0;
        }
        for (int p = 0; p < k; p++) {
            float sc = io->bscale ? io->bscale[p] : 1.0f;
            size_t row = (size_t)p * io->ldb;
            for (int jj = 0; jj < 16; jj++) {
                float v = 0.0f;
                if (jj < valid) {
                    v = io->b[off[jj] + row];
                    if (io->bmask && !(io->bmask[off[jj] + row] > 0)) v = 0.0f;
                    else v = io->bscale ? v * sc : v;
                }
                dst[(size_t)p * 16 + jj] = v;
            }
        }
    }
}

void akn_gemm(int m, int n, int k, const float *pa, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
              float *scratch) {
    if (m1 > m) m1 = m;
    if (n1 > n) n1 = n;
    if (m0 >= m1 || n0 >= n1) return;
    int level = abk_isa();
    tile_fn fn = g_tiles[level].fn;
    int max_pa = g_tiles[level].max_pa, max_pb = g_tiles[level].max_pb;
    float *bbuf = scratch;
    float *tile = scratch + (size_t)k * CHUNK;
    if (k == 0) {
        // An empty sum: C = epilogue(0) (the tile reads nothing from A or B).
        for (int r = m0; r < m1; r += 6)
            for (int c = n0; c < n1; c += 16)
                fn(0, pa, 1, bbuf, 1, io, r, r + 6 < m1 ? r + 6 : m1, c, c + 16 < n1 ? c + 16 : n1, tile);
        return;
    }
    for (int jc = n0; jc < n1; jc += CHUNK) {
        int cols = n1 - jc < CHUNK ? n1 - jc : CHUNK;
        pack_b(io, k, n, jc, cols, bbuf);
        int bpanels = (cols + 15) / 16;
        for (int r = m0; r < m1;) {
            int rows_left = m1 - r;
            int npa = (max_pa == 2 && rows_left > 6) ? 2 : 1;
            const float *a = pa + (size_t)(r / 6) * k * 6;
            int r1 = r + 6 * npa < m1 ? r + 6 * npa : m1;
            for (int q = 0; q < bpanels;) {
                int npb = (max_pb == 2 && bpanels - q >= 2) ? 2 : 1;
                int c0 = jc + q * 16;
                int c1 = c0 + 16 * npb < jc + cols ? c0 + 16 * npb : jc + cols;
                fn(k, a, npa, bbuf + (size_t)q * k * 16, npb, io, r, r1, c0, c1, tile);
                q += npb;
            }
            r = r1;
        }
    }
}
