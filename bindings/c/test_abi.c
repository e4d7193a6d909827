/*
 * test_abi.c — checks of adamant's C ABI contract (include/adamant.h):
 * NULL pointers are ADM_ERR_INVALID_ARGUMENT (never a crash), wrong lengths
 * are ADM_ERR_SHAPE, struct_size mismatches are rejected, adm_last_error()
 * explains every failure and is cleared by success, and predict / gradient /
 * PGD / calibration / save work.
 *
 *   cc test_abi.c $(pkg-config --cflags --libs adamant) -lm -pthread -o test_abi
 *   ./test_abi MODEL.clean.onnx [MODEL.adv.onnx]
 *
 * MODEL.* are the two BN-domain exports of one network with BatchNormalization
 * kept (e.g. examples/models/mbn_resnet8.{clean,adv}.onnx); without the second
 * file the clean one is used for both domains. Prints one line per check and
 * "N passed, M failed"; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <adamant.h>

#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0, failed = 0;

static void report(int ok, const char *what, int line) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL (line %d): %s [last error: %s]\n", line, what, adm_last_error());
    }
}

#define EXPECT(cond) report((cond) != 0, #cond, __LINE__)
/* The call returns `want`; a failing status must leave a non-empty message, success an empty one. */
#define EXPECT_STATUS(call, want)                                                                  \
    do {                                                                                           \
        adm_status got_ = (call);                                                                  \
        int ok_ = got_ == (want);                                                                  \
        if (ok_ && got_ != ADM_OK) ok_ = adm_last_error()[0] != '\0';                              \
        if (ok_ && got_ == ADM_OK) ok_ = adm_last_error()[0] == '\0';                              \
        if (!ok_) printf("  got status %d, wanted %d\n", (int)got_, (int)(want));                  \
        report(ok_, #call " == " #want, __LINE__);                                                 \
    } while (0)
#define INVALID(call) EXPECT_STATUS(call, ADM_ERR_INVALID_ARGUMENT)
#define SHAPE(call) EXPECT_STATUS(call, ADM_ERR_SHAPE)
#define OK(call) EXPECT_STATUS(call, ADM_OK)

#define RESOURCE(call) EXPECT_STATUS(call, ADM_ERR_RESOURCE)
#define HAS(text) EXPECT(strstr(adm_last_error(), (text)) != NULL)

/* A long PGD run on one thread while main cancels it from another. */
struct cancel_job {
    adm_context *ctx;
    const adm_attack_config *cfg;
    const float *x;
    float *x_adv;
    size_t n, batch;
    const int64_t *labels;
    adm_status status;
    char message[512];
    pthread_mutex_t lock;
    int done;
};

static void *run_attack(void *arg) {
    struct cancel_job *j = arg;
    adm_status st = adm_attack_pgd(j->ctx, j->cfg, j->x, j->n, j->batch, j->labels, j->batch, j->x_adv, j->n, NULL);
    j->status = st;
    snprintf(j->message, sizeof j->message, "%s", adm_last_error());
    pthread_mutex_lock(&j->lock);
    j->done = 1;
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

static int job_done(struct cancel_job *j) {
    pthread_mutex_lock(&j->lock);
    int d = j->done;
    pthread_mutex_unlock(&j->lock);
    return d;
}

/* A long predict or gradient on one thread while main cancels it from another. */
struct pass_job {
    adm_context *ctx;
    int gradient;
    const float *x;
    size_t n, batch;
    const int64_t *labels;
    float *out; /* logits (predict) or grad (gradient) */
    size_t out_len;
    adm_status status;
    char message[512];
    pthread_mutex_t lock;
    int done;
};

static void *run_pass(void *arg) {
    struct pass_job *j = arg;
    adm_status st = j->gradient
        ? adm_gradient(j->ctx, 0, ADM_LOSS_CE, j->x, j->n, j->batch, j->labels, j->batch, NULL, 0, j->out, j->out_len)
        : adm_predict(j->ctx, 0, j->x, j->n, j->batch, j->out, j->out_len);
    j->status = st;
    snprintf(j->message, sizeof j->message, "%s", adm_last_error());
    pthread_mutex_lock(&j->lock);
    j->done = 1;
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

static int pass_done(struct pass_job *j) {
    pthread_mutex_lock(&j->lock);
    int d = j->done;
    pthread_mutex_unlock(&j->lock);
    return d;
}

/* MemAvailable from /proc/meminfo in bytes (0 when unknown). */
static unsigned long long mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024ull;
}

static void fill_images(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) & 0xFFFF) / 65535.0f;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.clean.onnx [MODEL.adv.onnx]\n", argv[0]);
        return 2;
    }
    const char *clean_path = argv[1];
    const char *adv_path = argc > 2 ? argv[2] : argv[1];

    /* ---- library ---------------------------------------------------------------- */
    EXPECT(adm_version() != NULL && adm_version()[0] != '\0');
    EXPECT(adm_abi_version() == ADAMANT_ABI_VERSION);
    EXPECT(adm_last_error() != NULL);
    EXPECT(adm_backend_info() != NULL && adm_backend_info()[0] != '\0');
    INVALID(adm_set_num_threads(-1));
    OK(adm_set_num_threads(0));
    /* instruction-set override: every supported level, then unknown / unsupported names */
    {
        const char *levels[] = {"scalar", "avx2", "avx512"};
        const char *top = adm_isa_supported();
        EXPECT(strcmp(adm_isa(), top) == 0);
        int supported = 1;
        for (int i = 0; i < 3; i++) {
            if (supported) {
                OK(adm_set_isa(levels[i]));
                EXPECT(strcmp(adm_isa(), levels[i]) == 0);
                EXPECT(strncmp(adm_backend_info(), "isa=", 4) == 0);
            } else {
                INVALID(adm_set_isa(levels[i]));
                EXPECT(strstr(adm_last_error(), top) != NULL);
            }
            if (strcmp(levels[i], top) == 0) supported = 0;
        }
        INVALID(adm_set_isa("avx1024"));
        EXPECT(strstr(adm_last_error(), "avx1024") != NULL);
        OK(adm_set_isa(NULL));
        EXPECT(strcmp(adm_isa(), top) == 0);
        OK(adm_set_isa("auto"));
    }
    adm_load_options_default(NULL);  /* must not crash */
    adm_attack_config_default(NULL);

    /* ---- loading: NULLs, IO, struct_size ------------------------------------------ */
    adm_model *m = NULL, *m2 = NULL;
    adm_load_options opts;
    adm_load_options_default(&opts);
    EXPECT(opts.struct_size == sizeof(adm_load_options));
    INVALID(adm_model_load(NULL, NULL, &m));
    INVALID(adm_model_load(clean_path, NULL, NULL));
    INVALID(adm_model_load(clean_path, &opts, NULL));
    EXPECT_STATUS(adm_model_load("/nonexistent/dir/model.onnx", NULL, &m), ADM_ERR_IO);
    EXPECT(m == NULL);
    EXPECT(strstr(adm_last_error(), "/nonexistent/dir/model.onnx") != NULL);
    INVALID(adm_model_load_memory(NULL, 16, NULL, &m));
    INVALID(adm_model_load_memory("abc", 3, NULL, NULL));
    EXPECT_STATUS(adm_model_load_memory("not an onnx model", 17, NULL, &m), ADM_ERR_PARSE);

    adm_load_options bad = opts;
    bad.struct_size = sizeof(adm_load_options) + 8;
    INVALID(adm_model_load(clean_path, &bad, &m));
    EXPECT(strstr(adm_last_error(), "struct_size") != NULL);
    bad.struct_size = 0;
    INVALID(adm_model_load(clean_path, &bad, &m));
    bad = opts;
    bad.mean = NULL;
    bad.mean_len = 3; /* NULL buffer with a length */
    INVALID(adm_model_load(clean_path, &bad, &m));

    const char *names[2] = {"clean", "adv"};
    const char *paths[2] = {clean_path, adv_path};
    const char *null_names[2] = {"clean", NULL};
    INVALID(adm_model_load_domains(NULL, paths, 2, NULL, &m));
    INVALID(adm_model_load_domains(names, NULL, 2, NULL, &m));
    INVALID(adm_model_load_domains(names, paths, 2, NULL, NULL));
    INVALID(adm_model_load_domains(null_names, paths, 2, NULL, &m));
    INVALID(adm_model_load_domains(names, paths, 0, NULL, &m));
    adm_model_free(NULL);

    OK(adm_model_load_domains(names, paths, 2, &opts, &m));
    if (!m) {
        printf("cannot continue without a model\n");
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }

    /* ---- introspection ------------------------------------------------------------ */
    size_t count = 0, idx = 0, c = 0, h = 0, w = 0, classes = 0, needed = 0;
    const char *name = NULL;
    float lo = -1, hi = -1;
    INVALID(adm_model_domain_count(NULL, &count));
    INVALID(adm_model_domain_count(m, NULL));
    OK(adm_model_domain_count(m, &count));
    EXPECT(count == 2);
    INVALID(adm_model_domain_name(NULL, 0, &name));
    INVALID(adm_model_domain_name(m, 0, NULL));
    EXPECT_STATUS(adm_model_domain_name(m, 2, &name), ADM_ERR_DOMAIN);
    OK(adm_model_domain_name(m, 1, &name));
    EXPECT(name && strcmp(name, "adv") == 0);
    INVALID(adm_model_domain_index(NULL, "adv", &idx));
    INVALID(adm_model_domain_index(m, NULL, &idx));
    INVALID(adm_model_domain_index(m, "adv", NULL));
    EXPECT_STATUS(adm_model_domain_index(m, "nope", &idx), ADM_ERR_DOMAIN);
    EXPECT(strstr(adm_last_error(), "nope") != NULL);
    OK(adm_model_domain_index(m, "adv", &idx));
    EXPECT(idx == 1);
    INVALID(adm_model_default_domain(NULL, &idx));
    INVALID(adm_model_default_domain(m, NULL));
    OK(adm_model_default_domain(m, &idx));
    EXPECT(idx == 0);
    INVALID(adm_model_input_shape(NULL, &c, &h, &w));
    INVALID(adm_model_input_shape(m, NULL, &h, &w));
    INVALID(adm_model_input_shape(m, &c, NULL, &w));
    INVALID(adm_model_input_shape(m, &c, &h, NULL));
    OK(adm_model_input_shape(m, &c, &h, &w));
    INVALID(adm_model_num_classes(NULL, &classes));
    INVALID(adm_model_num_classes(m, NULL));
    OK(adm_model_num_classes(m, &classes));
    EXPECT(c > 0 && h > 0 && w > 0 && classes >= 2);
    INVALID(adm_model_pixel_range(NULL, &lo, &hi));
    INVALID(adm_model_pixel_range(m, NULL, &hi));
    INVALID(adm_model_pixel_range(m, &lo, NULL));
    OK(adm_model_pixel_range(m, &lo, &hi));
    EXPECT(lo == 0.0f && hi == 1.0f);
    {
        const char *order = NULL;
        INVALID(adm_model_channel_order(NULL, &order));
        INVALID(adm_model_channel_order(m, NULL));
        OK(adm_model_channel_order(m, &order));
        EXPECT(order != NULL && strcmp(order, "rgb") == 0);
        /* adm_import_tensorpack: argument checks and a missing checkpoint (the conversion itself
           is tested from Python against a PyTorch reference). */
        const int32_t three[3] = {1, 1, 1};
        INVALID(adm_import_tensorpack(NULL, "resnet50", NULL, 0, 0, "/tmp/x.onnx"));
        INVALID(adm_import_tensorpack("/nonexistent/ck.npz", NULL, NULL, 0, 0, "/tmp/x.onnx"));
        INVALID(adm_import_tensorpack("/nonexistent/ck.npz", "resnet50", NULL, 0, 0, NULL));
        INVALID(adm_import_tensorpack("/nonexistent/ck.npz", "resnet18", NULL, 0, 0, "/tmp/x.onnx"));
        INVALID(adm_import_tensorpack("/nonexistent/ck.npz", "resnet50", three, 3, 0, "/tmp/x.onnx"));
        INVALID(adm_import_tensorpack("/nonexistent/ck.npz", "resnet50", NULL, 0, -1, "/tmp/x.onnx"));
        EXPECT_STATUS(adm_import_tensorpack("/nonexistent/ck.npz", "resnet50", NULL, 0, 0, "/tmp/x.onnx"), ADM_ERR_IO);
        EXPECT(strstr(adm_last_error(), "/nonexistent/ck.npz") != NULL);
    }
    INVALID(adm_model_info_json(NULL, NULL, 0, &needed));
    char small[4];
    INVALID(adm_model_info_json(m, small, sizeof small, NULL));
    INVALID(adm_model_info_json(m, NULL, 0, &needed)); /* size query */
    EXPECT(needed > 1);
    INVALID(adm_model_info_json(m, small, sizeof small, &needed));
    char *json = malloc(needed);
    if (json) {
        OK(adm_model_info_json(m, json, needed, &needed));
        EXPECT(json[0] == '{' && strstr(json, "\"domains\"") && strlen(json) + 1 == needed);
        free(json);
    }

    /* ---- contexts and predict ------------------------------------------------------ */
    adm_context *ctx = NULL;
    INVALID(adm_context_create(NULL, &ctx));
    INVALID(adm_context_create(m, NULL));
    OK(adm_context_create(m, &ctx));
    adm_context_free(NULL);

    enum { B = 4 };
    size_t per = c * h * w, n = B * per;
    float *x = malloc(n * sizeof *x), *x2 = malloc(n * sizeof *x2), *grad = malloc(n * sizeof *grad);
    float logits[B * 64], one[64], loss[B];
    int64_t labels[B] = {0, 1, 2, 3}, targets[B];
    if (!x || !x2 || !grad || classes > 64) {
        printf("setup failed\n");
        return 1;
    }
    for (int i = 0; i < B; i++) { labels[i] = (int64_t)((size_t)i % classes); targets[i] = (labels[i] + 1) % (int64_t)classes; }
    fill_images(x, n, 42);
    size_t nl = B * classes;

    INVALID(adm_predict(NULL, 0, x, n, B, logits, nl));
    INVALID(adm_predict(ctx, 0, NULL, n, B, logits, nl));
    INVALID(adm_predict(ctx, 0, x, n, B, NULL, nl));
    SHAPE(adm_predict(ctx, 0, x, n - 1, B, logits, nl));
    SHAPE(adm_predict(ctx, 0, x, n + per, B, logits, nl));
    SHAPE(adm_predict(ctx, 0, x, n, B, logits, nl - 1));
    SHAPE(adm_predict(ctx, 0, x, 0, 0, logits, 0));
    EXPECT_STATUS(adm_predict(ctx, 2, x, n, B, logits, nl), ADM_ERR_DOMAIN);
    OK(adm_predict(ctx, 0, x, n, B, logits, nl));
    int finite = 1;
    for (size_t i = 0; i < nl; i++) finite &= isfinite(logits[i]) != 0;
    EXPECT(finite);
    /* batch independence: sample 2 alone gives the same logits */
    OK(adm_predict(ctx, 0, x + 2 * per, per, 1, one, classes));
    float maxdiff = 0;
    for (size_t j = 0; j < classes; j++) maxdiff = fmaxf(maxdiff, fabsf(one[j] - logits[2 * classes + j]));
    EXPECT(maxdiff < 1e-4f);
    /* the two domains differ */
    float other[B * 64];
    OK(adm_predict(ctx, 1, x, n, B, other, nl));
    if (adv_path != clean_path) EXPECT(memcmp(other, logits, nl * sizeof(float)) != 0);

    /* ---- gradients ----------------------------------------------------------------- */
    INVALID(adm_gradient(NULL, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B, grad, n));
    INVALID(adm_gradient(ctx, 0, ADM_LOSS_CE, NULL, n, B, labels, B, loss, B, grad, n));
    INVALID(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, NULL, B, loss, B, grad, n));
    INVALID(adm_gradient(ctx, 0, 7, x, n, B, labels, B, loss, B, grad, n));
    SHAPE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n - 1, B, labels, B, loss, B, grad, n - 1));
    SHAPE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B - 1, loss, B, grad, n));
    SHAPE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B - 1, grad, n));
    SHAPE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B, grad, n - 1));
    int64_t bad_labels[B] = {0, 1, (int64_t)classes, 0};
    INVALID(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, bad_labels, B, loss, B, grad, n));
    OK(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B, grad, n));
    double gnorm = 0;
    finite = 1;
    for (size_t i = 0; i < n; i++) { finite &= isfinite(grad[i]) != 0; gnorm += (double)grad[i] * grad[i]; }
    for (int i = 0; i < B; i++) finite &= isfinite(loss[i]) && loss[i] >= 0;
    EXPECT(finite && gnorm > 0);
    OK(adm_gradient(ctx, 1, ADM_LOSS_CW, x, n, B, labels, B, NULL, 0, grad, n)); /* loss may be NULL */
    OK(adm_gradient(ctx, 1, ADM_LOSS_CW, x, n, B, labels, B, loss, B, NULL, 0)); /* grad may be NULL */

    /* ---- vector-Jacobian product of the logits (adm_vjp) ------------------------------ */
    {
        float *vg = malloc(n * sizeof *vg), *xp = malloc(n * sizeof *xp), *dir = malloc(n * sizeof *dir);
        float gz[B * 64], vl[B * 64], lp[B * 64], lm[B * 64];
        if (!vg || !xp || !dir) { printf("setup failed\n"); return 1; }
        /* the CE gradient is the VJP with softmax(z) - onehot(label) */
        OK(adm_predict(ctx, 1, x, n, B, logits, nl));
        for (int i = 0; i < B; i++) {
            float mx = logits[i * classes], s = 0;
            for (size_t j = 1; j < classes; j++) mx = fmaxf(mx, logits[i * classes + j]);
            for (size_t j = 0; j < classes; j++) s += expf(logits[i * classes + j] - mx);
            for (size_t j = 0; j < classes; j++)
                gz[i * classes + j] = expf(logits[i * classes + j] - mx) / s - ((int64_t)j == labels[i] ? 1.0f : 0.0f);
        }
        INVALID(adm_vjp(NULL, 1, x, n, B, gz, nl, vl, nl, vg, n));
        INVALID(adm_vjp(ctx, 1, NULL, n, B, gz, nl, vl, nl, vg, n));
        INVALID(adm_vjp(ctx, 1, x, n, B, NULL, nl, vl, nl, vg, n));
        INVALID(adm_vjp(ctx, 1, x, n, B, gz, nl, vl, nl, NULL, n));
        SHAPE(adm_vjp(ctx, 1, x, n, B, gz, nl - 1, vl, nl, vg, n));
        SHAPE(adm_vjp(ctx, 1, x, n, B, gz, nl, vl, nl + 1, vg, n));
        SHAPE(adm_vjp(ctx, 1, x, n, B, gz, nl, vl, nl, vg, n - 1));
        SHAPE(adm_vjp(ctx, 1, x, n - 1, B, gz, nl, vl, nl, vg, n - 1));
        EXPECT_STATUS(adm_vjp(ctx, 5, x, n, B, gz, nl, vl, nl, vg, n), ADM_ERR_DOMAIN);
        float saved = gz[3];
        gz[3] = NAN;
        INVALID(adm_vjp(ctx, 1, x, n, B, gz, nl, vl, nl, vg, n));
        HAS("finite");
        gz[3] = saved;
        OK(adm_vjp(ctx, 1, x, n, B, gz, nl, vl, nl, vg, n));
        EXPECT(memcmp(vl, logits, nl * sizeof(float)) == 0); /* logits as adm_predict gives them */
        OK(adm_gradient(ctx, 1, ADM_LOSS_CE, x, n, B, labels, B, NULL, 0, grad, n));
        double dd = 0, gn = 0;
        for (size_t i = 0; i < n; i++) { dd = fmax(dd, fabs((double)vg[i] - grad[i])); gn = fmax(gn, fabs((double)grad[i])); }
        EXPECT(gn > 0 && dd <= 1e-4 * gn); /* same backward, dz computed in float here vs double there */
        OK(adm_vjp(ctx, 1, x, n, B, gz, nl, NULL, 0, vg, n)); /* logits may be NULL */
        /* central finite difference of f(x) = sum_ij gz_ij z_ij(x) along a direction, in double */
        for (size_t i = 0; i < n; i++) dir[i] = (float)(((i * 2654435761u) >> 7) % 3) - 1.0f; /* -1, 0, 1 */
        double eps = 1e-3, fp = 0, fm = 0, dot = 0;
        for (size_t i = 0; i < n; i++) xp[i] = x[i] + (float)eps * dir[i];
        OK(adm_predict(ctx, 1, xp, n, B, lp, nl));
        for (size_t i = 0; i < n; i++) xp[i] = x[i] - (float)eps * dir[i];
        OK(adm_predict(ctx, 1, xp, n, B, lm, nl));
        for (size_t i = 0; i < nl; i++) { fp += (double)gz[i] * lp[i]; fm += (double)gz[i] * lm[i]; }
        for (size_t i = 0; i < n; i++) dot += (double)vg[i] * dir[i];
        double fd = (fp - fm) / (2 * eps);
        if (!(fabs(fd - dot) <= 0.02 * fabs(dot) + 1e-3)) printf("  vjp finite difference %g vs %g\n", fd, dot);
        EXPECT(fabs(fd - dot) <= 0.02 * fabs(dot) + 1e-3);
        free(vg); free(xp); free(dir);
    }

    /* ---- attacks -------------------------------------------------------------------- */
    adm_attack_config cfg;
    adm_attack_config_default(&cfg);
    EXPECT(cfg.struct_size == sizeof(adm_attack_config));
    cfg.steps = 2;
    uint8_t success[B];
    float aloss[B];
    int32_t steps_used[B];
    int64_t out_targets[B], preds[B];
    adm_attack_outputs out = {sizeof(adm_attack_outputs), B, success, aloss, steps_used, out_targets, preds};
    INVALID(adm_attack_pgd(NULL, &cfg, x, n, B, labels, B, x2, n, &out));
    INVALID(adm_attack_pgd(ctx, NULL, x, n, B, labels, B, x2, n, &out));
    INVALID(adm_attack_pgd(ctx, &cfg, NULL, n, B, labels, B, x2, n, &out));
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, NULL, B, x2, n, &out));
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, NULL, n, &out));
    SHAPE(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n - 1, &out));
    SHAPE(adm_attack_pgd(ctx, &cfg, x, n - 1, B, labels, B, x2, n - 1, &out));
    SHAPE(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B - 1, x2, n, &out));
    out.len = B - 1;
    SHAPE(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    out.len = B;
    out.struct_size = 8;
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    out.struct_size = sizeof(adm_attack_outputs);
    adm_attack_config badcfg = cfg;
    badcfg.struct_size = sizeof(adm_attack_config) - 8;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg = cfg;
    badcfg.eps = -1;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg = cfg;
    badcfg.steps = 0;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg = cfg;
    badcfg.norm = 9;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg = cfg;
    badcfg.eval_domain = 5;
    EXPECT_STATUS(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out), ADM_ERR_DOMAIN);
    badcfg = cfg;
    badcfg.target_mode = ADM_TARGETED;
    badcfg.targets = NULL;
    badcfg.targets_len = B;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg.targets = targets;
    badcfg.targets_len = B - 1;
    SHAPE(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));
    badcfg.targets = labels; /* target == label */
    badcfg.targets_len = B;
    INVALID(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, &out));

    OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    float maxdev = 0, xmin = 1, xmax = 0;
    for (size_t i = 0; i < n; i++) {
        maxdev = fmaxf(maxdev, fabsf(x2[i] - x[i]));
        xmin = fminf(xmin, x2[i]);
        xmax = fmaxf(xmax, x2[i]);
    }
    EXPECT(maxdev <= cfg.eps + 1e-6f && maxdev > 0 && xmin >= 0 && xmax <= 1);
    int steps_ok = 1;
    for (int i = 0; i < B; i++) steps_ok &= steps_used[i] == 2 && out_targets[i] == -1 && success[i] <= 1;
    EXPECT(steps_ok);
    OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, NULL)); /* outputs may be NULL */
    cfg.target_mode = ADM_TARGETED_RANDOM;
    OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    int tgt_ok = 1;
    for (int i = 0; i < B; i++) tgt_ok &= out_targets[i] != labels[i] && out_targets[i] >= 0;
    EXPECT(tgt_ok);

    /* ---- targets are never silently ignored ----------------------------------------- */
    cfg.target_mode = ADM_UNTARGETED;
    cfg.targets = targets;
    cfg.targets_len = B;
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    HAS("ADM_UNTARGETED");
    cfg.target_mode = ADM_TARGETED_RANDOM;
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    HAS("ADM_TARGETED_RANDOM");
    cfg.targets = NULL;
    cfg.targets_len = 1;
    INVALID(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    cfg.targets_len = 0;
    cfg.target_mode = ADM_TARGETED;
    cfg.targets = targets;
    cfg.targets_len = B;
    OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    cfg.target_mode = ADM_UNTARGETED;
    cfg.targets = NULL;
    cfg.targets_len = 0;

    /* ---- non-finite pixels: an error naming the first bad sample and pixel ---------- */
    memcpy(x2, x, n * sizeof *x);
    x2[2 * per + 7] = NAN;
    INVALID(adm_predict(ctx, 0, x2, n, B, logits, nl));
    HAS("sample 2, pixel index 7");
    INVALID(adm_gradient(ctx, 0, ADM_LOSS_CE, x2, n, B, labels, B, loss, B, grad, n));
    HAS("sample 2, pixel index 7");
    INVALID(adm_attack_pgd(ctx, &cfg, x2, n, B, labels, B, x2, n, NULL));
    HAS("sample 2, pixel index 7");
    x2[2 * per + 7] = 0.5f;
    x2[3 * per + per - 1] = -INFINITY;
    INVALID(adm_predict(ctx, 0, x2, n, B, logits, nl));
    HAS("sample 3");
    HAS("-inf");
    x2[3 * per + per - 1] = 0.5f;

    /* ---- size_t values are printed unsigned; default domains are named ------------- */
    EXPECT_STATUS(adm_model_domain_name(m, SIZE_MAX, &name), ADM_ERR_DOMAIN);
    HAS("18446744073709551615");
    EXPECT(strstr(adm_last_error(), "-1") == NULL);
    EXPECT_STATUS(adm_predict(ctx, SIZE_MAX, x, n, B, logits, nl), ADM_ERR_DOMAIN);
    HAS("18446744073709551615");
    EXPECT(strstr(adm_last_error(), "-1") == NULL);
    INVALID(adm_predict(ctx, 0, x, SIZE_MAX, B, logits, nl));
    HAS("18446744073709551615");
    SHAPE(adm_predict(ctx, 0, x, n, B, logits, SIZE_MAX));
    HAS("18446744073709551615");
    badcfg = cfg;
    badcfg.attack_domain = SIZE_MAX;
    EXPECT_STATUS(adm_attack_pgd(ctx, &badcfg, x, n, B, labels, B, x2, n, NULL), ADM_ERR_DOMAIN);
    HAS("attack_domain index 18446744073709551615");
    {
        adm_model *m3 = NULL;
        adm_load_options o3;
        adm_load_options_default(&o3);
        o3.default_domain = "nope";
        EXPECT_STATUS(adm_model_load_domains(names, paths, 2, &o3, &m3), ADM_ERR_DOMAIN);
        HAS("'nope' is not among the model's domains: clean, adv");
        EXPECT(m3 == NULL);
    }

    /* ---- context limits: ADM_ERR_RESOURCE before any allocation -------------------- */
    {
        adm_context_limits lim, got;
        adm_context_limits_default(NULL); /* must not crash */
        adm_context_limits_default(&lim);
        EXPECT(lim.struct_size == sizeof(adm_context_limits));
        EXPECT(lim.max_batch == 65536 && lim.max_pixels_per_image == 4096u * 4096u);
        EXPECT(lim.max_attack_steps_total == 100000 && lim.max_input_bytes == (size_t)4 << 30);
        adm_context_limits_default(&got);
        got.max_batch = 7;
        OK(adm_context_get_limits(ctx, &got));
        EXPECT(got.max_batch == lim.max_batch && got.max_input_bytes == lim.max_input_bytes);
        INVALID(adm_context_get_limits(NULL, &got));
        INVALID(adm_context_get_limits(ctx, NULL));
        INVALID(adm_context_set_limits(NULL, &lim));
        adm_context_limits badlim = lim;
        badlim.struct_size = 8;
        INVALID(adm_context_set_limits(ctx, &badlim));
        HAS("struct_size");

        /* batch = 10^7 with consistent lengths but a short real buffer: an error, not an abort */
        size_t big = 10000000;
        RESOURCE(adm_predict(ctx, 0, x, big * per, big, logits, big * classes));
        HAS("max_batch");
        RESOURCE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, big * per, big, labels, big, NULL, 0, NULL, 0));
        RESOURCE(adm_attack_pgd(ctx, &cfg, x, big * per, big, labels, big, x2, big * per, NULL));
        /* without a batch limit, the input-bytes limit still refuses it */
        lim.max_batch = 0;
        OK(adm_context_set_limits(ctx, &lim));
        RESOURCE(adm_predict(ctx, 0, x, big * per, big, logits, big * classes));
        HAS("max_input_bytes");

        lim = got;
        lim.max_batch = B - 1;
        OK(adm_context_set_limits(ctx, &lim));
        RESOURCE(adm_predict(ctx, 0, x, n, B, logits, nl));
        HAS("batch 4 exceeds the context's max_batch 3");
        OK(adm_predict(ctx, 0, x, per * (B - 1), B - 1, logits, (B - 1) * classes));
        OK(adm_context_get_limits(ctx, &got));
        EXPECT(got.max_batch == B - 1);

        adm_context_limits_default(&lim);
        lim.max_pixels_per_image = h * w - 1;
        OK(adm_context_set_limits(ctx, &lim));
        RESOURCE(adm_predict(ctx, 0, x, n, B, logits, nl));
        HAS("max_pixels_per_image");

        adm_context_limits_default(&lim);
        lim.max_input_bytes = n * sizeof(float) - 1;
        OK(adm_context_set_limits(ctx, &lim));
        RESOURCE(adm_predict(ctx, 0, x, n, B, logits, nl));
        HAS("max_input_bytes");

        adm_context_limits_default(&lim);
        lim.max_attack_steps_total = 5;
        OK(adm_context_set_limits(ctx, &lim));
        adm_attack_config c2 = cfg;
        c2.steps = 3;
        c2.restarts = 2;
        RESOURCE(adm_attack_pgd(ctx, &c2, x, n, B, labels, B, x2, n, NULL));
        HAS("3 x 2 = 6 exceeds the context's max_attack_steps_total 5");
        c2.restarts = 1;
        OK(adm_attack_pgd(ctx, &c2, x, n, B, labels, B, x2, n, NULL));

        OK(adm_context_set_limits(ctx, NULL)); /* back to the defaults */
        OK(adm_context_get_limits(ctx, &got));
        EXPECT(got.max_attack_steps_total == 100000 && got.max_batch == 65536);
        OK(adm_predict(ctx, 0, x, n, B, logits, nl));
    }

    /* ---- cancellation from another thread ------------------------------------------- */
    {
        INVALID(adm_context_cancel(NULL));
        /* a cancel while no call runs does not affect the next call */
        OK(adm_context_cancel(ctx));
        OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, NULL));

        adm_attack_config lc = cfg;
        lc.steps = 100000; /* minutes of work unless cancelled */
        struct cancel_job job;
        memset(&job, 0, sizeof job);
        job.ctx = ctx; job.cfg = &lc; job.x = x; job.x_adv = x2; job.n = n; job.batch = B; job.labels = labels;
        pthread_mutex_init(&job.lock, NULL);
        pthread_t t;
        struct timespec t0, t1, nap = {0, 20 * 1000 * 1000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        EXPECT(pthread_create(&t, NULL, run_attack, &job) == 0);
        nanosleep(&nap, NULL);
        int cancels = 0;
        while (!job_done(&job) && cancels < 3000) { /* at most ~60 s */
            adm_context_cancel(ctx);
            cancels++;
            nanosleep(&nap, NULL);
        }
        pthread_join(t, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (job.status != ADM_ERR_CANCELLED) printf("  cancel: status %d, message '%s'\n", (int)job.status, job.message);
        EXPECT(job.status == ADM_ERR_CANCELLED);
        EXPECT(strstr(job.message, "cancelled") != NULL);
        EXPECT(secs < 30);
        pthread_mutex_destroy(&job.lock);
        /* the flag is cleared when the next call starts */
        OK(adm_attack_pgd(ctx, &cfg, x, n, B, labels, B, x2, n, &out));
    }

    /* ---- APGD, AutoAttack-lite, targeted DLR ------------------------------------------- */
    {
        adm_apgd_config ac, bad;
        adm_apgd_config_default(NULL); /* must not crash */
        adm_apgd_config_default(&ac);
        EXPECT(ac.struct_size == sizeof(adm_apgd_config));
        EXPECT(ac.steps == 100 && ac.restarts == 1 && ac.n_target_classes == 9 && ac.early_stop == 1);
        EXPECT(ac.random_start == 1 && ac.loss == ADM_LOSS_CE && ac.target_mode == ADM_UNTARGETED);
        ac.steps = 3;
        INVALID(adm_attack_apgd(NULL, &ac, x, n, B, labels, B, x2, n, &out));
        INVALID(adm_attack_apgd(ctx, NULL, x, n, B, labels, B, x2, n, &out));
        INVALID(adm_attack_apgd(ctx, &ac, NULL, n, B, labels, B, x2, n, &out));
        INVALID(adm_attack_apgd(ctx, &ac, x, n, B, NULL, B, x2, n, &out));
        INVALID(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, NULL, n, &out));
        SHAPE(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, x2, n - 1, &out));
        SHAPE(adm_attack_apgd(ctx, &ac, x, n, B, labels, B - 1, x2, n, &out));
        bad = ac; bad.struct_size = 8;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        HAS("struct_size");
        bad = ac; bad.eps = -1;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.steps = 0;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.restarts = -2;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.rho = 2;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.norm = 9;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.loss = ADM_LOSS_DLR_TARGETED;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.target_mode = 9;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.target_mode = ADM_TARGETED_TOP_K; bad.n_target_classes = 0;
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.targets = labels; bad.targets_len = B; /* targets with ADM_UNTARGETED */
        INVALID(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.target_mode = ADM_TARGETED; bad.targets = labels; bad.targets_len = B - 1;
        SHAPE(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out));
        bad = ac; bad.attack_domain = 9;
        EXPECT_STATUS(adm_attack_apgd(ctx, &bad, x, n, B, labels, B, x2, n, &out), ADM_ERR_DOMAIN);
        OK(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, x2, n, &out));
        for (int i = 0; i < B; i++) EXPECT(success[i] == (preds[i] != labels[i]) && out_targets[i] == -1);
        OK(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, x2, n, NULL)); /* outputs may be NULL */
        ac.target_mode = ADM_TARGETED_TOP_K; ac.loss = ADM_LOSS_DLR; ac.n_target_classes = 3;
        OK(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, x2, n, &out));
        for (int i = 0; i < B; i++) EXPECT(success[i] == (preds[i] != labels[i]));
        adm_context_limits lim;
        adm_context_limits_default(&lim);
        lim.max_attack_steps_total = 8; /* 3 steps x 3 targets = 9 */
        OK(adm_context_set_limits(ctx, &lim));
        RESOURCE(adm_attack_apgd(ctx, &ac, x, n, B, labels, B, x2, n, NULL));
        HAS("max_attack_steps_total");
        OK(adm_context_set_limits(ctx, NULL));

        adm_autoattack_report rep;
        memset(&rep, 0, sizeof rep);
        adm_apgd_config_default(&ac);
        ac.steps = 3;
        INVALID(adm_autoattack_lite(ctx, &ac, x, n, B, labels, B, x2, n, &out, NULL));
        INVALID(adm_autoattack_lite(ctx, &ac, x, n, B, labels, B, x2, n, &out, &rep)); /* struct_size 0 */
        rep.struct_size = sizeof rep;
        OK(adm_autoattack_lite(ctx, &ac, x, n, B, labels, B, x2, n, &out, &rep));
        EXPECT(rep.images == B && rep.robust_after_apgd_t <= rep.robust_after_apgd_ce &&
               rep.robust_after_apgd_ce <= rep.clean_correct);
        bad = ac; bad.loss = ADM_LOSS_DLR;
        INVALID(adm_autoattack_lite(ctx, &bad, x, n, B, labels, B, x2, n, &out, &rep));
        bad = ac; bad.n_target_classes = 0;
        INVALID(adm_autoattack_lite(ctx, &bad, x, n, B, labels, B, x2, n, &out, &rep));

        int64_t tg[B];
        for (int i = 0; i < B; i++) tg[i] = (labels[i] + 1) % (int64_t)classes;
        OK(adm_gradient(ctx, 0, ADM_LOSS_DLR, x, n, B, labels, B, loss, B, grad, n));
        OK(adm_gradient_targeted(ctx, 0, ADM_LOSS_DLR_TARGETED, x, n, B, labels, B, tg, B, loss, B, grad, n));
        INVALID(adm_gradient(ctx, 0, ADM_LOSS_DLR_TARGETED, x, n, B, labels, B, loss, B, grad, n));
        INVALID(adm_gradient_targeted(ctx, 0, ADM_LOSS_DLR_TARGETED, x, n, B, labels, B, NULL, 0, loss, B, grad, n));
        INVALID(adm_gradient_targeted(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B, tg, B, loss, B, grad, n));
        SHAPE(adm_gradient_targeted(ctx, 0, ADM_LOSS_DLR_TARGETED, x, n, B, labels, B, tg, B - 1, loss, B, grad, n));
    }

    /* ---- memory cap at load (adm_load_options.memory_limit) ---------------------------- */
    {
        adm_load_options mo;
        adm_load_options_default(&mo);
        EXPECT(mo.memory_limit == 0);
        adm_model *mm = NULL;
        mo.memory_limit = 1000; /* below the weights */
        RESOURCE(adm_model_load(clean_path, &mo, &mm));
        HAS("memory limit");
        EXPECT(mm == NULL);
        /* a caller built against the header without memory_limit passes the shorter struct: no cap */
        mo.struct_size = offsetof(adm_load_options, memory_limit);
        OK(adm_model_load(clean_path, &mo, &mm));
        adm_model_free(mm);
        mm = NULL;
        mo.struct_size = sizeof mo;
        mo.memory_limit = (size_t)96 << 20; /* weights (~330 KB) + a small batch's activations */
        OK(adm_model_load(clean_path, &mo, &mm));
        size_t jn = 0;
        adm_model_info_json(mm, NULL, 0, &jn);
        char *mj = malloc(jn);
        if (mj) {
            OK(adm_model_info_json(mm, mj, jn, &jn));
            EXPECT(strstr(mj, "\"memory_limit\":100663296") != NULL && strstr(mj, "\"weight_bytes\":") != NULL);
            free(mj);
        }
        adm_context *mc = NULL;
        OK(adm_context_create(mm, &mc));
        OK(adm_predict(mc, 0, x, n, B, logits, nl));
        OK(adm_gradient(mc, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B, grad, n));
        OK(adm_attack_pgd(mc, &cfg, x, n, B, labels, B, x2, n, NULL));
        /* 60000 images (within every context limit) with consistent lengths but a short real buffer:
           refused from the plan's estimate before the input is read or anything allocated */
        size_t many = 60000;
        RESOURCE(adm_predict(mc, 0, x, many * per, many, logits, many * classes));
        HAS("memory limit");
        RESOURCE(adm_gradient(mc, 0, ADM_LOSS_CE, x, many * per, many, labels, many, NULL, 0, NULL, 0));
        HAS("memory limit");
        RESOURCE(adm_attack_pgd(mc, &cfg, x, many * per, many, labels, many, x2, many * per, NULL));
        adm_apgd_config mac;
        adm_apgd_config_default(&mac);
        RESOURCE(adm_attack_apgd(mc, &mac, x, many * per, many, labels, many, x2, many * per, NULL));
        OK(adm_predict(mc, 0, x, n, B, logits, nl)); /* the context still works */
        adm_context_free(mc);
        adm_model_free(mm);
    }

    /* ---- allocation failure is an error, never an abort --------------------------------- */
    {
        adm_context_limits none;
        adm_context_limits_default(&none);
        none.max_batch = 0; none.max_pixels_per_image = 0; none.max_attack_steps_total = 0; none.max_input_bytes = 0;
        OK(adm_context_set_limits(ctx, &none));
        /* 10^7 images: the input's working copies alone cannot be had */
        size_t big = 10000000;
        RESOURCE(adm_predict(ctx, 0, x, big * per, big, logits, big * classes));
        /* 700,000 images (8.6 GB): the input's two copies can be had, but a gradient's or an attack's
           working set (the input, its gradient and the attack's images: 25 GB and more, by the plan's
           estimate more still) is more than this machine has available: refused before the short
           buffer is read. (A predict runs in pieces: its working set is about twice the input.) */
        size_t large = 700000;
        if (mem_available() > ((unsigned long long)40 << 30)) {
            printf("  (skipped the 700,000-image checks: this machine has more than 40 GB available)\n");
        } else {
        RESOURCE(adm_gradient(ctx, 0, ADM_LOSS_CE, x, large * per, large, labels, large, NULL, 0, NULL, 0));
        HAS("available");
        RESOURCE(adm_attack_pgd(ctx, &cfg, x, large * per, large, labels, large, x2, large * per, NULL));
        HAS("available");
        }
        OK(adm_context_set_limits(ctx, NULL));
        OK(adm_predict(ctx, 0, x, n, B, logits, nl));
    }

    /* ---- predict and gradient cancelled from another thread --------------------------------- */
    {
        enum { LB = 2048 }; /* seconds of work */
        size_t ln = (size_t)LB * per;
        float *lx = malloc(ln * sizeof *lx), *lout = malloc(ln * sizeof *lout);
        int64_t *ll = malloc(LB * sizeof *ll);
        if (lx && lout && ll) {
            fill_images(lx, ln, 7);
            for (size_t i = 0; i < LB; i++) ll[i] = (int64_t)(i % classes);
            for (int gradient = 0; gradient <= 1; gradient++) {
                struct pass_job job;
                memset(&job, 0, sizeof job);
                job.ctx = ctx; job.gradient = gradient; job.x = lx; job.n = ln; job.batch = LB; job.labels = ll;
                job.out = lout; job.out_len = gradient ? ln : (size_t)LB * classes;
                for (size_t i = 0; i < job.out_len; i++) lout[i] = -7.0f; /* must stay untouched */
                pthread_mutex_init(&job.lock, NULL);
                pthread_t t;
                struct timespec t0, t1, nap = {0, 2 * 1000 * 1000};
                clock_gettime(CLOCK_MONOTONIC, &t0);
                EXPECT(pthread_create(&t, NULL, run_pass, &job) == 0);
                int cancels = 0;
                while (!pass_done(&job) && cancels < 30000) { /* at most ~60 s */
                    nanosleep(&nap, NULL);
                    adm_context_cancel(ctx);
                    cancels++;
                }
                pthread_join(t, NULL);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
                if (job.status != ADM_ERR_CANCELLED)
                    printf("  cancel %s: status %d, message '%s'\n", gradient ? "gradient" : "predict", (int)job.status, job.message);
                EXPECT(job.status == ADM_ERR_CANCELLED);
                EXPECT(strstr(job.message, "cancelled") != NULL);
                EXPECT(secs < 30);
                int untouched = 1;
                for (size_t i = 0; i < job.out_len; i++) untouched &= lout[i] == -7.0f;
                EXPECT(untouched);
                pthread_mutex_destroy(&job.lock);
            }
            /* the flag is cleared when the next call starts */
            OK(adm_predict(ctx, 0, x, n, B, logits, nl));
            OK(adm_gradient(ctx, 0, ADM_LOSS_CE, x, n, B, labels, B, loss, B, grad, n));
        } else {
            EXPECT(!"allocation of the cancellation batch");
        }
        free(lx);
        free(lout);
        free(ll);
    }

    /* ---- calibration and saving ----------------------------------------------------- */
    adm_calibrator *cal = NULL;
    INVALID(adm_calibrator_create(NULL, 0, &cal));
    INVALID(adm_calibrator_create(m, 0, NULL));
    EXPECT_STATUS(adm_calibrator_create(m, 9, &cal), ADM_ERR_DOMAIN);
    OK(adm_calibrator_create(m, 0, &cal));
    INVALID(adm_calibrator_add(NULL, x, n, B));
    INVALID(adm_calibrator_add(cal, NULL, n, B));
    SHAPE(adm_calibrator_add(cal, x, n - 1, B));
    INVALID(adm_calibrator_add(cal, x, per, 1)); /* batch statistics need >= 2 images */
    OK(adm_calibrator_add(cal, x, n, B));
    INVALID(adm_calibrator_finish(NULL, "cal", &m2));
    INVALID(adm_calibrator_finish(cal, NULL, &m2));
    INVALID(adm_calibrator_finish(cal, "cal", NULL));
    EXPECT_STATUS(adm_calibrator_finish(cal, "clean", &m2), ADM_ERR_DOMAIN);
    OK(adm_calibrator_finish(cal, "cal", &m2));
    adm_calibrator_free(cal);
    adm_calibrator_free(NULL);
    if (m2) {
        OK(adm_model_domain_count(m2, &count));
        EXPECT(count == 3);
        INVALID(adm_model_save(NULL, "/tmp/x.onnx"));
        INVALID(adm_model_save(m2, NULL));
        EXPECT_STATUS(adm_model_save(m2, "/nonexistent/dir/x.onnx"), ADM_ERR_IO);
        adm_model_free(m2);
    }

    adm_context_free(ctx);
    adm_model_free(m);
    free(x);
    free(x2);
    free(grad);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
