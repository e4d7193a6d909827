// gemm.c — packing and the ISA-independent GEMM driver (see gemm.h); the register tiles are in
// gemm_avx512.c, gemm_avx2.c and gemm_scalar.c.
#include "gemm.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gemm_isa.h"
#include "simd.h"

enum { CHUNK = 64 };  // columns packed at once: 4 panels of 16

typedef void (*tile_fn)(AKN_GEMM_TILE_ARGS);
typedef void (*pack_fn)(const akn_gemm_cols *io, int k, int n, int j0, int cols, float *out);
typedef void (*gemv_fn)(int k, const float *pa, const float *b, size_t bs, const akn_gemm_cols *io, int m0, int m1, int c0,
                        int cols);

typedef void (*tile_off_fn)(AKN_GEMM_TILE_OFF_ARGS);
typedef void (*gemv_t_fn)(int k, const float *pw, long astride, const float *b, const akn_gemm_cols *io, int m0, int m1,
                          int c0, int cols, float *tile);

/// One entry per instruction-set level: the tile function and the largest tile it takes, in panels.
static const struct {
    tile_fn fn;
    pack_fn pack;
    gemv_fn gemv;
    gemv_t_fn gemv_t;
    tile_off_fn off;
    int max_pa, max_pb;
} g_tiles[3] = {
    {akn_gemm_tile_scalar, akn_gemm_pack_b_scalar, akn_gemm_gemv_scalar, akn_gemm_gemv_t_scalar, akn_gemm_tile_off_scalar, 1, 1},
    {akn_gemm_tile_avx2, akn_gemm_pack_b_avx2, akn_gemm_gemv_avx2, akn_gemm_gemv_t_avx2, akn_gemm_tile_off_avx2, 1, 1},
    {akn_gemm_tile_avx512, akn_gemm_pack_b_avx512, akn_gemm_gemv_avx512, akn_gemm_gemv_t_avx512, akn_gemm_tile_off_avx512, 2, 2},
};

/// Columns a call takes one at a time (akn_gemm_gemv_*) rather than in 16-column tiles.
enum { NARROW = AKN_GEMM_NARROW };

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

enum { SLOTS = 5 };
static __thread float *t_scratch[SLOTS];
static __thread size_t t_scratch_cap[SLOTS];
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

/// Runs when a thread that used scratch exits: frees its buffers (a host's short-lived threads
/// would otherwise leak them).
static void free_thread_scratch(void *unused) {
    (void)unused;
    for (int i = 0; i < SLOTS; i++) {
        free(t_scratch[i]);
        t_scratch[i] = NULL;
        t_scratch_cap[i] = 0;
    }
}

static void make_scratch_key(void) { pthread_key_create(&g_scratch_key, free_thread_scratch); }

float *akn_thread_scratch(int slot, size_t floats) {
    if (slot < 0 || slot >= SLOTS) return NULL;
    if (floats > t_scratch_cap[slot]) {
        pthread_once(&g_scratch_once, make_scratch_key);
        pthread_setspecific(g_scratch_key, (void *)1);  // so free_thread_scratch runs at exit
        float *grown = realloc(t_scratch[slot], (floats ? floats : 1) * sizeof(float));
        if (!grown) return NULL;
        t_scratch[slot] = grown;
        t_scratch_cap[slot] = floats;
    }
    return t_scratch[slot];
}

/// Columns of a plain B (not an implicit im2col) packed and run at once: up to 256 (a 14x14 map, or
/// 4 of a 7x7 batch), while k x columns stays within 256K floats (1 MB, the L2), and at least CHUNK.
/// Every row tile of A then streams from memory once per block instead of once per 64 columns: a
/// single-threaded 14x14 layer's 1 MB of weights was read 4 times per sample.
enum { WIDE = 256, WIDE_FLOATS = 256 * 1024 };
static int plain_block_cols(int k) {
    int cols = k > 0 ? WIDE_FLOATS / k / CHUNK * CHUNK : CHUNK;
    return cols < CHUNK ? CHUNK : cols > WIDE ? WIDE : cols;
}

/// An implicit im2col's packing stays at CHUNK columns a block.
static int block_cols(const akn_gemm_cols *io, int k) { return io->conv ? CHUNK : plain_block_cols(k); }

size_t akn_gemm_scratch_size(int k, int cols) {
    (void)cols;
    return (size_t)k * plain_block_cols(k) + 12 * 32 + 16;  // B block (the widest), tile
}

void akn_gemm_gather_transposed(const float *pw, int m, int k, int r0, int r1, float *out) {
    if (r1 > m) r1 = m;
    // Panel q of W^T (its rows 6q..6q+5) is [k][6]; W's panel p0/6 holds W[p0..p0+5][row] as 6
    // contiguous floats at (p0/6 * m + row) * 6, so each 6x6 block is a small transpose.
    for (int r = r0; r < r1; r += 6) {
        float *dst = out + (size_t)(r / 6) * k * 6;
        for (int p0 = 0; p0 < k; p0 += 6) {
            int np = k - p0 < 6 ? k - p0 : 6;
            float blk[6][6];
            for (int i = 0; i < 6; i++) {
                int row = r + i;
                const float *src = pw + ((size_t)(p0 / 6) * m + row) * 6;
                for (int pp = 0; pp < 6; pp++) blk[i][pp] = row < m ? src[pp] : 0.0f;
            }
            for (int pp = 0; pp < np; pp++)
                for (int i = 0; i < 6; i++) dst[(size_t)(p0 + pp) * 6 + i] = blk[i][pp];
        }
    }
}

/// The GEMM proper. With astride == 0, pa is a packed A; otherwise A = W^T read from W's panels
/// (blocks astride floats apart, row r of A at r * 6 in each block).
/// A's rows from r (a multiple of 6): its packed panels, or W's panels read as W^T (astride != 0).
static inline const float *a_rows(const float *pa, long astride, int k, int r) {
    return astride ? pa + (size_t)r * 6 : pa + (size_t)(r / 6) * k * 6;
}

/// Rows [r, r1) of C by columns [c0, c1) (c0 a multiple of 16): the tiles over B's packed panels
/// from `b` (the panel of column c0) on, two panels at a time where the ISA's tile takes them. A last
/// panel of at most TAIL columns (a 7x7 layer's 49th at batch 1, an F(2x2) GEMM's 49th tile, the last
/// 4 of a 14x14 map's 196) is left to the few-column kernel (`gv`, rows in the lanes; A packed) instead
/// of a tile of mostly padding, the same values bit for bit: tile_row returns its width (0 if none),
/// and the caller runs it once per group of row tiles (`narrow_rows`). 4 columns since that kernel
/// reads A once for them (1x1 layers on 14x14 maps at batch 1, one thread: 7.30 -> 7.00 ms). A read
/// transposed has its own (akn_gemm_gemv_t_*: rows of W's panels shuffled into the lanes).
enum { TAIL = 4 };
static int tile_row(tile_fn fn, const float *a, int k, long astride, int npa, const float *b, int max_pb,
                    const akn_gemm_cols *io, int r, int r1, int c0, int c1, float *tile) {
    int panels = (c1 - c0 + 15) / 16, tail = (c1 - c0) % 16;
    int narrow = tail > 0 && tail <= TAIL;
    if (narrow) panels--;
    for (int q = 0; q < panels;) {
        int npb = (max_pb == 2 && panels - q >= 2) ? 2 : 1;
        int t0 = c0 + q * 16;
        int t1 = t0 + 16 * npb < c1 ? t0 + 16 * npb : c1;
        fn(k, a, astride, npa, b + (size_t)q * k * 16, npb, io, r, r1, t0, t1, tile);
        q += npb;
    }
    return narrow ? tail : 0;
}

/// Rows per call of the few-column kernel: 8 A panels, at least 8 independent chains (one call per row
/// tile ran 2, waiting on the FMA latency: 8 % of an F(2x2) 14x14 layer for 1 column in 49). Run
/// after that group's tiles, which leave its 48 rows of A in cache.
enum { NARROW_ROWS = 48 };

/// After the row tile ending at r (of rows [m0, m1)): runs the few-column kernel on the pending rows
/// [*g0, r) once they make a group or the rows end. `bt`: B's packed panel of the narrow columns;
/// `pa`: A's packed panels, or with astride W's (A = W^T); `tile`: the tiles' scratch.
static inline void narrow_rows(int level, int tail, int k, const float *pa, long astride, const float *bt,
                               const akn_gemm_cols *io, int *g0, int r, int m1, int col, float *tile) {
    if (!tail || (r - *g0 < NARROW_ROWS && r < m1)) return;
    if (astride) g_tiles[level].gemv_t(k, pa, astride, bt, io, *g0, r, col, tail, tile);
    else g_tiles[level].gemv(k, pa, bt, 16, io, *g0, r, col, tail);
    *g0 = r;
}

/// With `pb`, B comes packed whole (akn_gemm_pack_b) and `scratch` needs only the tile.
static void gemm_driver(int m, int n, int k, const float *pa, long astride, const float *pb, const akn_gemm_cols *io,
                        int m0, int m1, int n0, int n1, float *scratch) {
    if (m1 > m) m1 = m;
    if (n1 > n) n1 = n;
    if (m0 >= m1 || n0 >= n1) return;
    int level = abk_isa();
    tile_fn fn = g_tiles[level].fn;
    int max_pa = g_tiles[level].max_pa, max_pb = g_tiles[level].max_pb;
    float *bbuf = scratch;
    int nc = block_cols(io, k);
    float *tile = pb ? scratch : scratch + (size_t)k * plain_block_cols(k);
    if (k == 0) {
        // An empty sum: C = epilogue(0) (the tile reads nothing from A or B).
        for (int r = m0; r < m1; r += 6)
            for (int c = n0; c < n1; c += 16)
                fn(0, bbuf, 0, 1, bbuf, 1, io, r, r + 6 < m1 ? r + 6 : m1, c, c + 16 < n1 ? c + 16 : n1, tile);
        return;
    }
    if (!pb && !astride && n1 - n0 <= NARROW) {
        if (n1 - n0 == 1 && !io->conv && !io->bmask && !io->bscale) {
            // One plain column (a dense layer at batch 1): read in place, its rows ldb apart, instead
            // of packed into a 16-wide panel (1024 rows: 64 KB written for 4 KB used).
            const float *b1 = io->b + (size_t)(n0 / io->per) * io->b_sample + n0 % io->per;
            g_tiles[level].gemv(k, pa, b1, (size_t)io->ldb, io, m0, m1, n0, 1);
            return;
        }
        g_tiles[level].pack(io, k, n, n0, n1 - n0, bbuf);
        g_tiles[level].gemv(k, pa, bbuf, 16, io, m0, m1, n0, n1 - n0);
        return;
    }
    if (pb) {
        // B packed whole: rows outer, so each A panel (k x 12) is read once, from L1, while B's panels
        // stream from L2 (chunk-outer order re-read the whole A once per 64 columns: 4 MB per call
        // for a 14x14 layer's 1 MB of weights, from L3 or memory).
        const float *bp = pb + (size_t)(n0 / 16) * k * 16, *bt = bp + (size_t)((n1 - n0) / 16) * k * 16;
        for (int r = m0, g0 = m0; r < m1;) {
            int npa = (max_pa == 2 && m1 - r > 6) ? 2 : 1;
            int r1 = r + 6 * npa < m1 ? r + 6 * npa : m1;
            int tail = tile_row(fn, a_rows(pa, astride, k, r), k, astride, npa, bp, max_pb, io, r, r1, n0, n1, tile);
            narrow_rows(level, tail, k, pa, astride, bt, io, &g0, r1, m1, n0 + (n1 - n0) / 16 * 16, tile);
            r = r1;
        }
        return;
    }
    for (int jc = n0; jc < n1; jc += nc) {
        int cols = n1 - jc < nc ? n1 - jc : nc;
        for (int j = 0; j < cols; j += CHUNK)
            g_tiles[level].pack(io, k, n, jc + j, cols - j < CHUNK ? cols - j : CHUNK, bbuf + (size_t)(j / 16) * k * 16);
        for (int r = m0, g0 = m0; r < m1;) {
            int npa = (max_pa == 2 && m1 - r > 6) ? 2 : 1;
            int r1 = r + 6 * npa < m1 ? r + 6 * npa : m1;
            // The next row tile's lines of C (written) and of the residual (read) in this chunk, fetched
            // while this one computes: rows ldc apart defeat the hardware prefetcher, and with a
            // short k (a 1x1 layer's 64 channels) the epilogue would wait on memory.
            if (r1 < m1) {
                int s = jc / io->per, pos = jc % io->per;
                if (pos + cols <= io->per) {
                    int rn1 = r1 + 6 * max_pa < m1 ? r1 + 6 * max_pa : m1;
                    for (int i = r1; i < rn1; i++) {
                        const float *cr = io->c + (size_t)s * io->c_sample + (size_t)i * io->ldc + pos;
                        const float *rr = io->r ? io->r + (size_t)s * io->r_sample + (size_t)i * io->ldr + pos : NULL;
                        for (int l = 0; l < cols; l += 16) {
                            __builtin_prefetch(cr + l, 1);
                            if (rr) __builtin_prefetch(rr + l);
                        }
                    }
                }
            }
            int tail = tile_row(fn, a_rows(pa, astride, k, r), k, astride, npa, bbuf, max_pb, io, r, r1, jc, jc + cols, tile);
            narrow_rows(level, tail, k, pa, astride, bbuf + (size_t)(cols / 16) * k * 16, io, &g0, r1, m1, jc + cols / 16 * 16,
                        tile);
            r = r1;
        }
    }
}

void akn_gemm(int m, int n, int k, const float *pa, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
              float *scratch) {
    gemm_driver(m, n, k, pa, 0, NULL, io, m0, m1, n0, n1, scratch);
}

void akn_gemm_transposed(int m, int n, int k, const float *pw, const akn_gemm_cols *io, int m0, int m1, int n0, int n1,
                         float *scratch) {
    gemm_driver(m, n, k, pw, (long)m * 6, NULL, io, m0, m1, n0, n1, scratch);
}

size_t akn_gemm_packed_b_size(int k, int n) { return (size_t)((n + 15) / 16) * 16 * (size_t)(k > 0 ? k : 1); }

void akn_gemm_pack_b(const akn_gemm_cols *io, int k, int n, int j0, int j1, float *out) {
    int level = abk_isa();
    if (j1 > n) j1 = n;
    for (int jc = j0; jc < j1; jc += CHUNK) {
        int cols = j1 - jc < CHUNK ? j1 - jc : CHUNK;
        g_tiles[level].pack(io, k, n, jc, cols, out + (size_t)(jc / 16) * k * 16);
    }
}

void akn_gemm_pack_b_rows(const akn_gemm_cols *io, int k, int n, int p0, int p1, float *out) {
    if (p1 > k) p1 = k;
    if (p0 >= p1) return;
    // Rows [p0, p1) of B are a B of p1 - p0 rows from row p0 on: each 16-column panel packed by
    // itself into its rows of the whole panel ([k][16]). An implicit im2col's rows from p0 are
    // those of the input from channel p0 / taps on.
    akn_gemm_cols sub = *io;
    if (io->conv) {
        int taps = io->conv->kh * io->conv->kw;
        if (taps <= 0 || p0 % taps || p1 % taps) return;  // (whole channels only)
        sub.b = io->b + (size_t)(p0 / taps) * io->ldb;
    } else {
        sub.b = io->b + (size_t)p0 * io->ldb;
    }
    if (io->bmask) sub.bmask = io->bmask + (size_t)p0 * io->ldb;
    if (io->bscale) sub.bscale = io->bscale + p0;
    pack_fn pack = g_tiles[abk_isa()].pack;
    for (int j = 0; j < n; j += 16)
        pack(&sub, p1 - p0, n, j, n - j < 16 ? n - j : 16, out + (size_t)(j / 16) * k * 16 + (size_t)p0 * 16);
}

void akn_gemm_prepacked(int m, int n, int k, const float *pa, int transposed, const float *pb, const akn_gemm_cols *io,
                        int m0, int m1, int n0, int n1, float *tile) {
    gemm_driver(m, n, k, pa, transposed ? (long)m * 6 : 0, pb, io, m0, m1, n0, n1, tile);
}

/// Floats per phase of a phase-split input row: every 16-column panel of an output row reads its
/// taps' 16 consecutive floats at column ox + (kx * dw) / sw of a phase.
static long phased_width(const akn_conv_b *g) {
    long need = (long)(g->ow + 15) / 16 * 16 + (long)(g->kw - 1) * g->dw / g->sw + 1;
    return (need + 15) / 16 * 16;
}

static long phased_span(const akn_conv_b *g, int rows) { return (long)(rows - 1) * g->sh + (long)(g->kh - 1) * g->dh + 1; }

size_t akn_conv_phased_scratch_size(const akn_conv_b *g, int c, int rows) {
    size_t floats = (size_t)c * (size_t)phased_span(g, rows) * (size_t)g->sw * (size_t)phased_width(g);
    size_t ints = (size_t)c * (size_t)g->kh * (size_t)g->kw;
    return floats + ints + 12 * 32 + 16;
}

/// Rows [0, m) of C by its columns [col0, col0 + cols) with the offset tile (B's row p at b + off[p],
/// column col0 + j at b + j): rows outer, two panels of each where the ISA's tile takes them.
static void offset_tiles(int k, const float *pa, int m, const float *b, const int *off, const akn_gemm_cols *io, long col0,
                         int cols, float *tile) {
    int level = abk_isa();
    tile_off_fn fn = g_tiles[level].off;
    int max_pa = g_tiles[level].max_pa, max_pb = g_tiles[level].max_pb;
    int panels = (cols + 15) / 16;
    for (int r = 0; r < m;) {
        int npa = (max_pa == 2 && m - r > 6) ? 2 : 1;
        int r1 = r + 6 * npa < m ? r + 6 * npa : m;
        const float *a = pa + (size_t)(r / 6) * k * 6;
        for (int q = 0; q < panels;) {
            int npb = (max_pb == 2 && panels - q >= 2) ? 2 : 1;
            long c0 = col0 + q * 16, c1 = c0 + 16 * npb < col0 + cols ? c0 + 16 * npb : col0 + cols;
            fn(k, a, npa, b + q * 16, npb, off, io, r, r1, (int)c0, (int)c1, tile);
            q += npb;
        }
        r = r1;
    }
}

void akn_conv_phased(const akn_gemm_cols *io, int c, int m, const float *pa, int s, int oy0, int oy1, float *scratch) {
    const akn_conv_b *g = io->conv;
    if (oy1 <= oy0 || m <= 0) return;
    int sw = g->sw, k = c * g->kh * g->kw;
    long wp = phased_width(g), span = phased_span(g, oy1 - oy0), rowf = sw * wp;
    float *xs = scratch;
    int *off = (int *)(xs + (size_t)c * span * rowf);
    float *tile = (float *)(off + k);
    // The phase split: xs[ci][r][ph][j] = x[ci][oy0 * sh - pt + r][j * sw + ph - pl] (0 in the padding).
    const float *x = io->b + (size_t)s * io->b_sample;
    for (int ph = 0; ph < sw; ph++) {
        // Columns j of this phase read ix = j * sw + ph - pl: zeros left of lo and from hi on, the row
        // in between copied without a test per element (bounds found once a phase: a CIFAR stem's rows
        // are short).
        long lo = ph >= g->pl ? 0 : (g->pl - ph + sw - 1) / sw;
        long hi = g->w - 1 - ph + g->pl < 0 ? 0 : (g->w - 1 - ph + g->pl) / sw + 1;
        if (lo > wp) lo = wp;
        if (hi > wp) hi = wp;
        if (hi < lo) hi = lo;
        for (int ci = 0; ci < c; ci++)
            for (long r = 0; r < span; r++) {
                float *dp = xs + ((size_t)ci * span + r) * rowf + (size_t)ph * wp;
                long iy = (long)oy0 * g->sh - g->pt + r;
                if (iy < 0 || iy >= g->h) {
                    memset(dp, 0, (size_t)wp * sizeof(float));
                    continue;
                }
                const float *sp = x + (size_t)ci * io->ldb + (size_t)iy * g->w + ph - g->pl;
                for (long j = 0; j < lo; j++) dp[j] = 0.0f;
                long j = lo;
                if (sw == 1) {
                    memcpy(dp + lo, sp + lo, (size_t)(hi - lo) * sizeof(float));
                    j = hi;
                } else if (sw == 2) {
                    // Every other float, 8 at a time from 16 (reading no further than the row's last
                    // column): a CIFAR stem's phase split was half its time as a scalar copy.
                    for (; j + 8 <= hi && 2 * j + 16 + ph - g->pl <= g->w; j += 8) {
                        akn_v8 a, b, e;
                        memcpy(&a, sp + 2 * j, sizeof a);
                        memcpy(&b, sp + 2 * j + 8, sizeof b);
                        e = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
                        memcpy(dp + j, &e, sizeof e);
                    }
                }
                for (; j < hi; j++) dp[j] = sp[j * sw];
                for (j = hi; j < wp; j++) dp[j] = 0.0f;
            }
    }
    // Row p = (ci * kh + ky) * kw + kx of B for output row oy0 at columns ox...: xs + off[p] + ox.
    for (int ci = 0; ci < c; ci++)
        for (int ky = 0; ky < g->kh; ky++)
            for (int kx = 0; kx < g->kw; kx++) {
                long dx = (long)kx * g->dw;
                off[(ci * g->kh + ky) * g->kw + kx] =
                    (int)((((long)ci * span + (long)ky * g->dh) * sw + dx % sw) * wp + dx / sw);
            }
    for (int oy = oy0; oy < oy1; oy++)
        offset_tiles(k, pa, m, xs + (size_t)(oy - oy0) * g->sh * rowf, off, io, (long)s * io->per + (long)oy * g->ow, g->ow,
                     tile);
}

/// The range of dz row offsets d (oy = q + d) an input phase p (iy = s q + p) reads over the kernel
/// taps k with (p + pad - k) a multiple of s: d = (p + pad - k) / s, for every phase.
static void adjoint_offsets(int k, int s, int pad, int *dmin, int *dmax) {
    int lo = 1 << 30, hi = -(1 << 30);
    for (int p = 0; p < s; p++)
        for (int t = 0; t < k; t++) {
            int num = p + pad - t;
            if (((num % s) + s) % s) continue;
            int d = (num - (((num % s) + s) % s)) / s;  // exact: num is a multiple of s
            if (d < lo) lo = d;
            if (d > hi) hi = d;
        }
    *dmin = lo;
    *dmax = hi;
}

void akn_phased_adjoint_dims(const akn_conv_b *g, int c, int m, int *rows, int *depth) {
    int y0, y1, x0, x1;
    adjoint_offsets(g->kh, g->sh, g->pt, &y0, &y1);
    adjoint_offsets(g->kw, g->sw, g->pl, &x0, &x1);
    *rows = c * g->sh * g->sw;
    *depth = m * (y1 - y0 + 1) * (x1 - x0 + 1);
}

void akn_phased_adjoint_weights(const akn_conv_b *g, int c, int m, const float *w, float *out) {
    int y0, y1, x0, x1;
    adjoint_offsets(g->kh, g->sh, g->pt, &y0, &y1);
    adjoint_offsets(g->kw, g->sw, g->pl, &x0, &x1);
    int ny = y1 - y0 + 1, nx = x1 - x0 + 1, sh = g->sh, sw = g->sw;
    int rows = c * sh * sw, depth = m * ny * nx;
    // Row (ci, py, px), column (co, dy, dx): W[co][ci][ky][kx] with ky = py + pt - sh dy (and kx
    // alike) when that is a tap, else 0.
    for (int ci = 0; ci < c; ci++)
        for (int py = 0; py < sh; py++)
            for (int px = 0; px < sw; px++) {
                float *row = out + (size_t)((ci * sh + py) * sw + px) * depth;
                for (int co = 0; co < m; co++)
                    for (int dy = y0; dy <= y1; dy++)
                        for (int dx = x0; dx <= x1; dx++) {
                            int ky = py + g->pt - sh * dy, kx = px + g->pl - sw * dx;
                            float v = 0.0f;
                            if (ky >= 0 && ky < g->kh && kx >= 0 && kx < g->kw)
                                v = w[(((size_t)co * c + ci) * g->kh + ky) * g->kw + kx];
                            row[((size_t)co * ny + (dy - y0)) * nx + (dx - x0)] = v;
                        }
            }
    (void)rows;
}

/// d[j] = mask[j] > 0 ? src[j] * sc : 0 (vectorized: both loads unconditional).
static void adjoint_row_masked(float *restrict d, const float *restrict src, const float *restrict mask, float sc, long n) {
    for (long j = 0; j < n; j++) {
        float v = src[j] * sc, mv = mask[j];
        d[j] = mv > 0 ? v : 0.0f;
    }
}

/// Phase rows' width in the band of dz (columns qx + dx of every panel of the phase grid).
static long adjoint_width(const akn_conv_b *g, int x0, int x1) {
    long qw = ((long)g->w + g->sw - 1) / g->sw;
    return (qw + 15) / 16 * 16 + (x1 - x0);
}

size_t akn_phased_adjoint_scratch_size(const akn_conv_b *g, int c, int m, int rows) {
    int y0, y1, x0, x1;
    adjoint_offsets(g->kh, g->sh, g->pt, &y0, &y1);
    adjoint_offsets(g->kw, g->sw, g->pl, &x0, &x1);
    long wd = adjoint_width(g, x0, x1), span = rows + (y1 - y0);
    long qw = ((long)g->w + g->sw - 1) / g->sw;
    size_t r = (size_t)c * g->sh * g->sw, depth = (size_t)m * (y1 - y0 + 1) * (x1 - x0 + 1);
    return (size_t)m * span * wd + depth + r * ((qw + 15) / 16 * 16) + 12 * 32 + 16;
}

void akn_phased_adjoint(const akn_conv_b *g, int c, int m, int oh, const float *pa, const float *dz, const float *mask,
                        const float *scale, int q0, int q1, float *dx, float *scratch) {
    int y0, y1, x0, x1;
    adjoint_offsets(g->kh, g->sh, g->pt, &y0, &y1);
    adjoint_offsets(g->kw, g->sw, g->pl, &x0, &x1);
    int sh = g->sh, sw = g->sw, ny = y1 - y0 + 1, nx = x1 - x0 + 1;
    long qh = ((long)g->h + sh - 1) / sh, qw = ((long)g->w + sw - 1) / sw, qwp = (qw + 15) / 16 * 16;
    if (q1 > qh) q1 = (int)qh;
    if (q1 <= q0) return;
    int rows = c * sh * sw, depth = m * ny * nx;
    long wd = adjoint_width(g, x0, x1), span = (q1 - q0) + (ny - 1), ow = g->ow;
    float *pd = scratch;
    int *off = (int *)(pd + (size_t)m * span * wd);
    float *out = (float *)(off + depth);
    float *tile = out + (size_t)rows * qwp;
    // The band of dz: pd[co][r][j] = dz'[co][q0 + y0 + r][x0 + j] (0 outside dz), dz' = (mask > 0 ?
    // dz : 0) * scale[co], as the GEMM's packing would read it.
    for (int co = 0; co < m; co++) {
        float sc = scale ? scale[co] : 1.0f;
        for (long r = 0; r < span; r++) {
            float *d = pd + ((size_t)co * span + r) * wd;
            long oy = q0 + y0 + r;
            if (oy < 0 || oy >= oh) {
                memset(d, 0, (size_t)wd * sizeof(float));
                continue;
            }
            const float *src = dz + ((size_t)co * oh + oy) * ow;
            const float *mk = mask ? mask + ((size_t)co * oh + oy) * ow : NULL;
            // d[j] holds column x0 + j: zeros left of column 0 and right of ow - 1
            long jlo = -x0 > 0 ? -x0 : 0, jhi = ow - x0 < wd ? ow - x0 : wd;
            if (jlo > wd) jlo = wd;
            if (jhi < jlo) jhi = jlo;
            memset(d, 0, (size_t)jlo * sizeof(float));
            if (mk)
                adjoint_row_masked(d + jlo, src + (x0 + jlo), mk + (x0 + jlo), sc, jhi - jlo);
            else if (scale)
                for (long j = jlo; j < jhi; j++) d[j] = src[x0 + j] * sc;
            else if (jhi > jlo)
                memcpy(d + jlo, src + x0 + jlo, (size_t)(jhi - jlo) * sizeof(float));
            memset(d + jhi, 0, (size_t)(wd - jhi) * sizeof(float));
        }
    }
    for (int co = 0; co < m; co++)
        for (int dy = 0; dy < ny; dy++)
            for (int dxo = 0; dxo < nx; dxo++) off[(co * ny + dy) * nx + dxo] = (int)(((long)co * span + dy) * wd + dxo);
    akn_gemm_cols io;
    memset(&io, 0, sizeof io);
    io.per = (int)qwp;
    io.c = out;
    io.ldc = qwp;
    io.c_sample = (long)rows * qwp;
    for (int qy = q0; qy < q1; qy++) {
        offset_tiles(depth, pa, rows, pd + (size_t)(qy - q0) * wd, off, &io, 0, (int)qwp, tile);
        // Row (ci, py, px) holds dx[ci][sh qy + py][sw qx + px] for qx = 0, 1, ...
        for (int ci = 0; ci < c; ci++)
            for (int py = 0; py < sh; py++) {
                long iy = (long)sh * qy + py;
                if (iy >= g->h) continue;
                float *drow = dx + ((size_t)ci * g->h + iy) * g->w;
                for (int px = 0; px < sw; px++) {
                    const float *o = out + (size_t)((ci * sh + py) * sw + px) * qwp;
                    for (long qx = 0; qx < qw; qx++) {
                        long ix = sw * qx + px;
                        if (ix < g->w) drow[ix] = o[qx];
                    }
                }
            }
    }
}
