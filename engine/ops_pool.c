/* CPU kernels: max, average and global-average pooling over NCHW planes (parallel over planes). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define POOL_AVX512 1

/* Whether the 2x2 max pool takes its AVX-512 code (checked at run time; FEDNAS_POOL_PORTABLE=1
 * forces the scalar loops, which tests compare it against). */
static int pool_use_avx512(void)
{
    const char *e = getenv("FEDNAS_POOL_PORTABLE");
    return !(e && atoi(e) > 0) && __builtin_cpu_supports("avx512f");
}

/* The 2x2 stride-2 max pool of one plane, 16 outputs at a time: the row pair's even and odd
 * columns are pulled apart with one permute each, then the four candidates are compared in
 * the scalar loop's scan order with its strict > (the first maximum wins, NaN never does), so
 * values and saved positions equal the scalar loop's. The scalar loop's branches on data were
 * mispredicted about once per output. */
__attribute__((target("avx512f"))) static void maxpool2_plane_512(const float *in, int W, int OH, int OW, float *out,
                                                                 int32_t *a)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = in + (size_t)(2 * oh) * W, *r1 = r0 + W;
        for (int ow0 = 0; ow0 < OW; ow0 += 16) {
            const int n = OW - ow0 < 16 ? OW - ow0 : 16, m2 = 2 * n;
            const __mmask16 mo = (__mmask16)((1u << n) - 1);
            const __mmask16 ml = (__mmask16)(m2 >= 16 ? 0xFFFF : (1u << m2) - 1);
            const __mmask16 mh = (__mmask16)(m2 > 16 ? (1u << (m2 - 16)) - 1 : 0);
            const float *p0 = r0 + 2 * ow0, *p1 = r1 + 2 * ow0;
            const __m512 l0 = _mm512_maskz_loadu_ps(ml, p0), h0 = _mm512_maskz_loadu_ps(mh, p0 + 16);
            const __m512 l1 = _mm512_maskz_loadu_ps(ml, p1), h1 = _mm512_maskz_loadu_ps(mh, p1 + 16);
            const __m512 v00 = _mm512_permutex2var_ps(l0, ev, h0), v01 = _mm512_permutex2var_ps(l0, od, h0);
            const __m512 v10 = _mm512_permutex2var_ps(l1, ev, h1), v11 = _mm512_permutex2var_ps(l1, od, h1);
            const __m512i i00 = _mm512_add_epi32(_mm512_set1_epi32(2 * oh * W + 2 * ow0), ev);
            __m512 m = v00;
            __m512i am = i00;
            __mmask16 k = _mm512_cmp_ps_mask(v01, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, k, v01);
            am = _mm512_mask_add_epi32(am, k, i00, _mm512_set1_epi32(1));
            k = _mm512_cmp_ps_mask(v10, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, k, v10);
            am = _mm512_mask_add_epi32(am, k, i00, _mm512_set1_epi32(W));
            k = _mm512_cmp_ps_mask(v11, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, k, v11);
            am = _mm512_mask_add_epi32(am, k, i00, _mm512_set1_epi32(W + 1));
            _mm512_mask_storeu_ps(out + (size_t)oh * OW + ow0, mo, m);
            _mm512_mask_storeu_epi32(a + (size_t)oh * OW + ow0, mo, am);
        }
    }
}

/* Its backward: every input of the windows gets dy where it was the window's maximum, else 0,
 * written (or with add, added) row pair by row pair, so no zeroing pass and no scatter; the
 * last row and column of an odd-sized plane, in no window, are zeroed (or left as they are). */
__attribute__((target("avx512f"))) static void maxpool2_plane_bwd_512(const float *dy, const int32_t *a, int H, int W,
                                                                     int OH, int OW, float *dx, int add)
{
    /* lanes 0-15 of the interleave take output j's even input 2j, lanes 16-31 its odd input */
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i iota2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22,
                                                                          24, 26, 28, 30);
    for (int oh = 0; oh < OH; oh++) {
        float *d0 = dx + (size_t)(2 * oh) * W, *d1 = d0 + W;
        for (int ow0 = 0; ow0 < OW; ow0 += 16) {
            const int n = OW - ow0 < 16 ? OW - ow0 : 16, m2 = 2 * n;
            const __mmask16 mo = (__mmask16)((1u << n) - 1);
            const __mmask16 ml = (__mmask16)(m2 >= 16 ? 0xFFFF : (1u << m2) - 1);
            const __mmask16 mh = (__mmask16)(m2 > 16 ? (1u << (m2 - 16)) - 1 : 0);
            const __m512 g = _mm512_maskz_loadu_ps(mo, dy + (size_t)oh * OW + ow0);
            const __m512i am = _mm512_maskz_loadu_epi32(mo, a + (size_t)oh * OW + ow0);
            const __m512i i00 = _mm512_add_epi32(_mm512_set1_epi32(2 * oh * W + 2 * ow0), iota2);
            const __m512 z = _mm512_setzero_ps();
            const __m512 g00 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(am, i00), g);
            const __m512 g01 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(am, _mm512_add_epi32(i00, _mm512_set1_epi32(1))), g);
            const __m512 g10 = _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(am, _mm512_add_epi32(i00, _mm512_set1_epi32(W))), g);
            const __m512 g11 =
                _mm512_mask_mov_ps(z, _mm512_cmpeq_epi32_mask(am, _mm512_add_epi32(i00, _mm512_set1_epi32(W + 1))), g);
            __m512 r0l = _mm512_permutex2var_ps(g00, lo, g01), r0h = _mm512_permutex2var_ps(g00, hi, g01);
            __m512 r1l = _mm512_permutex2var_ps(g10, lo, g11), r1h = _mm512_permutex2var_ps(g10, hi, g11);
            float *q0 = d0 + 2 * ow0, *q1 = d1 + 2 * ow0;
            if (add) {
                r0l = _mm512_add_ps(r0l, _mm512_maskz_loadu_ps(ml, q0));
                r0h = _mm512_add_ps(r0h, _mm512_maskz_loadu_ps(mh, q0 + 16));
                r1l = _mm512_add_ps(r1l, _mm512_maskz_loadu_ps(ml, q1));
                r1h = _mm512_add_ps(r1h, _mm512_maskz_loadu_ps(mh, q1 + 16));
            }
            _mm512_mask_storeu_ps(q0, ml, r0l);
            _mm512_mask_storeu_ps(q0 + 16, mh, r0h);
            _mm512_mask_storeu_ps(q1, ml, r1l);
            _mm512_mask_storeu_ps(q1 + 16, mh, r1h);
        }
        if (!add && W > 2 * OW) /* columns past the last window */
            for (int w = 2 * OW; w < W; w++)
                d0[w] = d1[w] = 0.0f;
    }
    if (!add)
        for (int h = 2 * OH; h < H; h++)
            memset(dx + (size_t)h * W, 0, (size_t)W * sizeof *dx);
}
#endif

typedef struct {
    engine_tensor_t *t;
    float *dx;
    int fresh; /* dx not written yet: planes are zeroed (in cache) before the scatter */
} pool_job_t;

static void maxpool_planes(void *ctx, int64_t b, int64_t e)
{
    engine_tensor_t *t = ((pool_job_t *)ctx)->t;
    const engine_tensor_t *x = t->src[0];
    const int H = (int)x->ne[2], W = (int)x->ne[3], OH = (int)t->ne[2], OW = (int)t->ne[3];
    const int k = t->ip[0], s = t->ip[1], p = t->ip[2];
    int32_t *arg = t->saved;
#if POOL_AVX512
    const int v512 = k == 2 && s == 2 && p == 0 && pool_use_avx512();
#endif
    for (int64_t pl = b; pl < e; pl++) {
        const float *in = (const float *)x->data + pl * H * W;
        float *out = (float *)t->data + pl * OH * OW;
        int32_t *a = arg + pl * OH * OW;
#if POOL_AVX512
        if (v512) {
            maxpool2_plane_512(in, W, OH, OW, out, a);
            continue;
        }
#endif
        if (k == 2 && s == 2 && p == 0) {
            /* the common 2x2 pool: no bounds to check; same scan order and tie rule as below */
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = in + (size_t)(2 * oh) * W, *r1 = r0 + W;
                for (int ow = 0; ow < OW; ow++) {
                    int32_t am = 2 * oh * W + 2 * ow;
                    float m = r0[2 * ow];
                    if (r0[2 * ow + 1] > m)
                        m = r0[2 * ow + 1], am = 2 * oh * W + 2 * ow + 1;
                    if (r1[2 * ow] > m)
                        m = r1[2 * ow], am = (2 * oh + 1) * W + 2 * ow;
                    if (r1[2 * ow + 1] > m)
                        m = r1[2 * ow + 1], am = (2 * oh + 1) * W + 2 * ow + 1;
                    out[oh * OW + ow] = m;
                    a[oh * OW + ow] = am;
                }
            }
            continue;
        }
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float m = -FLT_MAX;
                int32_t am = -1;
                for (int i = 0; i < k; i++) {
                    int ih = oh * s - p + i;
                    if (ih < 0 || ih >= H)
                        continue;
                    for (int j = 0; j < k; j++) {
                        int iw = ow * s - p + j;
                        if (iw < 0 || iw >= W)
                            continue;
                        float v = in[ih * W + iw];
                        if (am < 0 || v > m) {
                            m = v;
                            am = ih * W + iw;
                        }
                    }
                }
                out[oh * OW + ow] = m;
                a[oh * OW + ow] = am;
            }
    }
}

void cpu_maxpool2d_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    t->saved = engine_arena_alloc(engine_graph_arena(g), (size_t)engine_tensor_numel(t) * sizeof(int32_t));
    if (!t->saved) {
        engine_graph_fail(g, FN_ENOMEM, "maxpool2d: out of memory");
        return;
    }
    pool_job_t j = {t, NULL, 0};
    engine_parallel_for(engine_graph_pool(g), t->ne[0] * t->ne[1], 8, maxpool_planes, &j);
}

/* Each output's gradient goes to the input its forward pass picked (argmax saved per output). */
static void maxpool_bwd_planes(void *ctx, int64_t b, int64_t e)
{
    const pool_job_t *j = ctx;
    const engine_tensor_t *t = j->t, *x = t->src[0];
    const int64_t HW = x->ne[2] * x->ne[3], OHW = t->ne[2] * t->ne[3];
    (void)x;
    const int32_t *arg = t->saved;
#if POOL_AVX512
    const int v512 = t->ip[0] == 2 && t->ip[1] == 2 && t->ip[2] == 0 && pool_use_avx512();
#endif
    for (int64_t pl = b; pl < e; pl++) {
        float *dx = j->dx + pl * HW;
        const float *dy = t->grad + pl * OHW;
        const int32_t *a = arg + pl * OHW;
#if POOL_AVX512
        if (v512) {
            maxpool2_plane_bwd_512(dy, a, (int)x->ne[2], (int)x->ne[3], (int)t->ne[2], (int)t->ne[3], dx, !j->fresh);
            continue;
        }
#endif
        if (j->fresh)
            memset(dx, 0, (size_t)HW * sizeof *dx);
        for (int64_t o = 0; o < OHW; o++)
            if (a[o] >= 0)
                dx[a[o]] += dy[o];
    }
}

void cpu_maxpool2d_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    pool_job_t j = {t, NULL, 0};
    j.dx = cpu_src_grad_out(g, t, 0, &j.fresh);
    if (j.dx)
        engine_parallel_for(engine_graph_pool(g), t->ne[0] * t->ne[1], 8, maxpool_bwd_planes, &j);
}

static void avgpool_planes(void *ctx, int64_t b, int64_t e)
{
    pool_job_t *job = ctx;
    engine_tensor_t *t = job->t;
    const engine_tensor_t *x = t->src[0];
    const int H = (int)x->ne[2], W = (int)x->ne[3], OH = (int)t->ne[2], OW = (int)t->ne[3];
    const int k = t->ip[0], s = t->ip[1], p = t->ip[2];
    const float inv = 1.0f / (float)(k * k);
    for (int64_t pl = b; pl < e; pl++) {
        const float *in = (const float *)x->data + pl * H * W;
        float *out = (float *)t->data + pl * OH * OW;
        float *dx = job->dx ? job->dx + pl * H * W : NULL;
        const float *dy = t->grad ? t->grad + pl * OH * OW : NULL;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float acc = 0.0f;
                for (int i = 0; i < k; i++) {
                    int ih = oh * s - p + i;
                    if (ih < 0 || ih >= H)
                        continue;
                    for (int j = 0; j < k; j++) {
                        int iw = ow * s - p + j;
                        if (iw < 0 || iw >= W)
                            continue;
                        if (dx)
                            dx[ih * W + iw] += dy[oh * OW + ow] * inv;
                        else
                            acc += in[ih * W + iw];
                    }
                }
                if (!dx)
                    out[oh * OW + ow] = acc * inv;
            }
    }
}

void cpu_avgpool2d_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    pool_job_t j = {t, NULL, 0};
    engine_parallel_for(engine_graph_pool(g), t->ne[0] * t->ne[1], 8, avgpool_planes, &j);
}

void cpu_avgpool2d_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    pool_job_t j = {t, dx, 0};
    engine_parallel_for(engine_graph_pool(g), t->ne[0] * t->ne[1], 8, avgpool_planes, &j);
}

/* Global average pool, parallel over planes (it ran serially: at batch 256 the NAS nets' last
 * maps, 64-128 planes of 7x7 per sample, kept one core busy while the other waited). Each plane
 * is summed in double with four partial sums in a fixed order (a single running sum is one long
 * dependency chain), so results do not depend on the thread count. FEDNAS_GAP_SERIAL=1 runs the
 * planes on the calling thread only (A/B runs). */
typedef struct {
    const float *in, *gy;
    float *out;
    int64_t HW;
    int fresh; /* backward: store into dx (nothing else wrote it yet), else add */
} gap_job_t;

static void gap_fwd_range(void *ctx, int64_t begin, int64_t end)
{
    const gap_job_t *j = ctx;
    const int64_t HW = j->HW;
    for (int64_t pl = begin; pl < end; pl++) {
        const float *r = j->in + pl * HW;
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        int64_t i = 0;
        for (; i + 4 <= HW; i += 4) {
            a0 += r[i];
            a1 += r[i + 1];
            a2 += r[i + 2];
            a3 += r[i + 3];
        }
        for (; i < HW; i++)
            a0 += r[i];
        j->out[pl] = (float)(((a0 + a1) + (a2 + a3)) / (double)HW);
    }
}

static void gap_bwd_range(void *ctx, int64_t begin, int64_t end)
{
    const gap_job_t *j = ctx;
    const int64_t HW = j->HW;
    for (int64_t pl = begin; pl < end; pl++) {
        const float v = j->gy[pl] / (float)HW;
        float *d = j->out + pl * HW;
        if (j->fresh)
            for (int64_t i = 0; i < HW; i++)
                d[i] = v;
        else
            for (int64_t i = 0; i < HW; i++)
                d[i] += v;
    }
}

static void gap_run(engine_graph_t *g, int64_t P, int64_t HW, engine_parallel_fn fn, gap_job_t *j)
{
    const char *e = getenv("FEDNAS_GAP_SERIAL");
    if (e && atoi(e) > 0) {
        fn(j, 0, P);
        return;
    }
    const int64_t grain = HW >= CPU_PAR_GRAIN ? 1 : CPU_PAR_GRAIN / (HW > 0 ? HW : 1);
    engine_parallel_for(engine_graph_pool(g), P, grain, fn, j);
}

void cpu_global_avgpool_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0];
    const int64_t P = x->ne[0] * x->ne[1], HW = x->ne[2] * x->ne[3];
    gap_job_t j = {.in = x->data, .out = t->data, .HW = HW};
    gap_run(g, P, HW, gap_fwd_range, &j);
}

void cpu_global_avgpool_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    gap_job_t j = {.gy = t->grad};
    j.out = cpu_src_grad_out(g, t, 0, &j.fresh);
    if (!j.out)
        return;
    const engine_tensor_t *x = t->src[0];
    const int64_t P = x->ne[0] * x->ne[1], HW = x->ne[2] * x->ne[3];
    j.HW = HW;
    gap_run(g, P, HW, gap_bwd_range, &j);
}
