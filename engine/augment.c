#include "engine/augment.h"

#include <math.h>
#include <string.h>

#define ERASE_MAX_TRIES 100

static int check_dims(const char *what, int B, int C, int H, int W, err_t *err)
{
    if (B < 1 || C < 1 || H < 1 || W < 1)
        return err_set(err, FN_EINVAL, "%s: batch dimensions must be >= 1 (got B=%d C=%d H=%d W=%d)", what, B,
                       C, H, W);
    if ((double)B * C * H * W > (double)SIZE_MAX / sizeof(float))
        return err_set(err, FN_EINVAL, "%s: batch of %d x %d x %d x %d is too large", what, B, C, H, W);
    return FN_OK;
}

static int check_prob(const char *what, double p, err_t *err)
{
    if (!(p >= 0.0 && p <= 1.0))
        return err_set(err, FN_EINVAL, "%s: probability %g is not in [0, 1]", what, p);
    return FN_OK;
}

void engine_augment_config_default(engine_augment_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->erase_area[0] = 0.02;
    cfg->erase_area[1] = 0.33;
    cfg->erase_aspect[0] = 0.3;
    cfg->erase_aspect[1] = 3.3;
    cfg->mixup_p = 1.0;
    cfg->cutmix_p = 1.0;
}

/* ---------------------------------------------------------------- config */

static int unknown_keys(const json_t *obj, const char *where, const char *const *known, err_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            char list[256] = "";
            for (int i = 0; known[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, known[i], sizeof list - strlen(list) - 1);
            }
            return err_set(err, FN_EINVAL, "%s: unknown key \"%s\" (expected one of: %s)", where, k, list);
        }
    }
    return FN_OK;
}

static int get_prob(const json_t *obj, const char *where, const char *key, double *out, err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return FN_OK;
    if (!json_is_number(v) || json_number_value(v) < 0.0 || json_number_value(v) > 1.0)
        return err_set(err, FN_EINVAL, "%s.%s: expected a probability in [0, 1]", where, key);
    *out = json_number_value(v);
    return FN_OK;
}

static int get_range(const json_t *obj, const char *where, const char *key, double max, double *out, err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return FN_OK;
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(json_array_get(v, 0)) ||
        !json_is_number(json_array_get(v, 1)))
        goto bad;
    double lo = json_number_value(json_array_get(v, 0)), hi = json_number_value(json_array_get(v, 1));
    if (!(lo > 0.0 && lo <= hi && hi <= max))
        goto bad;
    out[0] = lo;
    out[1] = hi;
    return FN_OK;
bad:
    if (max < INFINITY)
        return err_set(err, FN_EINVAL, "%s.%s: expected [lo, hi] with 0 < lo <= hi <= %g", where, key, max);
    return err_set(err, FN_EINVAL, "%s.%s: expected [lo, hi] with 0 < lo <= hi", where, key);
}

/* true / false / {"p": ...}: the shorthand most configs use for on-off steps. */
static int get_switch(const json_t *v, const char *where, double p_true, double *p, err_t *err)
{
    static const char *const keys[] = {"p", NULL};
    if (json_is_boolean(v)) {
        *p = json_is_true(v) ? p_true : 0.0;
        return FN_OK;
    }
    if (!json_is_object(v))
        return err_set(err, FN_EINVAL, "%s: expected true, false or {\"p\": probability}", where);
    *p = p_true;
    int rc = unknown_keys(v, where, keys, err);
    return rc ? rc : get_prob(v, where, "p", p, err);
}

static int get_mix(const json_t *v, const char *where, double *alpha, double *p, err_t *err)
{
    static const char *const keys[] = {"alpha", "p", NULL};
    if (!json_is_object(v))
        return err_set(err, FN_EINVAL, "%s: expected an object {\"alpha\": number > 0, \"p\": probability}", where);
    int rc = unknown_keys(v, where, keys, err);
    if (rc)
        return rc;
    json_t *a = json_object_get(v, "alpha");
    if (!a || !json_is_number(a) || !(json_number_value(a) > 0.0) || !isfinite(json_number_value(a)))
        return err_set(err, FN_EINVAL, "%s.alpha: expected a number > 0", where);
    *alpha = json_number_value(a);
    *p = 1.0;
    return get_prob(v, where, "p", p, err);
}

int engine_augment_config_from_json(const json_t *obj, const char *where, engine_augment_config_t *cfg,
                                    err_t *err)
{
    static const char *const top_keys[] = {"random_crop", "hflip", "random_erasing", "mosaic", "mixup", "cutmix",
                                           NULL};
    static const char *const crop_keys[] = {"padding", NULL};
    static const char *const erase_keys[] = {"p", "area", "aspect", "value", NULL};
    if (!where)
        where = "augment";
    engine_augment_config_t c;
    engine_augment_config_default(&c);
    if (!json_is_object(obj))
        return err_set(err, FN_EINVAL, "%s: expected an object", where);
    int rc = unknown_keys(obj, where, top_keys, err);
    if (rc)
        return rc;
    char path[256];
    json_t *v;
    if ((v = json_object_get(obj, "random_crop"))) {
        snprintf(path, sizeof path, "%s.random_crop", where);
        if (!json_is_object(v))
            return err_set(err, FN_EINVAL, "%s: expected an object {\"padding\": int >= 0}", path);
        if ((rc = unknown_keys(v, path, crop_keys, err)))
            return rc;
        c.crop_padding = 4;
        json_t *pad = json_object_get(v, "padding");
        if (pad) {
            if (!json_is_integer(pad) || json_integer_value(pad) < 0 || json_integer_value(pad) > 65536)
                return err_set(err, FN_EINVAL, "%s.padding: expected an integer in [0, 65536]", path);
            c.crop_padding = (int)json_integer_value(pad);
        }
    }
    if ((v = json_object_get(obj, "hflip"))) {
        snprintf(path, sizeof path, "%s.hflip", where);
        if ((rc = get_switch(v, path, 0.5, &c.hflip_p, err)))
            return rc;
    }
    if ((v = json_object_get(obj, "random_erasing"))) {
        snprintf(path, sizeof path, "%s.random_erasing", where);
        if (json_is_boolean(v)) {
            c.erase_p = json_is_true(v) ? 0.5 : 0.0;
        } else if (!json_is_object(v)) {
            return err_set(err, FN_EINVAL, "%s: expected true, false or an object", path);
        } else {
            c.erase_p = 0.5;
            if ((rc = unknown_keys(v, path, erase_keys, err)) || (rc = get_prob(v, path, "p", &c.erase_p, err)) ||
                (rc = get_range(v, path, "area", 1.0, c.erase_area, err)) ||
                (rc = get_range(v, path, "aspect", INFINITY, c.erase_aspect, err)))
                return rc;
            json_t *val = json_object_get(v, "value");
            if (val) {
                if (json_is_string(val) && strcmp(json_string_value(val), "random") == 0)
                    c.erase_random = 1;
                else if (json_is_number(val) && isfinite(json_number_value(val)))
                    c.erase_value = (float)json_number_value(val);
                else
                    return err_set(err, FN_EINVAL, "%s.value: expected a number or \"random\"", path);
            }
        }
    }
    if ((v = json_object_get(obj, "mosaic"))) {
        snprintf(path, sizeof path, "%s.mosaic", where);
        if ((rc = get_switch(v, path, 1.0, &c.mosaic_p, err)))
            return rc;
    }
    if ((v = json_object_get(obj, "mixup"))) {
        snprintf(path, sizeof path, "%s.mixup", where);
        if ((rc = get_mix(v, path, &c.mixup_alpha, &c.mixup_p, err)))
            return rc;
    }
    if ((v = json_object_get(obj, "cutmix"))) {
        snprintf(path, sizeof path, "%s.cutmix", where);
        if ((rc = get_mix(v, path, &c.cutmix_alpha, &c.cutmix_p, err)))
            return rc;
    }
    *cfg = c;
    return FN_OK;
}

int engine_augment_config_parse(const char *json_text, engine_augment_config_t *cfg, err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loads(json_text ? json_text : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_set(err, FN_EINVAL, "augment: invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                       jerr.text);
    int rc = engine_augment_config_from_json(root, "augment", cfg, err);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- per-image steps */

int engine_augment_one_hot(const uint8_t *labels, int B, int K, float *soft, err_t *err)
{
    if (B < 1 || K < 1 || K > 256)
        return err_set(err, FN_EINVAL, "augment: need B >= 1 and 1 <= K <= 256 (got %d, %d)", B, K);
    for (int i = 0; i < B; i++)
        if (labels[i] >= K)
            return err_set(err, FN_EINVAL, "augment: label %d of sample %d is not in [0, %d)", labels[i], i, K);
    memset(soft, 0, (size_t)B * (size_t)K * sizeof *soft);
    for (int i = 0; i < B; i++)
        soft[(size_t)i * K + labels[i]] = 1.0f;
    return FN_OK;
}

int engine_augment_random_crop(float *x, int B, int C, int H, int W, int pad, rng_t *r, int *shifts, err_t *err)
{
    int rc = check_dims("random_crop", B, C, H, W, err);
    if (rc)
        return rc;
    if (pad < 0)
        return err_set(err, FN_EINVAL, "random_crop: padding %d < 0", pad);
    size_t plane = (size_t)H * W;
    float *tmp = FN_MALLOC(plane * sizeof *tmp);
    for (int i = 0; i < B; i++) {
        /* The crop's top-left corner in padded coordinates is (oy, ox) in [0, 2 pad]; the
         * content then moves by pad - oy rows and pad - ox columns. */
        int dy = pad - (int)rng_below(r, (uint64_t)(2 * pad + 1));
        int dx = pad - (int)rng_below(r, (uint64_t)(2 * pad + 1));
        if (shifts)
            shifts[2 * i] = dy, shifts[2 * i + 1] = dx;
        if (dy == 0 && dx == 0)
            continue;
        for (int c = 0; c < C; c++) {
            float *p = x + ((size_t)i * C + c) * plane;
            memcpy(tmp, p, plane * sizeof *tmp);
            for (int y = 0; y < H; y++) {
                int sy = y - dy;
                for (int xx = 0; xx < W; xx++) {
                    int sx = xx - dx;
                    p[(size_t)y * W + xx] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? tmp[(size_t)sy * W + sx] : 0.0f;
                }
            }
        }
    }
    free(tmp);
    return FN_OK;
}

int engine_augment_hflip(float *x, int B, int C, int H, int W, double p, rng_t *r, uint8_t *flipped, err_t *err)
{
    int rc = check_dims("hflip", B, C, H, W, err);
    if (rc || (rc = check_prob("hflip", p, err)))
        return rc;
    for (int i = 0; i < B; i++) {
        int f = rng_uniform(r) < p;
        if (flipped)
            flipped[i] = (uint8_t)f;
        if (!f)
            continue;
        for (size_t row = 0; row < (size_t)C * H; row++) {
            float *q = x + ((size_t)i * C * H + row) * W;
            for (int a = 0, b = W - 1; a < b; a++, b--) {
                float t = q[a];
                q[a] = q[b];
                q[b] = t;
            }
        }
    }
    return FN_OK;
}

int engine_augment_random_erasing(float *x, int B, int C, int H, int W, const engine_augment_config_t *cfg,
                                  rng_t *r, engine_augment_box_t *boxes, err_t *err)
{
    int rc = check_dims("random_erasing", B, C, H, W, err);
    if (rc || (rc = check_prob("random_erasing", cfg->erase_p, err)))
        return rc;
    const double *ar = cfg->erase_area, *asp = cfg->erase_aspect;
    if (!(ar[0] > 0 && ar[0] <= ar[1] && ar[1] <= 1) || !(asp[0] > 0 && asp[0] <= asp[1]))
        return err_set(err, FN_EINVAL, "random_erasing: need 0 < area lo <= hi <= 1 and 0 < aspect lo <= hi");
    double hw = (double)H * W, la = log(asp[0]), lb = log(asp[1]);
    for (int i = 0; i < B; i++) {
        engine_augment_box_t box = {0, 0, 0, 0};
        if (rng_uniform(r) < cfg->erase_p) {
            for (int t = 0; t < ERASE_MAX_TRIES; t++) {
                double area = (ar[0] + (ar[1] - ar[0]) * rng_uniform(r)) * hw;
                double aspect = exp(la + (lb - la) * rng_uniform(r));
                int h = (int)lround(sqrt(area * aspect)), w = (int)lround(sqrt(area / aspect));
                double got = (double)h * w;
                /* Rounding can push a thin box out of the area range: retry instead, so the
                 * range is a guarantee. */
                if (h < 1 || w < 1 || h > H || w > W || got < ar[0] * hw || got > ar[1] * hw)
                    continue;
                box.h = h, box.w = w;
                box.y = (int)rng_below(r, (uint64_t)(H - h + 1));
                box.x = (int)rng_below(r, (uint64_t)(W - w + 1));
                break;
            }
        }
        if (boxes)
            boxes[i] = box;
        for (int c = 0; c < C && box.h > 0; c++)
            for (int y = box.y; y < box.y + box.h; y++) {
                float *q = x + (((size_t)i * C + c) * H + y) * W;
                for (int xx = box.x; xx < box.x + box.w; xx++)
                    q[xx] = cfg->erase_random ? (float)rng_uniform(r) : cfg->erase_value;
            }
    }
    return FN_OK;
}

/* ---------------------------------------------------------------- batch mixing */

double engine_augment_beta(rng_t *r, double a, double b)
{
    double x = rng_gamma(r, a), y = rng_gamma(r, b);
    /* With tiny alphas both draws can underflow to 0; Beta(a, b) then sits at 0 or 1. */
    if (!(x + y > 0.0))
        return rng_uniform(r) < a / (a + b) ? 1.0 : 0.0;
    return x / (x + y);
}

static int check_mix(const char *what, int B, int C, int H, int W, int K, double alpha, err_t *err)
{
    int rc = check_dims(what, B, C, H, W, err);
    if (rc)
        return rc;
    if (K < 1)
        return err_set(err, FN_EINVAL, "%s: need K >= 1 classes", what);
    if (!(alpha > 0.0) || !isfinite(alpha))
        return err_set(err, FN_EINVAL, "%s: alpha %g must be > 0", what, alpha);
    return FN_OK;
}

static int *random_perm(rng_t *r, int B)
{
    int *perm = FN_MALLOC((size_t)B * sizeof *perm);
    for (int i = 0; i < B; i++)
        perm[i] = i;
    rng_shuffle_int(r, perm, B);
    return perm;
}

static void mix_soft(float *soft, const float *orig, int i, int j, int K, double lam)
{
    for (int k = 0; k < K; k++)
        soft[(size_t)i * K + k] = (float)(lam * orig[(size_t)i * K + k] + (1.0 - lam) * orig[(size_t)j * K + k]);
}

int engine_augment_mixup(float *x, float *soft, int B, int C, int H, int W, int K, double alpha, rng_t *r,
                         double *lambda_out, err_t *err)
{
    int rc = check_mix("mixup", B, C, H, W, K, alpha, err);
    if (rc)
        return rc;
    double lam = engine_augment_beta(r, alpha, alpha);
    int *perm = random_perm(r, B);
    size_t img = (size_t)C * H * W;
    float *xo = FN_MALLOC((size_t)B * img * sizeof *xo), *so = FN_MALLOC((size_t)B * K * sizeof *so);
    memcpy(xo, x, (size_t)B * img * sizeof *xo);
    memcpy(so, soft, (size_t)B * K * sizeof *so);
    float l = (float)lam, m = (float)(1.0 - lam);
    for (int i = 0; i < B; i++) {
        const float *a = xo + (size_t)i * img, *b = xo + (size_t)perm[i] * img;
        float *o = x + (size_t)i * img;
        for (size_t k = 0; k < img; k++)
            o[k] = l * a[k] + m * b[k];
        mix_soft(soft, so, i, perm[i], K, lam);
    }
    if (lambda_out)
        *lambda_out = lam;
    free(xo), free(so), free(perm);
    return FN_OK;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

int engine_augment_cutmix(float *x, float *soft, int B, int C, int H, int W, int K, double alpha, rng_t *r,
                          engine_augment_box_t *box_out, double *lambda_out, err_t *err)
{
    int rc = check_mix("cutmix", B, C, H, W, K, alpha, err);
    if (rc)
        return rc;
    double lam = engine_augment_beta(r, alpha, alpha);
    /* The paper's rand_bbox: a box with sides sqrt(1 - lambda) of the image's, centred
     * uniformly, clipped at the borders. */
    double cut = sqrt(1.0 - lam);
    int ch = (int)(H * cut), cw = (int)(W * cut);
    int cy = (int)rng_below(r, (uint64_t)H), cx = (int)rng_below(r, (uint64_t)W);
    int y1 = clampi(cy - ch / 2, 0, H), y2 = clampi(cy + ch / 2, 0, H);
    int x1 = clampi(cx - cw / 2, 0, W), x2 = clampi(cx + cw / 2, 0, W);
    int *perm = random_perm(r, B);
    engine_augment_box_t box = {y1, x1, y2 - y1, x2 - x1};
    double lam_adj = 1.0 - (double)box.h * box.w / ((double)H * W);
    size_t bsz = (size_t)box.h * box.w;
    if (bsz > 0) {
        /* Only the boxes are read from other images, so only they are saved. */
        float *saved = FN_MALLOC((size_t)B * C * bsz * sizeof *saved);
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++)
                for (int y = 0; y < box.h; y++)
                    memcpy(saved + (((size_t)i * C + c) * box.h + y) * box.w,
                           x + (((size_t)i * C + c) * H + box.y + y) * W + box.x, (size_t)box.w * sizeof *saved);
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++)
                for (int y = 0; y < box.h; y++)
                    memcpy(x + (((size_t)i * C + c) * H + box.y + y) * W + box.x,
                           saved + (((size_t)perm[i] * C + c) * box.h + y) * box.w, (size_t)box.w * sizeof *saved);
        free(saved);
    }
    float *so = FN_MALLOC((size_t)B * K * sizeof *so);
    memcpy(so, soft, (size_t)B * K * sizeof *so);
    for (int i = 0; i < B; i++)
        mix_soft(soft, so, i, perm[i], K, lam_adj);
    if (box_out)
        *box_out = box;
    if (lambda_out)
        *lambda_out = lam_adj;
    free(so), free(perm);
    return FN_OK;
}

int engine_augment_mosaic(float *x, float *soft, int B, int C, int H, int W, int K, double p, rng_t *r, err_t *err)
{
    int rc = check_dims("mosaic", B, C, H, W, err);
    if (rc || (rc = check_prob("mosaic", p, err)))
        return rc;
    if (K < 1)
        return err_set(err, FN_EINVAL, "mosaic: need K >= 1 classes");
    size_t img = (size_t)C * H * W;
    float *xo = FN_MALLOC((size_t)B * img * sizeof *xo), *so = FN_MALLOC((size_t)B * K * sizeof *so);
    memcpy(xo, x, (size_t)B * img * sizeof *xo);
    memcpy(so, soft, (size_t)B * K * sizeof *so);
    double hw = (double)H * W;
    for (int i = 0; i < B; i++) {
        if (!(rng_uniform(r) < p))
            continue;
        /* Centre in the middle half, so no quadrant is a sliver. */
        int cy = H / 4 + (int)rng_below(r, (uint64_t)(H - 2 * (H / 4) + 1));
        int cx = W / 4 + (int)rng_below(r, (uint64_t)(W - 2 * (W / 4) + 1));
        int src[4] = {i, (int)rng_below(r, (uint64_t)B), (int)rng_below(r, (uint64_t)B), (int)rng_below(r, (uint64_t)B)};
        int y0[4] = {0, 0, cy, cy}, y1[4] = {cy, cy, H, H};
        int x0[4] = {0, cx, 0, cx}, x1[4] = {cx, W, cx, W};
        float *srow = soft + (size_t)i * K;
        memset(srow, 0, (size_t)K * sizeof *srow);
        for (int q = 0; q < 4; q++) {
            double wgt = (double)(y1[q] - y0[q]) * (x1[q] - x0[q]) / hw;
            for (int k = 0; k < K; k++)
                srow[k] += (float)(wgt * so[(size_t)src[q] * K + k]);
            if (src[q] == i || x1[q] == x0[q])
                continue;
            for (int c = 0; c < C; c++)
                for (int y = y0[q]; y < y1[q]; y++)
                    memcpy(x + (((size_t)i * C + c) * H + y) * W + x0[q],
                           xo + (((size_t)src[q] * C + c) * H + y) * W + x0[q], (size_t)(x1[q] - x0[q]) * sizeof *xo);
        }
    }
    free(xo), free(so);
    return FN_OK;
}

int engine_augment_apply(const engine_augment_config_t *cfg, float *x, int B, int C, int H, int W,
                         const uint8_t *labels, int K, rng_t *r, float *soft, err_t *err)
{
    int rc = check_dims("augment", B, C, H, W, err);
    if (rc || (rc = engine_augment_one_hot(labels, B, K, soft, err)))
        return rc;
    if (cfg->crop_padding > 0 && (rc = engine_augment_random_crop(x, B, C, H, W, cfg->crop_padding, r, NULL, err)))
        return rc;
    if (cfg->hflip_p > 0 && (rc = engine_augment_hflip(x, B, C, H, W, cfg->hflip_p, r, NULL, err)))
        return rc;
    if (cfg->erase_p > 0 && (rc = engine_augment_random_erasing(x, B, C, H, W, cfg, r, NULL, err)))
        return rc;
    if (cfg->mosaic_p > 0 && (rc = engine_augment_mosaic(x, soft, B, C, H, W, K, cfg->mosaic_p, r, err)))
        return rc;
    int use_mixup = cfg->mixup_alpha > 0, use_cutmix = cfg->cutmix_alpha > 0;
    if (use_mixup && use_cutmix) {
        if (rng_uniform(r) < 0.5)
            use_mixup = 0;
        else
            use_cutmix = 0;
    }
    if (use_mixup && rng_uniform(r) < cfg->mixup_p)
        rc = engine_augment_mixup(x, soft, B, C, H, W, K, cfg->mixup_alpha, r, NULL, err);
    else if (use_cutmix && rng_uniform(r) < cfg->cutmix_p)
        rc = engine_augment_cutmix(x, soft, B, C, H, W, K, cfg->cutmix_alpha, r, NULL, NULL, err);
    return rc;
}

void engine_augment_images(void *cfg, float *x, const uint8_t *labels, int n, int c, int h, int w, rng_t *rng)
{
    const engine_augment_config_t *a = cfg;
    (void)labels;
    /* A parsed config and the batcher's own checks leave nothing to fail on; an error here
     * would only skip the step. */
    if (a->crop_padding > 0)
        engine_augment_random_crop(x, n, c, h, w, a->crop_padding, rng, NULL, NULL);
    if (a->hflip_p > 0)
        engine_augment_hflip(x, n, c, h, w, a->hflip_p, rng, NULL, NULL);
    if (a->erase_p > 0)
        engine_augment_random_erasing(x, n, c, h, w, a, rng, NULL, NULL);
}

int engine_augment_mix(void *cfg, float *x, const uint8_t *labels, int n, int c, int h, int w, int K, rng_t *rng,
                       float *soft, err_t *err)
{
    return engine_augment_apply(cfg, x, n, c, h, w, labels, K, rng, soft, err);
}

int engine_augment_mixes_labels(const engine_augment_config_t *cfg)
{
    return cfg->mosaic_p > 0 || cfg->mixup_alpha > 0 || cfg->cutmix_alpha > 0;
}

int engine_augment_changes_images(const engine_augment_config_t *cfg)
{
    return cfg->crop_padding > 0 || cfg->hflip_p > 0 || cfg->erase_p > 0;
}
