/* tensor: the engine's n-dimensional array (up to 5-D, contiguous, row-major), as ggml_tensor.
 * A tensor is also a node of the define-by-run graph: `op` and `src` say how it was made,
 * `grad` (same shape, float32) receives its gradient during engine_graph_backward. */
#ifndef FEDNAS_ENGINE_TENSOR_H
#define FEDNAS_ENGINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum engine_dtype {
    ENGINE_F32 = 0,
    ENGINE_U8 = 1, /* labels, raw pixels */
    ENGINE_I8 = 2, /* quantized values */
    ENGINE_I32 = 3,
} engine_dtype_t;

#define ENGINE_MAX_DIMS 5
#define ENGINE_MAX_SRC 4
#define ENGINE_MAX_IPARAMS 12

typedef struct engine_tensor engine_tensor_t;
struct engine_tensor {
    engine_dtype_t dtype;
    int ndim;
    int64_t ne[ENGINE_MAX_DIMS]; /* shape, outermost first; unused dims are 1 */
    int64_t nb[ENGINE_MAX_DIMS]; /* byte strides (always contiguous: nb[ndim-1] = element size) */
    void *data;
    float *grad;       /* NULL until a gradient flows here; parameters point into the gradient blob */
    int requires_grad; /* a parameter, or computed from one while grad mode was on */
    int op;            /* engine_op_t; ENGINE_OP_NONE for leaves (inputs, parameters) */
    engine_tensor_t *src[ENGINE_MAX_SRC];
    int32_t ip[ENGINE_MAX_IPARAMS]; /* op integer parameters (stride, padding, axis, ...) */
    float fp[4];                    /* op float parameters (eps, momentum, p, ...) */
    void *saved;                    /* op state saved by forward for backward (arena memory) */
    void *ext[2];                   /* op references that are not tensors (running stats, ...) */
};

size_t engine_dtype_size(engine_dtype_t t);
int64_t engine_tensor_numel(const engine_tensor_t *t);
size_t engine_tensor_bytes(const engine_tensor_t *t);
/* Sets dtype, shape and contiguous strides; data and graph fields are left alone. */
void engine_tensor_set_shape(engine_tensor_t *t, engine_dtype_t dtype, int ndim, const int64_t *shape);
static inline float *engine_tensor_f32(const engine_tensor_t *t) { return (float *)t->data; }
/* Same ndim and extents. */
int engine_tensor_same_shape(const engine_tensor_t *a, const engine_tensor_t *b);
/* Writes "[64,32,28,28]" into buf (for error messages). Returns buf. */
const char *engine_tensor_shape_str(const engine_tensor_t *t, char *buf, size_t size);

#endif
