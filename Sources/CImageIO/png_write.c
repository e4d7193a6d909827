/*
 * png_write.c — float CHW [0,1] -> 8-bit RGB / gray PNG (libpng).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "imageio_internal.h"

typedef struct {
    char msg[256];
} aio_png_wctx;

static void pngw_error_cb(png_structp png, png_const_charp msg) {
    aio_png_wctx *c = (aio_png_wctx *)png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static void pngw_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Clamp to [0,1] (NaN -> 0) and round to nearest: k/255 maps back to exactly k. */
static inline png_byte to_u8(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 1.0f) return 255;
    return (png_byte)(v * 255.0f + 0.5f);
}

/// The header, the rows of a [channels][height][width] image in [0, 1] (8-bit, RGB or gray) and the
/// end, on a PNG writer set up by the caller (a file or memory; libpng errors longjmp to the caller).
static void png_write_image_rows(png_structp png, png_infop info, const float *chw, size_t width, size_t height,
                                 int channels, size_t plane, png_bytep row) {
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < height; y++) {
        const float *base = chw + y * width;
        if (channels == 3) {
            for (size_t x = 0; x < width; x++) {
                row[3 * x] = to_u8(base[x]);
                row[3 * x + 1] = to_u8(base[plane + x]);
                row[3 * x + 2] = to_u8(base[2 * plane + x]);
            }
        } else {
            for (size_t x = 0; x < width; x++) row[x] = to_u8(base[x]);
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
}

/// A libpng writer and its info struct, reporting through ctx (zeroed here). Returns -1, with
/// nothing left allocated, when libpng cannot allocate them.
static int pngw_create(aio_png_wctx *ctx, png_structp *png, png_infop *info) {
    memset(ctx, 0, sizeof *ctx);
    *png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, pngw_error_cb, pngw_warning_cb);
    *info = *png ? png_create_info_struct(*png) : NULL;
    if (*png == NULL || *info == NULL) {
        png_destroy_write_struct(png, NULL);
        return -1;
    }
    return 0;
}

/// The checks both writers make of an image's shape (named `fn` in the error); sets its plane and row
/// sizes. Returns aio__fail's value on a bad shape, else 0.
static int png_check_shape(const char *fn, size_t channels, size_t height, size_t width, size_t *plane, size_t *stride,
                           char *err, size_t err_len) {
    if (channels != 1 && channels != 3)
        return aio__fail(err, err_len, "%s: channels must be 1 or 3 (got %zu)", fn, channels);
    if (height == 0 || width == 0 || height > AIO_MAX_DIM || width > AIO_MAX_DIM)
        return aio__fail(err, err_len, "%s: size %zux%zu out of range (1..%d per side)", fn, height, width, AIO_MAX_DIM);
    if (aio__mul(height, width, plane) || aio__mul(width, channels, stride))
        return aio__fail(err, err_len, "%s: size overflow", fn);
    return 0;
}

int aio_write_png(const char *path, const float *chw, size_t channels, size_t height, size_t width,
                  char *err, size_t err_len) {
    if (path == NULL || chw == NULL) return aio__fail(err, err_len, "aio_write_png: NULL argument");
    size_t plane, stride;
    if (png_check_shape("aio_write_png", channels, height, width, &plane, &stride, err, err_len)) return -1;

    FILE *volatile fp = fopen(path, "wb");
    if (fp == NULL) return aio__fail(err, err_len, "%s: cannot create: %s", path, strerror(errno));
    png_byte *volatile row = malloc(stride);
    if (row == NULL) {
        fclose(fp);
        remove(path);
        return aio__fail(err, err_len, "aio_write_png: out of memory");
    }
    aio_png_wctx ctx;
    png_structp png;
    png_infop info;
    if (pngw_create(&ctx, &png, &info)) {
        free(row);
        fclose(fp);
        remove(path);
        return aio__fail(err, err_len, "aio_write_png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(row);
        fclose(fp);
        remove(path);
        return aio__fail(err, err_len, "%s: PNG write failed: %s", path, ctx.msg);
    }
    png_init_io(png, fp);
    png_write_image_rows(png, info, chw, width, height, (int)channels, plane, row);
    png_destroy_write_struct(&png, &info);
    free(row);
    int ferr = ferror(fp);
    int cerr = fclose(fp);
    if (ferr || cerr != 0) {
        remove(path);
        return aio__fail(err, err_len, "%s: write error", path);
    }
    return 0;
}

/* A growable memory sink for aio_encode_png. */
typedef struct {
    png_byte *data;
    size_t len, cap;
    int oom;
} aio_png_membuf;

static void pngw_mem_write(png_structp png, png_bytep bytes, png_size_t n) {
    aio_png_membuf *b = (aio_png_membuf *)png_get_io_ptr(png);
    if (b->oom) return;
    if (n > ((size_t)-1) / 4 - b->len) { b->oom = 1; png_error(png, "PNG too large"); }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        png_byte *p = realloc(b->data, cap);
        if (p == NULL) { b->oom = 1; png_error(png, "out of memory"); }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static void pngw_mem_flush(png_structp png) { (void)png; }

int aio_encode_png(const float *chw, size_t channels, size_t height, size_t width, uint8_t **out,
                   size_t *out_len, char *err, size_t err_len) {
    if (chw == NULL || out == NULL || out_len == NULL)
        return aio__fail(err, err_len, "aio_encode_png: NULL argument");
    *out = NULL;
    *out_len = 0;
    size_t plane, stride;
    if (png_check_shape("aio_encode_png", channels, height, width, &plane, &stride, err, err_len)) return -1;
    png_byte *volatile row = malloc(stride);
    if (row == NULL) return aio__fail(err, err_len, "aio_encode_png: out of memory");
    aio_png_membuf buf;
    memset(&buf, 0, sizeof buf);
    aio_png_wctx ctx;
    png_structp png;
    png_infop info;
    if (pngw_create(&ctx, &png, &info)) {
        free(row);
        return aio__fail(err, err_len, "aio_encode_png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(row);
        free(buf.data);
        return aio__fail(err, err_len, "PNG encoding failed: %s", ctx.msg);
    }
    png_set_write_fn(png, &buf, pngw_mem_write, pngw_mem_flush);
    png_write_image_rows(png, info, chw, width, height, (int)channels, plane, row);
    png_destroy_write_struct(&png, &info);
    free(row);
    *out = buf.data;
    *out_len = buf.len;
    return 0;
}
