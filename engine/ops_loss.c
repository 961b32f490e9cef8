/* CPU kernels: losses. Each reduces to one float (the batch mean), computed in double. */
#include <math.h>

#include "engine/ops_cpu.h"

/* Stable log-softmax of one row (scaled by 1/T) into out (double). */
static void log_softmax_row(const float *z, int C, double invT, double *out)
{
    double mx = z[0] * invT;
    for (int c = 1; c < C; c++)
        if (z[c] * invT > mx)
            mx = z[c] * invT;
    double s = 0.0;
    for (int c = 0; c < C; c++)
        s += exp(z[c] * invT - mx);
    double lse = mx + log(s);
    for (int c = 0; c < C; c++)
        out[c] = z[c] * invT - lse;
}

/* saved: softmax probabilities [B, C] as floats. */
void cpu_softmax_xent_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *lab = t->src[1];
    const int B = (int)x->ne[0], C = (int)x->ne[1];
    const float eps = t->fp[0];
    float *prob = engine_arena_alloc(engine_graph_arena(g), (size_t)B * C * sizeof(float));
    double *ls = engine_arena_alloc(engine_graph_arena(g), (size_t)C * sizeof(double));
    if (!prob || !ls) {
        engine_graph_fail(g, FN_ENOMEM, "softmax_xent: out of memory");
        return;
    }
    t->saved = prob;
    const uint8_t *y = lab->data;
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        log_softmax_row((const float *)x->data + (size_t)r * C, C, 1.0, ls);
        double l = 0.0;
        for (int c = 0; c < C; c++) {
            prob[(size_t)r * C + c] = (float)exp(ls[c]);
            l -= (eps / C) * ls[c];
        }
        l -= (1.0 - eps) * ls[y[r]];
        total += l;
    }
    ((float *)t->data)[0] = (float)(total / B);
}

void cpu_softmax_xent_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const engine_tensor_t *x = t->src[0], *lab = t->src[1];
    const int B = (int)x->ne[0], C = (int)x->ne[1];
    const float eps = t->fp[0], s = t->grad[0] / (float)B;
    const float *prob = t->saved;
    const uint8_t *y = lab->data;
    for (int r = 0; r < B; r++)
        for (int c = 0; c < C; c++) {
            float target = eps / (float)C + (c == y[r] ? 1.0f - eps : 0.0f);
            dx[(size_t)r * C + c] += s * (prob[(size_t)r * C + c] - target);
        }
}

void cpu_sigmoid_bce_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const int64_t n = engine_tensor_numel(t->src[0]);
    const float *x = t->src[0]->data, *y = t->src[1]->data;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += fmax(x[i], 0.0) - (double)x[i] * y[i] + log1p(exp(-fabs((double)x[i])));
    ((float *)t->data)[0] = (float)(total / (double)n);
}

void cpu_sigmoid_bce_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const int64_t n = engine_tensor_numel(t->src[0]);
    const float *x = t->src[0]->data, *y = t->src[1]->data;
    const float s = t->grad[0] / (float)n;
    for (int64_t i = 0; i < n; i++)
        dx[i] += s * (1.0f / (1.0f + expf(-x[i])) - y[i]);
}

void cpu_mse_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const int64_t n = engine_tensor_numel(t->src[0]);
    const float *p = t->src[0]->data, *y = t->src[1]->data;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += ((double)p[i] - y[i]) * ((double)p[i] - y[i]);
    ((float *)t->data)[0] = (float)(total / (double)n);
}

void cpu_mse_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const int64_t n = engine_tensor_numel(t->src[0]);
    const float *p = t->src[0]->data, *y = t->src[1]->data;
    const float s = 2.0f * t->grad[0] / (float)n;
    float *dp = cpu_src_grad(g, t, 0), *dy = cpu_src_grad(g, t, 1);
    for (int64_t i = 0; i < n; i++) {
        if (dp)
            dp[i] += s * (p[i] - y[i]);
        if (dy)
            dy[i] -= s * (p[i] - y[i]);
    }
}

/* saved: softmax(student/T) - softmax(teacher/T), [B, C]. */
void cpu_kl_div_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *s = t->src[0], *te = t->src[1];
    const int B = (int)s->ne[0], C = (int)s->ne[1];
    const double T = t->fp[0];
    float *diff = engine_arena_alloc(engine_graph_arena(g), (size_t)B * C * sizeof(float));
    double *ls = engine_arena_alloc(engine_graph_arena(g), 2 * (size_t)C * sizeof(double));
    if (!diff || !ls) {
        engine_graph_fail(g, FN_ENOMEM, "kl_div: out of memory");
        return;
    }
    t->saved = diff;
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        log_softmax_row((const float *)s->data + (size_t)r * C, C, 1.0 / T, ls);
        log_softmax_row((const float *)te->data + (size_t)r * C, C, 1.0 / T, ls + C);
        for (int c = 0; c < C; c++) {
            double pt = exp(ls[C + c]);
            total += pt * (ls[C + c] - ls[c]);
            diff[(size_t)r * C + c] = (float)(exp(ls[c]) - pt);
        }
    }
    ((float *)t->data)[0] = (float)(T * T * total / B);
}

void cpu_kl_div_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *ds = cpu_src_grad(g, t, 0);
    if (!ds)
        return;
    const int64_t n = engine_tensor_numel(t->src[0]);
    const int B = (int)t->src[0]->ne[0];
    const float sc = t->grad[0] * t->fp[0] / (float)B; /* T^2 * (1/T) */
    const float *diff = t->saved;
    for (int64_t i = 0; i < n; i++)
        ds[i] += sc * diff[i];
}

/* Soft targets q with label smoothing s (fp[0]) applied as timm does for mixed labels: the
 * target is t = (1 - s) q + s / C, which for a MixUp of two one-hot rows equals mixing the
 * smoothed one-hots. Loss = mean over rows of -sum_c t_c log softmax(z)_c.
 * saved: softmax probabilities [B, C]. */
void cpu_softmax_xent_soft_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *q = t->src[1];
    const int B = (int)x->ne[0], C = (int)x->ne[1];
    const double sm = t->fp[0], off = sm / C;
    float *prob = engine_arena_alloc(engine_graph_arena(g), (size_t)B * C * sizeof(float));
    double *ls = engine_arena_alloc(engine_graph_arena(g), (size_t)C * sizeof(double));
    if (!prob || !ls) {
        engine_graph_fail(g, FN_ENOMEM, "softmax_xent_soft: out of memory");
        return;
    }
    t->saved = prob;
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        log_softmax_row((const float *)x->data + (size_t)r * C, C, 1.0, ls);
        const float *qr = (const float *)q->data + (size_t)r * C;
        for (int c = 0; c < C; c++) {
            prob[(size_t)r * C + c] = (float)exp(ls[c]);
            total -= ((1.0 - sm) * qr[c] + off) * ls[c];
        }
    }
    ((float *)t->data)[0] = (float)(total / B);
}

void cpu_softmax_xent_soft_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const engine_tensor_t *x = t->src[0], *q = t->src[1];
    const int B = (int)x->ne[0], C = (int)x->ne[1];
    const float *prob = t->saved, *qd = q->data;
    const float s = t->grad[0] / (float)B;
    const double sm = t->fp[0], off = sm / C;
    for (int r = 0; r < B; r++) {
        /* d/dz of -sum t log softmax(z) is (sum t) p - t: rows that do not sum to 1 still get
         * the exact gradient. */
        double qs = 0.0;
        for (int c = 0; c < C; c++)
            qs += qd[(size_t)r * C + c];
        const double ts = (1.0 - sm) * qs + sm;
        for (int c = 0; c < C; c++) {
            double tc = (1.0 - sm) * qd[(size_t)r * C + c] + off;
            dx[(size_t)r * C + c] += s * (float)(ts * prob[(size_t)r * C + c] - tc);
        }
    }
}

/* Knowledge distillation in one op (Hinton et al. 2015):
 *   loss = mean over rows of alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)
 * with CE the smoothed cross-entropy against hard labels (U8 [B]) or soft targets (F32 [B, C],
 * as engine_softmax_xent_soft_smoothed). fp: T, alpha, smoothing. The forward also works out each
 * row's gradient, alpha * T * (softmax(s/T) - softmax(t/T)) + (1 - alpha) * (sum(target) *
 * softmax(s) - target) (the T^2 keeps the soft term's gradient on the scale of the hard one's),
 * so saved holds d(row loss)/ds [B, C] and the backward only scales it. */
void cpu_distill_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *s = t->src[0], *te = t->src[1], *lab = t->src[2];
    const int B = (int)s->ne[0], C = (int)s->ne[1];
    const double T = t->fp[0], alpha = t->fp[1], sm = t->fp[2], off = sm / C;
    float *dz = engine_arena_alloc(engine_graph_arena(g), (size_t)B * C * sizeof(float));
    double *ls = engine_arena_alloc(engine_graph_arena(g), 3 * (size_t)C * sizeof(double));
    if (!dz || !ls) {
        engine_graph_fail(g, FN_ENOMEM, "distill: out of memory");
        return;
    }
    t->saved = dz;
    const int hard = lab->dtype == ENGINE_U8;
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *sr = (const float *)s->data + (size_t)r * C;
        double *lst = ls, *ltt = ls + C, *l1 = ls + 2 * (size_t)C;
        log_softmax_row(sr, C, 1.0 / T, lst);
        log_softmax_row((const float *)te->data + (size_t)r * C, C, 1.0 / T, ltt);
        log_softmax_row(sr, C, 1.0, l1);
        const float *q = hard ? NULL : (const float *)lab->data + (size_t)r * C;
        const int y = hard ? ((const uint8_t *)lab->data)[r] : -1;
        double qs = 1.0;
        if (q) {
            qs = 0.0;
            for (int c = 0; c < C; c++)
                qs += q[c];
        }
        const double ts = (1.0 - sm) * qs + sm;
        double kl = 0.0, ce = 0.0;
        for (int c = 0; c < C; c++) {
            double pt = exp(ltt[c]), tc = (1.0 - sm) * (q ? q[c] : (double)(c == y)) + off;
            kl += pt * (ltt[c] - lst[c]);
            ce -= tc * l1[c];
            dz[(size_t)r * C + c] =
                (float)(alpha * T * (exp(lst[c]) - pt) + (1.0 - alpha) * (ts * exp(l1[c]) - tc));
        }
        total += alpha * T * T * kl + (1.0 - alpha) * ce;
    }
    ((float *)t->data)[0] = (float)(total / B);
}

void cpu_distill_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *ds = cpu_src_grad(g, t, 0);
    if (!ds)
        return;
    const int64_t n = engine_tensor_numel(t->src[0]);
    const float sc = t->grad[0] / (float)t->src[0]->ne[0];
    const float *dz = t->saved;
    for (int64_t i = 0; i < n; i++)
        ds[i] += sc * dz[i];
}
