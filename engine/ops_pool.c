/* CPU kernels: max, average and global-average pooling over NCHW planes (parallel over planes). */
#include <float.h>
#include <string.h>

#include "engine/ops_cpu.h"

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
    for (int64_t pl = b; pl < e; pl++) {
        const float *in = (const float *)x->data + pl * H * W;
        float *out = (float *)t->data + pl * OH * OW;
        int32_t *a = arg + pl * OH * OW;
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
    const int32_t *arg = t->saved;
    for (int64_t pl = b; pl < e; pl++) {
        float *dx = j->dx + pl * HW;
        const float *dy = t->grad + pl * OHW;
        const int32_t *a = arg + pl * OHW;
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

void cpu_global_avgpool_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const engine_tensor_t *x = t->src[0];
    const int64_t P = x->ne[0] * x->ne[1], HW = x->ne[2] * x->ne[3];
    const float *in = x->data;
    float *out = t->data;
    for (int64_t pl = 0; pl < P; pl++) {
        double acc = 0.0;
        for (int64_t i = 0; i < HW; i++)
            acc += in[pl * HW + i];
        out[pl] = (float)(acc / (double)HW);
    }
}

void cpu_global_avgpool_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const engine_tensor_t *x = t->src[0];
    const int64_t P = x->ne[0] * x->ne[1], HW = x->ne[2] * x->ne[3];
    for (int64_t pl = 0; pl < P; pl++) {
        float v = t->grad[pl] / (float)HW;
        for (int64_t i = 0; i < HW; i++)
            dx[pl * HW + i] += v;
    }
}
