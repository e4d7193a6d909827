/*
 * imageio.h — small image I/O helpers for the adamant CLI and tests.
 * JPEG (libjpeg-turbo) and PNG (libpng) decoding to float CHW pixels in [0,1],
 * PNG encoding from float CHW, and reading CIFAR-style image archives.
 * Every function returns 0 on success, non-zero on failure and then fills
 * `err` (if non-NULL, err_len bytes incl. NUL) with a message.
 */
#ifndef ADAMANT_IMAGEIO_H
#define ADAMANT_IMAGEIO_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/** Largest accepted width or height (decoding, writing, resizing): larger is an error. */
#define AIO_MAX_DIM 16384

/** A decoded image: float32 CHW, 3 channels (grayscale expanded, alpha dropped), values in [0,1]. */
typedef struct aio_image {
    float *data;     /**< channels*height*width floats, malloc'ed; free with aio_image_free */
    size_t channels; /**< always 3 */
    size_t height;
    size_t width;
    int grayscale;   /**< 1 when the file held one gray channel (replicated to R, G and B), else 0 */
} aio_image;

/**
 * Decodes a JPEG or PNG file (format sniffed from the magic bytes).
 * JPEG: libjpeg defaults (ISLOW IDCT, fancy upsampling), i.e. the same pixels as Pillow;
 * grayscale is expanded to RGB, CMYK/YCCK are rejected, truncated or corrupt data is an
 * error (not gray padding). PNG: palette, gray (1..16 bit), 16-bit (high byte kept) and
 * alpha (dropped, not composited) all become 8-bit RGB; interlaced images are supported.
 * Values are k/255.0f. Sizes above AIO_MAX_DIM per side are rejected.
 */
int aio_decode_file(const char *path, aio_image *out, char *err, size_t err_len);
/** Decodes a JPEG or PNG held in memory. */
int aio_decode_memory(const uint8_t *bytes, size_t len, aio_image *out, char *err, size_t err_len);
/** Frees the pixels of an image (the struct itself is the caller's). */
void aio_image_free(aio_image *img);

/**
 * Resizes (bilinear, align_corners=false) CHW float pixels to out_h x out_w; *out is malloc'ed.
 * Same as PyTorch F.interpolate(mode='bilinear', align_corners=False, antialias=False).
 */
int aio_resize(const float *src, size_t channels, size_t h, size_t w, size_t out_h, size_t out_w,
               float **out, char *err, size_t err_len);

/**
 * Writes float CHW pixels in [0,1] (clamped, rounded) as an 8-bit RGB PNG (channels 1 or 3).
 * One channel is written as an 8-bit grayscale PNG. NaN is written as 0. A partially
 * written file is removed on failure.
 */
int aio_write_png(const char *path, const float *chw, size_t channels, size_t height, size_t width,
                  char *err, size_t err_len);

/**
 * Encodes float CHW pixels exactly as aio_write_png does (same bytes), into memory: *out is
 * malloc'ed (free it with free()) and holds *out_len bytes.
 */
int aio_encode_png(const float *chw, size_t channels, size_t height, size_t width, uint8_t **out,
                   size_t *out_len, char *err, size_t err_len);

/**
 * A labelled image set read from a tar, tar.gz, or a directory laid out as
 * [prefix/]<class>/<file>.{jpg,jpeg,png} (CIFAR-10 layout of ../shared/data).
 * Entries are sorted by path. The label of an entry is the index of its class
 * folder in `class_names` when given (e.g. the ten CIFAR-10 names), otherwise
 * the index among the sorted distinct class folder names.
 *
 * Details: the class of an entry is the name of the folder that directly contains the
 * file; files without a folder and paths with a component starting with '.' are ignored.
 * Archives are sniffed (gzip or plain tar, whatever the extension), read as a stream in
 * two passes (headers, then only the selected entries), and must be well-formed: a
 * truncated/corrupt archive, an undecodable selected image, a class folder missing from
 * `class_names`, or images of different sizes (message names the file) are errors.
 * Supported tar flavours: v7, ustar (prefix field), GNU (long names, base-256 sizes),
 * pax (path/size records); a path stored twice keeps its last copy; links and other
 * special entries are ignored. Duplicate `class_names` are an error. `paths` holds the archive entry paths (leading "./" removed),
 * or for a directory the file paths (`path` + "/" + relative path).
 */
typedef struct aio_dataset {
    size_t count;          /**< images read */
    size_t channels, height, width; /**< all images must share one size (else error) */
    float *pixels;         /**< count*C*H*W floats, malloc'ed */
    int64_t *labels;       /**< count labels */
    char **paths;          /**< count entry paths (malloc'ed strings) */
    size_t num_classes;    /**< num_class_names if class_names was given, else the folders found */
    char **class_names;    /**< num_classes names (malloc'ed strings) */
} aio_dataset;

/**
 * Reads up to `limit` images (0 = all) of a tar / tar.gz archive or a
 * directory. If `stride_select` is non-zero the images kept are spread
 * evenly over the sorted entries (every k-th, k = total/limit) instead of
 * the first `limit`, so a small limit still covers every class.
 * class_names may be NULL (then classes are the sorted folder names).
 */
int aio_dataset_read(const char *path, size_t limit, int stride_select,
                     const char *const *class_names, size_t num_class_names,
                     aio_dataset *out, char *err, size_t err_len);
/** Frees everything a dataset owns (and zeroes it; safe on a zeroed or failed dataset). */
void aio_dataset_free(aio_dataset *ds);

#ifdef __cplusplus
}
#endif
#endif
