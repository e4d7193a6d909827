/*
 * example.c — the smallest complete program using adamant's C ABI.
 *
 * Loads a model, prints its BN domains and the compute backend, runs one
 * image through a domain and prints the top-5 classes with their logits.
 *
 *   cc example.c $(pkg-config --cflags --libs adamant) -o example
 *   ./example MODEL.onnx [DOMAIN] [IMAGE.f32] [--mean m0,m1,m2] [--std s0,s1,s2]
 *
 *   MODEL.onnx  a plain ONNX ResNet or adamant's single-file multi-domain format
 *   DOMAIN      BN domain name ("-" or absent: the model's default domain)
 *   IMAGE.f32   raw float32 C*H*W pixels (NCHW, pixel space, e.g. [0,1]);
 *               absent: a deterministic synthetic gradient image
 *   --mean/--std  per-channel normalization overriding the model's (e.g. for
 *               external CIFAR-10 models: --mean 0.4914,0.4822,0.4465
 *               --std 0.2471,0.2435,0.2616)
 *   --image PATH  same as the IMAGE.f32 positional argument
 *
 * Every call's status is checked; on failure the program prints
 * adm_last_error() and exits with status 1.
 */
#include <adamant.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANNELS 16

static const char *status_name(adm_status s) {
    switch (s) {
    case ADM_OK: return "ADM_OK";
    case ADM_ERR_INVALID_ARGUMENT: return "ADM_ERR_INVALID_ARGUMENT";
    case ADM_ERR_IO: return "ADM_ERR_IO";
    case ADM_ERR_PARSE: return "ADM_ERR_PARSE";
    case ADM_ERR_UNSUPPORTED: return "ADM_ERR_UNSUPPORTED";
    case ADM_ERR_SHAPE: return "ADM_ERR_SHAPE";
    case ADM_ERR_DOMAIN: return "ADM_ERR_DOMAIN";
    case ADM_ERR_INTERNAL: return "ADM_ERR_INTERNAL";
    case ADM_ERR_RESOURCE: return "ADM_ERR_RESOURCE";
    case ADM_ERR_CANCELLED: return "ADM_ERR_CANCELLED";
    default: return "unknown status";
    }
}

/* Evaluates an adamant call; on failure prints the error and jumps to cleanup. */
#define CHECK(call)                                                                        \
    do {                                                                                   \
        adm_status st_ = (call);                                                           \
        if (st_ != ADM_OK) {                                                               \
            fprintf(stderr, "error: %s failed: %s (%d): %s\n", #call, status_name(st_),    \
                    (int)st_, adm_last_error());                                           \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

/* Parses "a,b,c" into out (at most MAX_CHANNELS values); returns the count or 0 on error. */
static size_t parse_floats(const char *s, float *out) {
    size_t n = 0;
    while (*s && n < MAX_CHANNELS) {
        char *end;
        out[n++] = strtof(s, &end);
        if (end == s) return 0;
        if (*end == ',') end++;
        else if (*end != '\0') return 0;
        s = end;
    }
    return *s ? 0 : n;
}

/* Reads exactly n floats from a raw float32 file; returns 0 on success. */
static int read_image(const char *path, float *x, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    size_t got = fread(x, sizeof(float), n, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != n || extra != EOF) {
        fprintf(stderr, "error: %s must hold exactly %zu float32 values (%zu bytes)\n", path, n,
                n * sizeof(float));
        return -1;
    }
    return 0;
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s MODEL.onnx [DOMAIN|-] [IMAGE.f32] [--mean m0,m1,...] [--std s0,s1,...] "
                    "[--image IMAGE.f32]\n", argv0);
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *domain_name = NULL, *image_path = NULL;
    float mean[MAX_CHANNELS], std[MAX_CHANNELS];
    size_t mean_len = 0, std_len = 0;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mean") || !strcmp(argv[i], "--std") || !strcmp(argv[i], "--image")) {
            if (i + 1 >= argc) { usage(argv[0]); return 2; }
            const char *v = argv[++i];
            if (!strcmp(argv[i - 1], "--image")) {
                image_path = v;
            } else if (!strcmp(argv[i - 1], "--mean")) {
                if (!(mean_len = parse_floats(v, mean))) { fprintf(stderr, "bad --mean '%s'\n", v); return 2; }
            } else if (!(std_len = parse_floats(v, std))) {
                fprintf(stderr, "bad --std '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(argv[0]);
            return 0;
        } else if (positional == 0) {
            model_path = argv[i]; positional++;
        } else if (positional == 1) {
            domain_name = strcmp(argv[i], "-") ? argv[i] : NULL; positional++;
        } else if (positional == 2) {
            image_path = argv[i]; positional++;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (!model_path) { usage(argv[0]); return 2; }

    int rc = 1;
    adm_model *model = NULL;
    adm_context *ctx = NULL;
    float *x = NULL, *logits = NULL;
    size_t *order = NULL;

    printf("adamant %s (ABI %d, header ABI %d)\n", adm_version(), (int)adm_abi_version(), ADAMANT_ABI_VERSION);
    if (adm_abi_version() != ADAMANT_ABI_VERSION) {
        fprintf(stderr, "error: library ABI %d does not match the header's %d\n", (int)adm_abi_version(),
                ADAMANT_ABI_VERSION);
        return 1;
    }
    printf("backend: %s\n", adm_backend_info());

    adm_load_options opts;
    adm_load_options_default(&opts);
    if (mean_len) { opts.mean = mean; opts.mean_len = mean_len; }
    if (std_len) { opts.std = std; opts.std_len = std_len; }
    CHECK(adm_model_load(model_path, &opts, &model));

    size_t ndomains = 0, def = 0, domain = 0;
    CHECK(adm_model_domain_count(model, &ndomains));
    CHECK(adm_model_default_domain(model, &def));
    printf("domains (%zu):", ndomains);
    for (size_t i = 0; i < ndomains; i++) {
        const char *name = NULL;
        CHECK(adm_model_domain_name(model, i, &name));
        printf(" %s%s", name, i == def ? " (default)" : "");
    }
    printf("\n");
    domain = def;
    if (domain_name) CHECK(adm_model_domain_index(model, domain_name, &domain));

    size_t c = 0, h = 0, w = 0, classes = 0;
    float lo = 0, hi = 1;
    CHECK(adm_model_input_shape(model, &c, &h, &w));
    CHECK(adm_model_num_classes(model, &classes));
    CHECK(adm_model_pixel_range(model, &lo, &hi));
    printf("input: %zu x %zu x %zu, pixel range [%g, %g], %zu classes\n", c, h, w, (double)lo, (double)hi,
           classes);

    size_t n = c * h * w;
    x = malloc(n * sizeof *x);
    logits = malloc(classes * sizeof *logits);
    if (!x || !logits) { fprintf(stderr, "error: out of memory\n"); goto done; }
    if (image_path) {
        if (read_image(image_path, x, n)) goto done;
        printf("image: %s\n", image_path);
    } else {
        /* Deterministic synthetic image: a diagonal gradient, a different phase per channel. */
        for (size_t ch = 0; ch < c; ch++)
            for (size_t i = 0; i < h; i++)
                for (size_t j = 0; j < w; j++) {
                    float t = (float)(i + j + ch * (h + w) / 3) / (float)(h + w);
                    t -= (float)(int)t;
                    x[(ch * h + i) * w + j] = lo + (hi - lo) * t;
                }
        printf("image: synthetic gradient\n");
    }

    CHECK(adm_context_create(model, &ctx));
    CHECK(adm_predict(ctx, domain, x, n, 1, logits, classes));

    const char *used = NULL;
    CHECK(adm_model_domain_name(model, domain, &used));
    printf("top-5 through domain '%s':\n", used);
    size_t k = classes < 5 ? classes : 5;
    order = malloc(classes * sizeof *order);
    if (!order) { fprintf(stderr, "error: out of memory\n"); goto done; }
    for (size_t j = 0; j < classes; j++) order[j] = j;
    for (size_t r = 0; r < k; r++) { /* partial selection sort: the k largest logits, in order */
        size_t best = r;
        for (size_t j = r + 1; j < classes; j++)
            if (logits[order[j]] > logits[order[best]]) best = j;
        size_t t = order[r]; order[r] = order[best]; order[best] = t;
        printf("top%zu: class %zu logit %.6f\n", r + 1, order[r], (double)logits[order[r]]);
    }
    rc = 0;

done:
    adm_context_free(ctx);  /* contexts before their model */
    adm_model_free(model);
    free(x);
    free(logits);
    free(order);
    return rc;
}
