#include "engine/optim.h"

#include <math.h>
#include <string.h>

#include "engine/threadpool.h"

struct engine_optim {
    engine_optim_config_t c;
    size_t n;
    long t;
    float *m; /* SGD/RMSprop momentum buffer, Adam first moment */
    float *v; /* RMSprop square average, Adam second moment */
};

engine_optim_config_t engine_optim_defaults(engine_optim_type_t type, float lr)
{
    engine_optim_config_t c = {.type = type, .lr = lr, .beta1 = 0.9f, .beta2 = 0.999f, .alpha = 0.99f, .eps = 1e-8f};
    if (type == ENGINE_OPTIM_ADAMW)
        c.weight_decay = 0.01f;
    return c;
}

static const char *const names[] = {"sgd", "rmsprop", "adam", "adamw"};

int engine_optim_type_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *engine_optim_type_name(engine_optim_type_t t) { return (unsigned)t < 4 ? names[t] : "?"; }

int engine_optim_create(const engine_optim_config_t *c, size_t n, engine_optim_t **out, err_t *err)
{
    *out = NULL;
    if ((unsigned)c->type > ENGINE_OPTIM_ADAMW)
        return err_set(err, FN_EINVAL, "optimizer: unknown type %d", (int)c->type);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return err_set(err, FN_EINVAL, "optimizer.lr: %g; expected a finite value > 0", (double)c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return err_set(err, FN_EINVAL, "optimizer.momentum: %g; expected 0 <= momentum < 1", (double)c->momentum);
    if (c->nesterov && (c->type != ENGINE_OPTIM_SGD || c->momentum <= 0.0f))
        return err_set(err, FN_EINVAL, "optimizer.nesterov: needs type \"sgd\" and momentum > 0");
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return err_set(err, FN_EINVAL, "optimizer.weight_decay: %g; expected >= 0", (double)c->weight_decay);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return err_set(err, FN_EINVAL, "optimizer.betas: (%g, %g); each must be in [0, 1)", (double)c->beta1,
                       (double)c->beta2);
    if (!(c->alpha >= 0.0f && c->alpha < 1.0f))
        return err_set(err, FN_EINVAL, "optimizer.alpha: %g; expected 0 <= alpha < 1", (double)c->alpha);
    if (!(c->eps > 0.0f))
        return err_set(err, FN_EINVAL, "optimizer.eps: %g; expected > 0", (double)c->eps);
    engine_optim_t *o = calloc(1, sizeof *o);
    if (!o)
        return err_set(err, FN_ENOMEM, "optimizer: out of memory");
    o->c = *c;
    o->n = n;
    int need_m = c->type != ENGINE_OPTIM_SGD || c->momentum > 0.0f;
    int need_v = c->type != ENGINE_OPTIM_SGD;
    if (need_m || need_v) {
        /* One block for the whole state (llm.c's m/v memory). */
        float *blk = calloc((size_t)(need_m + need_v) * (n ? n : 1), sizeof(float));
        if (!blk) {
            free(o);
            return err_set(err, FN_ENOMEM, "optimizer: state for %zu parameters does not fit in memory", n);
        }
        o->m = need_m ? blk : NULL;
        o->v = need_v ? blk + (need_m ? n : 0) : NULL;
    }
    *out = o;
    return 0;
}

void engine_optim_free(engine_optim_t *o)
{
    if (!o)
        return;
    free(o->m ? o->m : o->v);
    free(o);
}

void engine_optim_reset(engine_optim_t *o)
{
    o->t = 0;
    if (o->m)
        memset(o->m, 0, o->n * sizeof(float));
    if (o->v)
        memset(o->v, 0, o->n * sizeof(float));
}

size_t engine_optim_state_bytes(const engine_optim_t *o) { return ((o->m != NULL) + (o->v != NULL)) * o->n * sizeof(float); }
long engine_optim_steps(const engine_optim_t *o) { return o->t; }

/* One step over parameters [begin, end): every update is elementwise, so ranges run on the
 * engine's pool and the result does not depend on how the vector is split. */
typedef struct {
    engine_optim_t *o;
    float *p;
    float *gr;
    float lr, bc1, bc2;
    int zero; /* clear each gradient element once read (engine_optim_step_zero) */
} step_ctx_t;

/* SGD over [begin, end), with or without momentum: the federated default. Its own loop with every
 * setting in a local and restrict pointers: in the generic loop the stores through o->m may
 * alias the config, so the compiler reloads it per element and does not vectorize. At batch 10
 * the step (five streams over every parameter) is a visible share of the FedAvg CNN's time. */
static void sgd_range(const step_ctx_t *x, int64_t begin, int64_t end)
{
    const engine_optim_config_t *c = &x->o->c;
    float *restrict p = x->p, *restrict gr = x->gr, *restrict m = x->o->m;
    const float wd = c->weight_decay, lr = x->lr, mu = c->momentum;
    const int first = x->o->t == 1, nesterov = c->nesterov, zero = x->zero;
    if (mu == 0.0f) { /* plain SGD (the FedAvg experiments' default) */
        for (int64_t i = begin; i < end; i++) {
            p[i] -= lr * (gr[i] + wd * p[i]);
            if (zero)
                gr[i] = 0.0f;
        }
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        const float g = gr[i] + wd * p[i];
        /* PyTorch: the buffer starts as the first gradient (no dampening). */
        const float b = first ? g : mu * m[i] + g;
        m[i] = b;
        p[i] -= lr * (nesterov ? g + mu * b : b);
        if (zero)
            gr[i] = 0.0f;
    }
}

static void step_range(void *ctx, int64_t begin, int64_t end)
{
    const step_ctx_t *x = ctx;
    engine_optim_t *o = x->o;
    const engine_optim_config_t *c = &o->c;
    float *p = x->p;
    const float *gr = x->gr;
    const float wd = c->weight_decay, lr = x->lr;
    if (c->type == ENGINE_OPTIM_SGD) {
        sgd_range(x, begin, end);
        return;
    }
    switch (c->type) {
    case ENGINE_OPTIM_SGD:
        for (int64_t i = begin; i < end; i++) {
            float g = gr[i] + wd * p[i];
            if (c->momentum > 0.0f) {
                /* PyTorch: the buffer starts as the first gradient (no dampening). */
                float b = o->t == 1 ? g : c->momentum * o->m[i] + g;
                o->m[i] = b;
                g = c->nesterov ? g + c->momentum * b : b;
            }
            p[i] -= lr * g;
        }
        break;
    case ENGINE_OPTIM_RMSPROP:
        for (int64_t i = begin; i < end; i++) {
            float g = gr[i] + wd * p[i];
            o->v[i] = c->alpha * o->v[i] + (1.0f - c->alpha) * g * g;
            float u = g / (sqrtf(o->v[i]) + c->eps);
            if (c->momentum > 0.0f) {
                o->m[i] = c->momentum * o->m[i] + u;
                u = o->m[i];
            }
            p[i] -= lr * u;
        }
        break;
    case ENGINE_OPTIM_ADAM:
    case ENGINE_OPTIM_ADAMW: {
        const int decoupled = c->type == ENGINE_OPTIM_ADAMW;
        for (int64_t i = begin; i < end; i++) {
            float g = gr[i];
            if (decoupled)
                p[i] -= lr * wd * p[i];
            else
                g += wd * p[i];
            o->m[i] = c->beta1 * o->m[i] + (1.0f - c->beta1) * g;
            o->v[i] = c->beta2 * o->v[i] + (1.0f - c->beta2) * g * g;
            p[i] -= lr * (o->m[i] / x->bc1) / (sqrtf(o->v[i] / x->bc2) + c->eps);
        }
        break;
    }
    }
    if (x->zero) /* the range is still in cache */
        memset(x->gr + begin, 0, (size_t)(end - begin) * sizeof *x->gr);
}

static void optim_step(engine_optim_t *o, float *p, float *gr, float lr, int zero)
{
    const engine_optim_config_t *c = &o->c;
    o->t++;
    step_ctx_t x = {o, p, gr, lr, 1.0f, 1.0f, zero};
    if (c->type == ENGINE_OPTIM_ADAM || c->type == ENGINE_OPTIM_ADAMW) {
        x.bc1 = 1.0f - powf(c->beta1, (float)o->t);
        x.bc2 = 1.0f - powf(c->beta2, (float)o->t);
    }
    /* Small vectors stay on the caller: waking the workers costs more than the loop. */
    engine_parallel_for(engine_threadpool_default(), (int64_t)o->n, 65536, step_range, &x);
}

void engine_optim_step(engine_optim_t *o, float *p, const float *gr, float lr)
{
    optim_step(o, p, (float *)gr, lr, 0); /* zero 0: gr is only read */
}

void engine_optim_step_zero(engine_optim_t *o, float *p, float *gr, float lr)
{
    optim_step(o, p, gr, lr, 1);
}

double engine_clip_grad_norm(float *g, size_t n, double max_norm)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * g[i];
    double norm = sqrt(s);
    if (max_norm > 0.0 && norm > max_norm) {
        float f = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++)
            g[i] *= f;
    }
    return norm;
}
