// gemm.c — packing and the ISA-independent GEMM driver (see gemm.h); the register tiles are in
// gemm_avx512.c, gemm_avx2.c and gemm_scalar.c.
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gemm_isa.h"

enum { CHUNK = 64 };  // columns packed at once: 4 panels of 16

typedef void (*tile_fn)(AKN_GEMM_TILE_ARGS);
typedef void (*pack_fn)(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out);

/// One entry per instruction-set level: the tile function and the largest tile it takes, in panels.
static const struct {
    tile_fn fn;
    pack_fn pack;
    int max_pa, max_pb;
} g_tiles[3] = {
    {akn_gemm_tile_scalar, akn_gemm_pack_b_scalar, 1, 1},
    {akn_gemm_tile_avx2, akn_gemm_pack_b_avx2, 1, 1},
    {akn_gemm_tile_avx512, akn_gemm_pack_b_avx512, 2, 2},
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
    return (size_t)k * CHUNK + 12 * 32 + 16;  // B chunk, tile
}

/// Panels of rows [r0, r1) of A = W^T (A[i][p] = W[p][i]) gathered from W's packed panels (W: k x m,
/// packed as [k/6][m][6]) into out ([(r1 - r0)/6][k][6], r0 a multiple of 6), zero past m. Each
/// source panel contributes 6 contiguous floats per row.
static void pack_at(const float *pw, int m, int k, int r0, int r1, float *out) {
    for (int r = r0; r < r1; r += 6) {
        float *dst = out + (size_t)((r - r0) / 6) * k * 6;
        for (int i = 0; i < 6; i++) {
            int row = r + i;
            for (int p0 = 0; p0 < k; p0 += 6) {
                int np = k - p0 < 6 ? k - p0 : 6;
                const float *src = pw + ((size_t)(p0 / 6) * m + row) * 6;
                for (int pp = 0; pp < np; pp++) dst[(size_t)(p0 + pp) * 6 + i] = row < m ? src[pp] : 0.0f;
            }
        }
    }
}

static __thread float *t_at = NULL;  // this thread's gathered W^T panels (grown, kept for the next call)
static __thread size_t t_at_cap = 0;

static void gemm_driver(int m, int n, int k, const float *pa, int a_row0, const akn_gemm_cols *io, int m0, int m1,
                        int n0, int n1, float *scratch);

void akn_gemm(int m, int n, int k, const float *pa, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
              float *scratch) {
    gemm_driver(m, n, k, pa, 0, io, m0, m1, n0, n1, scratch);
}

void akn_gemm_transposed(int m, int n, int k, const float *pw, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
                         float *scratch) {
    if (m1 > m) m1 = m;
    if (m0 >= m1 || n0 >= n1 || k <= 0) {
        gemm_driver(m, n, k, pw, m0, io, m0, m1, n0, n1, scratch);
        return;
    }
    // W^T's panels for this call's rows, gathered once (a thread-local buffer, grown as needed).
    int rows = (m1 - m0 + 5) / 6 * 6;
    size_t need = (size_t)rows * k;
    if (need > t_at_cap) {
        float *grown = realloc(t_at, need * sizeof(float));
        if (!grown) return;  // out of memory: C is left as it was
        t_at = grown;
        t_at_cap = need;
    }
    pack_at(pw, m, k, m0, m0 + rows, t_at);
    gemm_driver(m, n, k, t_at, m0, io, m0, m1, n0, n1, scratch);
}

/// The GEMM proper; pa's panels start at row a_row0 (0 for a whole packed A).
static void gemm_driver(int m, int n, int k, const float *pa, int a_row0, const akn_gemm_cols *io, int m0, int m1,
                        int n0, int n1, float *scratch) {
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
                fn(0, bbuf, 1, bbuf, 1, io, r, r + 6 < m1 ? r + 6 : m1, c, c + 16 < n1 ? c + 16 : n1, tile);
        return;
    }
    for (int jc = n0; jc < n1; jc += CHUNK) {
        int cols = n1 - jc < CHUNK ? n1 - jc : CHUNK;
        g_tiles[level].pack(io, k, n, jc, cols, bbuf);
        int bpanels = (cols + 15) / 16;
        for (int r = m0; r < m1;) {
            int rows_left = m1 - r;
            int npa = (max_pa == 2 && rows_left > 6) ? 2 : 1;
            const float *a = pa + (size_t)((r - a_row0) / 6) * k * 6;
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
