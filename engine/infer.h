/* infer: a compact inference runtime for sequential networks, the target of `fednas compress`.
 * A plan is built from an engine architecture (engine/nn.h) and its federated vector
 * (parameters then batch-norm buffers, as engine_model_params lays them out). It runs
 *   fp32:  im2col + sgemm with bias (and a following ReLU) in the GEMM epilogue;
 *   int8:  per-output-channel symmetric int8 weights, uint8 activations with a calibrated
 *          scale and zero point, int8 GEMM with exact int32 accumulation (engine/qgemm.h),
 *          then a float epilogue (rescale, bias, ReLU). Pools and flatten run in float.
 * Supported layers: conv2d (groups 1), linear, batchnorm, relu, maxpool, avgpool,
 * global_avgpool, flatten, dropout (identity). Anything else is FN_EINVAL naming the layer.
 * Folding (engine_infer_fold) merges batch norm into the conv/linear before it and marks a
 * following ReLU as fused; engine_infer_export writes the result back as an engine
 * architecture + vector, so a folded model trains and federates like any other. */
#ifndef FEDNAS_ENGINE_INFER_H
#define FEDNAS_ENGINE_INFER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/qgemm.h"

typedef struct engine_infer engine_infer_t;

typedef enum engine_calib {
    ENGINE_CALIB_MINMAX = 0,
    ENGINE_CALIB_PERCENTILE, /* the range covering `percentile` % of |x| */
    ENGINE_CALIB_ENTROPY,    /* the clip threshold minimising KL(P || Q) (TensorRT's calibrator) */
} engine_calib_t;

/* arch: any engine architecture (named ones are expanded); vec: num_params + num_buffers
 * floats (copied); input [c,h,w]. */
int engine_infer_create(const json_t *arch, const float *vec, size_t n, int c, int h, int w, int classes,
                        engine_infer_t **out, err_t *err);
void engine_infer_free(engine_infer_t *p);
int engine_infer_num_layers(const engine_infer_t *p);
/* The input [c, h, w] and the number of classes the plan was made for. */
void engine_infer_shape(const engine_infer_t *p, int *c, int *h, int *w, int *classes);
/* Folds every batchnorm into the conv/linear right before it (bias created when absent) and
 * fuses a ReLU that follows a conv/linear. A batchnorm after anything else stays. */
int engine_infer_fold(engine_infer_t *p, err_t *err);
/* Architecture ({"type":"layers"}) and vector (malloc'ed, *n floats) of the current plan. */
int engine_infer_export(const engine_infer_t *p, json_t **arch, float **vec, size_t *n, err_t *err);

/* Logits [B, classes] for x [B, c*h*w] in fp32, or int8 once quantized (int8 != 0). */
int engine_infer_forward(engine_infer_t *p, const float *x, int B, float *logits, int int8, err_t *err);

/* Post-training quantization: weights to per-channel symmetric int8 (scale = max|w|/127),
 * input ranges of every conv/linear calibrated on x [B, c*h*w] with `calib` (percentile in
 * (0,100], used by ENGINE_CALIB_PERCENTILE). */
int engine_infer_quantize(engine_infer_t *p, const float *x, int B, engine_calib_t calib, double percentile,
                          err_t *err);
/* The int8 GEMM kernel (default AUTO). FN_EINVAL when this CPU cannot run it. */
/* INT8 with the input range of each conv/linear layer given (lo[k], hi[k] for the k-th, in plan
 * order; from quantization-aware training, engine/qat.h) instead of calibrated. FN_EINVAL when n
 * is not the number of conv/linear layers or a range is not a finite interval. */
int engine_infer_quantize_ranges(engine_infer_t *p, const float *lo, const float *hi, int n, err_t *err);
int engine_infer_set_qgemm(engine_infer_t *p, engine_qgemm_impl_t impl, err_t *err);

/* The quantized model as safetensors tensors: per conv/linear layer l of the plan
 * "layers.l.weight" I8 [out, K], "layers.l.weight_scale" F32 [out], "layers.l.bias" F32 [out],
 * "layers.l.input_scale" F32 [1], "layers.l.input_zero_point" I32 [1]; written to path with
 * metadata fednas.arch (the folded architecture) and fednas.quant = "int8". */
int engine_infer_save_int8(const engine_infer_t *p, const char *path, err_t *err);
/* Reads such a file back (engine/infer_int8_file.c): the plan of the folded architecture, for
 * input [C,H,W] (metadata fednas.input) and the classifier's outputs, quantized with the file's
 * weights, scales, biases and input grids; forward with int8 = 1 gives the logits of the plan
 * that saved it bit for bit, fp32 those of its int8 weights times their scales. FN_EINVAL, naming
 * the file and the tensor, for anything that does not fit. */
int engine_infer_load_int8(const char *path, engine_infer_t **out, err_t *err);

/* Structured pruning (engine/prune.c): every conv/linear but the classifier keeps
 * round(keep_frac * its current outputs) output channels (at least one), those with the largest L1 norm of
 * weights; the layers between it and its consumer shrink along, and the consumer drops the
 * matching inputs. Before quantizing. Export gives the smaller dense model. */
int engine_infer_prune(engine_infer_t *p, double keep_frac, err_t *err);
typedef enum engine_prune_schedule { ENGINE_PRUNE_LINEAR, ENGINE_PRUNE_EXPONENTIAL, ENGINE_PRUNE_CUBIC } engine_prune_schedule_t;
/* Sparsity after step t of T (t = T gives final_sparsity): linear, exponential (the same fraction
 * of what is left each step) or cubic (Zhu & Gupta 2017: fast first, gentle at the end). */
double engine_prune_schedule(engine_prune_schedule_t s, double final_sparsity, int t, int T);

/* ---- helpers, public for tests ---- */
/* Per-row symmetric int8: scale[r] = max|w_r|/127 (1 for an all-zero row), q = round(w/scale). */
void engine_quant_rows(const float *w, int rows, int cols, int8_t *q, int ldq, float *scale);
/* Clip threshold T >= 0 for values whose |x| histogram (bins of width max/nbins) is hist:
 * the entropy calibrator for `levels` quantization levels over [0, T]. */
double engine_calib_entropy(const double *hist, int nbins, double max, int levels);
/* Value below which `percentile` % of the histogram's mass lies. */
double engine_calib_percentile(const double *hist, int nbins, double max, double percentile);

#endif
