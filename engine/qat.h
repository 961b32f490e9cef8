/* qat: quantization-aware training (Jacob et al. 2018) for the int8 runtime (engine/infer.h).
 * Attached to a model, it trains float "shadow" weights while every forward pass sees what the
 * int8 runtime will compute with: each linear/conv weight row rounded to its per-channel
 * symmetric int8 grid (scale max|row| / 127) and each linear/conv input rounded to the
 * activation grid of its tracked range (engine_fake_quant), with straight-through gradients.
 * The ranges are moving averages of each batch's min and max (PyTorch's
 * MovingAverageMinMaxObserver); afterwards engine_infer_quantize_ranges takes them instead of a
 * calibration pass. Sequential conv/linear models (no batch norm: fold it first). */
#ifndef FEDNAS_ENGINE_QAT_H
#define FEDNAS_ENGINE_QAT_H

#include "common/err.h"
#include "engine/model.h"

typedef struct engine_qat engine_qat_t;

/* Attaches to m (whose weights must be the float ones to start from): from now on the model's
 * weights are rounded to their grid and every forward fakes the input quantization (none for a
 * layer whose range has not been seen yet). momentum in (0, 1]: the weight of a new batch in
 * the moving averages (0.01 in PyTorch). */
int engine_qat_attach(engine_model_t *m, float momentum, engine_qat_t **out, err_t *err);
/* engine_model_train_source with the straight-through update: each optimizer step's change of
 * the rounded weights goes to the shadow weights, which are then rounded again. Ranges are
 * tracked in training mode only. cfg->on_step still runs. */
int engine_qat_train(engine_qat_t *q, const engine_source_t *src, const int *idx, int n,
                     const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err);
/* The tracked input ranges, one per linear/conv layer in forward order (n of them). */
void engine_qat_ranges(const engine_qat_t *q, int *n, const float **lo, const float **hi);
/* The grid of a range as the int8 runtime builds it: non-negative ranges use codes 0..255 from
 * zero point 0 (scale hi/255), others are symmetric around zero point 128 (scale max|.|/127). */
void engine_qat_grid(float lo, float hi, float *scale, int *zero_point);
/* Detaches from the model (its weights stay rounded) and frees q. */
void engine_qat_free(engine_qat_t *q);

#endif
