/* infer_qconv: INT8 stride-1 convolutions read in place, on AMX tiles or VNNI (see infer_impl.h).
 *
 * The im2row path (infer.c's run_conv, which strided convs and FEDNAS_INFER_PORTABLE=1 keep)
 * quantizes the input channel-last, copies it k*k times into im2row's rows and multiplies those
 * by the weights; on the FedAvg CNN with VNNI the copies, the scalar epilogue and the separate
 * pool took twice the product's time. Here the product reads the
 * input in place: the input is quantized once into a channel-last copy with a border of the
 * zero point, [Hp][Wp][C] bytes, and output pixel q = oy*Wp + ox of the padded grid reads, for
 * kernel row ky, the k*C bytes from ((oy + ky)*Wp + ox)*C on: the input pixels (oy+ky, ox..ox+k-1)
 * with all their channels, contiguous. So A's rows are C bytes apart and its K blocks are the
 * kernel rows cut into 64-byte chunks (engine_qgemm_koff_fn's koff); the weights are packed in
 * the same order (ky, chunk, kx*C + c) with zeros past k*C, which is what makes the bytes a
 * chunk reads beyond its kernel row irrelevant. Rows ox >= OW of the padded grid are computed
 * and dropped. The int32 sums are the im2row path's; they are scaled with the same float
 * operations (rounding intrinsics, which the compiler does not fuse) and go through the fp32
 * direct kernel's epilogue (ReLU, fused 2x2 max pool, NCHW), so the logits match bit for bit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"

int infer_qconv_pack(ilayer_t *l)
{
    int C = l->in[0], k = l->k, kc = k * C, ch = (kc + 63) / 64, K2 = k * ch * 64;
    int8_t *w = calloc((size_t)l->cout * K2, 1);
    if (!w)
        return -1;
    for (int o = 0; o < l->cout; o++)
        for (int c = 0; c < C; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    w[(size_t)o * K2 + (size_t)ky * ch * 64 + (size_t)kx * C + c] =
                        l->qw[(size_t)o * l->Kp + ((size_t)c * k + ky) * k + kx];
    free(l->qwi);
    l->qwi = engine_qgemm_pack(l->cout, K2, w, K2);
    free(w);
    l->qchunks = ch;
    return l->qwi ? 0 : -1;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw")))
#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* The per-channel scale and offset exactly as run_conv computes them. Neither file fuses a
 * multiply and an add into an FMA (-ffp-contract=off, engine/CMakeLists.txt), which any -march
 * with FMA would otherwise do to run_conv's plain C; kept out of line all the same. */
__attribute__((noinline)) static void scales(const ilayer_t *l, int ocp, float *es, float *eb)
{
    for (int o = 0; o < ocp; o++) {
        es[o] = o < l->cout ? l->ascale * l->wscale[o] : 0;
        eb[o] = o < l->cout ? (l->b ? l->b[o] : 0) - (float)(l->azp * l->wsum[o]) * es[o] : 0;
    }
}

/* x [C][H][W] to q [Hp][Wp][C] bytes on the grid (scale, zp), the border zp, zero bytes from
 * the image's end to n: v = x / scale + zp + 0.5 clamped to [0, 255] and truncated, as
 * infer.c's quant_u8_hwc. */
AVX512 static void quant_pad_hwc(const float *x, int C, int H, int W, int pad, float scale, int zp, uint8_t *q,
                                 size_t n)
{
    const int Wp = W + 2 * pad;
    const size_t img = (size_t)(H + 2 * pad) * Wp * C, HW = (size_t)H * W;
    memset(q, zp, img);
    memset(q + img, 0, n - img);
    const __m512 inv = _mm512_set1_ps(1.0f / scale), z = _mm512_set1_ps((float)zp + 0.5f);
    const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)HW));
    for (int iy = 0; iy < H; iy++) {
        uint8_t *row = q + ((size_t)(iy + pad) * Wp + pad) * C;
        const float *xr = x + (size_t)iy * W;
        if (C == 1) { /* a first layer: the row is contiguous both sides */
            for (int ix = 0; ix < W; ix += 16) {
                __mmask16 m = (__mmask16)(W - ix >= 16 ? 0xffff : (1u << (W - ix)) - 1);
                __m512 v = _mm512_add_round_ps(_mm512_mul_round_ps(_mm512_maskz_loadu_ps(m, xr + ix), inv, RN), z, RN);
                v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                _mm512_mask_cvtusepi32_storeu_epi8(row + ix, m, _mm512_cvttps_epi32(v));
            }
            continue;
        }
        for (int ix = 0; ix < W; ix++)
            for (int c0 = 0; c0 < C; c0 += 16) {
                __mmask16 m = (__mmask16)(C - c0 >= 16 ? 0xffff : (1u << (C - c0)) - 1);
                __m512 v = _mm512_mask_i32gather_ps(lo, m, idx, xr + (size_t)c0 * HW + ix, 4);
                v = _mm512_add_round_ps(_mm512_mul_round_ps(v, inv, RN), z, RN);
                v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                _mm512_mask_cvtusepi32_storeu_epi8(row + (size_t)ix * C + c0, m, _mm512_cvttps_epi32(v));
            }
    }
}

/* acc [q of the padded grid][ocp] int32 to t [oy*OW + ox][ocp] floats: acc * es + eb. */
AVX512 static void dequant(const int32_t *acc, int OH, int OW, int Wp, int ocp, const float *es, const float *eb,
                           float *t)
{
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            const int32_t *a = acc + ((size_t)oy * Wp + ox) * ocp;
            float *o = t + ((size_t)oy * OW + ox) * ocp;
            for (int o0 = 0; o0 < ocp; o0 += 16) {
                __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(a + o0)));
                v = _mm512_add_round_ps(_mm512_mul_round_ps(v, _mm512_loadu_ps(es + o0), RN),
                                        _mm512_loadu_ps(eb + o0), RN);
                _mm512_store_ps(o + o0, v);
            }
        }
}

int infer_qconv_run(engine_infer_t *p, const ilayer_t *l, const float *x, float *y, int B)
{
    const int C = l->in[0], H = l->in[1], W = l->in[2], k = l->k, pad = l->pad, Hp = H + 2 * pad, Wp = W + 2 * pad;
    const int OH = Hp - k + 1, OW = Wp - k + 1, ocp = (l->cout + 15) / 16 * 16, ch = l->qchunks, nkb = k * ch;
    const int M = (OH * Wp + 15) / 16 * 16;
    /* the last row's last block ends (M-1)*C + (k-1)*Wp*C + ch*64 bytes in */
    size_t need = (size_t)(M - 1) * C + (size_t)(k - 1) * Wp * C + (size_t)ch * 64, img = (size_t)Hp * Wp * C;
    size_t xn = (need > img ? need : img) + 64, tn = (size_t)OH * OW * ocp;
    size_t in_n = (size_t)C * H * W, out_n = (size_t)l->cout * l->out[1] * l->out[2];
    long *koff = malloc((size_t)nkb * sizeof *koff);
    if (!koff || infer_grow((void **)&p->qx, &p->qx_cap, xn) ||
        infer_grow((void **)&p->acc, &p->acc_cap, (size_t)M * ocp * sizeof(int32_t)) ||
        infer_grow((void **)&p->dcol, &p->dcol_cap, tn * sizeof(float) + 64) ||
        infer_grow((void **)&p->es, &p->es_cap, 2 * (size_t)ocp * sizeof(float))) {
        free(koff);
        return -1;
    }
    for (int ky = 0; ky < k; ky++)
        for (int c = 0; c < ch; c++)
            koff[ky * ch + c] = (long)ky * Wp * C + 64L * c;
    float *t = (float *)(((uintptr_t)p->dcol + 63) & ~(uintptr_t)63), *es = p->es, *eb = p->es + ocp;
    scales(l, ocp, es, eb);
    for (int s = 0; s < B; s++) {
        quant_pad_hwc(x + (size_t)s * in_n, C, H, W, pad, l->ascale, l->azp, p->qx, xn);
        p->qkoff(M, l->cout, nkb, p->qx, C, koff, l->qwi, p->acc, ocp);
        dequant(p->acc, OH, OW, Wp, ocp, es, eb, t);
        infer_conv_epilogue(t, OH, OW, ocp, NULL, l->relu, l->pool, l->cout, y + (size_t)s * out_n);
    }
    free(koff);
    return 0;
}
#else
int infer_qconv_run(engine_infer_t *p, const ilayer_t *l, const float *x, float *y, int B)
{
    (void)p, (void)l, (void)x, (void)y, (void)B;
    abort(); /* never called: no VNNI or AMX kernel here, so no layer has qwi */
}
#endif
