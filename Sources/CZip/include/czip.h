#ifndef ADAMANT_CZIP_H
#define ADAMANT_CZIP_H
/* Raw DEFLATE decompression (zlib) for reading .npz archives (zip members stored with method 8). */
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Inflates `src_len` bytes of a raw DEFLATE stream (no zlib or gzip header) into exactly `dst_len`
 * bytes at `dst`. Returns 0 on success; otherwise 1 with a message in err (the stream is corrupt,
 * ends early, or holds more or less than dst_len bytes).
 */
int czip_inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len, char *err, size_t err_len);

/** CRC-32 (as zip stores it) of `len` bytes. */
unsigned long czip_crc32(const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
