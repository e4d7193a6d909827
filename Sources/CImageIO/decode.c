/*
 * decode.c — JPEG (libjpeg-turbo) and PNG (libpng) decoding to float CHW RGB in [0,1].
 *
 * Both libraries report fatal errors through callbacks that must not return; we
 * longjmp back to the decoder and clean up there. Every object that is touched
 * after setjmp and used on the error path is volatile-qualified.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "imageio_internal.h"

/** Progressive JPEGs with absurd scan counts are a known CPU-exhaustion vector. */
#define AIO_JPEG_MAX_SCANS 500

/* ------------------------------------------------------------------ JPEG */

typedef struct {
    struct jpeg_error_mgr pub; /* must be first */
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
} aio_jpeg_err;

static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    aio_jpeg_err *e = (aio_jpeg_err *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    buf[0] = '\0';
    (*cinfo->err->format_message)(cinfo, buf);
    snprintf(e->msg, sizeof e->msg, "%s", buf);
    longjmp(e->jb, 1);
}

/* Warnings (msg_level -1) that mean the data is corrupt or truncated are fatal: libjpeg
 * would otherwise pad the image with gray and report success. Benign warnings (e.g.
 * extraneous bytes before a marker, unknown JFIF revision) and trace messages are ignored.
 * Nothing is printed to stderr. */
static void jpeg_emit_message_cb(j_common_ptr cinfo, int msg_level) {
    if (msg_level >= 0) return;
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_MUST_RESYNC:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        jpeg_error_exit_cb(cinfo);
        break;
    default:
        cinfo->err->num_warnings++;
        break;
    }
}

static void jpeg_output_message_cb(j_common_ptr cinfo) { (void)cinfo; }

static void jpeg_progress_cb(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > AIO_JPEG_MAX_SCANS) {
        aio_jpeg_err *e = (aio_jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "too many progressive scans (> %d)", AIO_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static int decode_jpeg(const uint8_t *bytes, size_t len, aio_image *out, char *err,
                       size_t err_len) {
    struct jpeg_decompress_struct cinfo;
    aio_jpeg_err jerr;
    uint8_t *volatile hwc = NULL;

    memset(&cinfo, 0, sizeof cinfo);
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_error_exit_cb;
    jerr.pub.emit_message = jpeg_emit_message_cb;
    jerr.pub.output_message = jpeg_output_message_cb;
    if (setjmp(jerr.jb)) {
        jpeg_destroy_decompress(&cinfo);
        free(hwc);
        return aio__fail(err, err_len, "JPEG: %s", jerr.msg);
    }
    jpeg_create_decompress(&cinfo);
    jerr.progress.progress_monitor = jpeg_progress_cb;
    cinfo.progress = &jerr.progress;
    if ((unsigned long)len != len) {
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: input too large");
    }
    jpeg_mem_src(&cinfo, bytes, (unsigned long)len);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: no image in file");
    }
    if (cinfo.image_width == 0 || cinfo.image_height == 0 || cinfo.image_width > AIO_MAX_DIM ||
        cinfo.image_height > AIO_MAX_DIM) {
        unsigned w = cinfo.image_width, h = cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: image size %ux%u out of range (max %d per side)", w,
                         h, AIO_MAX_DIM);
    }
    const int gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    default: {
        int cs = (int)cinfo.jpeg_color_space;
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: unsupported color space %d (CMYK/YCCK not supported)",
                         cs);
    }
    }
    /* Library defaults (JDCT_ISLOW, fancy upsampling) — the same as Pillow, so pixels match. */
    jpeg_start_decompress(&cinfo);
    const size_t w = cinfo.output_width, h = cinfo.output_height;
    if (cinfo.output_components != 3 || w == 0 || h == 0 || w > AIO_MAX_DIM || h > AIO_MAX_DIM) {
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: unexpected output format");
    }
    size_t stride, total;
    if (aio__mul(w, 3, &stride) || aio__mul(stride, h, &total)) {
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: size overflow");
    }
    hwc = malloc(total);
    if (hwc == NULL) {
        jpeg_destroy_decompress(&cinfo);
        return aio__fail(err, err_len, "JPEG: out of memory (%zu bytes)", total);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = (JSAMPROW)(hwc + (size_t)cinfo.output_scanline * stride);
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            jpeg_destroy_decompress(&cinfo);
            free(hwc);
            return aio__fail(err, err_len, "JPEG: decoder made no progress (truncated data?)");
        }
    }
    /* The image is complete; trailing junk after the last scan is not worth failing over. */
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);

    float *chw = aio__hwc8_to_chw(hwc, h, w);
    free(hwc);
    if (chw == NULL) return aio__fail(err, err_len, "JPEG: out of memory");
    out->data = chw;
    out->channels = 3;
    out->height = h;
    out->width = w;
    out->grayscale = gray;
    return 0;
}

/* ------------------------------------------------------------------ PNG */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
} aio_png_src;

static void png_error_cb(png_structp png, png_const_charp msg) {
    aio_png_src *s = (aio_png_src *)png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_cb(png_structp png, png_bytep dst, png_size_t n) {
    aio_png_src *s = (aio_png_src *)png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "unexpected end of file (truncated PNG)");
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
}

static int decode_png(const uint8_t *bytes, size_t len, aio_image *out, char *err,
                      size_t err_len) {
    aio_png_src src = {bytes, len, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_cb,
                                             png_warning_cb);
    if (png == NULL) return aio__fail(err, err_len, "PNG: out of memory");
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        return aio__fail(err, err_len, "PNG: out of memory");
    }
    uint8_t *volatile hwc = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(hwc);
        free(rows);
        return aio__fail(err, err_len, "PNG: %s", src.msg);
    }
    png_set_read_fn(png, &src, png_read_cb);
    png_set_user_limits(png, AIO_MAX_DIM, AIO_MAX_DIM);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)64 << 20);
    png_read_info(png, info);

    png_uint_32 w32, h32;
    int bit_depth, color_type, interlace;
    png_get_IHDR(png, info, &w32, &h32, &bit_depth, &color_type, &interlace, NULL, NULL);
    if (w32 == 0 || h32 == 0 || w32 > AIO_MAX_DIM || h32 > AIO_MAX_DIM)
        png_error(png, "image size out of range");
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    /* 16 -> 8 bit keeps the high byte, like Pillow's "RGB;16B" raw mode. */
    if (bit_depth == 16) png_set_strip_16(png);
    /* Alpha is dropped, not composited (Pillow's convert("RGB") does the same); the tRNS
     * chunk is simply not expanded. */
    if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png); /* palette expansion also turns tRNS into alpha */
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);

    const size_t w = w32, h = h32;
    size_t stride, total;
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        aio__mul(w, 3, &stride) || png_get_rowbytes(png, info) != stride ||
        aio__mul(stride, h, &total) || h > SIZE_MAX / sizeof(png_bytep))
        png_error(png, "unexpected row layout after transforms");
    hwc = malloc(total);
    rows = malloc(h * sizeof(png_bytep));
    if (hwc == NULL || rows == NULL) png_error(png, "out of memory");
    for (size_t y = 0; y < h; y++) rows[y] = hwc + y * stride;
    png_read_image(png, rows);
    /* Chunks after the image data (and IEND) are not needed; like the JPEG path we do not
     * fail a complete image because of what follows it. */
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);

    float *chw = aio__hwc8_to_chw(hwc, h, w);
    free(hwc);
    if (chw == NULL) return aio__fail(err, err_len, "PNG: out of memory");
    out->data = chw;
    out->channels = 3;
    out->height = h;
    out->width = w;
    out->grayscale = color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA;
    return 0;
}

/* ------------------------------------------------------------------ public */

int aio_decode_memory(const uint8_t *bytes, size_t len, aio_image *out, char *err,
                      size_t err_len) {
    if (out == NULL) return aio__fail(err, err_len, "output image is NULL");
    memset(out, 0, sizeof *out);
    if (bytes == NULL && len > 0) return aio__fail(err, err_len, "input is NULL");
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return decode_jpeg(bytes, len, out, err, err_len);
    if (len >= 8 && memcmp(bytes, png_sig, 8) == 0) return decode_png(bytes, len, out, err, err_len);
    if (len == 0) return aio__fail(err, err_len, "empty input (not a JPEG or PNG)");
    return aio__fail(err, err_len, "unrecognized image format (not a JPEG or PNG)");
}

int aio_decode_file(const char *path, aio_image *out, char *err, size_t err_len) {
    if (out == NULL) return aio__fail(err, err_len, "output image is NULL");
    memset(out, 0, sizeof *out);
    uint8_t *bytes;
    size_t len;
    if (aio__read_file(path, &bytes, &len, err, err_len) != 0) return -1;
    char inner[512];
    int rc = aio_decode_memory(bytes, len, out, inner, sizeof inner);
    free(bytes);
    if (rc != 0) return aio__fail(err, err_len, "%s: %s", path, inner);
    return 0;
}

void aio_image_free(aio_image *img) {
    if (img == NULL) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}
