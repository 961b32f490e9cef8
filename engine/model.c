/* model.c: a trainable model = a net (nn.h) plus its optimizer, schedule and data pipeline.
 * Map: creation and the federated vector's layout; checks of inputs; one training step
 * (forward, loss, backward, optimizer); the "train" block of a config parsed into
 * engine_train_config_t with errors naming the key path; whole-epoch training over image
 * batches (augmentation, MixUp/CutMix soft labels from the prefetch thread); evaluation. */
#include "engine/model.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rng.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"

/* Evaluation and loss_grad run in chunks of this many rows. */
#define EVAL_ROWS 128

typedef struct {
    int in, out;
    size_t w_off, b_off;
} wlayer_t;

struct engine_model {
    json_t *arch;
    engine_net_t *net;
    engine_graph_t *g;
    int c, h, w, classes;
    int nlayers;
    wlayer_t *layers;
    size_t optim_bytes, batch_bytes;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- creation ---- */

int engine_model_create_shape(const json_t *arch, int channels, int height, int width, int num_classes,
                              engine_model_t **out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "engine_model_create: out is NULL");
    *out = NULL;
    engine_net_t *net = NULL;
    int rc = engine_net_create(arch, channels, height, width, num_classes, &net, err);
    if (rc)
        return rc;
    engine_model_t *m = calloc(1, sizeof *m);
    FN_CHECK(m);
    m->net = net;
    m->c = channels;
    m->h = height;
    m->w = width;
    m->classes = num_classes;
    m->g = engine_graph_create((size_t)4 << 20, 0x6e6e);
    FN_CHECK(m->g);
    int nt = engine_net_num_tensors(net);
    m->layers = calloc((size_t)nt + 1, sizeof *m->layers);
    FN_CHECK(m->layers);
    for (int i = 0; i < nt; i++) {
        const engine_param_info_t *p = engine_net_tensor(net, i);
        if (!p->fan_in)
            continue;
        size_t cnt = 1;
        for (int d = 0; d < p->ndim; d++)
            cnt *= (size_t)p->shape[d];
        wlayer_t *L = &m->layers[m->nlayers++];
        L->in = p->fan_in;
        L->out = (int)p->shape[0];
        L->w_off = p->offset;
        L->b_off = p->offset + cnt;
    }
    m->arch = json_deep_copy(arch);
    *out = m;
    return 0;
}

int engine_model_create(const json_t *arch, int input_dim, int num_classes, engine_model_t **out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "engine_model_create: out is NULL");
    *out = NULL;
    if (input_dim < 1 || input_dim > ENGINE_MODEL_MAX_WIDTH)
        return err_set(err, FN_EINVAL, "engine_model_create: input_dim is %d; expected 1..%d", input_dim,
                       ENGINE_MODEL_MAX_WIDTH);
    if (num_classes < 1 || num_classes > ENGINE_MODEL_MAX_WIDTH)
        return err_set(err, FN_EINVAL, "engine_model_create: num_classes is %d; expected 1..%d", num_classes,
                       ENGINE_MODEL_MAX_WIDTH);
    int s = (int)lround(sqrt((double)input_dim));
    if (s * s == input_dim)
        return engine_model_create_shape(arch, 1, s, s, num_classes, out, err);
    return engine_model_create_shape(arch, 1, 1, input_dim, num_classes, out, err);
}

void engine_model_free(engine_model_t *m)
{
    if (!m)
        return;
    json_decref(m->arch);
    engine_net_free(m->net);
    engine_graph_free(m->g);
    free(m->layers);
    free(m);
}

size_t engine_model_num_params(const engine_model_t *m) { return engine_net_num_params(m->net); }
size_t engine_model_num_federated(const engine_model_t *m)
{
    return engine_net_num_params(m->net) + engine_net_num_buffers(m->net);
}
float *engine_model_params(engine_model_t *m) { return engine_net_params(m->net); }
float *engine_model_grads(engine_model_t *m) { return engine_net_grads(m->net); }
const json_t *engine_model_arch(const engine_model_t *m) { return m->arch; }
int engine_model_input_dim(const engine_model_t *m) { return m->c * m->h * m->w; }
int engine_model_num_classes(const engine_model_t *m) { return m->classes; }
int engine_model_num_layers(const engine_model_t *m) { return m->nlayers; }
struct engine_net *engine_model_net(engine_model_t *m) { return m->net; }

void engine_model_layer(const engine_model_t *m, int l, int *in, int *out, size_t *w_offset, size_t *b_offset)
{
    FN_CHECK(l >= 0 && l < m->nlayers);
    if (in)
        *in = m->layers[l].in;
    if (out)
        *out = m->layers[l].out;
    if (w_offset)
        *w_offset = m->layers[l].w_off;
    if (b_offset)
        *b_offset = m->layers[l].b_off;
}

void engine_model_init(engine_model_t *m, uint64_t seed) { engine_net_init(m->net, seed); }

void engine_model_memory(const engine_model_t *m, engine_model_memory_t *o)
{
    engine_graph_mem_t gm;
    engine_graph_mem(m->g, &gm);
    o->params = engine_net_num_params(m->net) * sizeof(float);
    o->grads = o->params;
    o->buffers = engine_net_num_buffers(m->net) * sizeof(float);
    o->optimizer = m->optim_bytes;
    o->activations_peak = gm.arena_peak;
    o->scratch_peak = gm.scratch_peak;
    o->batches = m->batch_bytes;
}

/* ---- checks ---- */

/* Checks that src fits the model and that every sample idx[0..n) exists and has a valid label.
 * Done before touching parameters, so a bad call leaves the model as it was. */
static int check_data(const engine_model_t *m, const engine_source_t *s, const int *idx, int n, const char *fn,
                      err_t *err)
{
    if (!m || !s)
        return err_set(err, FN_EINVAL, "%s: model and data set must not be NULL", fn);
    if (engine_source_check(s, NULL))
        return err_set(err, FN_EINVAL, "%s: the data set is empty; load it with engine_idx_load first", fn);
    long long F = (long long)s->channels * s->height * s->width;
    if (F != (long long)m->c * m->h * m->w)
        return err_set(err, FN_EINVAL,
                       "%s: the model takes %d inputs (%dx%dx%d) but the data set's samples are %dx%dx%d = %lld values; "
                       "create the model with input_dim %lld",
                       fn, m->c * m->h * m->w, m->c, m->h, m->w, s->channels, s->height, s->width, F, F);
    if (n <= 0)
        return err_set(err, FN_EINVAL, "%s: n is %d; need at least one sample", fn, n);
    for (int i = 0; i < n; i++) {
        int k = idx ? idx[i] : i;
        if (k < 0 || k >= s->count)
            return err_set(err, FN_EINVAL, "%s: idx[%d] is %d, outside the data set's %d samples", fn, i, k, s->count);
        if (s->labels[k] >= m->classes)
            return err_set(err, FN_EINVAL,
                           "%s: sample %d has label %d but the model has %d classes; create it with num_classes >= %d",
                           fn, k, s->labels[k], m->classes,
                           s->num_classes > s->labels[k] ? s->num_classes : s->labels[k] + 1);
    }
    return 0;
}

/* ---- one step ---- */

static int argmax(const float *v, int n)
{
    int a = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[a])
            a = i;
    return a;
}

/* Forward (and, when seed is not NULL, backward with that seed on the mean loss) on a batch.
 * With soft labels (nb x classes, from label mixing) the loss is the soft-target cross-entropy
 * and a sample counts as correct when the prediction is its dominant label; otherwise the hard
 * labels y. Adds the batch's summed loss and correct count. */
static int run_batch(engine_model_t *m, const float *x, const uint8_t *y, const float *soft, int nb, int training,
                     float smoothing, const engine_train_config_t *kd, const float *seed, double *loss_sum, int *correct,
                     err_t *err)
{
    engine_graph_t *g = m->g;
    engine_graph_reset(g);
    engine_graph_set_grad(g, seed != NULL);
    const int C = m->classes;
    int64_t xs[4] = {nb, m->c, m->h, m->w}, ys[1] = {nb}, ss[2] = {nb, C};
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, NULL, ENGINE_F32, 4, xs);
    engine_tensor_t *logits = engine_net_forward(m->net, g, xt, training);
    engine_tensor_t *loss;
    if (kd && kd->teacher) { /* distillation: the teacher sees the batch the student sees */
        engine_tensor_t *tt = engine_graph_tensor(g, ENGINE_F32, 2, ss);
        float *tl = tt ? tt->data : NULL;
        if (!tl)
            return err_set(err, FN_ENOMEM, "distillation: out of memory for the teacher's logits");
        int trc = kd->teacher(kd->teacher_ctx, x, nb, tl, err);
        if (trc)
            return err_wrap(err, "distillation: the teacher: ");
        engine_tensor_t *lab = soft ? engine_graph_view(g, (void *)soft, NULL, ENGINE_F32, 2, ss)
                                    : engine_graph_view(g, (void *)y, NULL, ENGINE_U8, 1, ys);
        loss = engine_distill_loss(g, logits, tt, lab, kd->distill_T, kd->distill_alpha, smoothing);
    } else if (soft)
        loss = engine_softmax_xent_soft_smoothed(g, logits, engine_graph_view(g, (void *)soft, NULL, ENGINE_F32, 2, ss),
                                                 smoothing);
    else
        loss = engine_softmax_xent(g, logits, engine_graph_view(g, (void *)y, NULL, ENGINE_U8, 1, ys), smoothing);
    int rc = engine_graph_error(g, err);
    if (rc)
        return rc;
    const float *z = logits->data;
    for (int r = 0; r < nb; r++) {
        int target = soft ? argmax(soft + (size_t)r * C, C) : y[r];
        *correct += argmax(z + (size_t)r * C, C) == target;
    }
    *loss_sum += (double)((const float *)loss->data)[0] * nb;
    if (seed)
        return engine_graph_backward(g, loss, seed, err);
    return 0;
}

/* ---- configuration ---- */

void engine_train_config_default(engine_train_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 1;
    c->batch_size = 32;
    c->accumulate = 1;
    c->optim = engine_optim_defaults(ENGINE_OPTIM_SGD, 0.01f);
    c->schedule = engine_schedule_constant(0.01);
    c->seed = 1;
    c->prefetch = 2;
    engine_augment_config_default(&c->aug);
}

static int check_keys(const json_t *o, const char *path, const char *const *keys, err_t *err)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(keys[i], key) == 0;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; keys[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, keys[i], sizeof list - strlen(list) - 1);
            }
            return err_set(err, FN_EINVAL, "%s: unknown key \"%s\" (known: %s)", path, key, list);
        }
    }
    return 0;
}

static int jnum(const json_t *o, const char *key, const char *path, double lo, double hi, double *out, err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return err_set(err, FN_EINVAL, "%s.%s: expected a number in [%g, %g]", path, key, lo, hi);
    *out = json_number_value(v);
    return 0;
}

static int jint(const json_t *o, const char *key, const char *path, long lo, long hi, long *out, err_t *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return err_set(err, FN_EINVAL, "%s.%s: expected an integer in %ld..%ld", path, key, lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

int engine_train_config_from_json(const json_t *tr, engine_train_config_t *c, err_t *err)
{
    static const char *const keys[] = {"epochs", "batch_size", "lr", "accumulate", "clip_norm", "label_smoothing",
                                       "prox_mu", "seed", "prefetch", "optimizer", "schedule", "augment", NULL};
    static const char *const okeys[] = {"type", "momentum", "nesterov", "weight_decay", "betas", "eps", "alpha", NULL};
    static const char *const skeys[] = {"type", "unit", "step_size", "gamma", "milestones", "total", "min_lr",
                                        "power", "pct_start", "div_factor", "final_div_factor", "warmup", NULL};
    engine_train_config_default(c);
    if (!json_is_object(tr))
        return err_set(err, FN_EINVAL, "train: expected an object like {\"epochs\":1,\"batch_size\":32,\"lr\":0.05}");
    int rc = check_keys(tr, "train", keys, err);
    if (rc)
        return rc;
    long l;
    double d;
    l = c->epochs;
    if ((rc = jint(tr, "epochs", "train", 1, 100000, &l, err)))
        return rc;
    c->epochs = (int)l;
    l = c->batch_size;
    if ((rc = jint(tr, "batch_size", "train", 1, 1 << 20, &l, err)))
        return rc;
    c->batch_size = (int)l;
    l = c->accumulate;
    if ((rc = jint(tr, "accumulate", "train", 1, 1 << 16, &l, err)))
        return rc;
    c->accumulate = (int)l;
    l = c->prefetch;
    if ((rc = jint(tr, "prefetch", "train", 0, 64, &l, err)))
        return rc;
    c->prefetch = (int)l;
    const json_t *sv = json_object_get(tr, "seed");
    if (sv) {
        if (!json_is_integer(sv) || json_integer_value(sv) < 0)
            return err_set(err, FN_EINVAL, "train.seed: expected an integer >= 0");
        c->seed = (uint64_t)json_integer_value(sv);
    }
    d = 0.01;
    if ((rc = jnum(tr, "lr", "train", 1e-12, 1e6, &d, err)))
        return rc;
    float lr = (float)d;
    d = 0;
    if ((rc = jnum(tr, "clip_norm", "train", 0, 1e12, &d, err)))
        return rc;
    c->clip_norm = d;
    d = 0;
    if ((rc = jnum(tr, "label_smoothing", "train", 0, 0.999, &d, err)))
        return rc;
    c->label_smoothing = (float)d;
    d = 0;
    if ((rc = jnum(tr, "prox_mu", "train", 0, 1e6, &d, err)))
        return rc;
    c->prox_mu = (float)d;
    const json_t *av = json_object_get(tr, "augment");
    if (av && (rc = engine_augment_config_from_json(av, "train.augment", &c->aug, err)))
        return rc;

    const json_t *o = json_object_get(tr, "optimizer");
    int otype = ENGINE_OPTIM_SGD;
    const json_t *ot = json_is_object(o) ? json_object_get(o, "type") : o;
    if (o && !json_is_object(o) && !json_is_string(o))
        return err_set(err, FN_EINVAL, "train.optimizer: expected a name (\"sgd\") or an object {\"type\":\"sgd\",...}");
    if (ot) {
        if (!json_is_string(ot) || (otype = engine_optim_type_parse(json_string_value(ot))) < 0)
            return err_set(err, FN_EINVAL, "train.optimizer.type: expected \"sgd\", \"rmsprop\", \"adam\" or \"adamw\"");
    }
    c->optim = engine_optim_defaults((engine_optim_type_t)otype, lr);
    if (json_is_object(o)) {
        const char *p = "train.optimizer";
        if ((rc = check_keys(o, p, okeys, err)))
            return rc;
        d = c->optim.momentum;
        if ((rc = jnum(o, "momentum", p, 0, 0.999999, &d, err)))
            return rc;
        c->optim.momentum = (float)d;
        d = c->optim.weight_decay;
        if ((rc = jnum(o, "weight_decay", p, 0, 1e3, &d, err)))
            return rc;
        c->optim.weight_decay = (float)d;
        d = c->optim.eps;
        if ((rc = jnum(o, "eps", p, 1e-30, 1, &d, err)))
            return rc;
        c->optim.eps = (float)d;
        d = c->optim.alpha;
        if ((rc = jnum(o, "alpha", p, 0, 0.999999, &d, err)))
            return rc;
        c->optim.alpha = (float)d;
        const json_t *nv = json_object_get(o, "nesterov");
        if (nv) {
            if (!json_is_boolean(nv))
                return err_set(err, FN_EINVAL, "%s.nesterov: expected true or false", p);
            c->optim.nesterov = json_is_true(nv);
        }
        const json_t *b = json_object_get(o, "betas");
        if (b) {
            if (!json_is_array(b) || json_array_size(b) != 2 || !json_is_number(json_array_get(b, 0)) ||
                !json_is_number(json_array_get(b, 1)))
                return err_set(err, FN_EINVAL, "%s.betas: expected two numbers, e.g. [0.9, 0.999]", p);
            c->optim.beta1 = (float)json_number_value(json_array_get(b, 0));
            c->optim.beta2 = (float)json_number_value(json_array_get(b, 1));
        }
        if (c->optim.type == ENGINE_OPTIM_SGD && !c->optim.momentum && (c->optim.nesterov))
            return err_set(err, FN_EINVAL, "%s.nesterov: needs momentum > 0", p);
    }
    engine_optim_t *probe = NULL;
    err_t e2;
    if (engine_optim_create(&c->optim, 0, &probe, &e2))
        return err_set(err, FN_EINVAL, "train.%s", e2.msg);
    engine_optim_free(probe);

    c->schedule = engine_schedule_constant(lr);
    const json_t *s = json_object_get(tr, "schedule");
    const json_t *st = json_is_object(s) ? json_object_get(s, "type") : s;
    if (s && !json_is_object(s) && !json_is_string(s))
        return err_set(err, FN_EINVAL, "train.schedule: expected a name (\"cosine\") or an object {\"type\":\"cosine\",...}");
    if (st) {
        int t;
        if (!json_is_string(st) || (t = engine_schedule_type_parse(json_string_value(st))) < 0)
            return err_set(err, FN_EINVAL, "train.schedule.type: expected constant, step, multistep, exponential, cosine, "
                                           "linear, polynomial or onecycle");
        c->schedule.type = (engine_schedule_type_t)t;
    }
    if (json_is_object(s)) {
        const char *p = "train.schedule";
        if ((rc = check_keys(s, p, skeys, err)))
            return rc;
        const json_t *u = json_object_get(s, "unit");
        if (u) {
            if (!json_is_string(u) || (strcmp(json_string_value(u), "epoch") && strcmp(json_string_value(u), "step")))
                return err_set(err, FN_EINVAL, "%s.unit: expected \"epoch\" or \"step\"", p);
            c->schedule.per_step = strcmp(json_string_value(u), "step") == 0;
        }
        engine_schedule_t *q = &c->schedule;
        if ((rc = jint(s, "step_size", p, 1, 1L << 40, &q->step_size, err)) ||
            (rc = jint(s, "total", p, 1, 1L << 40, &q->total, err)) ||
            (rc = jint(s, "warmup", p, 0, 1L << 40, &q->warmup, err)) ||
            (rc = jnum(s, "gamma", p, 1e-12, 1, &q->gamma, err)) || (rc = jnum(s, "min_lr", p, 0, 1e6, &q->min_lr, err)) ||
            (rc = jnum(s, "power", p, 1e-6, 100, &q->power, err)) ||
            (rc = jnum(s, "pct_start", p, 1e-6, 0.999999, &q->pct_start, err)) ||
            (rc = jnum(s, "div_factor", p, 1, 1e12, &q->div_factor, err)) ||
            (rc = jnum(s, "final_div_factor", p, 1, 1e12, &q->final_div_factor, err)))
            return rc;
        const json_t *ms = json_object_get(s, "milestones");
        if (ms) {
            if (!json_is_array(ms) || json_array_size(ms) > ENGINE_SCHED_MAX_MILESTONES)
                return err_set(err, FN_EINVAL, "%s.milestones: expected up to %d increasing integers", p,
                               ENGINE_SCHED_MAX_MILESTONES);
            for (size_t i = 0; i < json_array_size(ms); i++) {
                const json_t *v = json_array_get(ms, i);
                if (!json_is_integer(v) || json_integer_value(v) < 0)
                    return err_set(err, FN_EINVAL, "%s.milestones[%zu]: expected an integer >= 0", p, i);
                q->milestones[i] = (long)json_integer_value(v);
            }
            q->num_milestones = (int)json_array_size(ms);
        }
        if (q->type == ENGINE_SCHED_STEP && q->step_size < 1)
            return err_set(err, FN_EINVAL, "%s.step_size: type \"step\" needs it (an integer >= 1)", p);
        if (q->type == ENGINE_SCHED_MULTISTEP && q->num_milestones == 0)
            return err_set(err, FN_EINVAL, "%s.milestones: type \"multistep\" needs a list of steps, e.g. [30, 60]", p);
    }
    /* Check now with a stand-in total, so a bad field is reported while reading the config. */
    engine_schedule_t chk = c->schedule;
    if (!chk.total)
        chk.total = 1;
    if (engine_schedule_check(&chk, &e2))
        return err_set(err, FN_EINVAL, "train.%s", e2.msg);
    return 0;
}

/* ---- training ---- */

static int check_config(const engine_model_t *m, const engine_train_config_t *c, err_t *err)
{
    if (!c)
        return err_set(err, FN_EINVAL, "engine_model_train: config is NULL");
    if (c->epochs < 1)
        return err_set(err, FN_EINVAL, "train.epochs: %d; expected >= 1", c->epochs);
    if (c->batch_size < 1)
        return err_set(err, FN_EINVAL, "train.batch_size: %d; expected >= 1 (e.g. 32)", c->batch_size);
    if (c->accumulate < 1)
        return err_set(err, FN_EINVAL, "train.accumulate: %d; expected >= 1", c->accumulate);
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return err_set(err, FN_EINVAL, "train.label_smoothing: %g; expected 0 <= s < 1", (double)c->label_smoothing);
    if (!(c->prox_mu >= 0.0f) || (c->prox_mu > 0.0f && !c->prox_anchor))
        return err_set(err, FN_EINVAL, "train.prox_mu: %g needs mu >= 0 and, when > 0, an anchor vector", (double)c->prox_mu);
    if (!(c->clip_norm >= 0.0))
        return err_set(err, FN_EINVAL, "train.clip_norm: %g; expected >= 0", c->clip_norm);
    if (c->teacher && (!(c->distill_T > 0.0f && c->distill_T <= 1e4f) || !(c->distill_alpha >= 0.0f && c->distill_alpha <= 1.0f)))
        return err_set(err, FN_EINVAL, "distill: temperature %g must be in (0, 1e4] and alpha %g in [0, 1]",
                       (double)c->distill_T, (double)c->distill_alpha);
    /* Soft labels come from uint8 hard labels (engine_augment_one_hot), hence the 256. */
    if (engine_augment_mixes_labels(&c->aug) && m->classes > 256)
        return err_set(err, FN_EINVAL,
                       "train.augment: mosaic, MixUp and CutMix support up to 256 classes; the model has %d", m->classes);
    return 0;
}

/* The caller's image callback and the config's label-preserving steps, as one batcher callback. */
typedef struct {
    engine_augment_fn user;
    void *user_ctx;
    const engine_augment_config_t *aug;
} image_steps_t;

static void image_steps(void *ctx, float *x, const uint8_t *labels, int n, int c, int h, int w, rng_t *rng)
{
    const image_steps_t *s = ctx;
    if (s->user)
        s->user(s->user_ctx, x, labels, n, c, h, w, rng);
    engine_augment_images((void *)s->aug, x, labels, n, c, h, w, rng);
}

int engine_model_train_source(engine_model_t *m, const engine_source_t *src, const int *idx, int n,
                              const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err)
{
    static const char *fn = "engine_model_train";
    if (src && !idx)
        n = src->count;
    int rc = check_data(m, src, idx, n, fn, err);
    if (rc)
        return rc;
    if ((rc = check_config(m, cfg, err)))
        return rc;
    const int B = cfg->batch_size < n ? cfg->batch_size : n;
    const int nb_epoch = (n + B - 1) / B;
    const long steps_epoch = (nb_epoch + cfg->accumulate - 1) / cfg->accumulate;
    engine_schedule_t sch = cfg->schedule;
    sch.lr = cfg->optim.lr;
    if (!sch.total)
        sch.total = sch.per_step ? steps_epoch * cfg->epochs : cfg->epochs;
    if ((rc = engine_schedule_check(&sch, err)))
        return err_wrap(err, "train.schedule: ");
    const size_t P = engine_model_num_params(m);
    engine_optim_t *opt = NULL;
    if ((rc = engine_optim_create(&cfg->optim, P, &opt, err)))
        return rc;
    m->optim_bytes = engine_optim_state_bytes(opt);
    float *params = engine_model_params(m), *grads = engine_model_grads(m);
    rng_seed(engine_graph_rng(m->g), rng_derive(cfg->seed, 0xd0d0));

    double t0 = now_seconds(), loss_all = 0.0;
    int correct_all = 0, seen_all = 0;
    long step = 0;
    double last_lr = 0.0, last_norm = 0.0;
    /* Label mixing runs the whole augment pipeline (engine_augment_apply) in the batcher's mix
     * step; otherwise only the image steps run, and batches keep their hard labels alone. */
    const int mixing = engine_augment_mixes_labels(&cfg->aug);
    image_steps_t steps = {.user = cfg->augment, .user_ctx = cfg->augment_ctx, .aug = &cfg->aug};
    const int chain = !mixing && engine_augment_changes_images(&cfg->aug);
    for (int ep = 0; ep < cfg->epochs && !rc; ep++) {
        engine_batcher_config_t bc = {.batch_size = B, .shuffle = 1, .seed = rng_derive(cfg->seed, (uint64_t)ep),
                                      .prefetch = cfg->prefetch, .augment = chain ? image_steps : cfg->augment,
                                      .augment_ctx = chain ? (void *)&steps : cfg->augment_ctx,
                                      .mix = mixing ? engine_augment_mix : NULL, .mix_ctx = (void *)&cfg->aug,
                                      .num_classes = m->classes};
        engine_batcher_t *bt = NULL;
        if ((rc = engine_batcher_create(src, idx, n, &bc, &bt, err)))
            break;
        m->batch_bytes = (size_t)(cfg->prefetch + 1) * (size_t)B *
                         ((size_t)(m->c * m->h * m->w) * sizeof(float) + 1 + (mixing ? (size_t)m->classes * sizeof(float) : 0));
        double ep_t0 = now_seconds(), ep_loss = 0.0;
        int ep_correct = 0, ep_seen = 0, micro = 0;
        const engine_batch_t *b;
        memset(grads, 0, P * sizeof(float));
        int left = nb_epoch;
        while ((b = engine_batcher_next(bt)) != NULL) {
            /* The last group of an epoch may hold fewer micro-batches: scale by its real size. */
            int group = left < cfg->accumulate - micro ? left + micro : cfg->accumulate;
            float seed = 1.0f / (float)group;
            left--;
            if ((rc = run_batch(m, b->x, b->y, b->soft, b->n, 1, cfg->label_smoothing, cfg, &seed, &ep_loss, &ep_correct,
                                err)))
                break;
            ep_seen += b->n;
            if (++micro < group)
                continue;
            micro = 0;
            if (cfg->prox_mu > 0.0f)
                for (size_t i = 0; i < P; i++)
                    grads[i] += cfg->prox_mu * (params[i] - cfg->prox_anchor[i]);
            /* The norm costs a pass over the gradient: only taken when clipping. */
            if (cfg->clip_norm > 0.0)
                last_norm = engine_clip_grad_norm(grads, P, cfg->clip_norm);
            long t = (sch.per_step ? step : ep) + cfg->schedule_offset;
            last_lr = engine_schedule_lr(&sch, t);
            engine_optim_step_zero(opt, params, grads, (float)last_lr);
            step++;
            if (cfg->on_step)
                cfg->on_step(cfg->cb_ctx, ep, ep_seen, n, ep_loss / ep_seen);
        }
        if (!rc && (rc = engine_batcher_error(bt, err)))
            err_wrap(err, "%s: building a batch: ", fn);
        engine_batcher_free(bt);
        if (rc)
            break;
        if (!isfinite(ep_loss))
            log_warn("%s: the loss is not finite (%g); training diverged, lower lr (now %g)", fn, ep_loss,
                     (double)cfg->optim.lr);
        loss_all += ep_loss;
        correct_all += ep_correct;
        seen_all += ep_seen;
        if (cfg->on_epoch) {
            engine_train_stats_t es = {.loss = ep_loss / ep_seen, .accuracy = (double)ep_correct / ep_seen,
                                       .samples = ep_seen, .seconds = now_seconds() - ep_t0, .steps = step,
                                       .lr = last_lr, .grad_norm = last_norm};
            cfg->on_epoch(cfg->cb_ctx, ep, &es);
        }
    }
    engine_optim_free(opt);
    if (rc)
        return rc;
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->loss = loss_all / seen_all;
        stats->accuracy = (double)correct_all / seen_all;
        stats->samples = seen_all;
        stats->seconds = now_seconds() - t0;
        stats->steps = step;
        stats->lr = last_lr;
        stats->grad_norm = last_norm;
        if (cfg->prox_mu > 0.0f) {
            double s = 0.0;
            for (size_t i = 0; i < P; i++)
                s += ((double)params[i] - cfg->prox_anchor[i]) * ((double)params[i] - cfg->prox_anchor[i]);
            stats->prox = 0.5 * cfg->prox_mu * s;
        }
    }
    return 0;
}

int engine_model_train(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n,
                       const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err)
{
    if (!d)
        return err_set(err, FN_EINVAL, "engine_model_train: the data set is NULL");
    engine_source_t s = engine_source_from_dataset(d);
    return engine_model_train_source(m, &s, idx, n, cfg, stats, err);
}

int engine_model_train_epoch(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, int batch_size,
                             float lr, uint64_t seed, engine_train_stats_t *stats, err_t *err)
{
    static const char *fn = "engine_model_train_epoch";
    if (batch_size <= 0)
        return err_set(err, FN_EINVAL, "%s: batch_size is %d; expected >= 1 (e.g. 32)", fn, batch_size);
    if (!(lr > 0.0f) || !isfinite(lr))
        return err_set(err, FN_EINVAL, "%s: lr is %g; expected a finite value > 0 (e.g. 0.05)", fn, (double)lr);
    engine_train_config_t c;
    engine_train_config_default(&c);
    c.batch_size = batch_size;
    c.optim = engine_optim_defaults(ENGINE_OPTIM_SGD, lr);
    c.schedule = engine_schedule_constant(lr);
    c.seed = seed;
    return engine_model_train(m, d, idx, n, &c, stats, err);
}

/* ---- evaluation ---- */

static int eval_chunks(engine_model_t *m, const engine_source_t *src, const int *idx, int n, double *loss,
                       double *accuracy, float *grad_out, err_t *err)
{
    const size_t F = (size_t)m->c * m->h * m->w;
    float *x = malloc(EVAL_ROWS * F * sizeof(float));
    uint8_t *y = malloc(EVAL_ROWS);
    int *ids = malloc(EVAL_ROWS * sizeof(int));
    if (!x || !y || !ids) {
        free(x);
        free(y);
        free(ids);
        return err_set(err, FN_ENOMEM, "evaluation: out of memory");
    }
    double loss_sum = 0.0;
    int correct = 0, rc = 0;
    float *grads = engine_model_grads(m);
    const size_t P = engine_model_num_params(m);
    float *save = NULL;
    if (grad_out && grad_out != grads) {
        /* Parameter views accumulate into the gradient blob; keep the caller's copy apart. */
        save = malloc(P * sizeof(float));
        FN_CHECK(save);
        memcpy(save, grads, P * sizeof(float));
    }
    if (grad_out)
        memset(grads, 0, P * sizeof(float));
    for (int start = 0; start < n && !rc; start += EVAL_ROWS) {
        int b = n - start < EVAL_ROWS ? n - start : EVAL_ROWS;
        for (int i = 0; i < b; i++)
            ids[i] = idx ? idx[start + i] : start + i;
        engine_source_gather(src, ids, b, x, y);
        /* Every chunk's mean is weighted b/n, so the accumulated sum is the mean's gradient. */
        float seed = (float)b / (float)n;
        rc = run_batch(m, x, y, NULL, b, 0, 0.0f, NULL, grad_out ? &seed : NULL, &loss_sum, &correct, err);
    }
    engine_graph_set_grad(m->g, 1);
    if (grad_out && grad_out != grads) {
        memcpy(grad_out, grads, P * sizeof(float));
        memcpy(grads, save, P * sizeof(float));
    }
    free(save);
    free(x);
    free(y);
    free(ids);
    if (rc)
        return rc;
    if (loss)
        *loss = loss_sum / n;
    if (accuracy)
        *accuracy = (double)correct / n;
    return 0;
}

int engine_model_evaluate_source(engine_model_t *m, const engine_source_t *src, const int *idx, int n, double *loss,
                                 double *accuracy, err_t *err)
{
    if (src && !idx)
        n = src->count;
    int rc = check_data(m, src, idx, n, "engine_model_evaluate", err);
    if (rc)
        return rc;
    return eval_chunks(m, src, idx, n, loss, accuracy, NULL, err);
}

int engine_model_evaluate(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                          double *accuracy, err_t *err)
{
    if (!d)
        return err_set(err, FN_EINVAL, "engine_model_evaluate: model and data set must not be NULL");
    engine_source_t s = engine_source_from_dataset(d);
    return engine_model_evaluate_source(m, &s, idx, n, loss, accuracy, err);
}

int engine_model_loss_grad(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                           float *grad_out, err_t *err)
{
    if (!d)
        return err_set(err, FN_EINVAL, "engine_model_loss_grad: model and data set must not be NULL");
    engine_source_t s = engine_source_from_dataset(d);
    if (!idx)
        n = d->count;
    int rc = check_data(m, &s, idx, n, "engine_model_loss_grad", err);
    if (rc)
        return rc;
    return eval_chunks(m, &s, idx, n, loss, NULL, grad_out ? grad_out : engine_model_grads(m), err);
}
