/*
 * dataset.c — labelled image sets from a tar, a tar.gz/.tgz, or a directory tree
 * laid out as [prefix/]<class>/<file>.{jpg,jpeg,png}.
 *
 * Archives are read in two streaming passes through zlib's gz* API (which also reads
 * uncompressed tars transparently): pass 1 walks the headers and records (path, offset,
 * size) of every image entry; after sorting and selection, pass 2 rewinds and decodes
 * only the selected entries, in archive order, one file buffer at a time. The
 * decompressed archive is never held in memory.
 *
 * Tar support: v7, ustar (name + prefix fields), GNU (base-256 sizes, 'L' long names,
 * 'K' long link names), POSIX pax ('x' per-file path/size records; 'g' global headers
 * are skipped). Only regular-file entries ('0', NUL, '7') are images; hard/symbolic
 * links and other special entries are ignored. A duplicated path keeps its last copy
 * (tar semantics). The archive must end with the end-of-archive zero block(s) (POSIX), so
 * that a block-aligned truncation is an error. Paths with a component starting with '.'
 * (hidden files and folders, e.g. macOS "._x.jpg" resource forks) are ignored, as are
 * files with no class folder. In directories, symlinked files are followed, symlinked
 * folders are not.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <zlib.h>

#include "imageio_internal.h"

#define TAR_BLOCK 512
#define TAR_MAX_META_BYTES ((uint64_t)1 << 20) /* GNU long name / pax header payload cap */
#define DIR_MAX_DEPTH 64

/* ------------------------------------------------------------------ entries */

typedef struct {
    char *path;      /* archive entry path (normalized) or path relative to the root dir */
    char *fs_path;   /* directories only: the file's path on disk; NULL for archives */
    char *cls;       /* class folder name */
    uint64_t offset; /* archives: data offset in the (decompressed) tar stream */
    uint64_t size;   /* archives: data size */
    size_t seq;      /* discovery order (tie-break for duplicate paths) */
    size_t slot;     /* index in the output once selected */
    int64_t label;   /* class index */
} entry;

typedef struct {
    entry *v;
    size_t n, cap;
} entry_vec;

static void entries_free(entry_vec *ev) {
    for (size_t i = 0; i < ev->n; i++) {
        free(ev->v[i].path);
        free(ev->v[i].fs_path);
        free(ev->v[i].cls);
    }
    free(ev->v);
    ev->v = NULL;
    ev->n = ev->cap = 0;
}

static void entry_clear(entry *e) {
    free(e->path);
    free(e->fs_path);
    free(e->cls);
    memset(e, 0, sizeof *e);
}

/* Takes ownership of path/fs_path/cls (frees them on failure). */
static int entries_push(entry_vec *ev, char *path, char *fs_path, char *cls, uint64_t offset,
                        uint64_t size) {
    if (ev->n == ev->cap) {
        size_t ncap = ev->cap ? ev->cap * 2 : 256;
        if (ncap < ev->cap || ncap > SIZE_MAX / sizeof(entry)) goto oom;
        entry *nv = realloc(ev->v, ncap * sizeof(entry));
        if (nv == NULL) goto oom;
        ev->v = nv;
        ev->cap = ncap;
    }
    entry *e = &ev->v[ev->n];
    e->path = path;
    e->fs_path = fs_path;
    e->cls = cls;
    e->offset = offset;
    e->size = size;
    e->seq = ev->n;
    e->slot = 0;
    e->label = 0;
    ev->n++;
    return 0;
oom:
    free(path);
    free(fs_path);
    free(cls);
    return -1;
}

static int has_image_ext(const char *base) {
    const char *dot = strrchr(base, '.');
    if (dot == NULL || dot == base) return 0;
    return strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
           strcasecmp(dot, ".png") == 0;
}

/* If rel ("[prefix/]<class>/<file>.ext") names an image entry, returns 1 and a malloc'ed
 * class name in *cls (NULL on allocation failure: returns -1); otherwise 0. Paths with a
 * component that starts with '.' (hidden files/folders, "..") are not image entries. */
static int classify(const char *rel, char **cls) {
    *cls = NULL;
    const char *slash = strrchr(rel, '/');
    if (slash == NULL) return 0; /* no class folder */
    const char *base = slash + 1;
    if (base[0] == '\0' || !has_image_ext(base)) return 0;
    for (const char *c = rel; *c; c++)
        if (*c == '.' && (c == rel || c[-1] == '/')) return 0;
    const char *cstart = slash;
    while (cstart > rel && cstart[-1] != '/') cstart--;
    size_t clen = (size_t)(slash - cstart);
    if (clen == 0) return 0;
    char *c = malloc(clen + 1);
    if (c == NULL) return -1;
    memcpy(c, cstart, clen);
    c[clen] = '\0';
    *cls = c;
    return 1;
}

/* Strips leading "./" and "/" components. */
static const char *normalize_path(const char *p) {
    for (;;) {
        if (p[0] == '.' && p[1] == '/')
            p += 2;
        else if (p[0] == '/')
            p++;
        else
            return p;
    }
}

/* ------------------------------------------------------------------ tar stream */

typedef struct {
    gzFile gz;
    const char *path;
    int direct;         /* 1: not gzip-compressed (plain tar read through zlib's copy mode) */
    uint64_t file_size; /* size on disk (bounds the plain-tar seeks) */
    uint64_t pos;       /* offset in the uncompressed tar stream */
    uint8_t *scratch;   /* 64 KiB buffer for skipping compressed data */
} tar_stream;

#define SCRATCH_BYTES ((size_t)1 << 16)

static int ts_gzfail(tar_stream *ts, char *err, size_t err_len, const char *what) {
    int zerr = Z_OK;
    const char *m = gzerror(ts->gz, &zerr);
    if (zerr == Z_ERRNO)
        return aio__fail(err, err_len, "%s: %s: %s", ts->path, what, strerror(errno));
    if (zerr == Z_BUF_ERROR)
        return aio__fail(err, err_len, "%s: %s: archive truncated (unexpected end of gzip data)",
                         ts->path, what);
    if (zerr != Z_OK)
        return aio__fail(err, err_len, "%s: %s: %s", ts->path, what, m ? m : "gzip error");
    return aio__fail(err, err_len, "%s: %s: archive truncated", ts->path, what);
}

/* Reads up to n bytes; *got < n only at end of stream. A zlib error (including a truncated
 * gzip stream) is an error even if some bytes were read. */
static int ts_read(tar_stream *ts, void *buf, size_t n, size_t *got, char *err, size_t err_len) {
    size_t total = 0;
    while (total < n) {
        size_t chunk = n - total;
        if (chunk > ((size_t)1 << 30)) chunk = (size_t)1 << 30;
        int r = gzread(ts->gz, (char *)buf + total, (unsigned)chunk);
        if (r < 0) return ts_gzfail(ts, err, err_len, "read error");
        if (r == 0) break;
        total += (size_t)r;
    }
    ts->pos += total;
    *got = total;
    if (total < n) {
        int zerr = Z_OK;
        (void)gzerror(ts->gz, &zerr);
        if (zerr != Z_OK) return ts_gzfail(ts, err, err_len, "read error");
    }
    return 0;
}

static int ts_read_exact(tar_stream *ts, void *buf, size_t n, char *err, size_t err_len,
                         const char *what) {
    size_t got;
    if (ts_read(ts, buf, n, &got, err, err_len) != 0) return -1;
    if (got != n)
        return aio__fail(err, err_len, "%s: archive truncated (while reading %s)", ts->path, what);
    return 0;
}

static int ts_skip(tar_stream *ts, uint64_t n, char *err, size_t err_len) {
    if (n == 0) return 0;
    if (ts->direct) {
        if (n > ts->file_size || ts->pos > ts->file_size - n)
            return aio__fail(err, err_len, "%s: archive truncated (entry data past end of file)",
                             ts->path);
        if (n > (uint64_t)LONG_MAX || gzseek(ts->gz, (z_off_t)n, SEEK_CUR) < 0)
            return ts_gzfail(ts, err, err_len, "seek error");
        ts->pos += n;
        return 0;
    }
    while (n > 0) {
        size_t chunk = n > SCRATCH_BYTES ? SCRATCH_BYTES : (size_t)n;
        if (ts_read_exact(ts, ts->scratch, chunk, err, err_len, "entry data") != 0) return -1;
        n -= chunk;
    }
    return 0;
}

static uint64_t pad512(uint64_t n) { return (TAR_BLOCK - (n % TAR_BLOCK)) % TAR_BLOCK; }

/* Numeric header field: octal text (NUL/space terminated, like Python's tarfile) or GNU
 * base-256 (high bit of the first byte set). */
static int tar_num(const uint8_t *f, size_t n, uint64_t *out) {
    uint64_t v = 0;
    if (f[0] & 0x80) {
        if (f[0] == 0xff) return -1; /* negative */
        v = f[0] & 0x7f;
        for (size_t i = 1; i < n; i++) {
            if (v > (UINT64_MAX >> 8)) return -1;
            v = (v << 8) | f[i];
        }
        *out = v;
        return 0;
    }
    size_t end = 0;
    while (end < n && f[end] != 0) end++;
    size_t i = 0;
    while (i < end && f[i] == ' ') i++;
    while (end > i && f[end - 1] == ' ') end--;
    for (; i < end; i++) {
        if (f[i] < '0' || f[i] > '7') return -1;
        if (v > (UINT64_MAX >> 3)) return -1;
        v = (v << 3) | (uint64_t)(f[i] - '0');
    }
    *out = v;
    return 0;
}

static int tar_checksum_ok(const uint8_t *h) {
    uint64_t stored;
    if (tar_num(h + 148, 8, &stored) != 0) return 0;
    uint64_t usum = 0;
    int64_t ssum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        uint8_t b = (i >= 148 && i < 156) ? (uint8_t)' ' : h[i];
        usum += b;
        ssum += (int8_t)b;
    }
    return stored == usum || (ssum >= 0 && stored == (uint64_t)ssum);
}

static char *field_str(const uint8_t *f, size_t n) {
    size_t len = 0;
    while (len < n && f[len] != 0) len++;
    char *s = malloc(len + 1);
    if (s == NULL) return NULL;
    memcpy(s, f, len);
    s[len] = '\0';
    return s;
}

/* Reads a meta entry payload (GNU long name / pax records) of `size` bytes plus padding. */
static int tar_read_meta(tar_stream *ts, uint64_t size, char **out, char *err, size_t err_len) {
    *out = NULL;
    if (size > TAR_MAX_META_BYTES)
        return aio__fail(err, err_len, "%s: oversized extended header (%llu bytes) at offset %llu",
                         ts->path, (unsigned long long)size, (unsigned long long)ts->pos);
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) return aio__fail(err, err_len, "%s: out of memory", ts->path);
    if (ts_read_exact(ts, buf, (size_t)size, err, err_len, "an extended header") != 0 ||
        ts_skip(ts, pad512(size), err, err_len) != 0) {
        free(buf);
        return -1;
    }
    buf[size] = '\0';
    *out = buf;
    return 0;
}

/* Parses pax records "<len> <key>=<value>\n"; picks up "path" and "size". */
static int pax_parse(const char *d, size_t n, char **path, uint64_t *size, int *has_size) {
    size_t pos = 0;
    while (pos < n) {
        if (d[pos] == '\0') break; /* NUL padding */
        size_t i = pos, len = 0;
        while (i < n && d[i] >= '0' && d[i] <= '9') {
            if (len > (SIZE_MAX - 9) / 10) return -1;
            len = len * 10 + (size_t)(d[i] - '0');
            i++;
        }
        if (i == pos || i >= n || d[i] != ' ' || len == 0 || len > n - pos) return -1;
        size_t rec_end = pos + len; /* exclusive; d[rec_end-1] must be '\n' */
        if (d[rec_end - 1] != '\n') return -1;
        const char *key = d + i + 1;
        const char *eq = memchr(key, '=', (size_t)(d + rec_end - 1 - key));
        if (eq == NULL) return -1;
        size_t klen = (size_t)(eq - key);
        const char *val = eq + 1;
        size_t vlen = (size_t)(d + rec_end - 1 - val);
        if (klen == 4 && memcmp(key, "path", 4) == 0) {
            char *p = malloc(vlen + 1);
            if (p == NULL) return -2;
            memcpy(p, val, vlen);
            p[vlen] = '\0';
            free(*path);
            *path = p;
        } else if (klen == 4 && memcmp(key, "size", 4) == 0) {
            uint64_t v = 0;
            if (vlen == 0) return -1;
            for (size_t k = 0; k < vlen; k++) {
                if (val[k] < '0' || val[k] > '9' || v > (UINT64_MAX - 9) / 10) return -1;
                v = v * 10 + (uint64_t)(val[k] - '0');
            }
            *size = v;
            *has_size = 1;
        }
        pos = rec_end;
    }
    return 0;
}

/* Pass 1: collect image entries of the archive. */
static int tar_scan(tar_stream *ts, entry_vec *ev, char *err, size_t err_len) {
    char *long_name = NULL, *pax_path = NULL, *meta = NULL;
    uint64_t pax_size = 0;
    int has_pax_size = 0, rc = -1;
    uint8_t h[TAR_BLOCK];
    for (;;) {
        uint64_t hdr_off = ts->pos;
        size_t got;
        if (ts_read(ts, h, TAR_BLOCK, &got, err, err_len) != 0) goto done;
        if (got == 0) {
            if (hdr_off == 0) {
                aio__fail(err, err_len, "%s: empty file (not a tar archive)", ts->path);
                goto done;
            }
            /* EOF at a header boundary without the end-of-archive zero block: POSIX requires
             * the marker, and without it a block-aligned truncation would go unnoticed. */
            aio__fail(err, err_len,
                      "%s: archive truncated (no end-of-archive marker after %llu bytes)",
                      ts->path, (unsigned long long)hdr_off);
            goto done;
        }
        if (got < TAR_BLOCK) {
            aio__fail(err, err_len, "%s: archive truncated (partial header at offset %llu)",
                      ts->path, (unsigned long long)hdr_off);
            goto done;
        }
        int all_zero = 1;
        for (size_t i = 0; i < TAR_BLOCK && all_zero; i++) all_zero = h[i] == 0;
        if (all_zero) break; /* end-of-archive marker */
        if (!tar_checksum_ok(h)) {
            if (hdr_off == 0)
                aio__fail(err, err_len, "%s: not a tar or tar.gz archive (bad header checksum)",
                          ts->path);
            else
                aio__fail(err, err_len, "%s: corrupt tar header at offset %llu (bad checksum)",
                          ts->path, (unsigned long long)hdr_off);
            goto done;
        }
        uint64_t size;
        if (tar_num(h + 124, 12, &size) != 0) {
            aio__fail(err, err_len, "%s: corrupt tar header at offset %llu (bad size field)",
                      ts->path, (unsigned long long)hdr_off);
            goto done;
        }
        const char type = (char)h[156];
        if (type == 'L' || type == 'x' || type == 'g' || type == 'K') {
            if (type == 'K' || type == 'g') {
                if (ts_skip(ts, size, err, err_len) || ts_skip(ts, pad512(size), err, err_len))
                    goto done;
                continue;
            }
            if (tar_read_meta(ts, size, &meta, err, err_len) != 0) goto done;
            if (type == 'L') {
                free(long_name);
                long_name = meta; /* NUL-terminated at the first NUL by construction */
                meta = NULL;
            } else {
                int pr = pax_parse(meta, (size_t)size, &pax_path, &pax_size, &has_pax_size);
                free(meta);
                meta = NULL;
                if (pr == -2) {
                    aio__fail(err, err_len, "%s: out of memory", ts->path);
                    goto done;
                }
                if (pr != 0) {
                    aio__fail(err, err_len, "%s: malformed pax header at offset %llu", ts->path,
                              (unsigned long long)hdr_off);
                    goto done;
                }
            }
            continue;
        }
        if (has_pax_size) size = pax_size;
        /* Build this entry's name: pax path > GNU long name > ustar prefix + name. */
        char *name = NULL;
        if (pax_path != NULL) {
            name = pax_path;
            pax_path = NULL;
        } else if (long_name != NULL) {
            name = long_name;
            long_name = NULL;
        } else {
            char *nm = field_str(h, 100);
            char *pf = memcmp(h + 257, "ustar\0", 6) == 0 ? field_str(h + 345, 155) : NULL;
            if (nm == NULL || (memcmp(h + 257, "ustar\0", 6) == 0 && pf == NULL)) {
                free(nm);
                free(pf);
                aio__fail(err, err_len, "%s: out of memory", ts->path);
                goto done;
            }
            if (pf != NULL && pf[0] != '\0') {
                size_t a = strlen(pf), b = strlen(nm);
                name = malloc(a + b + 2);
                if (name != NULL) {
                    memcpy(name, pf, a);
                    name[a] = '/';
                    memcpy(name + a + 1, nm, b + 1);
                }
                free(nm);
            } else {
                name = nm;
            }
            free(pf);
            if (name == NULL) {
                aio__fail(err, err_len, "%s: out of memory", ts->path);
                goto done;
            }
        }
        free(long_name);
        long_name = NULL;
        free(pax_path);
        pax_path = NULL;
        has_pax_size = 0;
        pax_size = 0;

        const int regular = type == '0' || type == '\0' || type == '7';
        const int no_data = type >= '1' && type <= '6'; /* links, devices, dirs, fifos */
        if (regular) {
            const char *rel = normalize_path(name);
            char *cls = NULL;
            int c = classify(rel, &cls);
            if (c < 0) {
                free(name);
                aio__fail(err, err_len, "%s: out of memory", ts->path);
                goto done;
            }
            if (c > 0) {
                char *p = aio__strdup(rel);
                if (p == NULL || entries_push(ev, p, NULL, cls, ts->pos, size) != 0) {
                    if (p == NULL) free(cls);
                    free(name);
                    aio__fail(err, err_len, "%s: out of memory", ts->path);
                    goto done;
                }
            }
        }
        free(name);
        if (!no_data) {
            if (ts_skip(ts, size, err, err_len) || ts_skip(ts, pad512(size), err, err_len))
                goto done;
        }
    }
    rc = 0;
done:
    free(long_name);
    free(pax_path);
    free(meta);
    return rc;
}

/* ------------------------------------------------------------------ directory walk */

static char *join_path(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int need_slash = la > 0 && a[la - 1] != '/';
    size_t total;
    if (aio__add(la, lb, &total) || aio__add(total, 2, &total)) return NULL;
    char *s = malloc(total);
    if (s == NULL) return NULL;
    memcpy(s, a, la);
    if (need_slash) s[la++] = '/';
    memcpy(s + la, b, lb + 1);
    return s;
}

static int dir_walk(const char *root, const char *rel, int depth, entry_vec *ev, char *err,
                    size_t err_len) {
    char *dpath = rel[0] ? join_path(root, rel) : aio__strdup(root);
    if (dpath == NULL) return aio__fail(err, err_len, "out of memory");
    DIR *d = opendir(dpath);
    if (d == NULL) {
        int e = errno;
        aio__fail(err, err_len, "%s: cannot open directory: %s", dpath, strerror(e));
        free(dpath);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0) rc = aio__fail(err, err_len, "%s: readdir: %s", dpath, strerror(errno));
            break;
        }
        if (de->d_name[0] == '.') continue; /* ".", "..", hidden files and folders */
        char *crel = rel[0] ? join_path(rel, de->d_name) : aio__strdup(de->d_name);
        char *full = crel ? join_path(root, crel) : NULL;
        if (crel == NULL || full == NULL) {
            free(crel);
            free(full);
            rc = aio__fail(err, err_len, "out of memory");
            break;
        }
        struct stat st;
        int is_link = 0;
        int ok = lstat(full, &st) == 0; /* vanished meanwhile: ignore */
        if (ok && S_ISLNK(st.st_mode)) {
            is_link = 1;
            ok = stat(full, &st) == 0; /* dangling link: ignore */
        }
        if (!ok) {
            free(crel);
            free(full);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            /* Symlinked folders are not followed (no cycles); depth is capped. */
            if (!is_link) {
                if (depth + 1 > DIR_MAX_DEPTH) {
                    rc = aio__fail(err, err_len, "%s: directory tree deeper than %d levels", full,
                                   DIR_MAX_DEPTH);
                } else {
                    rc = dir_walk(root, crel, depth + 1, ev, err, err_len);
                }
            }
            free(crel);
            free(full);
            if (rc != 0) break;
            continue;
        }
        if (S_ISREG(st.st_mode)) {
            char *cls = NULL;
            int c = classify(crel, &cls);
            if (c < 0) {
                rc = aio__fail(err, err_len, "out of memory");
            } else if (c > 0) {
                if (entries_push(ev, crel, full, cls, 0, (uint64_t)st.st_size) != 0)
                    rc = aio__fail(err, err_len, "out of memory");
                crel = full = NULL; /* owned by the vector (or freed by entries_push) */
            }
        }
        free(crel);
        free(full);
        if (rc != 0) break;
    }
    closedir(d);
    free(dpath);
    return rc;
}

/* ------------------------------------------------------------------ sorting, labels */

static int cmp_entry_path(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    if (c != 0) return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_entry_offset(const void *a, const void *b) {
    const entry *const *x = a, *const *y = b;
    return (*x)->offset < (*y)->offset ? -1 : (*x)->offset > (*y)->offset;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
    const char *name;
    size_t index;
} name_idx;

static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(((const name_idx *)a)->name, ((const name_idx *)b)->name);
}

/* ------------------------------------------------------------------ public */

void aio_dataset_free(aio_dataset *ds) {
    if (ds == NULL) return;
    if (ds->paths != NULL)
        for (size_t i = 0; i < ds->count; i++) free(ds->paths[i]);
    if (ds->class_names != NULL)
        for (size_t i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
    free(ds->paths);
    free(ds->class_names);
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Decodes one selected entry's bytes into its slot of ds->pixels (allocated on first use). */
static int place_image(aio_dataset *ds, const entry *e, const char **ref_path,
                       const uint8_t *bytes, size_t len, char *err, size_t err_len) {
    aio_image img;
    char inner[512];
    if (aio_decode_memory(bytes, len, &img, inner, sizeof inner) != 0)
        return aio__fail(err, err_len, "%s: %s", e->fs_path ? e->fs_path : e->path, inner);
    if (ds->pixels == NULL) {
        size_t per, total, bytes_total;
        if (aio__mul(img.channels, img.height, &per) || aio__mul(per, img.width, &per) ||
            aio__mul(per, ds->count, &total) || aio__mul(total, sizeof(float), &bytes_total)) {
            aio_image_free(&img);
            return aio__fail(err, err_len, "dataset too large (size overflow)");
        }
        ds->pixels = malloc(bytes_total);
        if (ds->pixels == NULL) {
            aio_image_free(&img);
            return aio__fail(err, err_len, "out of memory for %zu images of %zux%zux%zu",
                             ds->count, img.channels, img.height, img.width);
        }
        ds->channels = img.channels;
        ds->height = img.height;
        ds->width = img.width;
        *ref_path = e->fs_path ? e->fs_path : e->path;
    } else if (img.channels != ds->channels || img.height != ds->height ||
               img.width != ds->width) {
        aio__fail(err, err_len,
                  "%s: image is %zux%zu (%zu channels) but %s is %zux%zu (%zu channels); all "
                  "images must have the same size",
                  e->fs_path ? e->fs_path : e->path, img.height, img.width, img.channels,
                  *ref_path, ds->height, ds->width, ds->channels);
        aio_image_free(&img);
        return -1;
    }
    const size_t per = ds->channels * ds->height * ds->width;
    memcpy(ds->pixels + e->slot * per, img.data, per * sizeof(float));
    aio_image_free(&img);
    return 0;
}

int aio_dataset_read(const char *path, size_t limit, int stride_select,
                     const char *const *class_names, size_t num_class_names, aio_dataset *out,
                     char *err, size_t err_len) {
    if (out == NULL) return aio__fail(err, err_len, "aio_dataset_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (path == NULL) return aio__fail(err, err_len, "aio_dataset_read: path is NULL");
    if (class_names != NULL && num_class_names == 0) class_names = NULL;
    if (class_names != NULL) {
        for (size_t i = 0; i < num_class_names; i++)
            if (class_names[i] == NULL)
                return aio__fail(err, err_len, "aio_dataset_read: class_names[%zu] is NULL", i);
    }

    entry_vec ev = {NULL, 0, 0};
    tar_stream ts;
    memset(&ts, 0, sizeof ts);
    ts.path = path;
    name_idx *classes = NULL;
    size_t nclasses = 0;
    entry **sel = NULL;
    uint8_t *buf = NULL;
    int rc = -1;

    struct stat st;
    if (stat(path, &st) != 0) {
        aio__fail(err, err_len, "%s: %s", path, strerror(errno));
        goto fail;
    }
    const int is_dir = S_ISDIR(st.st_mode);
    if (is_dir) {
        if (dir_walk(path, "", 0, &ev, err, err_len) != 0) goto fail;
    } else {
        if (!S_ISREG(st.st_mode)) {
            aio__fail(err, err_len, "%s: not a regular file or directory", path);
            goto fail;
        }
        ts.file_size = (uint64_t)st.st_size;
        ts.gz = gzopen(path, "rb");
        if (ts.gz == NULL) {
            aio__fail(err, err_len, "%s: cannot open: %s", path,
                      errno ? strerror(errno) : "out of memory");
            goto fail;
        }
        (void)gzbuffer(ts.gz, 1u << 17);
        ts.direct = gzdirect(ts.gz);
        ts.scratch = malloc(SCRATCH_BYTES);
        if (ts.scratch == NULL) {
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
        if (tar_scan(&ts, &ev, err, err_len) != 0) goto fail;
    }
    if (ev.n == 0) {
        aio__fail(err, err_len,
                  "%s: no images found (expected [prefix/]<class>/<file>.jpg|.jpeg|.png)", path);
        goto fail;
    }

    /* Sort by path; for duplicated archive paths keep the last copy. */
    qsort(ev.v, ev.n, sizeof(entry), cmp_entry_path);
    {
        size_t w = 0;
        for (size_t i = 0; i < ev.n; i++) {
            if (i + 1 < ev.n && strcmp(ev.v[i].path, ev.v[i + 1].path) == 0) {
                entry_clear(&ev.v[i]);
                continue;
            }
            ev.v[w++] = ev.v[i];
        }
        ev.n = w;
    }

    /* Class table: given names (in order) or sorted distinct folder names of all entries. */
    if (class_names != NULL) {
        nclasses = num_class_names;
        if (nclasses > SIZE_MAX / sizeof(name_idx) ||
            (classes = malloc(nclasses * sizeof(name_idx))) == NULL) {
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < nclasses; i++) classes[i] = (name_idx){class_names[i], i};
        qsort(classes, nclasses, sizeof(name_idx), cmp_name_idx);
        for (size_t i = 1; i < nclasses; i++)
            if (strcmp(classes[i - 1].name, classes[i].name) == 0) {
                aio__fail(err, err_len, "aio_dataset_read: duplicate class name '%s'",
                          classes[i].name);
                goto fail;
            }
    } else {
        const char **names = malloc(ev.n * sizeof(char *));
        if (names == NULL) {
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < ev.n; i++) names[i] = ev.v[i].cls;
        qsort(names, ev.n, sizeof(char *), cmp_str_ptr);
        size_t u = 0;
        for (size_t i = 0; i < ev.n; i++)
            if (u == 0 || strcmp(names[u - 1], names[i]) != 0) names[u++] = names[i];
        classes = malloc(u * sizeof(name_idx));
        if (classes == NULL) {
            free(names);
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < u; i++) classes[i] = (name_idx){names[i], i};
        nclasses = u;
        free(names);
    }

    /* Selection. */
    size_t count = ev.n, step = 1;
    if (limit > 0 && limit < ev.n) {
        count = limit;
        if (stride_select) step = ev.n / limit; /* >= 1 */
    }
    if ((sel = malloc(count * sizeof(entry *))) == NULL ||
        (out->labels = malloc(count * sizeof(int64_t))) == NULL ||
        (out->paths = calloc(count, sizeof(char *))) == NULL ||
        (out->class_names = calloc(nclasses, sizeof(char *))) == NULL) {
        aio__fail(err, err_len, "out of memory");
        goto fail;
    }
    out->count = count;
    for (size_t i = 0; i < nclasses; i++) {
        const char *nm = class_names ? class_names[i] : classes[i].name;
        if ((out->class_names[i] = aio__strdup(nm)) == NULL) {
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
        out->num_classes = i + 1;
    }
    /* Every entry (not only the selected ones) must belong to a known class, so that the
     * outcome does not depend on limit/stride_select. */
    for (size_t i = 0; i < ev.n; i++) {
        entry *e = &ev.v[i];
        name_idx key = {e->cls, 0};
        const name_idx *hit = bsearch(&key, classes, nclasses, sizeof(name_idx), cmp_name_idx);
        if (hit == NULL) {
            aio__fail(err, err_len, "%s: class folder '%s' is not one of the given class names",
                      e->fs_path ? e->fs_path : e->path, e->cls);
            goto fail;
        }
        e->label = (int64_t)hit->index;
    }
    for (size_t i = 0; i < count; i++) {
        entry *e = &ev.v[i * step];
        e->slot = i;
        sel[i] = e;
        out->labels[i] = e->label;
        if ((out->paths[i] = aio__strdup(e->fs_path ? e->fs_path : e->path)) == NULL) {
            aio__fail(err, err_len, "out of memory");
            goto fail;
        }
    }

    /* Pass 2: decode the selected entries. */
    const char *ref_path = NULL;
    if (is_dir) {
        for (size_t i = 0; i < count; i++) {
            uint8_t *bytes;
            size_t len;
            if (aio__read_file(sel[i]->fs_path, &bytes, &len, err, err_len) != 0) goto fail;
            int r = place_image(out, sel[i], &ref_path, bytes, len, err, err_len);
            free(bytes);
            if (r != 0) goto fail;
        }
    } else {
        qsort(sel, count, sizeof(entry *), cmp_entry_offset);
        if (gzrewind(ts.gz) != 0) {
            ts_gzfail(&ts, err, err_len, "rewind failed");
            goto fail;
        }
        ts.pos = 0;
        size_t cap = 0;
        for (size_t i = 0; i < count; i++) {
            entry *e = sel[i];
            if (e->size > AIO_MAX_FILE_BYTES) {
                aio__fail(err, err_len, "%s: entry %s too large (%llu bytes)", path, e->path,
                          (unsigned long long)e->size);
                goto fail;
            }
            if (e->offset < ts.pos) { /* cannot happen: entries are distinct and sorted */
                aio__fail(err, err_len, "%s: internal error (entry order)", path);
                goto fail;
            }
            if (ts_skip(&ts, e->offset - ts.pos, err, err_len) != 0) goto fail;
            size_t len = (size_t)e->size;
            if (len > cap) {
                size_t ncap = len < 65536 ? 65536 : len;
                uint8_t *nb = realloc(buf, ncap);
                if (nb == NULL) {
                    aio__fail(err, err_len, "out of memory");
                    goto fail;
                }
                buf = nb;
                cap = ncap;
            }
            if (ts_read_exact(&ts, buf, len, err, err_len, e->path) != 0) goto fail;
            if (place_image(out, e, &ref_path, buf, len, err, err_len) != 0) goto fail;
        }
    }
    rc = 0;
fail:
    if (rc != 0) aio_dataset_free(out);
    free(buf);
    free(sel);
    free(classes);
    entries_free(&ev);
    if (ts.gz != NULL) gzclose(ts.gz);
    free(ts.scratch);
    return rc;
}
