/*
 * test_imageio.c — standalone tests for Sources/CImageIO (no Swift needed).
 * Build and run with Tests/CImageIOTests/run.sh (add --valgrind to run under valgrind).
 *
 * Environment:
 *   AIO_CIFAR_TGZ   path of the CIFAR-10 test.tar.gz (default: first of
 *                   ../shared/data/cifar10/test.tar.gz relative to the repo, then
 *                   /work/shared/data/cifar10/test.tar.gz); tests that need it are skipped
 *                   (and reported) when it is missing.
 *   AIO_TEST_QUICK  if set, skip the full 10,000-image read (used under valgrind).
 * Expected pixel values of the embedded fixtures were computed with Pillow
 * (Image.open(...).convert("RGB")), see make_fixtures.py.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "fixtures.h"
#include "imageio.h"

static int g_pass, g_fail;
#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (cond) {                                                                             \
            g_pass++;                                                                           \
        } else {                                                                                \
            g_fail++;                                                                           \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                         \
            printf(__VA_ARGS__);                                                                \
            printf("\n");                                                                       \
        }                                                                                       \
    } while (0)

static const char *const CIFAR[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                      "dog",      "frog",       "horse", "ship", "truck"};

/* ------------------------------------------------------------------ helpers */

static char g_tmp[256];
static char **g_made; /* strings handed out by tmp_path, freed at exit */
static size_t g_nmade, g_capmade;

static const char *tmp_path(const char *rel) {
    char *p = malloc(strlen(g_tmp) + strlen(rel) + 2);
    sprintf(p, "%s/%s", g_tmp, rel);
    if (g_nmade == g_capmade) {
        g_capmade = g_capmade ? 2 * g_capmade : 64;
        g_made = realloc(g_made, g_capmade * sizeof(char *));
    }
    g_made[g_nmade++] = p;
    return p;
}

static void mkdir_p(const char *rel) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", rel);
    for (char *s = buf + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(tmp_path(buf), 0755);
            *s = '/';
        }
    }
    mkdir(tmp_path(buf), 0755);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup_tmp(void) {
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < g_nmade; i++) free(g_made[i]);
    free(g_made);
}

static int write_bytes(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static int u8(float v) { return (int)lrintf(v * 255.0f); }

/* pixel (y,x) channel c of a CHW image, in 0..255 units */
static int px(const aio_image *im, size_t c, size_t y, size_t x) {
    return u8(im->data[(c * im->height + y) * im->width + x]);
}

static long long sum_u8(const float *d, size_t n) {
    long long s = 0;
    for (size_t i = 0; i < n; i++) s += u8(d[i]);
    return s;
}

/* every value must be exactly k/255.0f for an integer k */
static int exact_u8_floats(const float *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int k = u8(d[i]);
        if (k < 0 || k > 255 || d[i] != (float)k / 255.0f) return 0;
    }
    return 1;
}

/* PNG writer for fixtures libpng can make but Pillow cannot (Adam7, 16-bit RGBA). */
static int write_png16_rgba_interlaced(const char *path, size_t w, size_t h,
                                       const uint16_t *rgba /* h*w*4 */) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 16, PNG_COLOR_TYPE_RGBA,
                 PNG_INTERLACE_ADAM7, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_bytep *rows = malloc(h * sizeof(png_bytep));
    uint8_t *buf = malloc(w * h * 8);
    for (size_t i = 0; i < w * h * 4; i++) {
        buf[2 * i] = (uint8_t)(rgba[i] >> 8); /* big-endian samples */
        buf[2 * i + 1] = (uint8_t)(rgba[i] & 0xff);
    }
    for (size_t y = 0; y < h; y++) rows[y] = buf + y * w * 8;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(buf);
    return fclose(f);
}

/* Writes a constant-color w x h RGB PNG with aio_write_png and returns its bytes. */
static uint8_t *make_png(size_t w, size_t h, int r, int g, int b, size_t *len) {
    float *chw = malloc(3 * w * h * sizeof(float));
    for (size_t i = 0; i < w * h; i++) {
        chw[i] = (float)r / 255.0f;
        chw[w * h + i] = (float)g / 255.0f;
        chw[2 * w * h + i] = (float)b / 255.0f;
    }
    const char *p = tmp_path("scratch.png");
    char err[256];
    uint8_t *bytes = NULL;
    if (aio_write_png(p, chw, 3, h, w, err, sizeof err) == 0) bytes = read_bytes(p, len);
    free(chw);
    unlink(p);
    return bytes;
}

/* ---- a tiny tar writer (ustar / GNU / pax) ---- */

typedef struct {
    uint8_t *d;
    size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void buf_pad(buf_t *b) {
    static const uint8_t z[512];
    if (b->n % 512) buf_put(b, z, 512 - b->n % 512);
}

enum { TAR_USTAR, TAR_GNU, TAR_V7 };

static void tar_hdr(buf_t *b, const char *name, const char *prefix, char type, size_t size,
                    int fmt, int base256_size, const char *junk345) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    memcpy(h, name, strlen(name) < 100 ? strlen(name) : 100);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    if (base256_size) {
        h[124] = 0x80;
        for (int i = 0; i < 8; i++) h[135 - i] = (uint8_t)(size >> (8 * i));
    } else {
        snprintf((char *)h + 124, 12, "%011zo", size);
    }
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (uint8_t)type;
    if (fmt == TAR_USTAR) {
        memcpy(h + 257, "ustar\0" "00", 8);
        if (prefix) memcpy(h + 345, prefix, strlen(prefix) < 155 ? strlen(prefix) : 155);
    } else if (fmt == TAR_GNU) {
        memcpy(h + 257, "ustar  \0", 8);
        if (junk345) memcpy(h + 345, junk345, strlen(junk345));
    }
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    buf_put(b, h, 512);
}

static void tar_file(buf_t *b, const char *name, const char *prefix, const void *data, size_t n,
                     int fmt) {
    tar_hdr(b, name, prefix, '0', n, fmt, 0, NULL);
    buf_put(b, data, n);
    buf_pad(b);
}

static void tar_gnu_longname(buf_t *b, const char *longname) {
    size_t n = strlen(longname) + 1;
    tar_hdr(b, "././@LongLink", NULL, 'L', n, TAR_GNU, 0, NULL);
    buf_put(b, longname, n);
    buf_pad(b);
}

static void tar_pax_path(buf_t *b, const char *path) {
    char rec[2048];
    size_t body = strlen(" path=\n") + strlen(path), len = body + 1;
    while (snprintf(NULL, 0, "%zu", len) + body != len) len++;
    snprintf(rec, sizeof rec, "%zu path=%s\n", len, path);
    const char *other = "20 mtime=1700000000\n"; /* an unrelated record, must be ignored */
    tar_hdr(b, "PaxHeaders.0/x", NULL, 'x', strlen(rec) + strlen(other), TAR_USTAR, 0, NULL);
    buf_put(b, other, strlen(other));
    buf_put(b, rec, strlen(rec));
    buf_pad(b);
}

static void tar_end(buf_t *b) {
    static const uint8_t z[1024];
    buf_put(b, z, 1024);
}

static int gzip_file(const char *path, const uint8_t *d, size_t n) {
    gzFile g = gzopen(path, "wb6");
    if (!g) return -1;
    int w = gzwrite(g, d, (unsigned)n);
    return (gzclose(g) == Z_OK && (size_t)w == n) ? 0 : -1;
}

/* ------------------------------------------------------------------ tests */

static void test_jpeg_decode(void) {
    aio_image im;
    char err[256] = "";
    int rc = aio_decode_memory(cifar_cat_0003_jpg, sizeof cifar_cat_0003_jpg, &im, err, sizeof err);
    CHECK(rc == 0, "decode CIFAR JPEG: %s", err);
    if (rc != 0) return;
    CHECK(im.channels == 3 && im.height == 32 && im.width == 32, "CIFAR JPEG size %zux%zux%zu",
          im.channels, im.height, im.width);
    /* Pillow: px(0,0)=[255,252,243] px(15,16)=[128,106,85] px(31,31)=[15,5,0] px(7,29)=[114,88,63] */
    static const int pts[4][5] = {
        {0, 0, 255, 252, 243}, {15, 16, 128, 106, 85}, {31, 31, 15, 5, 0}, {7, 29, 114, 88, 63}};
    for (int i = 0; i < 4; i++) {
        size_t y = (size_t)pts[i][0], x = (size_t)pts[i][1];
        CHECK(px(&im, 0, y, x) == pts[i][2] && px(&im, 1, y, x) == pts[i][3] &&
                  px(&im, 2, y, x) == pts[i][4],
              "CIFAR JPEG pixel (%zu,%zu) = %d,%d,%d, Pillow says %d,%d,%d", y, x, px(&im, 0, y, x),
              px(&im, 1, y, x), px(&im, 2, y, x), pts[i][2], pts[i][3], pts[i][4]);
    }
    CHECK(sum_u8(im.data, 3 * 32 * 32) == 275846, "CIFAR JPEG pixel sum %lld != Pillow 275846",
          sum_u8(im.data, 3 * 32 * 32));
    CHECK(exact_u8_floats(im.data, 3 * 32 * 32), "JPEG floats are not exactly k/255");
    aio_image_free(&im);
    CHECK(im.data == NULL && im.width == 0, "aio_image_free resets the struct");

    rc = aio_decode_memory(gray_jpg, sizeof gray_jpg, &im, err, sizeof err);
    CHECK(rc == 0, "decode gray JPEG: %s", err);
    if (rc == 0) {
        int eq = 1;
        for (size_t i = 0; i < 48; i++)
            eq &= im.data[i] == im.data[48 + i] && im.data[i] == im.data[96 + i];
        CHECK(im.channels == 3 && im.height == 6 && im.width == 8 && eq,
              "gray JPEG -> 3 equal channels, 6x8 (got %zux%zu)", im.height, im.width);
        CHECK(im.grayscale == 1, "gray JPEG is flagged grayscale");
        CHECK(sum_u8(im.data, 3 * 48) == 17874 && px(&im, 0, 5, 7) == 157 && px(&im, 1, 2, 3) == 158,
              "gray JPEG pixels differ from Pillow (sum %lld)", sum_u8(im.data, 3 * 48));
        aio_image_free(&im);
    }

    /* decode from a file */
    const char *p = tmp_path("cat.jpg");
    write_bytes(p, cifar_cat_0003_jpg, sizeof cifar_cat_0003_jpg);
    rc = aio_decode_file(p, &im, err, sizeof err);
    CHECK(rc == 0 && im.width == 32 && px(&im, 2, 7, 29) == 63, "aio_decode_file: %s", err);
    CHECK(rc != 0 || im.grayscale == 0, "a color JPEG is not flagged grayscale");
    aio_image_free(&im);
}

static void test_png_decode(void) {
    aio_image im;
    char err[256] = "";
    /* palette + tRNS: palette colors, transparency ignored (Pillow convert("RGB")) */
    static const int pal[15][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}, {255, 0, 0},
                                   {0, 255, 0}, {0, 0, 255}, {10, 20, 30}, {255, 0, 0}, {0, 255, 0},
                                   {0, 0, 255}, {10, 20, 30}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    int rc = aio_decode_memory(pal_png, sizeof pal_png, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == 3 && im.width == 5, "palette PNG: %s", err);
    if (rc == 0) {
        int ok = 1;
        for (size_t i = 0; i < 15; i++)
            for (size_t c = 0; c < 3; c++) ok &= px(&im, c, i / 5, i % 5) == pal[i][c];
        CHECK(ok, "palette PNG pixels differ from Pillow");
        CHECK(im.grayscale == 0, "palette PNG is not flagged grayscale");
        aio_image_free(&im);
    }
    /* RGBA: alpha dropped */
    static const int rgba[6][3] = {{10, 20, 30},    {40, 50, 60},    {70, 80, 90},
                                   {100, 110, 120}, {130, 140, 150}, {250, 251, 252}};
    rc = aio_decode_memory(rgba_png, sizeof rgba_png, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == 2 && im.width == 3, "RGBA PNG: %s", err);
    if (rc == 0) {
        int ok = 1;
        for (size_t i = 0; i < 6; i++)
            for (size_t c = 0; c < 3; c++) ok &= px(&im, c, i / 3, i % 3) == rgba[i][c];
        CHECK(ok, "RGBA PNG pixels differ from Pillow");
        CHECK(im.grayscale == 0, "RGBA PNG is not flagged grayscale");
        aio_image_free(&im);
    }
    /* 16-bit gray: high byte (0,255,256,4660,65535,32768 -> 0,0,1,18,255,128). Pillow's
     * I;16 -> RGB conversion clips instead, so this is checked against our documented rule. */
    static const int g16[6] = {0, 0, 1, 18, 255, 128};
    rc = aio_decode_memory(gray16_png, sizeof gray16_png, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == 2 && im.width == 3, "16-bit gray PNG: %s", err);
    if (rc == 0) {
        int ok = 1;
        for (size_t i = 0; i < 6; i++)
            for (size_t c = 0; c < 3; c++) ok &= px(&im, c, i / 3, i % 3) == g16[i];
        CHECK(ok, "16-bit gray PNG pixels wrong");
        CHECK(im.grayscale == 1, "16-bit gray PNG is flagged grayscale");
        aio_image_free(&im);
    }
    /* gray + alpha */
    rc = aio_decode_memory(la_png, sizeof la_png, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == 1 && im.width == 2 && px(&im, 0, 0, 0) == 7 &&
              px(&im, 2, 0, 0) == 7 && px(&im, 1, 0, 1) == 77,
          "gray+alpha PNG: %s", err);
    CHECK(rc != 0 || im.grayscale == 1, "gray+alpha PNG is flagged grayscale");
    if (rc == 0) aio_image_free(&im);
    /* 1-bit gray */
    static const int bits[9] = {255, 0, 255, 255, 0, 0, 255, 0, 255};
    rc = aio_decode_memory(bit1_png, sizeof bit1_png, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == 1 && im.width == 9, "1-bit PNG: %s", err);
    if (rc == 0) {
        int ok = 1;
        for (size_t i = 0; i < 9; i++) ok &= px(&im, 0, 0, i) == bits[i] && px(&im, 1, 0, i) == bits[i];
        CHECK(ok, "1-bit PNG pixels differ from Pillow");
        CHECK(im.grayscale == 1, "1-bit gray PNG is flagged grayscale");
        aio_image_free(&im);
    }
    /* Adam7-interlaced 16-bit RGBA written by libpng */
    enum { W = 11, H = 7 };
    uint16_t src[W * H * 4];
    for (size_t i = 0; i < W * H * 4; i++) src[i] = (uint16_t)(rnd() & 0xffff);
    const char *p = tmp_path("adam7.png");
    CHECK(write_png16_rgba_interlaced(p, W, H, src) == 0, "writing Adam7 fixture");
    rc = aio_decode_file(p, &im, err, sizeof err);
    CHECK(rc == 0 && im.height == H && im.width == W, "Adam7 16-bit RGBA PNG: %s", err);
    if (rc == 0) {
        int ok = 1;
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++)
                for (size_t c = 0; c < 3; c++) ok &= px(&im, c, y, x) == src[(y * W + x) * 4 + c] >> 8;
        CHECK(ok, "Adam7 16-bit RGBA PNG pixels wrong");
        aio_image_free(&im);
    }
}

/* aio_encode_png: the same bytes as aio_write_png's file (RGB and gray), decodable, and errors. */
static void test_png_encode_memory(void) {
    enum { H = 9, W = 11 };
    float chw[3 * H * W];
    for (size_t i = 0; i < 3 * H * W; i++) chw[i] = (float)rnd() / 2147483648.0f * 1.4f - 0.2f;
    char err[256] = "";
    for (size_t c = 1; c <= 3; c += 2) {
        const char *p = tmp_path("enc.png");
        CHECK(aio_write_png(p, chw, c, H, W, err, sizeof err) == 0, "aio_write_png: %s", err);
        size_t flen = 0, mlen = 0;
        uint8_t *file = read_bytes(p, &flen), *mem = NULL;
        unlink(p);
        int rc = aio_encode_png(chw, c, H, W, &mem, &mlen, err, sizeof err);
        CHECK(rc == 0 && mem != NULL, "aio_encode_png (%zu channels): %s", c, err);
        CHECK(file && mem && flen == mlen && memcmp(file, mem, flen) == 0,
              "aio_encode_png bytes differ from aio_write_png's (%zu channels: %zu vs %zu bytes)", c, mlen, flen);
        aio_image im;
        if (mem && aio_decode_memory(mem, mlen, &im, err, sizeof err) == 0) {
            CHECK(im.height == H && im.width == W && im.grayscale == (c == 1), "encoded PNG reads back");
            aio_image_free(&im);
        } else {
            CHECK(0, "encoded PNG does not decode: %s", err);
        }
        free(file);
        free(mem);
    }
    uint8_t *mem = (uint8_t *)1;
    size_t mlen = 7;
    CHECK(aio_encode_png(chw, 2, H, W, &mem, &mlen, err, sizeof err) != 0 && mem == NULL && mlen == 0 &&
              strstr(err, "channels") != NULL, "aio_encode_png rejects 2 channels: %s", err);
    CHECK(aio_encode_png(chw, 3, 0, W, &mem, &mlen, err, sizeof err) != 0, "aio_encode_png rejects height 0");
    CHECK(aio_encode_png(NULL, 3, H, W, &mem, &mlen, err, sizeof err) != 0, "aio_encode_png rejects NULL");
}

static void test_png_roundtrip(void) {
    enum { C = 3, H = 13, W = 17 };
    float chw[C * H * W], chk[C * H * W];
    for (size_t i = 0; i < C * H * W; i++) chw[i] = (float)(rnd() % 256) / 255.0f;
    const char *p = tmp_path("rt.png");
    char err[256] = "";
    int rc = aio_write_png(p, chw, C, H, W, err, sizeof err);
    CHECK(rc == 0, "aio_write_png: %s", err);
    aio_image im;
    rc = aio_decode_file(p, &im, err, sizeof err);
    CHECK(rc == 0 && im.channels == 3 && im.height == H && im.width == W, "read back: %s", err);
    if (rc == 0) {
        CHECK(memcmp(im.data, chw, sizeof chw) == 0, "PNG round trip changed 8-bit values");
        aio_image_free(&im);
    }
    /* arbitrary floats: clamped, rounded; NaN -> 0 */
    for (size_t i = 0; i < C * H * W; i++) chw[i] = (float)rnd() / 2147483648.0f * 1.6f - 0.3f;
    chw[0] = NAN;
    chw[1] = INFINITY;
    chw[2] = -INFINITY;
    chw[3] = 0.5f / 255.0f;          /* 0.5 rounds up to 1 */
    chw[4] = 0.49f / 255.0f;         /* rounds down to 0 */
    chw[5] = 254.5f / 255.0f + 1e-6f; /* rounds to 255 */
    for (size_t i = 0; i < C * H * W; i++) {
        float v = chw[i];
        v = (v > 0.0f) ? (v < 1.0f ? v : 1.0f) : 0.0f;
        chk[i] = floorf(v * 255.0f + 0.5f) / 255.0f;
    }
    rc = aio_write_png(p, chw, C, H, W, err, sizeof err);
    CHECK(rc == 0, "aio_write_png (unclamped): %s", err);
    rc = aio_decode_file(p, &im, err, sizeof err);
    if (rc == 0) {
        int ok = 1;
        for (size_t i = 0; i < C * H * W; i++)
            if (im.data[i] != chk[i]) {
                ok = 0;
                printf("  value %zu: wrote %g, read %g, expected %g\n", i, chw[i], im.data[i], chk[i]);
                break;
            }
        CHECK(ok && u8(im.data[0]) == 0 && u8(im.data[1]) == 255 && u8(im.data[2]) == 0 &&
                  u8(im.data[3]) == 1 && u8(im.data[4]) == 0 && u8(im.data[5]) == 255,
              "clamp/round on write");
        aio_image_free(&im);
    } else {
        CHECK(0, "read back unclamped: %s", err);
    }
    /* 1 channel -> gray PNG -> 3 equal channels */
    rc = aio_write_png(p, chw + 100, 1, 5, 7, err, sizeof err);
    CHECK(rc == 0, "aio_write_png gray: %s", err);
    rc = aio_decode_file(p, &im, err, sizeof err);
    if (rc == 0) {
        int ok = im.height == 5 && im.width == 7;
        for (size_t i = 0; ok && i < 35; i++)
            ok &= im.data[i] == chk[100 + i] && im.data[35 + i] == chk[100 + i] &&
                  im.data[70 + i] == chk[100 + i];
        CHECK(ok, "gray PNG round trip");
        aio_image_free(&im);
    } else {
        CHECK(0, "read back gray: %s", err);
    }
    /* bad arguments */
    CHECK(aio_write_png(p, chw, 2, H, W, err, sizeof err) != 0 && err[0], "channels=2 rejected");
    CHECK(aio_write_png(p, chw, 3, 0, W, err, sizeof err) != 0, "height 0 rejected");
    CHECK(aio_write_png(p, chw, 3, 20000, 1, err, sizeof err) != 0, "height 20000 rejected");
    CHECK(aio_write_png("/nonexistent-dir/x.png", chw, 3, H, W, err, sizeof err) != 0 &&
              strstr(err, "nonexistent") != NULL,
          "unwritable path rejected (%s)", err);
}

static void test_resize(void) {
    char err[256] = "";
    float *out = NULL;
    /* PyTorch: F.interpolate([[0,1],[2,3]], size=(4,4), mode='bilinear', align_corners=False) */
    const float src[4] = {0, 1, 2, 3};
    const float up[16] = {0.0f, 0.25f, 0.75f, 1.0f, 0.5f, 0.75f, 1.25f, 1.5f,
                          1.5f, 1.75f, 2.25f, 2.5f, 2.0f, 2.25f, 2.75f, 3.0f};
    int rc = aio_resize(src, 1, 2, 2, 4, 4, &out, err, sizeof err);
    CHECK(rc == 0 && memcmp(out, up, sizeof up) == 0, "bilinear 2x2 -> 4x4 matches PyTorch");
    free(out);
    /* 4x4 -> 2x2 (scale 2, no antialias): mean of each 2x2 block */
    float s16[2 * 16];
    for (int i = 0; i < 32; i++) s16[i] = (float)i;
    rc = aio_resize(s16, 2, 4, 4, 2, 2, &out, err, sizeof err);
    const float down[8] = {2.5f, 4.5f, 10.5f, 12.5f, 18.5f, 20.5f, 26.5f, 28.5f};
    CHECK(rc == 0 && memcmp(out, down, sizeof down) == 0, "bilinear 4x4 -> 2x2 (2 channels)");
    free(out);
    /* 1x3 -> 1x2: source x = 0.25 and 1.75 */
    const float row3[3] = {0, 1, 2};
    rc = aio_resize(row3, 1, 1, 3, 1, 2, &out, err, sizeof err);
    CHECK(rc == 0 && fabsf(out[0] - 0.25f) < 1e-6f && fabsf(out[1] - 1.75f) < 1e-6f,
          "bilinear 1x3 -> 1x2");
    free(out);
    /* identity */
    rc = aio_resize(s16, 2, 4, 4, 4, 4, &out, err, sizeof err);
    CHECK(rc == 0 && memcmp(out, s16, sizeof s16) == 0, "identity resize");
    free(out);
    out = (float *)1;
    CHECK(aio_resize(src, 1, 2, 2, 0, 4, &out, err, sizeof err) != 0 && out == NULL,
          "zero output size rejected");
    CHECK(aio_resize(src, 1, 2, 2, 4, 20000, &out, err, sizeof err) != 0, "huge output rejected");
}

static void set_png_width(uint8_t *png, uint32_t w) {
    png[16] = (uint8_t)(w >> 24);
    png[17] = (uint8_t)(w >> 16);
    png[18] = (uint8_t)(w >> 8);
    png[19] = (uint8_t)w;
    uLong crc = crc32(0, png + 12, 17);
    png[29] = (uint8_t)(crc >> 24);
    png[30] = (uint8_t)(crc >> 16);
    png[31] = (uint8_t)(crc >> 8);
    png[32] = (uint8_t)crc;
}

static void test_hostile_images(void) {
    aio_image im;
    char err[256];
    /* every truncation of a JPEG: error (or, only when just the EOI marker is missing, a full
     * image); never a crash */
    size_t n = sizeof cifar_cat_0003_jpg;
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, cifar_cat_0003_jpg, len);
        err[0] = '\0';
        int rc = aio_decode_memory(copy, len, &im, err, sizeof err);
        if (rc == 0) {
            if (len < n - 2) {
                bad++;
                printf("  truncated JPEG of %zu/%zu bytes decoded without error\n", len, n);
            }
            aio_image_free(&im);
        } else if (err[0] == '\0' || im.data != NULL) {
            bad++;
        }
        free(copy);
    }
    CHECK(bad == 0, "truncated JPEGs -> error (%d bad)", bad);
    /* every truncation of the PNG fixtures (minus IEND, which is never read) */
    const struct {
        const uint8_t *d;
        size_t n;
    } pngs[] = {{pal_png, sizeof pal_png}, {rgba_png, sizeof rgba_png},
                {gray16_png, sizeof gray16_png}, {bit1_png, sizeof bit1_png}};
    bad = 0;
    for (size_t k = 0; k < sizeof pngs / sizeof pngs[0]; k++)
        for (size_t len = 0; len < pngs[k].n; len++) {
            uint8_t *copy = malloc(len ? len : 1);
            memcpy(copy, pngs[k].d, len);
            err[0] = '\0';
            int rc = aio_decode_memory(copy, len, &im, err, sizeof err);
            if (rc == 0) {
                if (len < pngs[k].n - 12) bad++;
                aio_image_free(&im);
            } else if (err[0] == '\0') {
                bad++;
            }
            free(copy);
        }
    CHECK(bad == 0, "truncated PNGs -> error (%d bad)", bad);
    /* random corruption: must not crash; failures carry a message */
    int failed = 0, okc = 0;
    bad = 0;
    for (int t = 0; t < 600; t++) {
        const uint8_t *srcb = (t & 1) ? cifar_cat_0003_jpg : rgba_png;
        size_t sn = (t & 1) ? sizeof cifar_cat_0003_jpg : sizeof rgba_png;
        uint8_t *copy = malloc(sn);
        memcpy(copy, srcb, sn);
        int flips = 1 + (int)(rnd() % 6);
        for (int f = 0; f < flips; f++) copy[3 + rnd() % (sn - 3)] ^= (uint8_t)(1 + rnd() % 255);
        err[0] = '\0';
        if (aio_decode_memory(copy, sn, &im, err, sizeof err) == 0) {
            okc++;
            if (im.channels != 3 || im.width == 0 || im.width > AIO_MAX_DIM) bad++;
            aio_image_free(&im);
        } else {
            failed++;
            if (err[0] == '\0') bad++;
        }
        free(copy);
    }
    CHECK(bad == 0, "corrupted images: %d decoded, %d errors, %d bad", okc, failed, bad);
    /* pure garbage, with and without magic bytes */
    uint8_t g[4096];
    bad = 0;
    for (int t = 0; t < 200; t++) {
        size_t len = 1 + rnd() % sizeof g;
        for (size_t i = 0; i < len; i++) g[i] = (uint8_t)rnd();
        if (t % 3 == 1 && len > 3) memcpy(g, "\xff\xd8\xff", 3);
        if (t % 3 == 2 && len > 8) memcpy(g, "\x89PNG\r\n\x1a\n", 8);
        err[0] = '\0';
        if (aio_decode_memory(g, len, &im, err, sizeof err) == 0) {
            aio_image_free(&im);
            bad++;
        } else if (err[0] == '\0') {
            bad++;
        }
    }
    CHECK(bad == 0, "garbage -> error (%d bad)", bad);
    CHECK(aio_decode_memory(NULL, 0, &im, err, sizeof err) != 0, "empty input -> error");
    CHECK(aio_decode_memory((const uint8_t *)"hello", 5, &im, err, sizeof err) != 0 &&
              strstr(err, "format") != NULL,
          "unknown format message: %s", err);
    /* absurd sizes */
    uint8_t *j = malloc(n);
    memcpy(j, cifar_cat_0003_jpg, n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (j[i] == 0xFF && (j[i + 1] == 0xC0 || j[i + 1] == 0xC2)) {
            sof = i;
            break;
        }
    CHECK(sof != 0, "found SOF marker");
    if (sof) {
        j[sof + 5] = 0x4E; /* height 20000 */
        j[sof + 6] = 0x20;
        int rc = aio_decode_memory(j, n, &im, err, sizeof err);
        CHECK(rc != 0 && strstr(err, "20000") != NULL, "JPEG 20000 rows rejected: %s", err);
        if (rc == 0) aio_image_free(&im);
        j[sof + 5] = 0x40; /* 16384 rows, data truncated -> error, no crash */
        j[sof + 6] = 0x00;
        rc = aio_decode_memory(j, n, &im, err, sizeof err);
        CHECK(rc != 0, "JPEG claiming 16384 rows with 32 rows of data -> error");
        if (rc == 0) aio_image_free(&im);
    }
    free(j);
    uint8_t *pcopy = malloc(sizeof rgba_png);
    memcpy(pcopy, rgba_png, sizeof rgba_png);
    set_png_width(pcopy, 16385);
    int rc = aio_decode_memory(pcopy, sizeof rgba_png, &im, err, sizeof err);
    CHECK(rc != 0, "PNG 16385 wide rejected: %s", err);
    if (rc == 0) aio_image_free(&im);
    set_png_width(pcopy, 0x7fffffffu);
    rc = aio_decode_memory(pcopy, sizeof rgba_png, &im, err, sizeof err);
    CHECK(rc != 0, "PNG 2^31-1 wide rejected: %s", err);
    if (rc == 0) aio_image_free(&im);
    free(pcopy);
    /* files */
    CHECK(aio_decode_file("/nonexistent/x.png", &im, err, sizeof err) != 0 &&
              strstr(err, "/nonexistent/x.png") != NULL,
          "missing file -> error naming it: %s", err);
    CHECK(aio_decode_file(g_tmp, &im, err, sizeof err) != 0, "directory -> error");
    const char *e = tmp_path("empty.jpg");
    write_bytes(e, "", 0);
    CHECK(aio_decode_file(e, &im, err, sizeof err) != 0, "empty file -> error");
    /* err may be NULL / tiny */
    CHECK(aio_decode_memory(g, 10, &im, NULL, 0) != 0, "NULL err buffer is fine");
    char tiny[4];
    CHECK(aio_decode_memory(g, 10, &im, tiny, sizeof tiny) != 0 && strlen(tiny) == 3,
          "tiny err buffer truncated");
}

typedef struct {
    const char *path;
    int label;
    int color;
} expect_t;

static int cmp_expect(const void *a, const void *b) {
    return strcmp(((const expect_t *)a)->path, ((const expect_t *)b)->path);
}

static void check_ds(const aio_dataset *ds, expect_t *ex, size_t nex, const char *what) {
    qsort(ex, nex, sizeof *ex, cmp_expect);
    CHECK(ds->count == nex, "%s: %zu images, expected %zu", what, ds->count, nex);
    if (ds->count != nex) {
        for (size_t i = 0; i < ds->count; i++) printf("  got %s\n", ds->paths[i]);
        return;
    }
    int ok = 1;
    size_t per = ds->channels * ds->height * ds->width;
    for (size_t i = 0; i < nex; i++) {
        int color = u8(ds->pixels[i * per]);
        if (strcmp(ds->paths[i], ex[i].path) != 0 || ds->labels[i] != ex[i].label ||
            color != ex[i].color) {
            printf("  %s[%zu]: got %s label %lld color %d, expected %s label %d color %d\n", what,
                   i, ds->paths[i], (long long)ds->labels[i], color, ex[i].path, ex[i].label,
                   ex[i].color);
            ok = 0;
        }
    }
    CHECK(ok, "%s: paths/labels/pixels", what);
}

static void test_synthetic_tar(void) {
    char err[512] = "";
    size_t n0, n1, n2, n3, n4, n5, nbig;
    uint8_t *p0 = make_png(4, 3, 10, 0, 0, &n0); /* the colour's red channel identifies an image */
    uint8_t *p1 = make_png(4, 3, 20, 0, 0, &n1);
    uint8_t *p2 = make_png(4, 3, 30, 0, 0, &n2);
    uint8_t *p3 = make_png(4, 3, 40, 0, 0, &n3);
    uint8_t *p4 = make_png(4, 3, 50, 0, 0, &n4);
    uint8_t *p5 = make_png(4, 3, 60, 0, 0, &n5);
    uint8_t *pbig = make_png(5, 3, 70, 0, 0, &nbig);
    CHECK(p0 && p1 && p2 && p3 && p4 && p5 && pbig, "made PNG fixtures");
    if (!(p0 && p1 && p2 && p3 && p4 && p5 && pbig)) return;

    char longdir[200], longname[400], paxpath[600], pfx[160];
    memset(longdir, 'd', 150);
    longdir[150] = '\0';
    snprintf(longname, sizeof longname, "ds/%s/cls_c/long.png", longdir);
    memset(pfx, 'p', 100);
    pfx[100] = '\0';
    char prefix[200];
    snprintf(prefix, sizeof prefix, "ds/%s", pfx);
    char prefixed[300];
    snprintf(prefixed, sizeof prefixed, "%s/cls_b/pre.png", prefix);
    snprintf(paxpath, sizeof paxpath, "ds/%s/%s/cls_a/pax.PNG", longdir, longdir);

    buf_t b = {0};
    tar_hdr(&b, "ds/", NULL, '5', 0, TAR_USTAR, 0, NULL);
    tar_hdr(&b, "ds/cls_a/", NULL, '5', 0, TAR_USTAR, 0, NULL);
    tar_file(&b, "ds/cls_a/img0.png", NULL, p0, n0, TAR_USTAR);               /* replaced below */
    tar_file(&b, "ds/cls_a/._img0.png", NULL, "garbage", 7, TAR_USTAR);       /* hidden: ignored */
    tar_file(&b, "ds/cls_a/notes.txt", NULL, "hello", 5, TAR_USTAR);          /* not an image */
    tar_file(&b, "ds/.cache/cls_a/h.png", NULL, "garbage", 7, TAR_USTAR);     /* hidden folder */
    tar_file(&b, "top.png", NULL, p5, n5, TAR_USTAR);                         /* no class folder */
    tar_file(&b, "cls_b/pre.png", prefix, p1, n1, TAR_USTAR);                 /* ustar prefix */
    tar_gnu_longname(&b, longname);                                           /* GNU long name */
    tar_file(&b, "ds/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
             NULL, p2, n2, TAR_GNU);
    tar_pax_path(&b, paxpath);                                                /* pax path */
    tar_file(&b, "PaxHeaders/short-name-ignored.png", NULL, p3, n3, TAR_USTAR);
    tar_hdr(&b, "ds/cls_b/link.png", NULL, '2', 0, TAR_USTAR, 0, NULL);        /* symlink */
    tar_hdr(&b, "./ds/cls_b/img4.jpg", NULL, '0', n4, TAR_GNU, 1, "JUNKJUNK"); /* base-256 size */
    buf_put(&b, p4, n4);
    buf_pad(&b);
    tar_file(&b, "ds/cls_a/img0.png", NULL, p5, n5, TAR_V7); /* duplicate: this copy wins */
    tar_end(&b);

    expect_t ex[] = {{"ds/cls_a/img0.png", 0, 60}, {prefixed, 1, 20},          {longname, 2, 30},
                     {paxpath, 0, 40},             {"ds/cls_b/img4.jpg", 1, 50}};
    const char *tarp = tmp_path("syn.tar"), *tgzp = tmp_path("syn.tgz");
    write_bytes(tarp, b.d, b.n);
    gzip_file(tgzp, b.d, b.n);
    aio_dataset ds;
    for (int k = 0; k < 2; k++) {
        const char *p = k ? tgzp : tarp;
        int rc = aio_dataset_read(p, 0, 0, NULL, 0, &ds, err, sizeof err);
        CHECK(rc == 0, "synthetic %s: %s", k ? "tar.gz" : "tar", err);
        if (rc != 0) continue;
        CHECK(ds.num_classes == 3 && !strcmp(ds.class_names[0], "cls_a") &&
                  !strcmp(ds.class_names[2], "cls_c"),
              "synthetic classes");
        CHECK(ds.channels == 3 && ds.height == 3 && ds.width == 4, "synthetic image size");
        check_ds(&ds, ex, sizeof ex / sizeof ex[0], k ? "synthetic tar.gz" : "synthetic tar");
        aio_dataset_free(&ds);
        CHECK(ds.pixels == NULL && ds.count == 0, "aio_dataset_free resets");
    }
    /* class_names given: order defines labels; a missing class is an error */
    const char *names[] = {"cls_c", "cls_b", "cls_a", "unused"};
    int rc = aio_dataset_read(tgzp, 0, 0, names, 4, &ds, err, sizeof err);
    CHECK(rc == 0 && ds.num_classes == 4 && !strcmp(ds.class_names[3], "unused"),
          "class_names given: %s", err);
    if (rc == 0) {
        expect_t ex2[] = {{"ds/cls_a/img0.png", 2, 60}, {prefixed, 1, 20},        {longname, 0, 30},
                          {paxpath, 2, 40},             {"ds/cls_b/img4.jpg", 1, 50}};
        check_ds(&ds, ex2, 5, "class_names order");
        aio_dataset_free(&ds);
    }
    rc = aio_dataset_read(tgzp, 0, 0, names, 2, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "cls_a") != NULL, "class not in class_names -> error: %s", err);
    /* limit without / with stride */
    rc = aio_dataset_read(tarp, 2, 0, NULL, 0, &ds, err, sizeof err);
    qsort(ex, 5, sizeof ex[0], cmp_expect);
    CHECK(rc == 0 && ds.count == 2 && ds.num_classes == 3 && !strcmp(ds.paths[0], ex[0].path) &&
              !strcmp(ds.paths[1], ex[1].path),
          "limit 2, first entries (rc %d)", rc);
    if (rc == 0) aio_dataset_free(&ds);
    rc = aio_dataset_read(tarp, 2, 1, NULL, 0, &ds, err, sizeof err);
    CHECK(rc == 0 && ds.count == 2 && !strcmp(ds.paths[0], ex[0].path) &&
              !strcmp(ds.paths[1], ex[2].path),
          "limit 2 stride: entries 0 and 2: %s", err);
    if (rc == 0) aio_dataset_free(&ds);

    /* hostile archives built from the good one */
    const char *tp = tmp_path("bad.tar");
    int bad = 0;
    for (size_t len = 1; len < b.n; len += 97) { /* truncations of the plain tar */
        write_bytes(tp, b.d, len);
        err[0] = '\0';
        rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
        if (rc == 0) {
            aio_dataset_free(&ds);
            /* acceptable only when cut at a block boundary after the last entry */
            if (len < b.n - 1024) {
                bad++;
                printf("  tar truncated to %zu of %zu bytes read without error\n", len, b.n);
            }
        } else if (err[0] == '\0') {
            bad++;
        }
    }
    CHECK(bad == 0, "truncated tars -> error (%d bad)", bad);
    bad = 0;
    size_t gzn;
    uint8_t *gz = read_bytes(tgzp, &gzn);
    for (size_t len = 0; len < gzn - 8; len += 13) { /* truncations of the tar.gz */
        write_bytes(tp, gz, len);
        err[0] = '\0';
        rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
        if (rc == 0) {
            aio_dataset_free(&ds);
            bad++;
        } else if (err[0] == '\0') {
            bad++;
        }
    }
    CHECK(bad == 0, "truncated tar.gz -> error (%d bad)", bad);
    bad = 0;
    for (int t = 0; t < 150; t++) { /* random corruption of tar and tar.gz */
        int use_gz = t & 1;
        size_t sn = use_gz ? gzn : b.n;
        uint8_t *copy = malloc(sn);
        memcpy(copy, use_gz ? gz : b.d, sn);
        for (int f = 0; f < 1 + (int)(rnd() % 4); f++) copy[rnd() % sn] ^= (uint8_t)(1 + rnd() % 255);
        write_bytes(tp, copy, sn);
        free(copy);
        err[0] = '\0';
        rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
        if (rc == 0)
            aio_dataset_free(&ds);
        else if (err[0] == '\0')
            bad++;
    }
    CHECK(bad == 0, "corrupted archives: no crash, errors carry messages (%d bad)", bad);
    free(gz);
    /* bad checksum in the second header */
    uint8_t *c2 = malloc(b.n);
    memcpy(c2, b.d, b.n);
    c2[512 + 10] ^= 0x55;
    write_bytes(tp, c2, b.n);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "checksum") != NULL, "bad header checksum -> error: %s", err);
    free(c2);
    /* garbage / empty / missing */
    uint8_t junk[3000];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)rnd();
    write_bytes(tp, junk, sizeof junk);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && err[0], "garbage archive -> error: %s", err);
    junk[0] = 0x1f;
    junk[1] = 0x8b; /* gzip magic + garbage */
    write_bytes(tp, junk, sizeof junk);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && err[0], "gzip-magic garbage -> error: %s", err);
    write_bytes(tp, "", 0);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && err[0], "empty archive -> error: %s", err);
    rc = aio_dataset_read("/nonexistent/data.tar.gz", 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "/nonexistent/data.tar.gz"), "missing archive -> error: %s", err);
    /* corrupt image entry -> error naming it; mismatched sizes -> error naming the file */
    buf_t b2 = {0};
    tar_file(&b2, "x/c1/ok.png", NULL, p0, n0, TAR_USTAR);
    tar_file(&b2, "x/c2/bad.jpg", NULL, "\xff\xd8\xff\xe0garbage", 11, TAR_USTAR);
    tar_end(&b2);
    write_bytes(tp, b2.d, b2.n);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "x/c2/bad.jpg") != NULL, "corrupt entry -> error: %s", err);
    b2.n = 0;
    tar_file(&b2, "x/c1/a.png", NULL, p0, n0, TAR_USTAR);
    tar_file(&b2, "x/c2/wide.png", NULL, pbig, nbig, TAR_USTAR);
    tar_end(&b2);
    write_bytes(tp, b2.d, b2.n);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "x/c2/wide.png") != NULL, "size mismatch -> error: %s", err);
    b2.n = 0;
    tar_file(&b2, "readme.txt", NULL, "x", 1, TAR_USTAR);
    tar_end(&b2);
    write_bytes(tp, b2.d, b2.n);
    rc = aio_dataset_read(tp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "no images") != NULL, "no images -> error: %s", err);
    free(b2.d);
    unlink(tp);

    /* directory tree */
    mkdir_p("dir/a");
    mkdir_p("dir/b/sub");
    mkdir_p("dir/.hidden");
    write_bytes(tmp_path("dir/a/x.png"), p0, n0);
    write_bytes(tmp_path("dir/b/y.jpeg"), p1, n1);
    write_bytes(tmp_path("dir/b/sub/z.png"), p2, n2);
    write_bytes(tmp_path("dir/top.png"), p3, n3);
    write_bytes(tmp_path("dir/.hidden/q.png"), "junk", 4);
    write_bytes(tmp_path("dir/a/.dot.png"), "junk", 4);
    write_bytes(tmp_path("dir/a/readme.txt"), "hi", 2);
    char dx[400], dy[400], dz[400], dirp[300];
    snprintf(dirp, sizeof dirp, "%s/dir", g_tmp);
    snprintf(dx, sizeof dx, "%s/a/x.png", dirp);
    snprintf(dy, sizeof dy, "%s/b/y.jpeg", dirp);
    snprintf(dz, sizeof dz, "%s/b/sub/z.png", dirp);
    rc = aio_dataset_read(dirp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc == 0, "directory dataset: %s", err);
    if (rc == 0) {
        expect_t exd[] = {{dx, 0, 10}, {dy, 1, 20}, {dz, 2, 30}};
        CHECK(ds.num_classes == 3 && !strcmp(ds.class_names[2], "sub"), "directory classes");
        check_ds(&ds, exd, 3, "directory");
        aio_dataset_free(&ds);
    }
    write_bytes(tmp_path("dir/b/sub/w.png"), pbig, nbig);
    rc = aio_dataset_read(dirp, 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "w.png") != NULL, "directory size mismatch: %s", err);
    mkdir_p("emptydir/c");
    rc = aio_dataset_read(tmp_path("emptydir"), 0, 0, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "no images") != NULL, "empty directory: %s", err);

    free(b.d);
    free(p0);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
    free(p5);
    free(pbig);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void test_cifar(const char *tgz) {
    char err[512] = "";
    aio_dataset ds;
    double t0 = now();
    int rc = aio_dataset_read(tgz, 100, 1, NULL, 0, &ds, err, sizeof err);
    double t1 = now();
    CHECK(rc == 0, "CIFAR limit 100 stride: %s", err);
    if (rc == 0) {
        printf("  CIFAR test.tar.gz, limit 100 stride_select: %.3f s\n", t1 - t0);
        CHECK(ds.count == 100, "100 images (got %zu)", ds.count);
        CHECK(ds.channels == 3 && ds.height == 32 && ds.width == 32, "32x32 RGB (got %zux%zux%zu)",
              ds.channels, ds.height, ds.width);
        int ok = ds.num_classes == 10;
        for (size_t i = 0; ok && i < 10; i++) ok = strcmp(ds.class_names[i], CIFAR[i]) == 0;
        CHECK(ok, "10 CIFAR classes in order");
        int per[10] = {0}, inrange = 1, sorted = 1;
        for (size_t i = 0; i < ds.count; i++) {
            if (ds.labels[i] < 0 || ds.labels[i] > 9)
                inrange = 0;
            else
                per[ds.labels[i]]++;
            if (i && strcmp(ds.paths[i - 1], ds.paths[i]) >= 0) sorted = 0;
        }
        CHECK(inrange, "labels in 0..9");
        CHECK(sorted, "paths sorted");
        int even = 1;
        for (int c = 0; c < 10; c++) even &= per[c] == 10;
        CHECK(even, "10 images per class");
        CHECK(!strcmp(ds.paths[0], "test/airplane/0000.jpg") &&
                  !strcmp(ds.paths[30], "test/cat/0000.jpg") &&
                  !strcmp(ds.paths[99], "test/truck/0900.jpg"),
              "stride picks every 100th entry (%s, %s, %s)", ds.paths[0], ds.paths[30],
              ds.paths[99]);
        /* Pillow sums: airplane/0000 475641, cat/0000 332902, truck/0900 304205 */
        const size_t pe = 3 * 32 * 32;
        CHECK(sum_u8(ds.pixels, pe) == 475641 && sum_u8(ds.pixels + 30 * pe, pe) == 332902 &&
                  sum_u8(ds.pixels + 99 * pe, pe) == 304205,
              "pixel sums match Pillow (%lld %lld %lld)", sum_u8(ds.pixels, pe),
              sum_u8(ds.pixels + 30 * pe, pe), sum_u8(ds.pixels + 99 * pe, pe));
        /* airplane/0000 (0,0) = 141,159,179; (31,31) = 49,72,64 */
        CHECK(u8(ds.pixels[0]) == 141 && u8(ds.pixels[1024]) == 159 && u8(ds.pixels[2048]) == 179 &&
                  u8(ds.pixels[1023]) == 49 && u8(ds.pixels[2047]) == 72 && u8(ds.pixels[3071]) == 64,
              "airplane/0000 pixels match Pillow");
        CHECK(exact_u8_floats(ds.pixels, ds.count * pe), "dataset floats are exactly k/255");
        aio_dataset_free(&ds);
    }
    rc = aio_dataset_read(tgz, 100, 0, CIFAR, 10, &ds, err, sizeof err);
    int allzero = rc == 0;
    for (size_t i = 0; allzero && i < ds.count; i++) allzero = ds.labels[i] == 0;
    CHECK(rc == 0 && ds.count == 100 && allzero && !strcmp(ds.paths[99], "test/airplane/0099.jpg"),
          "limit 100 without stride: first 100 (all airplanes): %s", err);
    if (rc == 0) aio_dataset_free(&ds);
    const char *rev[10];
    for (int i = 0; i < 10; i++) rev[i] = CIFAR[9 - i];
    rc = aio_dataset_read(tgz, 10, 1, rev, 10, &ds, err, sizeof err);
    int revok = rc == 0 && ds.count == 10;
    for (size_t i = 0; revok && i < 10; i++) revok = ds.labels[i] == (int64_t)(9 - i);
    CHECK(revok, "class_names in reverse order -> reversed labels: %s", err);
    if (rc == 0) aio_dataset_free(&ds);

    if (getenv("AIO_TEST_QUICK") == NULL) {
        t0 = now();
        rc = aio_dataset_read(tgz, 0, 0, CIFAR, 10, &ds, err, sizeof err);
        t1 = now();
        CHECK(rc == 0 && ds.count == 10000, "CIFAR full read: %s", err);
        if (rc == 0) {
            printf("  CIFAR test.tar.gz, all 10000 images: %.3f s\n", t1 - t0);
            int per[10] = {0};
            for (size_t i = 0; i < ds.count; i++) per[ds.labels[i]]++;
            int even = 1;
            for (int c = 0; c < 10; c++) even &= per[c] == 1000;
            CHECK(even, "1000 images per class");
            CHECK(t1 - t0 < 5.0, "full read took %.2f s", t1 - t0);
            aio_dataset_free(&ds);
        }
    } else {
        printf("  (AIO_TEST_QUICK: full 10000-image read skipped)\n");
    }

    /* a truncated copy of the real archive */
    size_t n;
    uint8_t *all = read_bytes(tgz, &n);
    const char *tp = tmp_path("cifar_trunc.tar.gz");
    write_bytes(tp, all, n / 3);
    rc = aio_dataset_read(tp, 100, 1, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "truncated") != NULL, "truncated CIFAR tar.gz -> error: %s", err);
    all[n / 2] ^= 0xff; /* corrupt the deflate stream */
    write_bytes(tp, all, n);
    rc = aio_dataset_read(tp, 100, 1, NULL, 0, &ds, err, sizeof err);
    CHECK(rc != 0 && err[0], "corrupted CIFAR tar.gz -> error: %s", err);
    if (rc == 0) aio_dataset_free(&ds);
    free(all);
    unlink(tp);
}

int main(int argc, char **argv) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_tmp, sizeof g_tmp, "%s/aio_test_XXXXXX", base);
    if (mkdtemp(g_tmp) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    const char *tgz = getenv("AIO_CIFAR_TGZ");
    if (tgz == NULL && argc > 1) tgz = argv[1];
    if (tgz == NULL) tgz = "/work/shared/data/cifar10/test.tar.gz";

    printf("jpeg decode\n");
    test_jpeg_decode();
    printf("png decode\n");
    test_png_decode();
    printf("png round trip\n");
    test_png_roundtrip();
    test_png_encode_memory();
    printf("resize\n");
    test_resize();
    printf("hostile images\n");
    test_hostile_images();
    printf("synthetic archives and directories\n");
    test_synthetic_tar();
    if (access(tgz, R_OK) == 0) {
        printf("CIFAR-10 %s\n", tgz);
        test_cifar(tgz);
    } else {
        printf("SKIP: CIFAR-10 archive not found at %s (set AIO_CIFAR_TGZ)\n", tgz);
    }
    cleanup_tmp();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
