/*
 * imageio.c — shared helpers and bilinear resizing.
 * Decoding lives in decode.c, PNG writing in png_write.c, dataset reading in dataset.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "imageio_internal.h"

int aio__fail(char *err, size_t err_len, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *aio__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) memcpy(d, s, n);
    return d;
}

int aio__read_file(const char *path, uint8_t **bytes, size_t *len, char *err, size_t err_len) {
    *bytes = NULL;
    *len = 0;
    if (path == NULL) return aio__fail(err, err_len, "path is NULL");
    FILE *f = fopen(path, "rb");
    if (f == NULL) return aio__fail(err, err_len, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return aio__fail(err, err_len, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return aio__fail(err, err_len, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)AIO_MAX_FILE_BYTES) {
        fclose(f);
        return aio__fail(err, err_len, "%s: file too large (%lld bytes)", path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        fclose(f);
        return aio__fail(err, err_len, "%s: out of memory (%zu bytes)", path, n);
    }
    size_t got = n > 0 ? fread(buf, 1, n, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (got != n || rerr) {
        free(buf);
        return aio__fail(err, err_len, "%s: read error", path);
    }
    *bytes = buf;
    *len = n;
    return 0;
}

float *aio__hwc8_to_chw(const uint8_t *hwc, size_t h, size_t w) {
    size_t plane, total;
    if (aio__mul(h, w, &plane) != 0 || aio__mul(plane, 3, &total) != 0 ||
        total > SIZE_MAX / sizeof(float))
        return NULL;
    float *out = malloc(total * sizeof(float));
    if (out == NULL) return NULL;
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
    float *r = out, *g = out + plane, *b = out + 2 * plane;
    for (size_t i = 0; i < plane; i++) {
        r[i] = lut[hwc[3 * i]];
        g[i] = lut[hwc[3 * i + 1]];
        b[i] = lut[hwc[3 * i + 2]];
    }
    return out;
}

/* ---- bilinear resize, PyTorch F.interpolate(mode='bilinear', align_corners=False) ---- */

typedef struct {
    size_t i0, i1;
    float w0, w1;
} aio_lin;

/* Mirrors ATen's compute_indices_weights_linear for align_corners=false, float opmath. */
static void lin_weights(size_t in, size_t out, aio_lin *tab) {
    const float scale = (float)in / (float)out;
    for (size_t d = 0; d < out; d++) {
        float src = scale * ((float)d + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        size_t i0 = (size_t)src; /* src >= 0, so truncation == floor */
        if (i0 > in - 1) i0 = in - 1;
        float lambda = src - (float)i0;
        if (lambda < 0.0f) lambda = 0.0f;
        if (lambda > 1.0f) lambda = 1.0f;
        tab[d].i0 = i0;
        tab[d].i1 = i0 + (i0 < in - 1 ? 1 : 0);
        tab[d].w0 = 1.0f - lambda;
        tab[d].w1 = lambda;
    }
}

int aio_resize(const float *src, size_t channels, size_t h, size_t w, size_t out_h, size_t out_w,
               float **out, char *err, size_t err_len) {
    if (out == NULL) return aio__fail(err, err_len, "aio_resize: out is NULL");
    *out = NULL;
    if (src == NULL) return aio__fail(err, err_len, "aio_resize: src is NULL");
    if (channels == 0 || h == 0 || w == 0 || out_h == 0 || out_w == 0)
        return aio__fail(err, err_len, "aio_resize: zero dimension (%zux%zux%zu -> %zux%zu)",
                         channels, h, w, out_h, out_w);
    if (h > AIO_MAX_DIM || w > AIO_MAX_DIM || out_h > AIO_MAX_DIM || out_w > AIO_MAX_DIM)
        return aio__fail(err, err_len, "aio_resize: size %zux%zu -> %zux%zu exceeds %d per side", h,
                         w, out_h, out_w, AIO_MAX_DIM);
    size_t in_plane, in_total, out_plane, total, bytes;
    if (aio__mul(h, w, &in_plane) || aio__mul(out_h, out_w, &out_plane) ||
        aio__mul(out_plane, channels, &total) || aio__mul(total, sizeof(float), &bytes) ||
        aio__mul(in_plane, channels, &in_total))
        return aio__fail(err, err_len, "aio_resize: size overflow");
    float *dst = malloc(bytes);
    if (dst == NULL) return aio__fail(err, err_len, "aio_resize: out of memory (%zu bytes)", bytes);
    if (h == out_h && w == out_w) {
        memcpy(dst, src, bytes);
        *out = dst;
        return 0;
    }
    aio_lin *ty = malloc(out_h * sizeof(aio_lin));
    aio_lin *tx = malloc(out_w * sizeof(aio_lin));
    if (ty == NULL || tx == NULL) {
        free(ty);
        free(tx);
        free(dst);
        return aio__fail(err, err_len, "aio_resize: out of memory");
    }
    lin_weights(h, out_h, ty);
    lin_weights(w, out_w, tx);
    for (size_t c = 0; c < channels; c++) {
        const float *sp = src + c * in_plane;
        float *dp = dst + c * out_plane;
        for (size_t y = 0; y < out_h; y++) {
            const float *r0 = sp + ty[y].i0 * w, *r1 = sp + ty[y].i1 * w;
            const float h0 = ty[y].w0, h1 = ty[y].w1;
            for (size_t x = 0; x < out_w; x++) {
                const aio_lin lx = tx[x];
                /* Same evaluation order as ATen's Interpolate<2>: rows first, then columns. */
                float t0 = r0[lx.i0] * lx.w0 + r0[lx.i1] * lx.w1;
                float t1 = r1[lx.i0] * lx.w0 + r1[lx.i1] * lx.w1;
                dp[y * out_w + x] = t0 * h0 + t1 * h1;
            }
        }
    }
    free(ty);
    free(tx);
    *out = dst;
    return 0;
}
