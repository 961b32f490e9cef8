#include "engine/tensor.h"

#include <stdio.h>

size_t engine_dtype_size(engine_dtype_t t)
{
    switch (t) {
    case ENGINE_F32:
    case ENGINE_I32:
        return 4;
    case ENGINE_U8:
    case ENGINE_I8:
        return 1;
    }
    return 4;
}

int64_t engine_tensor_numel(const engine_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->ne[i];
    return n;
}

size_t engine_tensor_bytes(const engine_tensor_t *t) { return (size_t)engine_tensor_numel(t) * engine_dtype_size(t->dtype); }

void engine_tensor_set_shape(engine_tensor_t *t, engine_dtype_t dtype, int ndim, const int64_t *shape)
{
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ENGINE_MAX_DIMS; i++)
        t->ne[i] = i < ndim ? shape[i] : 1;
    int64_t s = (int64_t)engine_dtype_size(dtype);
    for (int i = ENGINE_MAX_DIMS - 1; i >= 0; i--) {
        t->nb[i] = s;
        s *= t->ne[i];
    }
}

int engine_tensor_same_shape(const engine_tensor_t *a, const engine_tensor_t *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i])
            return 0;
    return 1;
}

const char *engine_tensor_shape_str(const engine_tensor_t *t, char *buf, size_t size)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, size - o, "[");
    for (int i = 0; i < t->ndim && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%lld", i ? "," : "", (long long)t->ne[i]);
    if (o < size)
        snprintf(buf + o, size - o, "]");
    return buf;
}
