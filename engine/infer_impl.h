/* infer internals shared by infer.c (plan, folding, forward) and infer_quant.c (PTQ). */
#ifndef FEDNAS_ENGINE_INFER_IMPL_H
#define FEDNAS_ENGINE_INFER_IMPL_H

#include <stdlib.h>

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
    int pool;        /* conv: a 2x2 stride-2 max pool fused into the epilogue (out[] is pooled) */
    json_t *pool_json; /* that pool layer as written, for export */
    float *w, *b;   /* [cout][K], [cout] (b NULL without bias) */
    float *wp;      /* linear: w packed for the small-batch kernel (NULL until first used; weight
                     * changes free it, see ilayer_weights_changed) */
    float *wc;      /* conv: w packed for the direct kernel (infer_conv.c), [K][cout rounded up to 16],
                     * or, where the layer takes Winograd's tiles, their transformed weights
                     * (conv_wino_pack: [36][C][cout rounded up to 16]) */
    int wino;       /* conv: 1 when wc holds Winograd's weights */
    float *gamma, *beta, *rm, *rv, eps; /* batchnorm over in[0] channels */
    /* quantized */
    int Kp;
    int8_t *qw;     /* [cout][Kp], K in the engine's order (c, ky, kx) */
    int8_t *qwk;    /* conv: [cout][Kp] with K as (ky, kx, c), the order of channel-last im2row */
    int8_t *qwp;    /* the kernel's weights packed for the VNNI broadcast kernel (or NULL) */
    int8_t *qwi;    /* conv, stride 1, AMX: packed over K as (ky, 64-byte chunk, kx*C + c) (infer_qconv.c) */
    int qchunks;    /* with qwi: 64-byte chunks per kernel row, ceil(k*C / 64) */
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
    engine_qgemm_koff_fn qamx;      /* AMX tiles: linear layers with qwp */
    engine_qgemm_koff_fn qkoff;     /* stride-1 convs with qwi, in place: AMX or VNNI (engine/infer_qconv.c) */
    /* scratch */
    float *buf[2];
    size_t buf_cap;
    float *col;
    size_t col_cap;
    float *dcol; /* the direct conv's output tile scratch and padded input */
    size_t dcol_cap;
    uint8_t *qa, *qx;
    size_t qa_cap, qx_cap;
    int32_t *acc;
    size_t acc_cap;
    float *es, *eb; /* per-channel epilogue scale and offset */
    float *full;    /* int8 conv with a fused pool: the output before pooling */
    size_t full_cap;
    size_t es_cap;
};

/* Whatever is derived from l->w (the packed copy) is stale once w changes. */
static inline void ilayer_weights_changed(ilayer_t *l)
{
    free(l->wp);
    free(l->wc);
    l->wp = NULL;
    l->wc = NULL;
}

/* The fp32 kernels (engine/infer_fp32.c): conv (im2col + sgemm, bias, ReLU and a fused max pool
 * in one epilogue pass) and linear (small batches on packed weights read once per pass, larger
 * ones through sgemm). x [B][in], y [B][out]; -1 on out of memory. */
int infer_conv_fp32(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B);
int infer_linear_fp32(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B);
/* The direct convolution (engine/infer_conv.c): stride 1 on an AVX-512 CPU. */
int infer_conv_direct_ok(const ilayer_t *l);
int infer_conv_direct(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B);
/* Bias (NULL: none), ReLU and (pool) the 2x2 max from the pixel-major t [OH*OW][ocp] into y
 * [cout][out plane] (AVX-512 CPUs only). */
void infer_conv_epilogue(const float *t, int OH, int OW, int ocp, const float *bias, int relu, int pool, int cout,
                         float *y);
/* INT8 stride-1 convs (engine/infer_qconv.c) on p->qkoff (AMX tiles or VNNI), reading a
 * zero-point-bordered channel-last copy of the input in place (no im2row): infer_qconv_pack packs
 * l->qw for them (l->qwi; -1 on out of memory); infer_qconv_run runs the layer as run_conv's
 * im2row path does, with the same int32 sums and float arithmetic, so the logits are the same
 * bit for bit. */
int infer_qconv_pack(ilayer_t *l);
int infer_qconv_run(engine_infer_t *p, const ilayer_t *l, const float *x, float *y, int B);
/* From l->qw ([cout][Kp], K in the engine's order): wsum and the packed forms the kernels read
 * (qwk, qwp, qwi, as this CPU's kernels want them); -1 on out of memory (engine/infer_quant.c). */
int infer_pack_int8(ilayer_t *l);
/* 1 when the AVX-512 kernels may run: the CPU has them and FEDNAS_INFER_PORTABLE is not 1. */
int infer_avx512(void);
/* 2x2 stride-2 max pool of [C][H][W] planes (floor) into [C][H/2][W/2]. */
void infer_maxpool2(const float *x, int C, int H, int W, float *y);

/* Grows a scratch buffer *b (capacity *cap bytes) to at least `bytes`; -1 when out of memory
 * (the buffer is left as it was). */
static inline int infer_grow(void **b, size_t *cap, size_t bytes)
{
    if (*cap >= bytes)
        return 0;
    void *n = realloc(*b, bytes);
    if (!n)
        return -1;
    *b = n;
    *cap = bytes;
    return 0;
}

static inline size_t ishape_numel(int nd, const int *s) { return nd == 3 ? (size_t)s[0] * s[1] * s[2] : (size_t)s[0]; }

/* Runs the fp32 plan; when stats is 1 or 2 records each conv/linear input (1: min/max,
 * 2: histogram of |x| over [0, max(|min|,|max|)] into hist[IHIST]). */
#define IHIST 2048
int engine_infer_run(engine_infer_t *p, const float *x, int B, float *logits, int int8, int stats, err_t *err);

#endif
