/* augment: training-time data augmentation on a float batch in NCHW layout (contiguous
 * B x C x H x W), in place: random crop, horizontal flip, random erasing, mosaic, MixUp, CutMix.
 * Every random choice comes from the caller's rng_t, so the same seed gives the same batch. */
#ifndef FEDNAS_ENGINE_AUGMENT_H
#define FEDNAS_ENGINE_AUGMENT_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "common/rng.h"

/* Labels: the batch's hard labels are uint8 in [0, K), K <= 256, as in engine_dataset_t and the
 * batcher; the mixing steps work on soft labels,
 * B x K floats, row-major, each row summing to 1, so the loss is the cross-entropy against a
 * distribution. The functions that take an err_t return 0 or FN_EINVAL (bad sizes, labels or
 * probabilities); scratch memory comes from FN_MALLOC. */

typedef struct engine_augment_config {
    int crop_padding;        /* random_crop: zero-pad by this much, crop back to H x W; 0: off */
    double hflip_p;          /* probability of flipping each image; 0: off */
    double erase_p;          /* random erasing probability per image; 0: off */
    double erase_area[2];    /* box area as a fraction of the image (0.02, 0.33) */
    double erase_aspect[2];  /* box height / width (0.3, 3.3) */
    int erase_random;        /* 1: fill with U[0,1) per pixel (pixels are in [0,1]); 0: erase_value */
    float erase_value;
    double mosaic_p;         /* probability per image of becoming a 4-image mosaic; 0: off */
    double mixup_alpha;      /* Beta(alpha, alpha); 0: off */
    double mixup_p;          /* probability per batch (1) */
    double cutmix_alpha;     /* 0: off */
    double cutmix_p;         /* probability per batch (1) */
} engine_augment_config_t;

/* Everything off; erasing ranges at the paper's defaults. */
void engine_augment_config_default(engine_augment_config_t *cfg);

/* Parses a JSON object such as
 *   {"random_crop": {"padding": 4}, "hflip": true, "random_erasing": {"p": 0.5},
 *    "mosaic": {"p": 0.5}, "mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0, "p": 0.5}}
 * Keys and their defaults:
 *   random_crop    {"padding": int >= 0 (4)}
 *   hflip          true (p = 0.5), false, or {"p": [0,1]}
 *   random_erasing true (the defaults), false, or {"p": [0,1] (0.5), "area": [lo, hi] (0.02, 0.33),
 *                  "aspect": [lo, hi] (0.3, 3.3), "value": number (0) or "random"}
 *   mosaic         true (p = 1), false, or {"p": [0,1]}
 *   mixup, cutmix  {"alpha": number > 0 (required), "p": [0,1] (1)}
 * Unknown keys and bad values are FN_EINVAL naming the JSON path ("augment.mixup.alpha: ...").
 * `where` names the object in messages (NULL: "augment"). */
int engine_augment_config_from_json(const json_t *obj, const char *where, engine_augment_config_t *cfg,
                                    err_t *err);
/* The same from JSON text. */
int engine_augment_config_parse(const char *json_text, engine_augment_config_t *cfg, err_t *err);

/* Applies the configured pipeline: per image random crop, flip and erasing, then mosaic, then
 * MixUp or CutMix for the whole batch (when both are configured each batch takes one of them,
 * with probability 1/2, as timm does). Writes soft labels (B x K) to `soft`; labels must be in
 * [0, K). With nothing configured, x is unchanged and soft is one-hot. */
int engine_augment_apply(const engine_augment_config_t *cfg, float *x, int B, int C, int H, int W,
                         const uint8_t *labels, int K, rng_t *r, float *soft, err_t *err);

/* The label-preserving part of the pipeline (random crop, flip, erasing) with the signature of
 * the batcher's augmentation callback (engine/data.h: engine_augment_fn), ctx being a
 * const engine_augment_config_t *. MixUp, CutMix and mosaic change labels into soft labels,
 * which that callback cannot return: see engine_augment_mix. */
void engine_augment_images(void *cfg, float *x, const uint8_t *labels, int n, int c, int h, int w, rng_t *rng);

/* The whole pipeline (engine_augment_apply) with the signature of the batcher's label-mixing
 * callback (engine/data.h: engine_mix_fn), ctx being a const engine_augment_config_t *: the
 * batcher then hands out each batch with its soft labels, built in its prefetch thread.
 * engine_model_train wires this up from engine_train_config_t.aug. */
int engine_augment_mix(void *cfg, float *x, const uint8_t *labels, int n, int c, int h, int w, int K, rng_t *rng,
                       float *soft, err_t *err);

/* 1 when cfg turns on mosaic, MixUp or CutMix, the steps that make soft labels. */
int engine_augment_mixes_labels(const engine_augment_config_t *cfg);
/* 1 when cfg turns on random crop, flip or erasing, the steps that keep labels. */
int engine_augment_changes_images(const engine_augment_config_t *cfg);

/* ---- the steps, for callers (and tests) that compose their own pipeline ---- */

/* A box in an image: rows [y, y+h), columns [x, x+w); h = w = 0 is no box. */
typedef struct engine_augment_box {
    int y, x, h, w;
} engine_augment_box_t;

/* soft[i] = one-hot(labels[i]) over K classes. */
int engine_augment_one_hot(const uint8_t *labels, int B, int K, float *soft, err_t *err);

/* Zero-pads each image by `pad` on every side and crops an H x W window at a uniformly drawn
 * position (as torchvision's RandomCrop(padding=pad)). The content of image i moves down by
 * shifts[2i] and right by shifts[2i+1], each in [-pad, pad]; shifts may be NULL. */
int engine_augment_random_crop(float *x, int B, int C, int H, int W, int pad, rng_t *r, int *shifts,
                               err_t *err);

/* Mirrors each image left-right with probability p; flipped[i] (may be NULL) says which. */
int engine_augment_hflip(float *x, int B, int C, int H, int W, double p, rng_t *r, uint8_t *flipped,
                         err_t *err);

/* Random erasing (Zhong et al., AAAI 2020): with probability erase_p per image, draws an area
 * fraction uniformly from erase_area and an aspect ratio log-uniformly from erase_aspect (as
 * timm, so tall and wide boxes are equally likely), rounds to a box, and retries (up to 100
 * times) until the box fits and its rounded area still lies in the area range; then fills it in
 * every channel. boxes[i] (may be NULL) receives the box, zero-sized when nothing was erased. */
int engine_augment_random_erasing(float *x, int B, int C, int H, int W, const engine_augment_config_t *cfg,
                                  rng_t *r, engine_augment_box_t *boxes, err_t *err);

/* Beta(a, b) as G_a / (G_a + G_b) with two gamma draws. */
double engine_augment_beta(rng_t *r, double a, double b);

/* MixUp (Zhang et al., ICLR 2018): lambda ~ Beta(alpha, alpha), one per batch; image i becomes
 * lambda * x_i + (1 - lambda) * x_perm(i) for a random permutation, and its soft label the same
 * mix of the two soft labels (soft is read and written). lambda_out may be NULL. */
int engine_augment_mixup(float *x, float *soft, int B, int C, int H, int W, int K, double alpha, rng_t *r,
                         double *lambda_out, err_t *err);

/* CutMix (Yun et al., ICCV 2019): lambda ~ Beta(alpha, alpha); one box per batch of about
 * (1 - lambda) of the image, centred uniformly and clipped at the borders, is pasted from
 * x_perm(i) into x_i. lambda is then recomputed from the clipped box's exact pixel count, so the
 * soft labels equal the pixel proportions. box and lambda_out may be NULL. */
int engine_augment_cutmix(float *x, float *soft, int B, int C, int H, int W, int K, double alpha, rng_t *r,
                          engine_augment_box_t *box, double *lambda_out, err_t *err);

/* Mosaic (as YOLOv4's, for classification): with probability p, image i is rebuilt from four
 * quadrants around a centre drawn uniformly from the middle half of each axis; the top-left
 * quadrant keeps image i, the others come from three images drawn uniformly from the batch
 * (each quadrant shows its source's pixels at the same positions: a crop, no resizing). The soft
 * label is the area-weighted mix of the four sources' soft labels. */
int engine_augment_mosaic(float *x, float *soft, int B, int C, int H, int W, int K, double p, rng_t *r,
                          err_t *err);

#endif
