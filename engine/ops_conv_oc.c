/* Direct convolution vectorized along the output channels, for some of the ops ops_conv_direct.c
 * takes (oc_pays: the FedAvg CNN's 32->64 5x5 layer, plain3's 7x7 32->64 3x3 layer and its input
 * gradient), in AVX-512 (checked at run time).
 *
 * conv_direct_sample vectorizes along the output row: a row of 14 fills 14 of 16 lanes, a 7x7
 * map goes flat on the padded width (49 outputs in 64 lanes), and the rows left over by its
 * 3-row tiles run in smaller, slower tiles. Here a vector holds 16 output channels of one output
 * pixel instead: a tile is P output pixels (consecutive in the plane, across row ends: each
 * pixel has its own input pointer) x V vectors of 16 channels, P*V <= 24 accumulators. Per
 * kernel tap it loads V weight vectors from the packed weights wt [C*KH*KW][OCP] (OCP: OC
 * rounded up to 16, zero past OC) and broadcasts P input values. Every lane is used when OC is
 * a multiple of 16, whatever the map's width, and the only short tile is a plane's last.
 * Tiles store their sums along the channels into tmp [OH*OW][OCP]; a last pass turns that into
 * the NCHW output, 16 pixels of a channel per gather, with bias, ReLU and the old output (a
 * scatter per tile vector cost 14-22% of a 3x3 layer of 16 channels).
 *
 * Each output element is summed in the order (channel, kernel row, kernel column), as in
 * conv_direct_sample, so the two give the same results up to FMA contraction; the results do not
 * depend on the thread count. Tests: test_engine_conv_paths (its direct kinds run with this
 * kernel on and off), against a double-precision convolution and the im2col path.
 * FEDNAS_CONV_OC=0 turns it off (A/B runs). */
#include <stdint.h>
#include <stdlib.h>

#include "engine/ops_conv.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

/* Pixels per tile for V vectors of channels: 24 accumulators for V = 4 and 3, 16 for V = 2 and
 * 8 for V = 1 (at most 8 input pointers, which stay in general registers). */
static int oc_pixels(int V) { return V == 4 ? 6 : 8; }

/* P pixels (input pointers px) x V channel vectors (weights from wt, rows OCP apart) into t
 * ([pixel][OCP] from the tile's first pixel and channel). */
__attribute__((target("avx512f"), always_inline)) static inline void
oc_tile(const int P, const int V, const float *const *px, int C, size_t pp, int Wp, int KH, int KW, const float *wt,
        int OCP, float *t)
{
    __m512 acc[8][4];
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int v = 0; v < V; v++)
            acc[p][v] = _mm512_setzero_ps();
    const float *w = wt;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < KH; ki++) {
            const size_t row = (size_t)c * pp + (size_t)ki * Wp;
            for (int kj = 0; kj < KW; kj++, w += OCP) {
                __m512 wv[4];
#pragma GCC unroll 16
                for (int v = 0; v < V; v++)
                    wv[v] = _mm512_loadu_ps(w + 16 * v);
#pragma GCC unroll 16
                for (int p = 0; p < P; p++) {
                    const __m512 b = _mm512_set1_ps(px[p][row + kj]);
#pragma GCC unroll 16
                    for (int v = 0; v < V; v++)
                        acc[p][v] = _mm512_fmadd_ps(b, wv[v], acc[p][v]);
                }
            }
        }
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(t + (size_t)p * OCP + 16 * v, acc[p][v]);
}

#define OC_CASE(p, v)                                                                                                 \
    case (v) * 16 + (p):                                                                                              \
        oc_tile(p, v, px, C, pp, Wp, KH, KW, wt, OCP, t);                                                             \
        break;
#define OC_P6(v) OC_CASE(1, v) OC_CASE(2, v) OC_CASE(3, v) OC_CASE(4, v) OC_CASE(5, v) OC_CASE(6, v)
#define OC_P8(v) OC_P6(v) OC_CASE(7, v) OC_CASE(8, v)

__attribute__((target("avx512f"))) static void oc_tile_any(int P, int V, const float *const *px, int C, size_t pp,
                                                          int Wp, int KH, int KW, const float *wt, int OCP, float *t)
{
    switch (V * 16 + P) {
        OC_P6(4) OC_P8(3) OC_P8(2) OC_P8(1)
    default:
        abort(); /* unreachable: V in 1..4, P in 1..oc_pixels(V) */
    }
}

__attribute__((target("avx512f"))) void conv_oc_sample(const float *xp, int Hp, int Wp, int C, const float *wt,
                                                      int OCP, int KH, int KW, const float *bias, int OC, float *y,
                                                      float *tmp, int add, int relu)
{
    const int OH = Hp - KH + 1, OW = Wp - KW + 1, OHW = OH * OW;
    const size_t pp = (size_t)Hp * Wp;
    for (int oc0 = 0; oc0 < OCP; oc0 += 64) {
        const int V = (OCP - oc0) / 16 < 4 ? (OCP - oc0) / 16 : 4, P = oc_pixels(V);
        int oh = 0, ow = 0; /* the tile's first pixel */
        for (int p0 = 0; p0 < OHW; p0 += P) {
            const int n = OHW - p0 < P ? OHW - p0 : P;
            const float *px[8];
            for (int p = 0; p < n; p++) {
                px[p] = xp + (size_t)oh * Wp + ow;
                if (++ow == OW)
                    ow = 0, oh++;
            }
            oc_tile_any(n, V, px, C, pp, Wp, KH, KW, wt + oc0, OCP, tmp + (size_t)p0 * OCP + oc0);
        }
    }
    conv_oc_unpack(tmp, OCP, OHW, bias, OC, y, add, relu);
}

/* tmp [OHW][OCP] into y [OC][OHW]: 16 pixels of a channel per gather, then bias, the old
 * output, ReLU, one store along the plane. */
__attribute__((target("avx512f"))) void conv_oc_unpack(const float *tmp, int OCP, int OHW, const float *bias, int OC,
                                                      float *y, int add, int relu)
{
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(OCP));
    for (int oc = 0; oc < OC; oc++) {
        const __m512 bv = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
        float *yo = y + (size_t)oc * OHW;
        for (int p0 = 0; p0 < OHW; p0 += 16) {
            const __mmask16 m = OHW - p0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OHW - p0)) - 1);
            __m512 s = _mm512_add_ps(
                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, tmp + (size_t)p0 * OCP + oc, 4), bv);
            if (add)
                s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, yo + p0));
            if (relu)
                s = _mm512_max_ps(s, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(yo + p0, m, s);
        }
    }
}

/* Whether n floats fill at least 3/4 of the 16-lane vectors they take (dir_fills in
 * ops_conv_direct.c). */
static int oc_fills(int n) { return 4 * n >= 3 * 16 * ((n + 15) / 16); }

static int oc_enabled(void)
{
    const char *e = getenv("FEDNAS_CONV_OC");
    return !(e && *e && atoi(e) <= 0);
}

/* Where this kernel beats conv_direct_sample, measured per layer (one core, alternating in one
 * process, load about 4): maps of short rows, which the row kernel computes flat (plain3's 7x7
 * 32->64 layer 1.59-1.65x, its input gradient 1.11-1.14x), and full rows only with 64 output
 * channels over 512 taps or more (the CNN's 14x14 32->64 5x5 layer 1.09-1.15x; its input
 * gradient, 32 output channels, 0.95-1.00x). Below 128 taps the pass from [pixel][channel] to
 * the planes costs more than the lanes gain (a 1->32 first layer ran at 0.22-0.39x; plain3's
 * 16->32 layer 0.90-0.95x, its input gradient 0.76-0.78x). out: output channels, taps: input
 * channels x kernel area, ow: the output row's length. */
static int oc_pays(int out, int taps, int ow)
{
    if (out < 16 || !oc_fills(out) || taps < 128)
        return 0;
    return !oc_fills(ow) || (out >= 64 && taps >= 512);
}

int conv_oc_usable(const conv_dims_t *d)
{
    return conv_direct_usable(d) && oc_enabled() && oc_pays(d->OC, d->C * d->KH * d->KW, d->OW);
}

int conv_oc_dx_usable(const conv_dims_t *d)
{
    return conv_direct_dx_usable(d) && oc_enabled() && oc_pays(d->C, d->OC * d->KH * d->KW, d->W);
}
#else
void conv_oc_sample(const float *xp, int Hp, int Wp, int C, const float *wt, int OCP, int KH, int KW,
                    const float *bias, int OC, float *y, float *tmp, int add, int relu)
{
    (void)xp, (void)Hp, (void)Wp, (void)C, (void)wt, (void)OCP, (void)KH, (void)KW, (void)bias, (void)OC, (void)y;
    (void)tmp, (void)add, (void)relu;
    abort(); /* never called: conv_oc_usable() is 0 here */
}

void conv_oc_unpack(const float *tmp, int OCP, int OHW, const float *bias, int OC, float *y, int add, int relu)
{
    (void)tmp, (void)OCP, (void)OHW, (void)bias, (void)OC, (void)y, (void)add, (void)relu;
    abort(); /* never called: its callers' usable() checks are 0 here */
}

int conv_oc_usable(const conv_dims_t *d)
{
    (void)d;
    return 0;
}

int conv_oc_dx_usable(const conv_dims_t *d)
{
    (void)d;
    return 0;
}
#endif

void conv_oc_pack(const float *w, int OC, int Q, int OCP, float *wt)
{
    for (int q = 0; q < Q; q++) {
        float *dst = wt + (size_t)q * OCP;
        for (int oc = 0; oc < OC; oc++)
            dst[oc] = w[(size_t)oc * Q + q];
        for (int oc = OC; oc < OCP; oc++)
            dst[oc] = 0.0f;
    }
}

void conv_oc_pack_flipped(const conv_dims_t *d, const float *W, int CP, float *wt)
{
    const int KK = d->KH * d->KW;
    /* the input gradient's weights: tap (oc, k) of output channel c is W[oc][c][KK-1-k] */
    for (int oc = 0; oc < d->OC; oc++)
        for (int k = 0; k < KK; k++) {
            float *dst = wt + ((size_t)oc * KK + k) * CP;
            for (int c = 0; c < d->C; c++)
                dst[c] = W[((size_t)oc * d->C + c) * KK + KK - 1 - k];
            for (int c = d->C; c < CP; c++)
                dst[c] = 0.0f;
        }
}
