/* What `profile` and `serve` take as MODEL: a safetensors model file (the flat vector "params"
 * with the architecture JSON in metadata fednas.arch, as `fednas nas export` and checkpoints
 * write it), an architecture JSON file, or a built-in architecture name ("cnn", "mlp", ...).
 * Inputs are 1x28x28 images and 10 classes: the MNIST family the rest of fednas trains on. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/safetensors.h"

#define SPEC_INPUT 784
#define SPEC_CLASSES 10

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

int cli_model_is_int8(const char *spec)
{
    struct stat sb;
    engine_safetensors_t *st = NULL;
    err_t e = {0};
    if (stat(spec, &sb) != 0 || !S_ISREG(sb.st_mode) || !has_suffix(spec, ".safetensors") ||
        engine_safetensors_open(spec, &st, &e) != 0)
        return 0;
    const char *q = engine_safetensors_meta(st, "fednas.quant");
    int yes = q && strcmp(q, "int8") == 0;
    engine_safetensors_close(st);
    return yes;
}

/* A quantized file: the folded architecture with the int8 weights times their scales. */
static int from_int8(const char *path, engine_model_t **out, err_t *err)
{
    engine_infer_t *p = NULL;
    json_t *arch = NULL;
    float *vec = NULL;
    size_t n = 0;
    int rc = engine_infer_load_int8(path, &p, err), c, h, w, classes;
    if (rc == 0) {
        engine_infer_shape(p, &c, &h, &w, &classes);
        if (c * h * w != SPEC_INPUT || h != 28 || classes != SPEC_CLASSES)
            rc = err_set(err, FN_EINVAL, "%s: a model for %dx%dx%d inputs and %d classes; profile and serve take 1x28x28 "
                         "images and 10 classes", path, c, h, w, classes);
    }
    if (rc == 0)
        rc = engine_infer_export(p, &arch, &vec, &n, err);
    if (rc == 0)
        rc = engine_model_create(arch, SPEC_INPUT, SPEC_CLASSES, out, err);
    if (rc == 0 && n != engine_model_num_federated(*out)) {
        rc = err_set(err, FN_EINVAL, "%s: %zu floats for an architecture of %zu", path, n, engine_model_num_federated(*out));
        engine_model_free(*out);
        *out = NULL;
    }
    if (rc == 0)
        memcpy(engine_model_params(*out), vec, n * sizeof *vec);
    engine_infer_free(p);
    json_decref(arch);
    free(vec);
    return rc;
}

static int from_safetensors(const char *path, engine_model_t **out, err_t *err)
{
    if (cli_model_is_int8(path))
        return from_int8(path, out, err);
    engine_safetensors_t *st = NULL;
    int rc = engine_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    const char *arch_s = engine_safetensors_meta(st, ENGINE_ST_META_ARCH);
    json_error_t je;
    json_t *arch = arch_s ? json_loads(arch_s, 0, &je) : NULL;
    if (!arch) {
        engine_safetensors_close(st);
        return err_set(err, FN_EINVAL, "%s: no valid architecture JSON in metadata \"%s\"", path, ENGINE_ST_META_ARCH);
    }
    rc = engine_model_create(arch, SPEC_INPUT, SPEC_CLASSES, out, err);
    json_decref(arch);
    if (rc == 0) {
        /* Exports hold the parameters, checkpoints of federated models parameters + buffers. */
        const engine_st_tensor_t *t = engine_safetensors_find(st, "params");
        size_t n = t && t->ndim == 1 ? (size_t)t->shape[0] : 0;
        size_t np = engine_model_num_params(*out), nf = engine_model_num_federated(*out);
        if (n != np && n != nf)
            rc = err_set(err, FN_EINVAL, "%s: tensor \"params\" should hold %zu (or %zu) floats for this architecture", path,
                         np, nf);
        else
            rc = engine_safetensors_read_f32(st, "params", engine_model_params(*out), n, err);
        if (rc) {
            engine_model_free(*out);
            *out = NULL;
        }
    }
    engine_safetensors_close(st);
    return rc;
}

int cli_load_model(const char *spec, engine_model_t **out, err_t *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(spec, &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (has_suffix(spec, ".safetensors"))
            return from_safetensors(spec, out, err);
        json_error_t je;
        json_t *arch = json_load_file(spec, JSON_REJECT_DUPLICATES, &je);
        if (!arch)
            return err_set(err, FN_EINVAL, "%s:%d:%d: %s", spec, je.line, je.column, je.text);
        /* An experiment file works too: its "model" is the architecture. */
        json_t *m = json_object_get(arch, "model");
        int rc = engine_model_create(json_is_object(m) ? m : arch, SPEC_INPUT, SPEC_CLASSES, out, err);
        json_decref(arch);
        if (rc == 0)
            engine_model_init(*out, 1);
        return rc;
    }
    if (strlen(spec) > 32 || strchr(spec, '/') || strchr(spec, '.'))
        return err_set(err, FN_ENOTFOUND, "model %s: no such file", spec);
    json_t *arch = json_pack("{s:s}", "type", spec);
    int rc = arch ? engine_model_create(arch, SPEC_INPUT, SPEC_CLASSES, out, err)
                  : err_set(err, FN_ENOMEM, "out of memory");
    json_decref(arch);
    if (rc == 0)
        engine_model_init(*out, 1);
    return rc;
}
