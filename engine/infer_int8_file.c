/* infer_int8_file: a quantized model file (engine_infer_save_int8's) read back into a plan (see
 * infer.h). The folded architecture is rebuilt and folded again, which fuses the same ReLUs and
 * pools, so the file's "layers.N" are the plan's layers N again; each conv/linear then takes its
 * int8 weights, weight scales, bias and input grid from the file as they are, and its float
 * weights become the int8 ones times their scales (what the int8 kernels compute with). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

/* Tensor layers.<i>.<what> with the given dtype and n elements (in one dimension, or [n, K] for
 * the weight); NULL with *err set otherwise (absent: only when `optional`, without an error). */
static const engine_st_tensor_t *get(const engine_safetensors_t *st, const char *path, int i, const char *what,
                                     engine_st_dtype_t dtype, uint64_t n, uint64_t K, int optional, err_t *err)
{
    char name[64];
    snprintf(name, sizeof name, "layers.%d.%s", i, what);
    const engine_st_tensor_t *t = engine_safetensors_find(st, name);
    if (!t) {
        if (!optional)
            err_set(err, FN_EINVAL, "%s: tensor %s is missing (layer %d of the folded architecture)", path, name, i);
        return NULL;
    }
    int ok = t->dtype == dtype && (K ? t->ndim == 2 && t->shape[0] == n && t->shape[1] == K
                                     : t->ndim == 1 && t->shape[0] == n);
    if (!ok) {
        err_set(err, FN_EINVAL, "%s: tensor %s should be %s [%llu%s%.0llu], as layer %d of the architecture has it", path,
                name, engine_safetensors_dtype_name(dtype), (unsigned long long)n, K ? ", " : "",
                (unsigned long long)K, i);
        return NULL;
    }
    return t;
}

/* Float n values of t (unaligned in older files): all finite; a scale (`scale`) also normal,
 * positive and with a finite reciprocal (the kernels divide by it). */
static int floats(const engine_st_tensor_t *t, size_t n, float *dst, int scale, const char *path, err_t *err)
{
    memcpy(dst, t->data, n * sizeof *dst);
    for (size_t k = 0; k < n; k++)
        if (!isfinite(dst[k]) || (scale && !(isnormal(dst[k]) && dst[k] > 0 && isfinite(1.0f / dst[k]))))
            return err_set(err, FN_EINVAL, "%s: tensor %s holds %g at %zu, expected a finite %s", path, t->name,
                           (double)dst[k], k,
                           scale ? "positive number (a normal float with a finite reciprocal)" : "number");
    return 0;
}

/* "[C,H,W]" with each in 1..4096. */
static int parse_input(const char *s, int *c, int *h, int *w)
{
    int *v[3] = {c, h, w};
    if (!s || *s++ != '[')
        return -1;
    for (int i = 0; i < 3; i++) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 4096 || *end != (i < 2 ? ',' : ']'))
            return -1;
        *v[i] = (int)x;
        s = end + 1;
    }
    return *s ? -1 : 0;
}

/* One conv/linear layer from the file. */
static int load_layer(const engine_safetensors_t *st, const char *path, int i, ilayer_t *l, int *used, err_t *err)
{
    const engine_st_tensor_t *w, *ws, *b, *is, *iz;
    if (!(w = get(st, path, i, "weight", ENGINE_ST_I8, (uint64_t)l->cout, (uint64_t)l->K, 0, err)) ||
        !(ws = get(st, path, i, "weight_scale", ENGINE_ST_F32, (uint64_t)l->cout, 0, 0, err)) ||
        !(is = get(st, path, i, "input_scale", ENGINE_ST_F32, 1, 0, 0, err)) ||
        !(iz = get(st, path, i, "input_zero_point", ENGINE_ST_I32, 1, 0, 0, err)))
        return err->code;
    b = get(st, path, i, "bias", ENGINE_ST_F32, (uint64_t)l->cout, 0, 1, err);
    if (err->code)
        return err->code;
    if ((b != NULL) != (l->b != NULL))
        return err_set(err, FN_EINVAL, "%s: layer %d has %s bias in the architecture but the file has %s tensor layers.%d.bias",
                       path, i, l->b ? "a" : "no", b ? "a" : "no", i);
    *used += 4 + (b != NULL);
    int32_t zp;
    memcpy(&zp, iz->data, sizeof zp);
    if (zp < 0 || zp > 255)
        return err_set(err, FN_EINVAL, "%s: layers.%d.input_zero_point is %d, expected 0..255", path, i, (int)zp);
    l->Kp = engine_qgemm_kpad(l->K);
    free(l->qw), free(l->wscale), free(l->hist);
    l->hist = NULL;
    l->qw = calloc((size_t)l->cout * l->Kp, 1);
    l->wscale = malloc((size_t)l->cout * sizeof *l->wscale);
    if (!l->qw || !l->wscale)
        return err_set(err, FN_ENOMEM, "%s: out of memory", path);
    if (floats(ws, (size_t)l->cout, l->wscale, 1, path, err) || floats(is, 1, &l->ascale, 1, path, err) ||
        (b && floats(b, (size_t)l->cout, l->b, 0, path, err)))
        return err->code;
    const int8_t *q = w->data;
    for (int o = 0; o < l->cout; o++)
        for (int k = 0; k < l->K; k++) {
            int8_t v = q[(size_t)o * l->K + k];
            l->qw[(size_t)o * l->Kp + k] = v;
            l->w[(size_t)o * l->K + k] = (float)v * l->wscale[o];
        }
    l->azp = (int)zp;
    ilayer_weights_changed(l);
    return infer_pack_int8(l) < 0 ? err_set(err, FN_ENOMEM, "%s: out of memory", path) : 0;
}

int engine_infer_load_int8(const char *path, engine_infer_t **out, err_t *err)
{
    *out = NULL;
    engine_safetensors_t *st = NULL;
    engine_infer_t *p = NULL;
    json_t *arch = NULL;
    float *vec = NULL;
    int rc = engine_safetensors_open(path, &st, err);
    if (rc < 0)
        return rc;
    const char *quant = engine_safetensors_meta(st, "fednas.quant"), *arch_s = engine_safetensors_meta(st, ENGINE_ST_META_ARCH),
               *input = engine_safetensors_meta(st, "fednas.input");
    json_error_t je;
    int c = 0, h = 0, w = 0, classes = 0, last = -1, used = 0;
    size_t held = 0; /* weight and bias elements the file holds */
    if (!quant || strcmp(quant, "int8") != 0) {
        rc = err_set(err, FN_EINVAL, "%s: not an int8 model (no metadata fednas.quant = \"int8\"; `fednas compress` "
                     "with a \"quantize\" step writes DIR/model.int8.safetensors)", path);
        goto out;
    }
    if (!arch_s || !(arch = json_loads(arch_s, 0, &je))) {
        rc = err_set(err, FN_EINVAL, "%s: no valid architecture JSON in metadata %s", path, ENGINE_ST_META_ARCH);
        goto out;
    }
    if (parse_input(input, &c, &h, &w) < 0) {
        rc = err_set(err, FN_EINVAL, "%s: metadata fednas.input is %s%s%s, expected the input shape \"[C,H,W]\"", path,
                     input ? "\"" : "absent", input ? input : "", input ? "\"" : "");
        goto out;
    }
    /* the classes: the outputs of the last layer that has weights */
    for (int i = 0; i < engine_safetensors_count(st); i++) {
        const engine_st_tensor_t *t = engine_safetensors_at(st, i);
        int li;
        char rest[16];
        if (sscanf(t->name, "layers.%d.%15s", &li, rest) == 2 && (strcmp(rest, "weight") == 0 || strcmp(rest, "bias") == 0))
            held += (size_t)(t->nbytes / engine_safetensors_dtype_size(t->dtype));
        if (sscanf(t->name, "layers.%d.%15s", &li, rest) == 2 && strcmp(rest, "weight") == 0 && t->ndim == 2 &&
            li > last) {
            last = li;
            classes = t->shape[0] > 0 && t->shape[0] < 1000000 ? (int)t->shape[0] : -1;
        }
    }
    engine_net_t *net = NULL;
    if (classes < 1 || engine_net_create(arch, c, h, w, classes, &net, err) < 0) {
        rc = classes < 1 ? err_set(err, FN_EINVAL, "%s: no layers.N.weight tensor gives the classes", path) : err->code;
        goto out;
    }
    size_t n = engine_net_num_params(net) + engine_net_num_buffers(net), np = engine_net_num_params(net);
    engine_net_free(net);
    if (np != held) { /* before allocating the plan: the file must back the architecture */
        rc = err_set(err, FN_EINVAL, "%s: the architecture has %zu parameters, the file's weights and biases %zu", path,
                     np, held);
        goto out;
    }
    if (!(vec = calloc(n ? n : 1, sizeof *vec))) {
        rc = err_set(err, FN_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((rc = engine_infer_create(arch, vec, n, c, h, w, classes, &p, err)) < 0 || (rc = engine_infer_fold(p, err)) < 0)
        goto out;
    for (int i = 0; i < p->n && rc == 0; i++) {
        ilayer_t *l = &p->L[i];
        if (l->kind == IL_BN)
            rc = err_set(err, FN_EINVAL, "%s: layer %d is a batch norm that folding could not merge, and int8 files hold "
                         "no batch-norm parameters: use the fp32 model (folded.safetensors)", path, i);
        else if (l->kind == IL_CONV || l->kind == IL_LINEAR)
            rc = load_layer(st, path, i, l, &used, err);
    }
    if (rc == 0 && used != engine_safetensors_count(st))
        rc = err_set(err, FN_EINVAL, "%s: %d tensors, of which the architecture's layers take %d: the file and its "
                     "architecture do not match", path, engine_safetensors_count(st), used);
    if (rc == 0) {
        p->quantized = 1;
        *out = p;
        p = NULL;
    }
out:
    engine_infer_free(p);
    free(vec);
    json_decref(arch);
    engine_safetensors_close(st);
    return rc;
}
