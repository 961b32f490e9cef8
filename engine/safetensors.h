/* safetensors: reads and writes model files in the published safetensors format, byte for byte
 * as the reference implementation (huggingface/safetensors) writes them, so fednas models load in
 * PyTorch and numpy. The format's own layout is kept exactly: no fednas magic or version inside. */
#ifndef FEDNAS_ENGINE_SAFETENSORS_H
#define FEDNAS_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* File layout (https://github.com/huggingface/safetensors, "Format"):
 *   8 bytes   N, the header length, unsigned little-endian
 *   N bytes   a UTF-8 JSON object, starting with '{', padded with spaces:
 *             {"__metadata__":{"key":"value",...},
 *              "NAME":{"dtype":"F32","shape":[d0,d1,...],"data_offsets":[begin,end]}, ...}
 *   the rest  the byte buffer; offsets are relative to its start, tensors are little-endian,
 *             row-major, contiguous, and together cover the buffer with no gap, no overlap and
 *             nothing after the last tensor.
 *
 * The writer reproduces the reference's bytes (safetensors' tensor.rs `prepare` and
 * `Metadata::serialize`): tensors sorted by dtype in DESCENDING order of the reference's Dtype
 * enum (the enum below keeps its order: BOOL < U8 < ... < F64 < I64 < U64), ties by name
 * (bytewise); compact JSON (serde_json: no spaces, only '"', '\\' and control characters
 * escaped, lowercase \u00xx); "__metadata__" first when there is metadata, then the tensors in
 * buffer order with keys dtype, shape, data_offsets; the header padded with spaces to a multiple
 * of 8 so every tensor is aligned for its dtype. The reference keeps metadata in a hash map, so
 * with two or more metadata keys its order is unspecified; fednas writes them in the caller's
 * order. With zero or one metadata key the files are identical.
 *
 * Host byte order must be little-endian (every platform fednas builds on); the build fails
 * otherwise rather than writing files that no other reader can load. */

#define ENGINE_ST_MAX_DIMS 8
/* The reference refuses headers over 100 MB; so does fednas, before allocating anything. */
#define ENGINE_ST_MAX_HEADER 100000000ULL

/* In the reference's Dtype order: the writer's sort depends on it. */
typedef enum engine_st_dtype {
    ENGINE_ST_BOOL = 0,
    ENGINE_ST_U8,
    ENGINE_ST_I8,
    ENGINE_ST_F8_E5M2,
    ENGINE_ST_F8_E4M3,
    ENGINE_ST_I16,
    ENGINE_ST_U16,
    ENGINE_ST_F16,
    ENGINE_ST_BF16,
    ENGINE_ST_I32,
    ENGINE_ST_U32,
    ENGINE_ST_F32,
    ENGINE_ST_F64,
    ENGINE_ST_I64,
    ENGINE_ST_U64,
    ENGINE_ST_NUM_DTYPES
} engine_st_dtype_t;

/* "F32", ... ; NULL for a value out of range. */
const char *engine_safetensors_dtype_name(engine_st_dtype_t dtype);
/* Bytes per element; 0 for a value out of range. */
size_t engine_safetensors_dtype_size(engine_st_dtype_t dtype);
/* Returns the dtype for a name ("F32"), or -1 when the name is not a safetensors dtype. */
int engine_safetensors_dtype_parse(const char *name);

/* One named tensor. For writing, the caller fills name, dtype, ndim, shape and data (nbytes is
 * ignored: it follows from dtype and shape). For reading, everything points into the opened
 * file and stays valid until engine_safetensors_close. ndim 0 is a scalar (one element). */
typedef struct engine_st_tensor {
    const char *name;
    engine_st_dtype_t dtype;
    int ndim;
    uint64_t shape[ENGINE_ST_MAX_DIMS];
    const void *data; /* little-endian, row-major; may be NULL only when nbytes is 0 */
    uint64_t nbytes;
} engine_st_tensor_t;

/* One metadata entry: the format allows string values only. */
typedef struct engine_st_kv {
    const char *key;
    const char *value;
} engine_st_kv_t;

/* Well-known metadata keys fednas writes. */
#define ENGINE_ST_META_ARCH "fednas.arch"   /* the architecture JSON */
#define ENGINE_ST_META_STEP "fednas.step"   /* optimizer step count, decimal */
#define ENGINE_ST_META_FORMAT "format"      /* "pt": what transformers' loaders look for */

/* Writes the file atomically: a temporary file next to `path`, fsync, rename. Checks the
 * arguments first (names present, valid UTF-8 and unique, not "__metadata__"; dtype known;
 * 0..8 dimensions; data present; metadata keys unique) and writes nothing when they are bad. */
int engine_safetensors_save(const char *path, const engine_st_tensor_t *tensors, int num_tensors,
                            const engine_st_kv_t *meta, int num_meta, err_t *err);

/* The same bytes in memory: *out is malloc'ed (caller frees), *out_len its length. */
int engine_safetensors_serialize(const engine_st_tensor_t *tensors, int num_tensors,
                                 const engine_st_kv_t *meta, int num_meta, uint8_t **out,
                                 size_t *out_len, err_t *err);

/* An opened file: the parsed header plus the mapped (or copied) bytes. */
typedef struct engine_safetensors engine_safetensors_t;

/* Maps the file and validates all of it before returning: header length against the file size
 * and ENGINE_ST_MAX_HEADER, UTF-8 JSON object starting with '{', no duplicate keys, metadata
 * values strings, every entry's keys, dtype, shape (<= 8 non-negative dims) and data_offsets,
 * shape product * dtype size == end - begin (overflow-checked), and the offsets (sorted by
 * begin) tiling the byte buffer exactly. A missing file is FN_ENOTFOUND; anything wrong inside
 * is FN_EINVAL with a message naming the file, the tensor and the problem. Headers without the
 * space padding (older writers) are accepted; their tensors may then be unaligned. */
int engine_safetensors_open(const char *path, engine_safetensors_t **out, err_t *err);
/* The same for bytes in memory (copied); `what` names them in messages. */
int engine_safetensors_parse(const void *bytes, size_t len, const char *what,
                             engine_safetensors_t **out, err_t *err);
/* Safe on NULL. */
void engine_safetensors_close(engine_safetensors_t *st);

/* Tensors in buffer order (0 <= i < count). */
int engine_safetensors_count(const engine_safetensors_t *st);
const engine_st_tensor_t *engine_safetensors_at(const engine_safetensors_t *st, int i);
/* NULL when there is no tensor of that name. */
const engine_st_tensor_t *engine_safetensors_find(const engine_safetensors_t *st, const char *name);
/* Metadata value for key, NULL when absent. Entries in header order via meta_count/meta_at. */
const char *engine_safetensors_meta(const engine_safetensors_t *st, const char *key);
int engine_safetensors_meta_count(const engine_safetensors_t *st);
engine_st_kv_t engine_safetensors_meta_at(const engine_safetensors_t *st, int i);

/* Convenience for fednas's one-flat-vector models. */

/* Saves v[0..n) as one F32 tensor of shape [n] named `name`, with the given metadata
 * (e.g. {ENGINE_ST_META_ARCH, arch_json}). */
int engine_safetensors_save_vector(const char *path, const char *name, const float *v, size_t n,
                                   const engine_st_kv_t *meta, int num_meta, err_t *err);
/* Copies tensor `name` into dst[0..n): it must exist (FN_ENOTFOUND otherwise), be F32 and hold
 * exactly n elements (FN_EINVAL otherwise, naming both sizes). Works on unaligned data. */
int engine_safetensors_read_f32(const engine_safetensors_t *st, const char *name, float *dst,
                                size_t n, err_t *err);

/* A training checkpoint: "params", and when m and v are given "optim.m" and "optim.v" (Adam's
 * moments), each F32 [n]; metadata fednas.arch (when arch_json is not NULL) and fednas.step. */
int engine_safetensors_save_checkpoint(const char *path, const char *arch_json, const float *params,
                                       const float *m, const float *v, size_t n, uint64_t step,
                                       err_t *err);

#endif
