/* infer internals shared by infer.c (plan, folding, forward) and infer_quant.c (PTQ). */
#ifndef FEDNAS_ENGINE_INFER_IMPL_H
#define FEDNAS_ENGINE_INFER_IMPL_H

#include "engine/infer.h"

enum { IL_CONV, IL_LINEAR, IL_BN, IL_RELU, IL_MAXPOOL, IL_AVGPOOL, IL_GAP, IL_FLATTEN, IL_DROPOUT };

typedef struct ilayer {
    int kind;
    int src_index;  /* position in the original layer list (for messages and names) */
    json_t *json;   /* the original layer object (pools, flatten, dropout are re-exported as is) */
    int in_nd, in[3], out_nd, out[3];
    int k, stride, pad;
    int cout, K;    /* conv/linear: outputs, fan-in (C*k*k or features) */
    int has_bias, relu;
    float *w, *b;   /* [cout][K], [cout] (b NULL without bias) */
    float *gamma, *beta, *rm, *rv, eps; /* batchnorm over in[0] channels */
    /* quantized */
    int Kp;
    int8_t *qw;     /* [cout][Kp], K in the engine's order (c, ky, kx) */
    int8_t *qwk;    /* conv: [cout][Kp] with K as (ky, kx, c), the order of channel-last im2row */
    int8_t *qwp;    /* the kernel's weights packed for the VNNI broadcast kernel (or NULL) */
    float *wscale;  /* [cout] */
    int32_t *wsum;  /* [cout]: sum of qw row, for the activation zero point */
    float ascale;
    int azp;
    float amin, amax; /* calibration */
    double *hist;
} ilayer_t;

struct engine_infer {
    int c, h, w, classes;
    int n;
    ilayer_t *L;
    int quantized;
    engine_qgemm_fn qgemm;
    engine_qgemm_impl_t qimpl;
    engine_qgemm_packed_fn qpacked; /* used where a layer has qwp */
    /* scratch */
    float *buf[2];
    size_t buf_cap;
    float *col;
    size_t col_cap;
    uint8_t *qa, *qx;
    size_t qa_cap, qx_cap;
    int32_t *acc;
    size_t acc_cap;
    float *es, *eb; /* per-channel epilogue scale and offset */
    size_t es_cap;
};

static inline size_t ishape_numel(int nd, const int *s) { return nd == 3 ? (size_t)s[0] * s[1] * s[2] : (size_t)s[0]; }

/* Runs the fp32 plan; when stats is 1 or 2 records each conv/linear input (1: min/max,
 * 2: histogram of |x| over [0, max(|min|,|max|)] into hist[IHIST]). */
#define IHIST 2048
int engine_infer_run(engine_infer_t *p, const float *x, int B, float *logits, int int8, int stats, err_t *err);

#endif
