/* compress_block: an experiment's "compress" block, one implementation for `fednas train` (the
 * trained model) and `fednas run` / `fednas server` (the final global model): checked before any
 * training or round, run on the model at the end with the experiment's data (see cli.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/jsonpos.h"
#include "engine/safetensors.h"

int cli_compress_block_parse(const char *src, const char *text, const json_t *cfg, int need_out,
                             cli_compress_block_t *b, err_t *err)
{
    memset(b, 0, sizeof *b);
    const json_t *cb = json_object_get(cfg, "compress");
    if (!cb)
        return 0;
    const json_t *o = json_object_get(cb, "out"), *data = json_object_get(cfg, "data");
    const char *shape = need_out ? "{\"out\": DIR, ...compress recipe steps (see `fednas compress --help`)}"
                                 : "{...compress recipe steps (see `fednas compress --help`), \"out\": DIR (optional: "
                                   "a folder in the run folder, default \"compress\")}";
    if (!json_is_object(cb))
        return jsonpos_fail(err, src, text, "compress", 0, "expected %s", shape);
    if (json_object_get(cb, "data"))
        return jsonpos_fail(err, src, text, "compress.data", 1,
                            "the data are the experiment's: remove \"data\" from the compress block");
    if ((o || need_out) && (!json_is_string(o) || !*json_string_value(o)))
        return jsonpos_fail(err, src, text, o ? "compress.out" : "compress", 0, "expected %s", shape);
    if (json_object_get(cfg, "nas"))
        return jsonpos_fail(err, src, text, "compress", 1,
                            "not with \"nas\": a search ends with a supernet, not one model; compress the model "
                            "its retrain experiment trains");
    const char *ds = json_string_value(json_object_get(data, "dataset"));
    if (!ds)
        ds = "fashion-mnist"; /* the experiment's own default */
    if (strcmp(ds, "fashion-mnist") != 0 && strcmp(ds, "mnist") != 0)
        return jsonpos_fail(err, src, text, "compress", 1,
                            "needs \"fashion-mnist\" or \"mnist\" data (this experiment's data.dataset is \"%s\")",
                            ds);
    json_t *recipe = json_deep_copy(cb), *rd = json_object();
    if (!recipe || !rd) {
        json_decref(recipe);
        json_decref(rd);
        return err_set(err, FN_ENOMEM, "out of memory");
    }
    json_object_del(recipe, "out");
    /* the recipe's data: the experiment's data set and folder, nothing of its partition */
    json_object_set_new(rd, "dataset", json_string(ds));
    const json_t *path = json_object_get(data, "path");
    if (json_is_string(path) && *json_string_value(path))
        json_object_set_new(rd, "path", json_string(json_string_value(path)));
    json_object_set_new(recipe, "data", rd);
    if (cli_compress_check(src, text, "compress", recipe, err) < 0) {
        json_decref(recipe);
        return err->code;
    }
    b->recipe = recipe;
    b->out = o ? json_string_value(o) : NULL;
    return 0;
}

void cli_compress_block_free(cli_compress_block_t *b)
{
    json_decref(b->recipe);
    b->recipe = NULL;
}

int cli_compress_block_run(const cli_compress_block_t *b, const char *src, const char *text, const json_t *arch,
                           const float *vec, size_t n, const int sh[3], const char *out_dir, json_t **report)
{
    err_t err = {0};
    if (report)
        *report = NULL;
    if (mkdir(out_dir, 0755) < 0 && errno != EEXIST) {
        err_set(&err, FN_EIO, "%s: cannot create the compress folder: %s", out_dir, strerror(errno));
        return cli_fail(&err);
    }
    char mp[4096], shape[64];
    snprintf(mp, sizeof mp, "%s/model.safetensors", out_dir);
    snprintf(shape, sizeof shape, "[%d,%d,%d]", sh[0], sh[1], sh[2]);
    char *a = json_dumps(arch, JSON_COMPACT);
    engine_st_kv_t meta[2] = {{ENGINE_ST_META_ARCH, a ? a : "{}"}, {"fednas.input", shape}};
    int rc = engine_safetensors_save_vector(mp, "params", vec, n, meta, 2, &err);
    free(a);
    if (rc < 0)
        return cli_fail(&err);
    printf("compress: %s -> %s/\n", mp, out_dir);
    fflush(stdout);
    return cli_compress_model(mp, src, text, "compress", b->recipe, out_dir, report);
}
