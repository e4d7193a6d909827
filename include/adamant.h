/*
 * adamant.h — the public C ABI of adamant.
 *
 * adamant loads trained ResNets from ONNX, keeps one or more named BatchNorm
 * domains (e.g. "clean" and "adv", as in Mixture BN), runs batched float32
 * inference through the domain the caller picks, computes input gradients
 * and generates PGD adversarial examples.
 *
 * Conventions
 *  - Every function that can fail returns an adm_status. ADM_OK is 0. On
 *    failure, adm_last_error() returns a message for the calling thread that
 *    stays valid until that thread's next adamant call.
 *  - Handles are opaque. An adm_model is immutable after loading and may be
 *    shared by any number of threads. An adm_context owns scratch memory and
 *    must be used by one thread at a time; create one per thread.
 *  - Every buffer crosses the boundary with its length in elements. A length
 *    that does not match the shape is an error (ADM_ERR_SHAPE), never a
 *    silent over-read.
 *  - Images are float32 NCHW in *pixel space* (by default [0,1]); per-channel
 *    normalization (mean/std) belongs to the model and is applied inside.
 *  - Labels and targets are int64 class indices.
 *  - NULL where a pointer is required is ADM_ERR_INVALID_ARGUMENT.
 *  - Pixels must be finite: a NaN or infinite pixel given to adm_predict,
 *    adm_gradient or adm_attack_pgd is ADM_ERR_INVALID_ARGUMENT, and the
 *    message names the first bad one ("sample 3, pixel index 17 (channel 0,
 *    row 0, column 17)"). Attacks also reject pixels outside the pixel range.
 *  - size_t values appear in messages as the unsigned numbers passed
 *    (SIZE_MAX as 18446744073709551615, never -1).
 *  - Limits: every context has limits (adm_context_limits: batch, pixels per
 *    image, PGD steps x restarts, input bytes) and a model may have a memory
 *    cap (adm_load_options.memory_limit), all checked before anything is
 *    allocated; exceeding one is ADM_ERR_RESOURCE. Memory the system cannot
 *    give (a call whose estimated activations exceed the memory available, or
 *    a buffer whose allocation fails) is ADM_ERR_RESOURCE too, never an abort.
 *  - Ownership: whatever adamant allocates and hands out (models, contexts,
 *    calibrators) is released with the matching *_free function. Strings
 *    returned as `const char *` are owned by adamant.
 *
 * Versioning: ADAMANT_ABI_VERSION changes when a declaration here changes
 * incompatibly. Structs that may grow carry `struct_size` as their first
 * field; set it to sizeof(the struct) (the *_default functions do).
 */
#ifndef ADAMANT_H
#define ADAMANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI version of this header. Compare with adm_abi_version() at run time. */
#define ADAMANT_ABI_VERSION 1

/** Status codes returned by every fallible call. */
typedef int32_t adm_status;
#define ADM_OK                   0 /**< success */
#define ADM_ERR_INVALID_ARGUMENT 1 /**< NULL pointer, bad value, bad struct_size */
#define ADM_ERR_IO               2 /**< a file could not be read or written */
#define ADM_ERR_PARSE            3 /**< malformed or invalid ONNX model */
#define ADM_ERR_UNSUPPORTED      4 /**< an op or attribute adamant does not run */
#define ADM_ERR_SHAPE            5 /**< wrong batch shape or buffer length */
#define ADM_ERR_DOMAIN           6 /**< unknown BN domain, or domains that disagree */
#define ADM_ERR_INTERNAL         7 /**< a bug in adamant: please report it */
#define ADM_ERR_RESOURCE         8 /**< a context limit would be exceeded, or memory cannot be had */
#define ADM_ERR_CANCELLED        9 /**< cancelled from another thread (adm_context_cancel) */

/** Opaque model: graph, weights and every BN domain. Immutable, thread-safe. */
typedef struct adm_model adm_model;
/** Opaque per-thread execution context owning scratch memory. */
typedef struct adm_context adm_context;
/** Opaque accumulator that builds a new BN domain from data. */
typedef struct adm_calibrator adm_calibrator;

/* ------------------------------------------------------------------------ */
/* Library                                                                  */
/* ------------------------------------------------------------------------ */

/** Library version string, e.g. "0.1.0". Never NULL. */
const char *adm_version(void);

/** ABI version compiled into the library (compare with ADAMANT_ABI_VERSION). */
int32_t adm_abi_version(void);

/** Message describing the calling thread's last failure ("" if none). Never NULL. */
const char *adm_last_error(void);

/**
 * Describes the compute backend: BLAS library and version, the GEMM kernel
 * in use (e.g. "SkylakeX"), thread count, and CPU features (AVX2, AVX-512,
 * whether the OS enables AVX-512 state). Never NULL.
 */
const char *adm_backend_info(void);

/**
 * Sets the number of threads adamant's compute backend uses (0 = one per
 * online CPU, the default). Affects every model and context in the process.
 */
adm_status adm_set_num_threads(int32_t threads);

/**
 * Caps the instruction set of adamant's kernels for the whole process:
 * "avx512", "avx2", "scalar" (portable C), or "auto" / NULL for the highest
 * the CPU *and* the OS support (CPUID feature bits and XCR0). The environment
 * variable ADAMANT_ISA sets the same cap at start-up. adamant's own kernels
 * switch at once; the OpenBLAS kernel (SkylakeX, Haswell, Prescott) follows
 * the cap in force when OpenBLAS is first used and then stays for the
 * process, so set ADAMANT_ISA to cap both. Results are deterministic on
 * every path; different paths agree within float rounding, not bit for bit.
 * A level the machine lacks, or an unknown name, is ADM_ERR_INVALID_ARGUMENT
 * and leaves the cap unchanged. (An unusable ADAMANT_ISA makes model loading
 * fail with that message.)
 */
adm_status adm_set_isa(const char *isa);

/** The instruction-set level in force: "avx512", "avx2" or "scalar". Never NULL. */
const char *adm_isa(void);

/** The highest level this CPU and OS support: "avx512", "avx2" or "scalar". Never NULL. */
const char *adm_isa_supported(void);

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * Options for loading a model. Initialise with adm_load_options_default().
 * mean/std override the preprocessing stored in the model (NULL = keep the
 * stored one; models without one get no normalization). Their length must
 * equal the model's input channels.
 *
 * memory_limit (bytes, 0 = none) caps the model's memory: its weights as
 * adamant stores them (packed, with the Winograd forms of the layers that use
 * them) plus, for each call on a context, the activations, gradients, kernel
 * scratch and working copies that call needs, estimated from the plan for
 * its batch before anything is allocated. Loading a model whose weights
 * exceed it fails with ADM_ERR_RESOURCE; so does a call (predict, gradient,
 * attack) whose batch would push past it. The cap holds per context: N
 * contexts running at once may use N x the activations. (Appended in 0.1.0:
 * a struct_size without this field is still accepted and means no cap.)
 */
typedef struct adm_load_options {
    size_t struct_size;          /**< sizeof(adm_load_options) */
    const float *mean;           /**< per-channel mean in pixel units, or NULL */
    size_t mean_len;             /**< length of mean */
    const float *std;            /**< per-channel std in pixel units, or NULL */
    size_t std_len;              /**< length of std */
    int32_t set_pixel_range;     /**< non-zero: use pixel_min/pixel_max below */
    float pixel_min;             /**< lowest valid pixel value (default 0) */
    float pixel_max;             /**< highest valid pixel value (default 1) */
    const char *default_domain;  /**< NULL = keep the model's default domain */
    size_t memory_limit;         /**< bytes for weights + one call's activations; 0 = no cap (default) */
} adm_load_options;

/** Fills *opts with defaults (no overrides). */
void adm_load_options_default(adm_load_options *opts);

/**
 * Loads a model from one ONNX file. The file is either a plain ONNX model
 * (one BN domain named "default") or adamant's single-file multi-domain
 * format (see README: extra BN tensors as initializers named
 * "adamant.domain.<domain>.<bn output>.<scale|bias|mean|var>" plus
 * metadata_props "adamant.domains", "adamant.default_domain",
 * "adamant.mean", "adamant.std", "adamant.pixel_range").
 * opts may be NULL. On success *out owns a new model.
 */
adm_status adm_model_load(const char *path, const adm_load_options *opts, adm_model **out);

/** Like adm_model_load, from bytes in memory (copied; the caller keeps data). */
adm_status adm_model_load_memory(const void *data, size_t len, const adm_load_options *opts,
                                 adm_model **out);

/**
 * Loads a set of per-domain ONNX exports of one network: names[i] is the
 * domain stored in paths[i]. The graphs and every non-BN tensor must be
 * identical; otherwise ADM_ERR_DOMAIN names the first difference. A network
 * without BatchNormalization nodes (BN folded at export) cannot carry more
 * than one domain and is rejected. The first name is the default domain
 * unless opts->default_domain says otherwise.
 */
adm_status adm_model_load_domains(const char *const *names, const char *const *paths, size_t count,
                                  const adm_load_options *opts, adm_model **out);

/** Releases a model. NULL is allowed. Contexts made from it must be freed first. */
void adm_model_free(adm_model *model);

/** Writes the model, with all its domains and preprocessing, as one ONNX file
 *  that ONNX Runtime runs unchanged with the default domain. */
adm_status adm_model_save(const adm_model *model, const char *path);

/* ------------------------------------------------------------------------ */
/* Importing checkpoints                                                    */
/* ------------------------------------------------------------------------ */

/**
 * Converts a tensorpack .npz checkpoint of facebookresearch/ImageNet-Adversarial-Training
 * into an ONNX model written to `output` (what `adamant import tensorpack` does).
 * arch: "resnet50", "resnet101", "resnet152", "resnet152-denoise" or
 * "resnext101-denoiseall". blocks: NULL for the architecture's depth, or 4
 * counts per group (a depth-reduced variant; n_blocks must then be 4).
 * input_size: input height and width (0 = 224). The model takes BGR pixels
 * in [0, 255]; its normalization, pixel range and channel order are stored
 * as metadata. A missing, misshaped or unused variable is ADM_ERR_SHAPE
 * naming it; an unreadable checkpoint ADM_ERR_IO; a corrupt one ADM_ERR_PARSE.
 */
adm_status adm_import_tensorpack(const char *checkpoint, const char *arch, const int32_t *blocks,
                                 size_t n_blocks, int32_t input_size, const char *output);

/* ------------------------------------------------------------------------ */
/* Introspection                                                            */
/* ------------------------------------------------------------------------ */

/** Number of BN domains (>= 1). */
adm_status adm_model_domain_count(const adm_model *model, size_t *out);

/** Name of domain `index`; the string lives as long as the model. */
adm_status adm_model_domain_name(const adm_model *model, size_t index, const char **out);

/** Index of the domain called `name` (ADM_ERR_DOMAIN if there is none). */
adm_status adm_model_domain_index(const adm_model *model, const char *name, size_t *out);

/** Index of the default domain. */
adm_status adm_model_default_domain(const adm_model *model, size_t *out);

/** Per-sample input shape: channels, height, width. */
adm_status adm_model_input_shape(const adm_model *model, size_t *channels, size_t *height,
                                 size_t *width);

/** Number of output classes (logits per sample). */
adm_status adm_model_num_classes(const adm_model *model, size_t *out);

/** Valid pixel range [lo, hi] that attacks clip to. */
adm_status adm_model_pixel_range(const adm_model *model, float *lo, float *hi);

/**
 * Channel order of the model's input: "rgb" (the default) or "bgr" (metadata
 * "adamant.channel_order", e.g. the tensorpack imports). Static string.
 */
adm_status adm_model_channel_order(const adm_model *model, const char **out);

/**
 * A JSON description of the model (inputs, classes, domains, op counts,
 * parameters, FLOPs per sample, preprocessing). Writes at most buf_len bytes
 * including the terminating NUL into buf (may be NULL when buf_len is 0) and
 * always sets *needed to the full length including the NUL. Returns
 * ADM_ERR_INVALID_ARGUMENT if buf_len < *needed (buf then holds nothing useful).
 */
adm_status adm_model_info_json(const adm_model *model, char *buf, size_t buf_len, size_t *needed);

/* ------------------------------------------------------------------------ */
/* Contexts and inference                                                   */
/* ------------------------------------------------------------------------ */

/** Creates a context for `model` (which must outlive it). */
adm_status adm_context_create(const adm_model *model, adm_context **out);

/** Releases a context. NULL is allowed. */
void adm_context_free(adm_context *ctx);

/**
 * What one call on a context may ask for. Initialise with
 * adm_context_limits_default(); 0 in a field means "no limit". Every call
 * (predict, gradient, attack) checks them before it allocates anything and
 * fails with ADM_ERR_RESOURCE, naming the limit, when one is exceeded. A
 * call whose input's working copies (2 x batch x C x H x W floats) the
 * system refuses to allocate, or whose activations (estimated from the
 * plan, as for adm_load_options.memory_limit) exceed the memory the system
 * has available, is ADM_ERR_RESOURCE too, whatever the limits; so is a
 * buffer whose allocation fails during the call.
 */
typedef struct adm_context_limits {
    size_t struct_size;            /**< sizeof(adm_context_limits) */
    size_t max_batch;              /**< images per call (default 65536) */
    size_t max_pixels_per_image;   /**< H x W of the model's input (default 4096 x 4096 = 16777216) */
    size_t max_attack_steps_total; /**< PGD steps x restarts per call (APGD: x APGD-T targets) (default 100000) */
    size_t max_input_bytes;        /**< batch x C x H x W x 4 bytes per call (default 4 GiB) */
} adm_context_limits;

/** Fills *limits with the defaults that a new context has. */
void adm_context_limits_default(adm_context_limits *limits);

/**
 * Sets ctx's limits (limits == NULL restores the defaults). Call it from the
 * thread that uses ctx. A bad struct_size is ADM_ERR_INVALID_ARGUMENT.
 */
adm_status adm_context_set_limits(adm_context *ctx, const adm_context_limits *limits);

/** Reads ctx's limits into *out (out->struct_size must be set, e.g. by adm_context_limits_default). */
adm_status adm_context_get_limits(const adm_context *ctx, adm_context_limits *out);

/**
 * Asks the call running on ctx to stop. The one function that may be called
 * from another thread than the one using ctx (ctx must stay alive until it
 * returns). It sets a flag that every call checks between two ops of each
 * forward and backward pass (adm_predict, adm_gradient, adm_gradient_targeted)
 * and once per step (adm_attack_pgd, adm_attack_apgd, adm_autoattack_lite):
 * the call then returns ADM_ERR_CANCELLED and writes nothing to its outputs
 * (logits, loss, grad, x_adv, outputs). The flag is cleared when the next call
 * on ctx starts, so a cancel that arrives while no call runs has no effect.
 */
adm_status adm_context_cancel(adm_context *ctx);

/**
 * Runs inference on `batch` images through BN domain `domain`.
 * x: batch*C*H*W floats (x_len), pixel space. logits: batch*classes floats.
 */
adm_status adm_predict(adm_context *ctx, size_t domain, const float *x, size_t x_len, size_t batch,
                       float *logits, size_t logits_len);

/* ------------------------------------------------------------------------ */
/* Gradients                                                                */
/* ------------------------------------------------------------------------ */

/** Per-sample losses. Each sample's gradient depends on that sample alone. */
typedef int32_t adm_loss;
/** Cross-entropy of softmax(logits) against label: -log p_label. */
#define ADM_LOSS_CE 0
/** Carlini-Wagner margin: max_{j != label} z_j - z_label (> 0 means misclassified). */
#define ADM_LOSS_CW 1
/**
 * Difference of logits ratio (Croce & Hein 2020), untargeted:
 * -(z_label - max_{j != label} z_j) / (z_pi1 - z_pi3 + 1e-12), with z_pi1 >= z_pi2 >= ...
 * the sorted logits. Needs at least 3 classes.
 */
#define ADM_LOSS_DLR 2
/**
 * Targeted DLR: -(z_label - z_target) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Needs a target
 * per sample (adm_gradient_targeted; adm_gradient rejects it) and at least 4 classes.
 */
#define ADM_LOSS_DLR_TARGETED 3

/**
 * Computes, for each sample, loss(model(x), label) through BN domain
 * `domain` (inference mode) and its gradient with respect to the pixel-space
 * input. loss_out (batch floats) may be NULL; grad (x_len floats) may be
 * NULL. Labels must lie in [0, classes).
 */
adm_status adm_gradient(adm_context *ctx, size_t domain, adm_loss loss, const float *x, size_t x_len,
                        size_t batch, const int64_t *labels, size_t labels_len, float *loss_out,
                        size_t loss_len, float *grad, size_t grad_len);

/**
 * adm_gradient with a target per sample, for ADM_LOSS_DLR_TARGETED: targets
 * (targets_len == batch, each in [0, classes)) must be given with that loss
 * and must be NULL (targets_len 0) with the others.
 */
adm_status adm_gradient_targeted(adm_context *ctx, size_t domain, adm_loss loss, const float *x,
                                 size_t x_len, size_t batch, const int64_t *labels, size_t labels_len,
                                 const int64_t *targets, size_t targets_len, float *loss_out,
                                 size_t loss_len, float *grad, size_t grad_len);

/**
 * Vector-Jacobian product of the logits, for a reverse-mode framework's backward: for
 * each sample i, grad[i] = d/dx_i sum_j grad_logits[i*classes + j] * logits_j(x_i), the
 * input gradient of any function of the logits whose gradient with respect to them is
 * grad_logits, through BN domain `domain` (inference mode), in pixel space (through the
 * model's normalization). grad_logits: batch*classes finite floats (grad_logits_len).
 * grad: x_len floats, required. logits: batch*classes floats or NULL (logits_len 0): the
 * forward pass's logits, as adm_predict returns them.
 */
adm_status adm_vjp(adm_context *ctx, size_t domain, const float *x, size_t x_len, size_t batch,
                   const float *grad_logits, size_t grad_logits_len, float *logits, size_t logits_len,
                   float *grad, size_t grad_len);

/* ------------------------------------------------------------------------ */
/* Attacks                                                                  */
/* ------------------------------------------------------------------------ */

/** Threat-model norm. */
typedef int32_t adm_norm;
#define ADM_NORM_LINF 0 /**< L-infinity ball, sign-gradient steps */
#define ADM_NORM_L2   1 /**< L2 ball, normalized-gradient steps */

/** How targets are chosen. */
typedef int32_t adm_target_mode;
#define ADM_UNTARGETED     0 /**< ascend the loss on the true label */
#define ADM_TARGETED       1 /**< descend the loss on caller-given targets */
#define ADM_TARGETED_RANDOM 2 /**< targets drawn uniformly among the wrong classes */
#define ADM_TARGETED_TOP_K 3  /**< APGD only (APGD-T): each of the n_target_classes wrong classes
                                   with the largest clean logits in turn; success = misclassified */

/**
 * PGD configuration. Names and defaults follow torchattacks' PGD:
 * eps=8/255, alpha=2/255, steps=10, random_start=1. eps and alpha are in
 * pixel units. FGSM is steps=1, alpha=eps, random_start=0.
 */
typedef struct adm_attack_config {
    size_t struct_size;          /**< sizeof(adm_attack_config) */
    adm_norm norm;               /**< ADM_NORM_LINF (default) or ADM_NORM_L2 */
    float eps;                   /**< radius of the ball (> 0) */
    float alpha;                 /**< step size (> 0) */
    int32_t steps;               /**< PGD iterations (>= 1) */
    int32_t random_start;        /**< non-zero: start uniformly in the ball */
    int32_t restarts;            /**< independent runs; per sample the strongest is kept (>= 1) */
    adm_loss loss;               /**< ADM_LOSS_CE (default) or ADM_LOSS_CW */
    adm_target_mode target_mode; /**< ADM_UNTARGETED (default), ADM_TARGETED, ADM_TARGETED_RANDOM */
    const int64_t *targets;      /**< ADM_TARGETED: batch target labels, each != label; must be
                                      NULL (and targets_len 0) with the other modes, else
                                      ADM_ERR_INVALID_ARGUMENT (targets are never silently ignored) */
    size_t targets_len;          /**< length of targets */
    int32_t early_stop;          /**< non-zero: stop a sample once it succeeds (default 0) */
    size_t attack_domain;        /**< BN domain used to compute gradients */
    size_t eval_domain;          /**< BN domain used to judge success */
    uint64_t seed;               /**< RNG seed (random start, random targets) */
    uint64_t sample_offset;      /**< index of x[0] in the caller's whole set (default 0): sample i
                                      draws its random start and random target from stream
                                      (seed, sample_offset + i), so splitting a set into batches
                                      never changes any result */
} adm_attack_config;

/** Fills *cfg with torchattacks-compatible defaults; both domains 0, seed 0, sample_offset 0. */
void adm_attack_config_default(adm_attack_config *cfg);

/**
 * Optional per-sample outputs of an attack. Any pointer may be NULL; the
 * non-NULL ones must hold `len` == batch elements.
 */
typedef struct adm_attack_outputs {
    size_t struct_size;   /**< sizeof(adm_attack_outputs) */
    size_t len;           /**< batch size of every array below */
    uint8_t *success;     /**< 1 if the attack succeeded under eval_domain */
    float *loss;          /**< final loss (attack_domain) of the kept example */
    int32_t *steps_used;  /**< steps run for the kept example */
    int64_t *targets;     /**< target per sample (-1 when untargeted) */
    int64_t *predictions; /**< eval_domain prediction on the adversarial example */
} adm_attack_outputs;

/**
 * Runs PGD on `batch` images x with true labels, writing adversarial images
 * to x_adv (x_len floats; x_adv may be the same buffer as x). Success means prediction !=
 * label (untargeted) or prediction == target (targeted), judged with
 * eval_domain. Deterministic for a given seed and sample_offset: the result for a sample never
 * depends on its batch-mates, the batch size or the thread count.
 * outputs may be NULL. steps x restarts must not exceed the context's
 * max_attack_steps_total (ADM_ERR_RESOURCE); adm_context_cancel from another
 * thread stops the attack within one step (ADM_ERR_CANCELLED).
 */
adm_status adm_attack_pgd(adm_context *ctx, const adm_attack_config *cfg, const float *x,
                          size_t x_len, size_t batch, const int64_t *labels, size_t labels_len,
                          float *x_adv, size_t x_adv_len, adm_attack_outputs *outputs);

/* ------------------------------------------------------------------------ */
/* Auto-PGD (APGD) and AutoAttack-lite                                      */
/* ------------------------------------------------------------------------ */

/**
 * APGD configuration (Croce & Hein, ICML 2020; semantics of AutoAttack's
 * APGD and torchattacks' APGD/APGDT). Step size 2*eps at first, halved at
 * checkpoints (after 22 % of the steps, then at intervals shrinking by 3 %
 * of the steps down to 6 %) where the loss rose in at most rho of the steps
 * since the last checkpoint, or where the step was not halved last time and
 * the best loss did not improve; a halving restarts from the best point.
 * Momentum 0.75 (none on the first step). Defaults: AutoAttack's APGD-CE,
 * L-inf, eps 8/255, 100 steps, 1 restart, rho 0.75, random start,
 * n_target_classes 9, early_stop 1.
 */
typedef struct adm_apgd_config {
    size_t struct_size;          /**< sizeof(adm_apgd_config) */
    adm_norm norm;               /**< ADM_NORM_LINF (default) or ADM_NORM_L2 */
    float eps;                   /**< radius of the ball, pixel units (> 0, finite) */
    int32_t steps;               /**< iterations per run (>= 1) */
    int32_t restarts;            /**< runs per target, each from its own random start (>= 1); a
                                      sample that succeeded is not attacked again */
    adm_loss loss;               /**< ADM_LOSS_CE (default), ADM_LOSS_CW or ADM_LOSS_DLR; targeted
                                      modes with ADM_LOSS_DLR use targeted DLR (APGD-T) */
    adm_target_mode target_mode; /**< ADM_UNTARGETED (default), ADM_TARGETED, ADM_TARGETED_RANDOM
                                      or ADM_TARGETED_TOP_K */
    const int64_t *targets;      /**< ADM_TARGETED only: batch targets, each != label; NULL and
                                      targets_len 0 otherwise (else ADM_ERR_INVALID_ARGUMENT) */
    size_t targets_len;          /**< length of targets */
    int32_t n_target_classes;    /**< ADM_TARGETED_TOP_K and adm_autoattack_lite: targets per
                                      sample (>= 1, capped at classes - 1; default 9) */
    float rho;                   /**< checkpoint threshold in [0, 1] (default 0.75) */
    int32_t random_start;        /**< non-zero (default): start at a random point of the ball */
    int32_t early_stop;          /**< non-zero (default): a sample stops at its first success
                                      (its result is that point); 0: it runs every step */
    size_t attack_domain;        /**< BN domain used to compute gradients */
    size_t eval_domain;          /**< BN domain used to judge success */
    uint64_t seed;               /**< RNG seed (random starts, random targets) */
    uint64_t sample_offset;      /**< index of x[0] in the caller's whole set (as in adm_attack_config) */
} adm_apgd_config;

/** Fills *cfg with the defaults above; both domains 0, seed 0, sample_offset 0. */
void adm_apgd_config_default(adm_apgd_config *cfg);

/**
 * Runs APGD on `batch` images, writing adversarial images to x_adv (x_len
 * floats; may be the same buffer as x) and, if outputs is not NULL, per-sample
 * results (as adm_attack_pgd; loss is the objective the attack ascends: CE,
 * -CE(target), CW, DLR or targeted DLR). Samples already misclassified (or
 * on target) are not attacked (success, 0 steps, the clean image); a sample
 * that never succeeds gets its highest-loss point. Success: prediction !=
 * label (ADM_UNTARGETED, ADM_TARGETED_TOP_K) or == target (ADM_TARGETED,
 * ADM_TARGETED_RANDOM), judged with eval_domain. Deterministic per seed and
 * sample_offset, independent of batch-mates, batch size and threads.
 * steps x restarts (x the targets of ADM_TARGETED_TOP_K) must not exceed the
 * context's max_attack_steps_total (ADM_ERR_RESOURCE); adm_context_cancel
 * stops it within one step (ADM_ERR_CANCELLED).
 */
adm_status adm_attack_apgd(adm_context *ctx, const adm_apgd_config *cfg, const float *x,
                           size_t x_len, size_t batch, const int64_t *labels, size_t labels_len,
                           float *x_adv, size_t x_adv_len, adm_attack_outputs *outputs);

/** Robust counts after each member of adm_autoattack_lite (AutoAttack's log). */
typedef struct adm_autoattack_report {
    size_t struct_size;          /**< sizeof(adm_autoattack_report), set by the caller */
    size_t images;               /**< images attacked (batch) */
    size_t clean_correct;        /**< correctly classified clean images (eval_domain) */
    size_t robust_after_apgd_ce; /**< still correct after APGD-CE */
    size_t robust_after_apgd_t;  /**< still correct after APGD-CE then APGD-T: the robust count */
} adm_autoattack_report;

/**
 * AutoAttack without FAB-T and Square: APGD-CE (untargeted cross-entropy) on
 * every image, then APGD-T (targeted DLR over the n_target_classes most
 * likely wrong classes) on the images still robust; per sample the first
 * success is kept. cfg supplies norm, eps, steps, restarts, rho, n_target_classes,
 * random_start, early_stop, domains, seed and sample_offset; cfg->loss must
 * be ADM_LOSS_CE and cfg->target_mode ADM_UNTARGETED (or ADM_TARGETED_TOP_K),
 * targets NULL. report (required, struct_size set) receives the counts; x_adv
 * and outputs as in adm_attack_apgd (success = misclassified; targets holds
 * the APGD-T target of the kept example, -1 for APGD-CE's). The step budget
 * checked against max_attack_steps_total is steps x restarts x (1 + targets).
 */
adm_status adm_autoattack_lite(adm_context *ctx, const adm_apgd_config *cfg, const float *x,
                               size_t x_len, size_t batch, const int64_t *labels, size_t labels_len,
                               float *x_adv, size_t x_adv_len, adm_attack_outputs *outputs,
                               adm_autoattack_report *report);

/* ------------------------------------------------------------------------ */
/* Calibration: build a new BN domain from data                             */
/* ------------------------------------------------------------------------ */

/**
 * Starts building a new BN domain from model's `base_domain`: affine
 * parameters are copied from the base; running mean/var are re-estimated
 * from the batches added (each BN normalizes with its batch's statistics, as
 * in training mode; the per-batch means and unbiased variances are averaged
 * with equal weight per image). Fails with ADM_ERR_UNSUPPORTED for models
 * without BatchNormalization nodes.
 */
adm_status adm_calibrator_create(const adm_model *model, size_t base_domain, adm_calibrator **out);

/** Adds `batch` (>= 2) pixel-space images to the statistics (the default adm_context_limits apply). */
adm_status adm_calibrator_add(adm_calibrator *cal, const float *x, size_t x_len, size_t batch);

/**
 * Returns a new model: `model`'s domains plus domain `name` (which must not
 * exist yet) with the estimated statistics. The calibrator stays usable.
 */
adm_status adm_calibrator_finish(adm_calibrator *cal, const char *name, adm_model **out);

/** Releases a calibrator. NULL is allowed. */
void adm_calibrator_free(adm_calibrator *cal);

#ifdef __cplusplus
}
#endif

#endif /* ADAMANT_H */
