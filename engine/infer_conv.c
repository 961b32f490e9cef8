/* infer_conv: the inference runtime's direct convolution (stride 1, AVX-512; see infer_impl.h).
 *
 * im2col + sgemm spends a third of a conv's time outside the product on the FedAvg CNN: im2col
 * writes 25 copies of the input, OpenBLAS copies them again into its panels and packs the
 * weights anew on every call. Here the output is computed in registers straight from a
 * zero-bordered copy of the sample: output channels run along the vector (the weights are
 * packed once per plan as [C*k*k][cout rounded up to 16]), pixels along a row are broadcast
 * from the input, so every lane does useful work whatever the map's width (the engine's
 * row-vectorized direct conv uses 14 of 16 lanes on a 14-wide map). A tile is NOC blocks of
 * 16 channels x NPX consecutive pixels of one output row, NOC x NPX <= 24 accumulators; per
 * kernel tap NOC weight loads and NPX broadcasts feed NOC x NPX FMAs. The tile lands in a
 * pixel-major scratch [OH*OW][OCP]; one epilogue pass adds the bias, applies the ReLU and the
 * fused 2x2 max pool and writes the NCHW output.
 *
 * Each output is summed in the order (channel, kernel row, kernel column): the result differs
 * from the sgemm path in rounding only (tests/unit/test_infer_conv.c checks both against the
 * engine's forward). FEDNAS_INFER_PORTABLE=1 (infer_avx512) or FEDNAS_INFER_CONV=gemm keeps the
 * im2col + sgemm path (A/B runs). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"
#include "engine/ops_conv.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

/* The layer as the training engine's convolution dimensions (stride 1: the only kind here). */
static conv_dims_t dims(const ilayer_t *l)
{
    conv_dims_t d = {.C = l->in[0], .H = l->in[1], .W = l->in[2], .OC = l->cout, .KH = l->k, .KW = l->k,
                     .sh = 1, .sw = 1, .ph = l->pad, .pw = l->pad, .dh = 1, .dw = 1, .G = 1};
    d.OH = d.H + 2 * d.ph - d.KH + 1, d.OW = d.W + 2 * d.pw - d.KW + 1;
    d.Cg = d.C, d.OCg = d.OC, d.K = l->K, d.OHW = d.OH * d.OW;
    return d;
}

/* wc: Winograd's transformed weights where the engine's tiles take the layer (ops_conv_wino.c:
 * F(2x2, 5x5) and F(4x4, 3x3), 16 or more channels each side; FEDNAS_CONV_WINO=0 turns them
 * off), else [K][OCP] (K = c, ky, kx as in w), zero beyond cout: the training engine's packing. */
static int pack_conv(ilayer_t *l)
{
    int ocp = (l->cout + 15) / 16 * 16;
    conv_dims_t d = dims(l);
    int wino = conv_wino_usable(&d);
    size_t n = wino ? conv_wino_u_floats(d.C, d.OC) : (size_t)l->K * ocp;
    float *wc = aligned_alloc(64, (n * sizeof *wc + 63) / 64 * 64);
    if (!wc)
        return -1;
    if (wino)
        conv_wino_pack(&d, l->w, 0, wc);
    else
        conv_oc_pack(l->w, l->cout, l->K, ocp, wc);
    l->wc = wc;
    l->wino = wino;
    return 0;
}

/* Winograd's tiles, a sample at a time: bias and ReLU in the tiles' output pass, the fused pool
 * after it (max and ReLU commute). */
static int conv_wino(engine_infer_t *p, const ilayer_t *l, const float *x, float *y, int B)
{
    conv_dims_t d = dims(l);
    size_t in_n = (size_t)d.C * d.H * d.W, out_n = (size_t)l->cout * l->out[1] * l->out[2];
    size_t tn = conv_wino_tmp_floats(d.C, d.OC, d.OH, d.OW, d.KH), fn = l->pool ? (size_t)d.OC * d.OHW : 0;
    if (infer_grow((void **)&p->dcol, &p->dcol_cap, (tn + fn) * sizeof(float) + 64))
        return -1;
    float *t = (float *)(((uintptr_t)p->dcol + 63) & ~(uintptr_t)63), *full = t + tn;
    for (int s = 0; s < B; s++) {
        float *ys = y + (size_t)s * out_n;
        conv_wino_sample(x + (size_t)s * in_n, (size_t)d.H * d.W, d.C, d.H, d.W, d.ph, d.pw, d.KH, l->wc, d.OC, l->b,
                         l->pool ? full : ys, t, 0, l->relu);
        if (l->pool)
            infer_maxpool2(full, d.OC, d.OH, d.OW, ys);
    }
    return 0;
}

/* NOC x NPX tile at output row oy, columns [ox, ox + NPX): xp points at the padded input's
 * (oy, ox) of channel 0 (planes pp floats apart, rows Wp), wc at the tile's first channel block,
 * t at the scratch row of pixel (oy, ox). */
AVX512 __attribute__((always_inline)) static inline void tile(const int NOC, const int NPX, const float *xp, size_t pp,
                                                              int Wp, int C, int k, const float *wc, int ocp, float *t)
{
    __m512 acc[4][16];
#pragma GCC unroll 4
    for (int b = 0; b < NOC; b++)
#pragma GCC unroll 16
        for (int j = 0; j < NPX; j++)
            acc[b][j] = _mm512_setzero_ps();
    const float *w = wc;
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < k; ky++) {
            const float *xr = xp + (size_t)c * pp + (size_t)ky * Wp;
            for (int kx = 0; kx < k; kx++, w += ocp) {
                __m512 wv[4];
#pragma GCC unroll 4
                for (int b = 0; b < NOC; b++)
                    wv[b] = _mm512_load_ps(w + 16 * b);
#pragma GCC unroll 16
                for (int j = 0; j < NPX; j++) {
                    __m512 xv = _mm512_set1_ps(xr[kx + j]);
#pragma GCC unroll 4
                    for (int b = 0; b < NOC; b++)
                        acc[b][j] = _mm512_fmadd_ps(wv[b], xv, acc[b][j]);
                }
            }
        }
#pragma GCC unroll 16
    for (int j = 0; j < NPX; j++)
#pragma GCC unroll 4
        for (int b = 0; b < NOC; b++)
            _mm512_store_ps(t + (size_t)j * ocp + 16 * b, acc[b][j]);
}

#define ARGS const float *xp, size_t pp, int Wp, int C, int k, const float *wc, int ocp, float *t
#define CALL xp, pp, Wp, C, k, wc, ocp, t
#define C2(N, M) case M: tile(N, M, CALL); return;
#define C4(N, M) C2(N, M) C2(N, M + 1) C2(N, M + 2) C2(N, M + 3)
/* The widest tile per channel-block count (NOC x NPX <= 24 accumulators, plus NOC weights and
 * a broadcast: at most 29 of the 32 registers). */
static const int k_npx[5] = {0, 16, 12, 8, 6};

AVX512 static void tiles1(int n, ARGS)
{
    switch (n) { C4(1, 1) C4(1, 5) C4(1, 9) C4(1, 13) }
}
AVX512 static void tiles2(int n, ARGS)
{
    switch (n) { C4(2, 1) C4(2, 5) C4(2, 9) }
}
AVX512 static void tiles3(int n, ARGS)
{
    switch (n) { C4(3, 1) C4(3, 5) }
}
AVX512 static void tiles4(int n, ARGS)
{
    switch (n) { C4(4, 1) C2(4, 5) C2(4, 6) }
}
typedef void (*tiles_fn)(int n, ARGS);
static const tiles_fn k_tiles[5] = {NULL, tiles1, tiles2, tiles3, tiles4};

AVX512 void infer_conv_epilogue(const float *t, int OH, int OW, int ocp, const float *bias_v, int relu, int pool, int cout,
                                float *y)
{
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 lo = _mm512_set1_ps(relu ? 0.0f : -INFINITY);
    int PH = pool ? OH / 2 : OH, PW = pool ? OW / 2 : OW, plane = PH * PW;
    const __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(plane));
    for (int b = 0; b < ocp / 16; b++) {
        int o0 = 16 * b, left = cout - o0;
        __mmask16 m = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
        __m512 bias = bias_v ? _mm512_maskz_loadu_ps(m, bias_v + o0) : _mm512_setzero_ps();
        float *yb = y + (size_t)o0 * plane;
        for (int py = 0; py < PH; py++)
            for (int px = 0; px < PW; px++) {
                __m512 v;
                if (pool) {
                    const float *a = t + ((size_t)(2 * py) * OW + 2 * px) * ocp + o0;
                    v = _mm512_max_ps(_mm512_max_ps(_mm512_load_ps(a), _mm512_load_ps(a + ocp)),
                                      _mm512_max_ps(_mm512_load_ps(a + (size_t)OW * ocp),
                                                    _mm512_load_ps(a + (size_t)(OW + 1) * ocp)));
                } else {
                    v = _mm512_load_ps(t + ((size_t)py * OW + px) * ocp + o0);
                }
                v = _mm512_max_ps(_mm512_add_ps(v, bias), lo);
                _mm512_mask_i32scatter_ps(yb + py * PW + px, m, idx, v, 4);
            }
    }
}

int infer_conv_direct_ok(const ilayer_t *l)
{
    const char *e = getenv("FEDNAS_INFER_CONV");
    return l->stride == 1 && infer_avx512() && !(e && strcmp(e, "gemm") == 0);
}

int infer_conv_direct(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B)
{
    int C = l->in[0], H = l->in[1], W = l->in[2], k = l->k, pad = l->pad;
    int OH = H + 2 * pad - k + 1, OW = W + 2 * pad - k + 1, Hp = H + 2 * pad, Wp = W + 2 * pad;
    int ocp = (l->cout + 15) / 16 * 16;
    size_t pp = (size_t)Hp * Wp, in_n = (size_t)C * H * W, out_n = (size_t)l->cout * l->out[1] * l->out[2];
    size_t tn = ((size_t)OH * OW * ocp + 15) / 16 * 16, xn = (size_t)C * pp + 16; /* + a row's overrun */
    if (!l->wc && pack_conv(l) < 0)
        return -1;
    if (l->wino)
        return conv_wino(p, l, x, y, B);
    if (infer_grow((void **)&p->dcol, &p->dcol_cap, (tn + xn) * sizeof(float) + 64))
        return -1;
    float *t = (float *)(((uintptr_t)p->dcol + 63) & ~(uintptr_t)63), *xp = t + tn;
    memset(xp, 0, xn * sizeof *xp);
    for (int s = 0; s < B; s++) {
        const float *xs = x + (size_t)s * in_n;
        for (int c = 0; c < C; c++)
            for (int iy = 0; iy < H; iy++)
                memcpy(xp + (size_t)c * pp + (size_t)(iy + pad) * Wp + pad, xs + ((size_t)c * H + iy) * W,
                       (size_t)W * sizeof *xs);
        for (int o0 = 0; o0 < ocp; o0 += 64) {
            /* a row in the fewest tiles, of even widths (14 = 5+5+4, not 6+6+2: a narrow tile has
             * too few accumulators to hide the FMA latency) */
            int noc = (ocp - o0) / 16 > 4 ? 4 : (ocp - o0) / 16, nt = (OW + k_npx[noc] - 1) / k_npx[noc];
            tiles_fn f = k_tiles[noc];
            const float *wc = l->wc + o0;
            for (int oy = 0; oy < OH; oy++)
                for (int i = 0, ox = 0; i < nt; i++) {
                    int n = (OW - ox + (nt - i) - 1) / (nt - i);
                    f(n, xp + (size_t)oy * Wp + ox, pp, Wp, C, k, wc, ocp, t + ((size_t)oy * OW + ox) * ocp + o0);
                    ox += n;
                }
        }
        infer_conv_epilogue(t, OH, OW, ocp, l->b, l->relu, l->pool, l->cout, y + (size_t)s * out_n);
    }
    return 0;
}

#else
void infer_conv_epilogue(const float *t, int OH, int OW, int ocp, const float *bias, int relu, int pool, int cout,
                         float *y)
{
    (void)t, (void)OH, (void)OW, (void)ocp, (void)bias, (void)relu, (void)pool, (void)cout, (void)y;
    abort(); /* never called: infer_avx512() is 0 here */
}
int infer_conv_direct_ok(const ilayer_t *l)
{
    (void)l;
    return 0;
}
int infer_conv_direct(engine_infer_t *p, ilayer_t *l, const float *x, float *y, int B)
{
    (void)p, (void)l, (void)x, (void)y, (void)B;
    return -1;
}
#endif
