// pool.c — max pooling over one NCHW plane without dilation (see kernels.h).
#include "kernels.h"

#include <immintrin.h>
#include <string.h>

#include "backend.h"

/// The window of output index o along one axis: its first input index, and the range [lo, hi) of
/// kernel taps that fall inside [0, size).
static inline void window(int o, int stride, int pad, int k, int size, int *start, int *lo, int *hi) {
    *start = o * stride - pad;
    *lo = *start < 0 ? -*start : 0;
    *hi = *start + k > size ? size - *start : k;
}

/// max with the generic loop's NaN rule (a NaN so far is replaced by the next tap), as a select.
#define MAXSEL(v, m) (((v) > (m) || (m) != (m)) ? (v) : (m))

// The 3x3 stride-2 pool (the ResNet stem's), separably: each window row's 3 taps from the row's
// two column phases (contiguous, vectorized), then the rows. The same value as the generic loop,
// bit for bit: MAXSEL over a sequence keeps its first largest non-NaN value (or -inf), so per-row
// results combined in row order pick the same element (a padding column counts as -inf, which
// MAXSEL never selects over anything). Here the running max is never NaN, so MAXSEL is
// v > m ? v : m, one max instruction (vmaxps keeps its second operand on ties and NaN). The
// portable path's; AVX2 and AVX-512 write the same steps out with intrinsics below.
#define MAXV(v, m) ((v) > (m) ? (v) : (m))
enum { MP_CHUNK = 256 };  // output columns per pass

/// Fetches the two input rows the 3x3/2 window of the output row after this one (first input row h0)
/// reads first, while this one computes: the stem's output comes from memory, and three rows read
/// a few lines at a time leave the hardware prefetcher behind (ResNet-50 at batch 1, 2 threads:
/// 127 -> 80 us a pool).
static inline void mp_prefetch_next_rows(const float *x, int h, int w, int h0) {
    for (int r = h0 + 3; r < h0 + 5 && r < h; r++)
        if (r >= 0)
            for (int c = 0; c < w; c += 16) __builtin_prefetch(x + (size_t)r * w + c);
}
#define MP33S2_BODY                                                                                   \
    {                                                                                                 \
        float rb[2 * MP_CHUNK + 2], e[MP_CHUNK + 1], o[MP_CHUNK + 1], acc[MP_CHUNK];                  \
        const float ninf = -__builtin_inff();                                                         \
        for (int i = 0; i < oh; i++) {                                                                \
            int h0, ki0, ki1;                                                                         \
            window(i, 2, pt, 3, h, &h0, &ki0, &ki1);                                                  \
            mp_prefetch_next_rows(x, h, w, h0);                                                       \
            for (int j0 = 0; j0 < ow; j0 += MP_CHUNK) {                                               \
                int nj = ow - j0 < MP_CHUNK ? ow - j0 : MP_CHUNK;                                     \
                int c0 = 2 * j0 - pl, len = 2 * nj + 2; /* rb[q] = column c0 + q */                   \
                int q0 = c0 < 0 ? -c0 : 0, q1 = w - c0 < len ? w - c0 : len;                           \
                if (q1 < q0) q1 = q0;                                                                 \
                for (int j = 0; j < nj; j++) acc[j] = ninf;                                           \
                for (int ki = ki0; ki < ki1; ki++) {                                                  \
                    const float *row = x + (size_t)(h0 + ki) * w + c0;                               \
                    for (int q = 0; q < q0; q++) rb[q] = ninf;                                        \
                    memcpy(rb + q0, row + q0, sizeof(float) * (size_t)(q1 - q0));                     \
                    for (int q = q1; q < len; q++) rb[q] = ninf;                                      \
                    for (int t = 0; t <= nj; t++) {                                                   \
                        e[t] = rb[2 * t];                                                             \
                        o[t] = rb[2 * t + 1];                                                         \
                    }                                                                                 \
                    for (int j = 0; j < nj; j++) {                                                    \
                        float m = ninf;                                                               \
                        m = MAXV(e[j], m);                                                            \
                        m = MAXV(o[j], m);                                                            \
                        m = MAXV(e[j + 1], m);                                                        \
                        acc[j] = MAXV(m, acc[j]);                                                     \
                    }                                                                                 \
                }                                                                                     \
                memcpy(y + (size_t)i * ow + j0, acc, sizeof(float) * (size_t)nj);                     \
            }                                                                                         \
        }                                                                                             \
    }

#define MP33S2_ARGS const float *restrict x, int h, int w, int pt, int pl, int oh, int ow, float *restrict y

static void mp33s2_portable(MP33S2_ARGS) MP33S2_BODY

/// The three taps of 16 outputs of a 3x3/2 window row: e[l] = row[2l], o[l] = row[2l + 1],
/// e1[l] = row[2l + 2], from two masked loads of its 32 columns and one of the 33rd (lanes outside
/// the masks m[0..2] take `fill`) and three two-source permutes.
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static inline void mp_taps16(const float *row, const __mmask16 *m, __m512 fill, __m512 *e, __m512 *o, __m512 *e1) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i next = _mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    __m512 a = _mm512_mask_loadu_ps(fill, m[0], row);
    __m512 b = _mm512_mask_loadu_ps(fill, m[1], row + 16);
    __m512 c = _mm512_mask_loadu_ps(fill, m[2], row + 32);
    *e = _mm512_permutex2var_ps(a, even, b);
    *o = _mm512_permutex2var_ps(a, odd, b);
    *e1 = _mm512_permutex2var_ps(*e, next, c);
}

// The same on AVX-512, written out: per window row, 16 outputs' three taps from two (masked)
// loads of the row's 33 columns and three two-source permutes (the even columns, the odd ones, the
// even ones one on), no staging copies; padding lanes load -inf. vmaxps(v, m) is MAXV(v, m). The
// stem's 64 x 112 x 112, one thread: 281 -> 95 us.
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void mp33s2_avx512(MP33S2_ARGS) {
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, 2, pt, 3, h, &h0, &ki0, &ki1);
        mp_prefetch_next_rows(x, h, w, h0);
        for (int j0 = 0; j0 < ow; j0 += 16) {
            long c0 = 2L * j0 - pl;  // the column of lane 0's first tap
            // lanes of the three loads (columns c0 + l, c0 + 16 + l, c0 + 32) inside the row
            __mmask16 m[3];
            for (int v = 0; v < 3; v++) {
                long lo = c0 + 16 * v, lanes = v == 2 ? 1 : 16;  // lanes l in [-lo, w - lo)
                long a = lo < 0 ? -lo : 0, b = w - lo < lanes ? w - lo : lanes;
                m[v] = (__mmask16)(b > a ? ((1u << b) - 1) & ~((1u << a) - 1) : 0);
            }
            __m512 acc = ninf;
            for (int ki = ki0; ki < ki1; ki++) {
                __m512 e, o, e1;
                mp_taps16(x + (size_t)(h0 + ki) * w + c0, m, ninf, &e, &o, &e1);
                __m512 mx = _mm512_max_ps(e, ninf);
                mx = _mm512_max_ps(o, mx);
                mx = _mm512_max_ps(e1, mx);
                acc = _mm512_max_ps(mx, acc);
            }
            int nj = ow - j0 < 16 ? ow - j0 : 16;
            _mm512_mask_storeu_ps(y + (size_t)i * ow + j0, (__mmask16)((1u << nj) - 1), acc);
        }
    }
}

/// Even lanes of the 16 floats (a, b) (columns 0, 2, ..., 14), or odd ones (1, 3, ..., 15).
__attribute__((target("avx2,fma"))) static inline __m256 mp_even(__m256 a, __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
}
__attribute__((target("avx2,fma"))) static inline __m256 mp_odd(__m256 a, __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

/// The taps kj = 0, 1, 2 of 8 windows of one row (columns c0 + 2l + kj of lane l) from the row's
/// columns c0 .. c0 + 15 (a, b) and c0 + 16 (`c16`, lane 7 used): the forward's and the gradient's.
__attribute__((target("avx2,fma"))) static inline void mp_taps8(__m256 a, __m256 b, __m256 c16, __m256 *t) {
    t[0] = mp_even(a, b);
    t[1] = mp_odd(a, b);
    t[2] = _mm256_blend_ps(_mm256_permutevar8x32_ps(t[0], _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7)), c16, 0x80);
}

// The same for AVX2, 8 outputs at a time. Windows inside the row (most): plain loads, the even and
// odd columns by a shuffle and a lane permute each (mp_even, mp_odd), the even ones one on by a
// permute and a blend with column c0 + 16 (AMD EPYC family 25 model 1, one thread, the ResNet
// stem's 64 x 112 x 112: 0.51 -> 0.31 ms). The others: two one-source permutes and a blend each,
// masked loads (lanes outside the row read nothing) blended with -inf. The same maxes in the same
// order either way.
__attribute__((target("avx2,fma")))
static void mp33s2_avx2x(MP33S2_ARGS) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i ev = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6), od = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
    const __m256i nx = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7), zero = _mm256_setzero_si256();
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, 2, pt, 3, h, &h0, &ki0, &ki1);
        mp_prefetch_next_rows(x, h, w, h0);
        for (int j0 = 0; j0 < ow; j0 += 8) {
            long c0 = 2L * j0 - pl;
            if (c0 >= 0 && c0 + 16 < w && j0 + 8 <= ow) {
                // 8 windows inside the row: plain loads, even and odd columns by a shuffle and a lane
                // permute each (the same values, in the same order of max, as below)
                __m256 acc = ninf;
                for (int ki = ki0; ki < ki1; ki++) {
                    const float *row = x + (size_t)(h0 + ki) * w + c0;
                    __m256 t[3];
                    mp_taps8(_mm256_loadu_ps(row), _mm256_loadu_ps(row + 8), _mm256_broadcast_ss(row + 16), t);
                    __m256 mx = _mm256_max_ps(t[0], ninf);
                    mx = _mm256_max_ps(t[1], mx);
                    mx = _mm256_max_ps(t[2], mx);
                    acc = _mm256_max_ps(mx, acc);
                }
                _mm256_storeu_ps(y + (size_t)i * ow + j0, acc);
                continue;
            }
            // lanes l of the three loads (columns c0 + 8v + l; the third, one lane) inside the row
            __m256i m[3];
            for (int v = 0; v < 3; v++) {
                long lo = c0 + 8 * v, lanes = v == 2 ? 1 : 8;
                long a = lo < 0 ? -lo : 0, b = w - lo < lanes ? w - lo : lanes;
                if (a > 8) a = 8;
                if (b < 0) b = 0;
                m[v] = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)a), lane),
                                           _mm256_cmpgt_epi32(_mm256_set1_epi32((int)b), lane));
            }
            __m256 acc = ninf;
            for (int ki = ki0; ki < ki1; ki++) {
                const float *row = x + (size_t)(h0 + ki) * w + c0;
                __m256 a = _mm256_blendv_ps(ninf, _mm256_maskload_ps(row, m[0]), _mm256_castsi256_ps(m[0]));
                __m256 b = _mm256_blendv_ps(ninf, _mm256_maskload_ps(row + 8, m[1]), _mm256_castsi256_ps(m[1]));
                __m256 c = _mm256_blendv_ps(ninf, _mm256_maskload_ps(row + 16, m[2]), _mm256_castsi256_ps(m[2]));
                __m256 e = _mm256_blend_ps(_mm256_permutevar8x32_ps(a, ev), _mm256_permutevar8x32_ps(b, ev), 0xF0);
                __m256 o = _mm256_blend_ps(_mm256_permutevar8x32_ps(a, od), _mm256_permutevar8x32_ps(b, od), 0xF0);
                __m256 e1 = _mm256_blend_ps(_mm256_permutevar8x32_ps(e, nx), _mm256_permutevar8x32_ps(c, zero), 0x80);
                __m256 mx = _mm256_max_ps(e, ninf);
                mx = _mm256_max_ps(o, mx);
                mx = _mm256_max_ps(e1, mx);
                acc = _mm256_max_ps(mx, acc);
            }
            int nj = ow - j0 < 8 ? ow - j0 : 8;
            if (nj == 8) _mm256_storeu_ps(y + (size_t)i * ow + j0, acc);
            else _mm256_maskstore_ps(y + (size_t)i * ow + j0, _mm256_cmpgt_epi32(_mm256_set1_epi32(nj), lane), acc);
        }
    }
}

typedef void (*mp33s2_fn)(MP33S2_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512).
static const mp33s2_fn g_mp33s2[3] = {mp33s2_portable, mp33s2_avx2x, mp33s2_avx512};

void akn_maxpool_plane(const float *x, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow,
                       float *y) {
    if (kh == 3 && kw == 3 && sh == 2 && sw == 2) {
        g_mp33s2[abk_isa()](x, h, w, pt, pl, oh, ow, y);
        return;
    }
    // Output columns whose window lies inside the row, [jlo, jhi): the 3-wide windows there run as
    // straight-line code the compiler vectorizes over j (the ResNet stem's 3x3/2 pool), taps in the
    // generic order, so the results are the same.
    int jlo = (pl + sw - 1) / sw, jhi = ow;
    while (jhi > jlo && (jhi - 1) * sw - pl + kw > w) jhi--;
    if (kw != 3 || jhi < jlo) jlo = jhi = 0;
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, sh, pt, kh, h, &h0, &ki0, &ki1);
        if (jhi > jlo && ki0 < ki1) {
            float *yr = y + (size_t)i * ow;
            const float *r0 = x + (size_t)(h0 + ki0) * w - pl;
            for (int j = jlo; j < jhi; j++) {
                const float *p = r0 + (size_t)j * sw;
                float m = -__builtin_inff();
                m = MAXSEL(p[0], m);
                m = MAXSEL(p[1], m);
                m = MAXSEL(p[2], m);
                yr[j] = m;
            }
            for (int ki = ki0 + 1; ki < ki1; ki++) {
                const float *rk = x + (size_t)(h0 + ki) * w - pl;
                for (int j = jlo; j < jhi; j++) {
                    const float *p = rk + (size_t)j * sw;
                    float m = yr[j];
                    m = MAXSEL(p[0], m);
                    m = MAXSEL(p[1], m);
                    m = MAXSEL(p[2], m);
                    yr[j] = m;
                }
            }
        }
        for (int j = 0; j < ow; j++) {
            if (j == jlo && jhi > jlo && ki0 < ki1) {
                j = jhi - 1;
                continue;
            }
            int w0, kj0, kj1;
            window(j, sw, pl, kw, w, &w0, &kj0, &kj1);
            float m = -__builtin_inff();
            for (int ki = ki0; ki < ki1; ki++) {
                const float *row = x + (size_t)(h0 + ki) * w + w0;
                for (int kj = kj0; kj < kj1; kj++) {
                    float v = row[kj];
                    m = MAXSEL(v, m);  // a select, not a branch (half of them would mispredict)
                }
            }
            y[(size_t)i * ow + j] = m;
        }
    }
}

/// The gradient of output (i, j) into the first largest tap of its window (the generic loop's rule:
/// a strict > from the window's first tap on, so a NaN first tap keeps it and later NaNs never win).
static inline void mp_backward_one(const float *x, const float *g, int h, int w, int kh, int kw, int sh, int sw,
                                   int pt, int pl, int ow, int i, int j, float *dx) {
    int h0, ki0, ki1, w0, kj0, kj1;
    window(i, sh, pt, kh, h, &h0, &ki0, &ki1);
    window(j, sw, pl, kw, w, &w0, &kj0, &kj1);
    if (ki0 >= ki1 || kj0 >= kj1) return;  // a window entirely in the padding
    long best = (long)(h0 + ki0) * w + w0 + kj0;
    float m = x[best];
    for (int ki = ki0; ki < ki1; ki++) {
        long base = (long)(h0 + ki) * w + w0;
        for (int kj = kj0; kj < kj1; kj++) {
            float v = x[base + kj];
            int better = v > m;  // without branches
            m = better ? v : m;
            best = better ? base + kj : best;
        }
    }
    dx[best] += g[(size_t)i * ow + j];
}

// The 3x3 stride-2 pool's gradient: the windows inside the row 256 at a time, over the window rows'
// two column phases (contiguous, so the tap comparisons vectorize over j), the same comparisons in
// the same tap order as mp_backward_one; then each output's gradient is added in the generic order
// (rows, then columns), so every sum is the same, bit for bit. Compiled once per instruction set.
#define MPB33S2_BODY                                                                                  \
    {                                                                                                 \
        float e[MP_CHUNK + 1], o[MP_CHUNK], m[MP_CHUNK];                                              \
        int bi[MP_CHUNK];                                                                             \
        /* output columns whose window lies inside the row: [jlo, jhi) */                             \
        int jlo = (pl + 1) / 2, jhi = ow;                                                             \
        while (jhi > jlo && (jhi - 1) * 2 - pl + 3 > w) jhi--;                                        \
        if (jhi < jlo) jhi = jlo;                                                                     \
        if (jlo > ow) jlo = jhi = ow;                                                                 \
        for (int i = 0; i < oh; i++) {                                                                \
            int h0, ki0, ki1;                                                                         \
            window(i, 2, pt, 3, h, &h0, &ki0, &ki1);                                                  \
            if (ki0 >= ki1) continue;                                                                 \
            for (int j = 0; j < jlo; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx); \
            for (int j0 = jlo; j0 < jhi; j0 += MP_CHUNK) {                                            \
                int nj = jhi - j0 < MP_CHUNK ? jhi - j0 : MP_CHUNK;                                   \
                int cs = 2 * j0 - pl;                                                                 \
                for (int ki = ki0; ki < ki1; ki++) {                                                  \
                    int rowbase = (h0 + ki) * w + cs;                                                 \
                    const float *rp = x + rowbase;                                                    \
                    for (int t = 0; t < nj; t++) {                                                    \
                        e[t] = rp[2 * t];                                                             \
                        o[t] = rp[2 * t + 1];                                                         \
                    }                                                                                 \
                    e[nj] = rp[2 * nj];                                                               \
                    if (ki == ki0) {                                                                  \
                        for (int j = 0; j < nj; j++) {                                               \
                            m[j] = e[j];                                                              \
                            bi[j] = rowbase + 2 * j;                                                  \
                        }                                                                             \
                    } else {                                                                          \
                        for (int j = 0; j < nj; j++) {                                               \
                            float v = e[j];                                                           \
                            int better = v > m[j];                                                    \
                            m[j] = better ? v : m[j];                                                 \
                            bi[j] = better ? rowbase + 2 * j : bi[j];                                 \
                        }                                                                             \
                    }                                                                                 \
                    for (int j = 0; j < nj; j++) {                                                   \
                        float v = o[j];                                                               \
                        int better = v > m[j];                                                        \
                        m[j] = better ? v : m[j];                                                     \
                        bi[j] = better ? rowbase + 2 * j + 1 : bi[j];                                 \
                    }                                                                                 \
                    for (int j = 0; j < nj; j++) {                                                   \
                        float v = e[j + 1];                                                           \
                        int better = v > m[j];                                                        \
                        m[j] = better ? v : m[j];                                                     \
                        bi[j] = better ? rowbase + 2 * j + 2 : bi[j];                                 \
                    }                                                                                 \
                }                                                                                     \
                const float *gr = g + (size_t)i * ow + j0;                                            \
                for (int j = 0; j < nj; j++) dx[bi[j]] += gr[j];                                      \
            }                                                                                         \
            for (int j = jhi; j < ow; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx); \
        }                                                                                             \
    }

#define MPB33S2_ARGS const float *restrict x, const float *restrict g, int h, int w, int pt, int pl, int oh, int ow, \
                     float *restrict dx

static void mpb33s2_portable(MPB33S2_ARGS) MPB33S2_BODY

/// Lanes l < n of 8 (an AVX2 mask).
__attribute__((target("avx2,fma"))) static inline __m256i mp_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Outputs j0 .. j0 + n - 1 (n <= 8, their windows inside the row) of output row i, rows [ki0, ki1)
/// of their windows from input row h0: see mpb33s2_avx2x. `carry`: per window row, the previous
/// group's kj = 2 terms in lane 0 (in), this group's last output's (out, in every lane).
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
mpb_group(const float *restrict x, const float *restrict g, int w, int ow, int i, int h0, int ki0, int ki1, int pl, int j0,
          int n, __m256 *carry, float *restrict dx) {
    const __m256i prev = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
    long c0 = 2L * j0 - pl;  // tap kj = 0 of output j0 (inside the row: j0 >= jlo)
    // a partial group: masked loads and stores of its 2n + 1 input columns (2n of dx: the last goes
    // to the carry); the lanes of outputs past it add +0 where they are stored at all
    __m256i xm0 = mp_lanes(2 * n + 1), xm1 = mp_lanes(2 * n - 7), dm0 = mp_lanes(2 * n), dm1 = mp_lanes(2 * n - 8);
    __m256 m = _mm256_setzero_ps();
    __m256i best = _mm256_setzero_si256();
    for (int ki = ki0; ki < ki1; ki++) {
        const float *r = x + (size_t)(h0 + ki) * w + c0;
        __m256 a = n == 8 ? _mm256_loadu_ps(r) : _mm256_maskload_ps(r, xm0);
        __m256 b = n == 8 ? _mm256_loadu_ps(r + 8) : _mm256_maskload_ps(r + 8, xm1);
        __m256 taps[3];
        mp_taps8(a, b, n == 8 ? _mm256_broadcast_ss(r + 16) : _mm256_setzero_ps(), taps);
        for (int kj = 0; kj < 3; kj++) {
            __m256i t = _mm256_set1_epi32(3 * ki + kj);
            if (ki == ki0 && kj == 0) {
                m = taps[0];
                best = t;
                continue;
            }
            __m256 gt = _mm256_cmp_ps(taps[kj], m, _CMP_GT_OQ);
            m = _mm256_blendv_ps(m, taps[kj], gt);
            best = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best), _mm256_castsi256_ps(t), gt));
        }
    }
    const float *gr = g + (size_t)i * ow + j0;
    __m256 gv = n == 8 ? _mm256_loadu_ps(gr) : _mm256_maskload_ps(gr, mp_lanes(n));
    for (int ki = ki0; ki < ki1; ki++) {
        float *d = dx + (size_t)(h0 + ki) * w + c0;
        __m256 b0 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(best, _mm256_set1_epi32(3 * ki))));
        __m256 e = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(best, _mm256_set1_epi32(3 * ki + 1))));
        __m256 a2 = _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(best, _mm256_set1_epi32(3 * ki + 2))));
        __m256 ash = _mm256_blend_ps(_mm256_permutevar8x32_ps(a2, prev), carry[ki - ki0], 0x01);
        __m256 d0 = n == 8 ? _mm256_loadu_ps(d) : _mm256_maskload_ps(d, dm0);
        __m256 d1 = n == 8 ? _mm256_loadu_ps(d + 8) : _mm256_maskload_ps(d + 8, dm1);
        __m256 dev = _mm256_add_ps(_mm256_add_ps(mp_even(d0, d1), ash), b0);
        __m256 dod = _mm256_add_ps(mp_odd(d0, d1), e);
        __m256 lo = _mm256_unpacklo_ps(dev, dod), hi = _mm256_unpackhi_ps(dev, dod);
        __m256 o0 = _mm256_permute2f128_ps(lo, hi, 0x20), o1 = _mm256_permute2f128_ps(lo, hi, 0x31);
        if (n == 8) {
            _mm256_storeu_ps(d, o0);
            _mm256_storeu_ps(d + 8, o1);
        } else {
            _mm256_maskstore_ps(d, dm0, o0);
            _mm256_maskstore_ps(d + 8, dm1, o1);
        }
        carry[ki - ki0] = _mm256_permutevar8x32_ps(a2, _mm256_set1_epi32(n - 1));
    }
}

// The same on AVX2, 8 outputs at a time with no scatter, as the AVX-512 kernel below does it with
// 16: each window's winning tap (0-8) as a lane of indices, found with the same strict > in the
// same tap order from the window rows' even and odd columns (two shuffles and a lane permute
// each); then per window row the gradient is added straight into that input row's even and odd
// columns, then interleaved back. Input column 2j - pl + kj gets output j's gradient when its tap kj
// won: an odd one of the window (kj = 1) from output j only, an even one from output j - 1 (kj = 2)
// then j (kj = 0), in that order, as the generic loop adds them: (dx + A shifted one lane on) + B,
// lanes that did not win adding +0 (an exact no-op: dx starts at +0 and is never -0). The last
// output's kj = 2 term carries into the next 8 (lane 0 of the shift), and after the last group, a
// partial one with masked loads and stores, into its column. Windows reaching the padding keep the
// one-output loop. The same bits as the generic loop.
__attribute__((target("avx2,fma")))
static void mpb33s2_avx2x(MPB33S2_ARGS) {
    int jlo = (pl + 1) / 2, jhi = ow;
    while (jhi > jlo && (jhi - 1) * 2 - pl + 3 > w) jhi--;
    if (jhi < jlo) jhi = jlo;
    if (jlo > ow) jlo = jhi = ow;
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, 2, pt, 3, h, &h0, &ki0, &ki1);
        if (ki0 >= ki1) continue;
        mp_prefetch_next_rows(x, h, w, h0);
        mp_prefetch_next_rows(dx, h, w, h0);
        for (int j = 0; j < jlo; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx);
        __m256 carry[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        int j0 = jlo;
        for (; j0 + 8 <= jhi; j0 += 8) mpb_group(x, g, w, ow, i, h0, ki0, ki1, pl, j0, 8, carry, dx);
        if (j0 < jhi) {
            mpb_group(x, g, w, ow, i, h0, ki0, ki1, pl, j0, jhi - j0, carry, dx);
            j0 = jhi;
        }
        if (j0 > jlo)  // the last group's kj = 2 terms, before the outputs after it
            for (int ki = ki0; ki < ki1; ki++) dx[(size_t)(h0 + ki) * w + 2L * jhi - pl] += _mm256_cvtss_f32(carry[ki - ki0]);
        for (int j = jhi; j < ow; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx);
    }
}

// The same on AVX-512, 16 outputs at a time with no scatter: each window's winning tap (0-8) as a
// lane of indices, found with the forward's loads and permutes and the same strict > in the same
// tap order; then, per window row, the gradient goes straight into that input row's even and odd
// columns. Input column 2j - pl + kj gets output j's gradient when its tap kj won: the even column
// (kj = 1) from output j only, an odd one from output j - 1 (kj = 2) then j (kj = 0), in that order,
// as the generic loop adds them: (dx + A shifted one lane on) + B, lanes that did not win adding +0
// (an exact no-op: dx starts at +0, and x + y is -0 only when both are, so dx is never -0). The
// last output's kj = 2 term carries into the next 16 (lane 0 of the shift), and after the last
// ones into its column. Windows reaching the padding (the first and last columns) keep the
// one-output loop. The same bits as the generic loop. The next output row's first input and
// gradient rows are prefetched (without, cold rows from memory made it slower than the AVX2 build
// in a network; with, ResNet-50's pool at batch 1 on 2 threads: 374 -> 210 us).
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
static void mpb33s2_avx512(MPB33S2_ARGS) {
    int jlo = (pl + 1) / 2, jhi = ow;
    while (jhi > jlo && (jhi - 1) * 2 - pl + 3 > w) jhi--;
    if (jhi < jlo) jhi = jlo;
    if (jlo > ow) jlo = jhi = ow;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    // (odd columns, even columns) back to column order: lanes 0-15, then 16-31
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < oh; i++) {
        int h0, ki0, ki1;
        window(i, 2, pt, 3, h, &h0, &ki0, &ki1);
        if (ki0 >= ki1) continue;
        mp_prefetch_next_rows(x, h, w, h0);
        mp_prefetch_next_rows(dx, h, w, h0);
        for (int j = 0; j < jlo; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx);
        __m512 carry[3] = {zero, zero, zero};
        long last_col = -1;  // the column the last kj = 2 terms go to
        for (int j0 = jlo; j0 < jhi; j0 += 16) {
            int nj = jhi - j0 < 16 ? jhi - j0 : 16, cols = 2 * nj + 1;
            __mmask16 lm = (__mmask16)((1u << nj) - 1);
            const __mmask16 mt[3] = {(__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1),
                                     (__mmask16)(cols >= 32 ? 0xFFFF : cols > 16 ? (1u << (cols - 16)) - 1 : 0),
                                     (__mmask16)(cols > 32 ? 1 : 0)};
            long c0 = 2L * j0 - pl;  // tap kj = 0 of output j0 (inside the row: j0 >= jlo)
            __m512 m = zero;
            __m512i best = _mm512_setzero_si512();
            for (int ki = ki0; ki < ki1; ki++) {
                __m512 taps[3];
                mp_taps16(x + (size_t)(h0 + ki) * w + c0, mt, zero, &taps[0], &taps[1], &taps[2]);
                for (int kj = 0; kj < 3; kj++) {
                    __m512i t = _mm512_set1_epi32(3 * ki + kj);
                    if (ki == ki0 && kj == 0) {
                        m = taps[0];
                        best = t;
                        continue;
                    }
                    __mmask16 gt = _mm512_cmp_ps_mask(taps[kj], m, _CMP_GT_OQ);
                    m = _mm512_mask_mov_ps(m, gt, taps[kj]);
                    best = _mm512_mask_mov_epi32(best, gt, t);
                }
            }
            __m512 gv = _mm512_maskz_loadu_ps(lm, g + (size_t)i * ow + j0);
            __mmask16 md0 = (__mmask16)(2 * nj >= 16 ? 0xFFFF : (1u << (2 * nj)) - 1);
            __mmask16 md1 = (__mmask16)(2 * nj >= 32 ? 0xFFFF : 2 * nj > 16 ? (1u << (2 * nj - 16)) - 1 : 0);
            for (int ki = ki0; ki < ki1; ki++) {
                float *d = dx + (size_t)(h0 + ki) * w + c0;
                __m512 b0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(best, _mm512_set1_epi32(3 * ki)) & lm, gv);
                __m512 e = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(best, _mm512_set1_epi32(3 * ki + 1)) & lm, gv);
                __m512 a2 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(best, _mm512_set1_epi32(3 * ki + 2)) & lm, gv);
                __m512 ash = _mm512_castsi512_ps(
                    _mm512_alignr_epi32(_mm512_castps_si512(a2), _mm512_castps_si512(carry[ki - ki0]), 15));
                __m512 d0 = _mm512_maskz_loadu_ps(md0, d), d1 = _mm512_maskz_loadu_ps(md1, d + 16);
                __m512 dodd = _mm512_permutex2var_ps(d0, even, d1), deven = _mm512_permutex2var_ps(d0, odd, d1);
                dodd = _mm512_add_ps(_mm512_add_ps(dodd, ash), b0);
                deven = _mm512_add_ps(deven, e);
                _mm512_mask_storeu_ps(d, md0, _mm512_permutex2var_ps(dodd, lo, deven));
                _mm512_mask_storeu_ps(d + 16, md1, _mm512_permutex2var_ps(dodd, hi, deven));
                // lane 15 carries into the next 16 outputs; a last, shorter group's lane nj - 1 is flushed below
                carry[ki - ki0] = nj == 16 ? a2 : _mm512_permutexvar_ps(_mm512_set1_epi32(nj - 1), a2);
            }
            last_col = c0 + 2L * nj;
        }
        if (last_col >= 0)
            for (int ki = ki0; ki < ki1; ki++) {
                float t[16];
                _mm512_storeu_ps(t, carry[ki - ki0]);
                dx[(size_t)(h0 + ki) * w + last_col] += t[15];
            }
        for (int j = jhi; j < ow; j++) mp_backward_one(x, g, h, w, 3, 3, 2, 2, pt, pl, ow, i, j, dx);
    }
}

typedef void (*mpb33s2_fn)(MPB33S2_ARGS);
/// One entry per instruction-set level (ABK_ISA_SCALAR, ABK_ISA_AVX2, ABK_ISA_AVX512). (A 512-bit
/// compiler build of MPB33S2_BODY took 1110 us on the stem's 64 x 112 x 112, one thread, against
/// the AVX2 build's 670 us: the AVX-512 level runs the written-out kernel above. On AMD EPYC family
/// 25 model 1, one thread, the same 64 planes: the AVX2 build 1.06 ms, mpb33s2_avx2x 0.70 ms.)
static const mpb33s2_fn g_mpb33s2[3] = {mpb33s2_portable, mpb33s2_avx2x, mpb33s2_avx512};

void akn_maxpool_plane_backward(const float *x, const float *g, int h, int w, int kh, int kw, int sh, int sw, int pt,
                                int pl, int oh, int ow, float *dx) {
    if (kh == 3 && kw == 3 && sh == 2 && sw == 2 && (long)h * w < (1L << 30)) {
        g_mpb33s2[abk_isa()](x, g, h, w, pt, pl, oh, ow, dx);
        return;
    }
    for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) mp_backward_one(x, g, h, w, kh, kw, sh, sw, pt, pl, ow, i, j, dx);
}
