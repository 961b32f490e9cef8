/* scatter: a path's change placed in a federated search's secure-aggregation layout (client/scatter.h). */
#include "client/scatter.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/nn.h"

#define SCATTER_MAX_LEN ((int64_t)1 << 31)

int client_scatter_expand(const json_t *scatter, engine_model_t *model, const float *u, size_t m, float **full,
                          size_t *len, err_t *err)
{
    *full = NULL;
    *len = 0;
    const json_t *jl = json_object_get(scatter, "length"), *jt = json_object_get(scatter, "tensors"),
                 *js = json_object_get(scatter, "stats");
    engine_net_t *net = engine_model_net(model);
    int nt = engine_net_num_tensors(net);
    size_t np = engine_model_num_params(model);
    if (!json_is_integer(jl) || json_integer_value(jl) < 1 || json_integer_value(jl) > SCATTER_MAX_LEN ||
        !json_is_array(jt) || (int)json_array_size(jt) != nt || !json_is_integer(js) ||
        m != engine_model_num_federated(model))
        return err_set(err, FN_EPROTO, "malformed \"scatter\" block: it needs \"length\" (1..2^31), one \"tensors\" "
                       "entry per tensor of the model (%d) and \"stats\"", nt);
    int64_t L = json_integer_value(jl), stats = json_integer_value(js);
    if ((m > np) != (stats >= 0) || (stats >= 0 && (stats > L || (int64_t)(m - np) > L - stats)))
        return err_set(err, FN_EPROTO, "\"scatter\": statistics at %lld do not fit (%zu values, length %lld)",
                       (long long)stats, m - np, (long long)L);
    int64_t (*shape)[4] = calloc((size_t)(nt > 0 ? nt : 1), sizeof *shape);
    int64_t *off = calloc((size_t)(nt > 0 ? nt : 1), sizeof *off);
    if (!shape || !off) {
        free(shape);
        free(off);
        return err_set(err, FN_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (int i = 0; i < nt && rc == 0; i++) {
        const json_t *e = json_array_get(jt, (size_t)i);
        const engine_param_info_t *in = engine_net_tensor(net, i);
        int ok = json_is_array(e) && json_array_size(e) == 5;
        for (int d = 0; ok && d < 5; d++)
            ok = json_is_integer(json_array_get(e, (size_t)d)) && json_integer_value(json_array_get(e, (size_t)d)) >= 0;
        int64_t n = 1;
        if (ok) {
            off[i] = json_integer_value(json_array_get(e, 0));
            for (int d = 0; d < 4 && ok; d++) {
                shape[i][d] = json_integer_value(json_array_get(e, (size_t)d + 1));
                int64_t want = d < in->ndim ? in->shape[d] : 1;
                ok = shape[i][d] >= want && shape[i][d] <= SCATTER_MAX_LEN && (n *= shape[i][d]) <= SCATTER_MAX_LEN;
            }
            ok = ok && off[i] <= L && n <= L - off[i];
        }
        if (!ok)
            rc = err_set(err, FN_EPROTO, "\"scatter\": tensor %d (%s) does not fit its entry or the length %lld", i,
                         in->name, (long long)L);
    }
    float *v = rc == 0 ? calloc((size_t)L, sizeof *v) : NULL;
    if (rc == 0 && !v)
        rc = err_set(err, FN_ENOMEM, "out of memory for a %lld-value update", (long long)L);
    for (int i = 0; i < nt && rc == 0; i++) {
        const engine_param_info_t *in = engine_net_tensor(net, i);
        int64_t ss[4] = {1, 1, 1, 1};
        for (int d = 0; d < in->ndim; d++)
            ss[d] = in->shape[d];
        const float *src = u + in->offset;
        size_t k = 0;
        for (int64_t a = 0; a < ss[0]; a++)
            for (int64_t b = 0; b < ss[1]; b++)
                for (int64_t c = 0; c < ss[2]; c++) {
                    int64_t o = off[i] + ((a * shape[i][1] + b) * shape[i][2] + c) * shape[i][3];
                    for (int64_t d = 0; d < ss[3]; d++)
                        v[o + d] = src[k++];
                }
    }
    if (rc == 0 && stats >= 0)
        memcpy(v + stats, u + np, (m - np) * sizeof *v);
    free(shape);
    free(off);
    if (rc) {
        free(v);
        return rc;
    }
    *full = v;
    *len = (size_t)L;
    return 0;
}
