/*
 * imageio_internal.h — helpers shared by the CImageIO translation units.
 * Not part of the public API (it lives outside include/).
 */
#ifndef ADAMANT_IMAGEIO_INTERNAL_H
#define ADAMANT_IMAGEIO_INTERNAL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "imageio.h"

/** Largest file aio_decode_file / the directory reader will load (bytes). */
#define AIO_MAX_FILE_BYTES ((size_t)1 << 30)

/** printf-style message into err (if non-NULL and err_len > 0); always returns -1. */
int aio__fail(char *err, size_t err_len, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** *out = a * b; returns 0 on success, -1 on overflow. */
static inline int aio__mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/** *out = a + b; returns 0 on success, -1 on overflow. */
static inline int aio__add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

/** malloc'ed copy of s (NULL on allocation failure). */
char *aio__strdup(const char *s);

/** Reads a whole regular file (at most AIO_MAX_FILE_BYTES) into a malloc'ed buffer. */
int aio__read_file(const char *path, uint8_t **bytes, size_t *len, char *err, size_t err_len);

/** Converts interleaved 8-bit RGB (h*w*3 bytes) to a malloc'ed float CHW buffer in [0,1]. */
float *aio__hwc8_to_chw(const uint8_t *hwc, size_t h, size_t w);

#endif
