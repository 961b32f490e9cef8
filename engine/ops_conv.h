/* ops_conv: internal to the engine. What the convolution kernels share: the op's dimensions,
 * the row copies of im2col and the direct kernels, the fused ReLU's bit mask, a reproducible
 * sum; and the direct depthwise kernel (ops_conv_dw.c) that ops_conv.c hands depthwise ops to. */
#ifndef FEDNAS_ENGINE_OPS_CONV_H
#define FEDNAS_ENGINE_OPS_CONV_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "engine/ops_cpu.h"

typedef struct {
    int C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G;
    int Cg, OCg, K, OHW;
} conv_dims_t;

/* n floats from in to o (not overlapping) in 16-byte moves, the last one overlapping the one
 * before instead of a scalar tail: rows here are short (14 floats in the FedAvg CNN), so the
 * tail loop of a plain copy costs as much as its body. */
static inline void copy_row(float *o, const float *in, int n)
{
    if (n < 4) {
        for (int i = 0; i < n; i++)
            o[i] = in[i];
        return;
    }
    int i = 0;
    for (; i + 4 <= n; i += 4)
        memcpy(o + i, in + i, 4 * sizeof *o);
    if (i < n)
        memcpy(o + n - 4, in + n - 4, 4 * sizeof *o);
}

/* Copies plane [H, W] into the interior of pad (the border is left as it is: zero). */
static inline void pad_plane(const conv_dims_t *d, const float *plane, float *pad)
{
    const int Wp = d->W + 2 * d->pw;
    for (int h = 0; h < d->H; h++)
        copy_row(pad + (size_t)(h + d->ph) * Wp + d->pw, plane + (size_t)h * d->W, d->W);
}

/* Bytes of ReLU mask per output plane (planes start on a byte, so parts never share one). */
static inline size_t mask_bytes(int ohw) { return ((size_t)ohw + 7) / 8; }

/* Bit i of m: v[i] > 0, for n floats. */
static inline void relu_mask(const float *v, int n, uint8_t *m)
{
    int i = 0;
#if defined(__SSE2__)
    const __m128 z = _mm_setzero_ps();
    for (; i + 8 <= n; i += 8)
        m[i / 8] = (uint8_t)(_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(v + i), z)) |
                             _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(v + i + 4), z)) << 4);
#endif
    for (; i < n; i += 8) {
        unsigned b = 0;
        for (int k = 0; k < 8 && i + k < n; k++)
            b |= (unsigned)(v[i + k] > 0.0f) << k;
        m[i / 8] = (uint8_t)b;
    }
}

/* o[i] = dy[i] where bit i of m is set, else 0. */
static inline void relu_mask_apply(const float *dy, const uint8_t *m, int n, float *o)
{
    int i = 0;
#if defined(__SSE2__)
    const __m128i lo = _mm_setr_epi32(1, 2, 4, 8), hi = _mm_setr_epi32(16, 32, 64, 128);
    for (; i + 8 <= n; i += 8) {
        const __m128i b = _mm_set1_epi32(m[i / 8]);
        const __m128 k0 = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(b, lo), lo));
        const __m128 k1 = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(b, hi), hi));
        _mm_storeu_ps(o + i, _mm_and_ps(k0, _mm_loadu_ps(dy + i)));
        _mm_storeu_ps(o + i + 4, _mm_and_ps(k1, _mm_loadu_ps(dy + i + 4)));
    }
#endif
    for (; i < n; i++)
        o[i] = (m[i >> 3] >> (i & 7)) & 1 ? dy[i] : 0.0f;
}

/* The backward's glue in AVX-512 (ops_conv_direct.c, chosen at run time): conv_glue_avx512()
 * says whether to take it (an AVX-512 CPU, FEDNAS_CONV_PORTABLE and FEDNAS_CONV_GLUE_PORTABLE not
 * set; read once per op). conv_relu_mask_512: v clamped at 0 in place and relu_mask's bits of it.
 * conv_relu_mask_apply_512: relu_mask_apply with the mask's bits as the
 * lanes' load mask (16 floats per load, no tail loop). conv_transpose_dy_512: dyt [OHW][OCP] from
 * src [OC][ld] (the first OHW floats of each row), lanes past OC zero, by gathers: the scalar
 * transpose stores one float at a time, OCP floats apart. */
int conv_glue_avx512(void);
void conv_relu_mask_512(float *v, int n, uint8_t *m);
void conv_relu_mask_apply_512(const float *dy, const uint8_t *m, int n, float *o);
void conv_transpose_dy_512(const float *src, int ld, int OC, int OHW, int OCP, float *dyt);

/* relu_mask_apply, in AVX-512 when use512 (conv_glue_avx512()). */
static inline void relu_mask_apply_sel(int use512, const float *dy, const uint8_t *m, int n, float *o)
{
    if (use512)
        conv_relu_mask_apply_512(dy, m, n, o);
    else
        relu_mask_apply(dy, m, n, o);
}

/* relu_mask, in AVX-512 when use512; clamps v at 0 first (a no-op where it already is). */
static inline void relu_mask_sel(int use512, float *v, int n, uint8_t *m)
{
    if (use512)
        conv_relu_mask_512(v, n, m);
    else
        relu_mask(v, n, m);
}

/* Sum of n floats with eight independent partial sums (a single running sum is one long
 * dependency chain); fixed order, so reproducible. */
static inline float sum_floats(const float *r, int n)
{
    float a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            a[k] += r[i + k];
    float t = 0.0f;
    for (; i < n; i++)
        t += r[i];
    return t + (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
}

/* FEDNAS_CONV_IM2COL=1 sends every convolution through im2col + sgemm, the reference path
 * (tests compare the direct kernels against it; benchmarks measure what they gain). Read on
 * every call, as FEDNAS_CONV_CHUNK is: a getenv per conv op is noise next to the op. */
static inline int conv_force_im2col(void)
{
    const char *e = getenv("FEDNAS_CONV_IM2COL");
    return e && atoi(e) > 0;
}

/* Whether the convolution kernels take their AVX-512 code (checked at run time: the build itself
 * targets baseline x86-64). FEDNAS_CONV_PORTABLE=1 forces the portable code on any CPU, so tests
 * check both on a machine with AVX-512. */
static inline int conv_use_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const char *e = getenv("FEDNAS_CONV_PORTABLE");
    /* a read of what libgcc found at start-up: no cache of our own to race on */
    return !(e && atoi(e) > 0) && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* A depthwise op (Cg = 1) for ops_conv_dw.c: inputs, outputs and gradients as in conv_job_t. */
typedef struct {
    conv_dims_t d;
    int B, relu;
    uint8_t *mask;
    const float *x, *W, *bias, *dy;
    float *y, *dx, *dW, *db;
    int dx_fresh;
    float *scratch;
    size_t part_floats, pad_floats;
    int parts;
} dw_job_t;

/* Direct convolution (ops_conv_direct.c), stride 1, no dilation, one group, kernel > 1x1.
 * conv_direct_usable: the op takes it (AVX-512 CPU, FEDNAS_CONV_DIRECT not 0, not forced
 * through im2col or the portable code); conv_direct_dx_usable: its input gradient too (padding
 * at most kernel - 1). conv_direct_sample: one sample, y [OC][OH][OW] (OH = Hp-KH+1, OW =
 * Wp-KW+1) from the zero-bordered input xp [C][Hp][Wp] and weights w (output channel o's
 * [C][KH][KW] at w + o*ldw), plus bias (NULL: none), stored or with add added, then with relu
 * clamped at 0. conv_direct_flip: Wf [C][OC][KH][KW], the kernel turned around with its channel
 * axes swapped (the input gradient's weights). conv_direct_pad: C planes [H][W] into the
 * interior of dst [C][H+2ph][W+2pw] (the border is left as it is: zero). */
int conv_direct_usable(const conv_dims_t *d);
int conv_direct_dx_usable(const conv_dims_t *d);
void conv_direct_sample(const float *xp, int Hp, int Wp, int C, const float *w, int ldw, int KH, int KW,
                        const float *bias, int OC, float *y, float *tmp, int add, int relu);
/* The floats of conv_direct_sample's tmp for such a sample (0: it needs none): rows too short to
 * fill a vector (a 7x7 map) are computed flat on the padded plane's width in tmp, then copied. */
size_t conv_direct_tmp_floats(int OC, int Hp, int Wp, int KH, int KW);
void conv_direct_flip(const conv_dims_t *d, const float *W, float *Wf);
/* conv_direct_dw_usable: the op's weight gradient by conv_direct_dw_sample, which adds one
 * sample's dW^T [C*KH*KW][OCP] into dwt, from the zero-bordered input xp [C][Hp][Wp] and dy
 * transposed, dyt [OH*OW][OCP] (OCP: OC rounded up to 16, lanes past OC zero). */
int conv_direct_dw_usable(const conv_dims_t *d);
void conv_direct_dw_sample(const float *xp, int Hp, int Wp, int C, int KH, int KW, const float *dyt, int OCP,
                           float *dwt);
void conv_direct_pad(const float *src, int C, int H, int W, int ph, int pw, float *dst);

/* The direct convolution vectorized along output channels (ops_conv_oc.c). conv_oc_usable: the
 * op's forward takes it (conv_direct_usable, output channels filling their vectors,
 * FEDNAS_CONV_OC not 0); conv_oc_dx_usable: its input gradient (conv_direct_dx_usable, input
 * channels filling theirs). conv_oc_sample: as conv_direct_sample, with the weights packed by
 * conv_oc_pack, wt [Q = C*KH*KW][OCP] from w [OC][Q] (OCP: OC rounded up to 16, zero past OC),
 * or for the input gradient by conv_oc_pack_flipped: [OC*KH*KW][CP], the kernel turned around
 * with its channel axes swapped (CP: C rounded up to 16). tmp: conv_oc_tmp_floats. */
int conv_oc_usable(const conv_dims_t *d);
int conv_oc_dx_usable(const conv_dims_t *d);
void conv_oc_sample(const float *xp, int Hp, int Wp, int C, const float *wt, int OCP, int KH, int KW,
                    const float *bias, int OC, float *y, float *tmp, int add, int relu);
/* conv_oc_sample's tmp: OH*OW*OCP floats. */
static inline size_t conv_oc_tmp_floats(int OHW, int OCP) { return (size_t)OHW * OCP; }
void conv_oc_pack(const float *w, int OC, int Q, int OCP, float *wt);
/* Sums along the channels, tmp [OHW][OCP], into the planes y [OC][OHW] with bias (NULL: none),
 * stored or with add added, then with relu clamped at 0 (AVX-512 CPUs only). */
void conv_oc_unpack(const float *tmp, int OCP, int OHW, const float *bias, int OC, float *y, int add, int relu);
void conv_oc_pack_flipped(const conv_dims_t *d, const float *W, int CP, float *wt);

/* Winograd convolution on 6x6 tiles (ops_conv_wino.c): F(2x2, 5x5) and F(4x4, 3x3), stride 1, no
 * dilation, one group, square kernels, at least 16 channels in and out. conv_wino_usable: the op's forward takes it (AVX-512
 * CPU, FEDNAS_CONV_WINO not 0, not forced through im2col or the portable code);
 * conv_wino_dx_usable: its input gradient (padding at most kernel - 1). conv_wino_pack: the
 * transformed weights u [36][Ci][round16(Co)] (conv_wino_u_floats) of the convolution as
 * computed: the forward's (Ci = C, Co = OC) or, flipped, the input gradient's (Ci = OC, Co = C:
 * the kernel turned around, channel axes swapped). conv_wino_sample: one sample, y [Co][OH][OW]
 * (OH = H+2ph-r+1) from x (Ci planes [H][W], ld floats apart; read only) with padding ph, pw,
 * plus bias (NULL: none), stored or with add added, then with relu clamped at 0; tmp:
 * conv_wino_tmp_floats. */
int conv_wino_usable(const conv_dims_t *d);
int conv_wino_dx_usable(const conv_dims_t *d);
size_t conv_wino_u_floats(int Ci, int Co);
size_t conv_wino_tmp_floats(int Ci, int Co, int OH, int OW, int r);
void conv_wino_pack(const conv_dims_t *d, const float *W, int flipped, float *u);
void conv_wino_sample(const float *x, size_t ld, int Ci, int H, int W, int ph, int pw, int r, const float *u, int Co,
                      const float *bias, float *y, float *tmp, int add, int relu);
/* The weight gradient in the same tiles. conv_wino_dw_usable: the op's takes them.
 * conv_wino_dw_sample adds one sample's share, in the transform domain, into acc
 * (conv_wino_dw_acc_floats, zeroed before the first sample), from its input x (C planes [H][W])
 * and dy (OC planes [OH][OW], ldy floats apart); tmp: conv_wino_dw_tmp_floats.
 * conv_wino_dw_finish adds the taps acc stands for into dwt, dW^T [C*r*r][round16(OC)]. */
int conv_wino_dw_usable(const conv_dims_t *d);
static inline size_t conv_wino_dw_acc_floats(int C, int OC) { return (size_t)36 * C * ((OC + 15) / 16 * 16); }
size_t conv_wino_dw_tmp_floats(int C, int OC, int OH, int OW, int r);
void conv_wino_dw_sample(const float *x, int C, int H, int W, int ph, int pw, int r, const float *dy, size_t ldy, int OC,
                         float *acc, float *tmp);
void conv_wino_dw_finish(const float *acc, int C, int OC, int r, float *dwt);

/* Pointwise convs (1x1, stride 1, no padding, one group) in AVX-512 (ops_conv_pw.c).
 * conv_pw_usable: the op's forward and input gradient take conv_pw_gemm (AVX-512 CPU,
 * FEDNAS_CONV_PW not 0, not forced through im2col or the portable code). conv_pw_gemm: Y [M][P]
 * (row stride ldy) = A [M][K] (lda) X [K][P] (ldx), plus Y itself when add, plus bias[m] (NULL:
 * none), then with relu clamped at 0 and its bit mask (relu_mask's layout) at mask + m*mstride. */
int conv_pw_usable(const conv_dims_t *d);
void conv_pw_gemm(int M, int K, int P, const float *A, int lda, const float *X, int ldx, const float *bias, int relu,
                  uint8_t *mask, size_t mstride, float *Y, int ldy, int add);
/* conv_pw_dw: the weight gradient's product over n samples, dW [M][K] (row stride ldw) +=
 * sum over samples s and pixels p < P of dy[s*ds + m*ldd + p] * x[s*xs + k*ldx + p]. */
void conv_pw_dw(int M, int K, int P, int n, const float *dy, int ldd, size_t ds, const float *x, int ldx, size_t xs,
                float *dW, int ldw);

/* Forward and backward of a depthwise conv2d; failures are recorded in g. */
void conv_dw_fwd(engine_graph_t *g, dw_job_t *j);
void conv_dw_bwd(engine_graph_t *g, dw_job_t *j);

#endif
