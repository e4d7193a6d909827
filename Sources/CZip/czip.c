#include "czip.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

int czip_inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len, char *err, size_t err_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
        snprintf(err, err_len, "zlib inflateInit2 failed");
        return 1;
    }
    const unsigned char *in = (const unsigned char *)src;
    unsigned char *out = (unsigned char *)dst;
    size_t in_left = src_len, out_left = dst_len;
    /* zlib counts in uInt: feed and drain in chunks of at most 1 GiB. */
    const size_t chunk = (size_t)1 << 30;
    int rc;
    for (;;) {
        if (s.avail_in == 0 && in_left > 0) {
            s.next_in = (Bytef *)in;
            s.avail_in = (uInt)(in_left < chunk ? in_left : chunk);
            in += s.avail_in;
            in_left -= s.avail_in;
        }
        if (s.avail_out == 0 && out_left > 0) {
            s.next_out = out;
            s.avail_out = (uInt)(out_left < chunk ? out_left : chunk);
            out += s.avail_out;
            out_left -= s.avail_out;
        }
        rc = inflate(&s, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) break;
        if (rc == Z_OK) continue;
        if (rc == Z_BUF_ERROR && s.avail_out == 0 && out_left == 0) {
            snprintf(err, err_len, "the compressed data holds more than the %zu bytes the zip directory declares", dst_len);
        } else if (rc == Z_BUF_ERROR) {
            snprintf(err, err_len, "truncated DEFLATE data");
        } else {
            snprintf(err, err_len, "corrupt DEFLATE data (zlib: %s)", s.msg ? s.msg : "error");
        }
        inflateEnd(&s);
        return 1;
    }
    size_t produced = dst_len - out_left - s.avail_out;
    inflateEnd(&s);
    if (produced != dst_len) {
        snprintf(err, err_len, "the compressed data holds %zu bytes, the zip directory declares %zu", produced, dst_len);
        return 1;
    }
    return 0;
}

unsigned long czip_crc32(const void *data, size_t len) {
    uLong c = crc32(0L, Z_NULL, 0);
    const unsigned char *p = (const unsigned char *)data;
    while (len > 0) {
        uInt n = (uInt)(len < ((size_t)1 << 30) ? len : ((size_t)1 << 30));
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return c;
}
