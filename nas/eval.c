#include "nas/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/threadpool.h"

int nas_data_load(const nas_data_opts_t *o, nas_data_t *d, err_t *err)
{
    memset(d, 0, sizeof *d);
    const char *dir = o->dir ? o->dir : ENGINE_FMNIST_DEFAULT_DIR;
    int rc = engine_fmnist_load(dir, "train", &d->train_set, err);
    if (rc == 0)
        rc = engine_fmnist_load(dir, "test", &d->test_set, err);
    if (rc < 0) {
        nas_data_free(d);
        return rc;
    }
    int n = d->train_set.count;
    if (o->val_size < 1 || o->val_size >= n) {
        nas_data_free(d);
        return err_set(err, FN_EINVAL, "validation split of %d images does not fit a training set of %d", o->val_size,
                       n);
    }
    d->split_seed = o->split_seed;
    d->train_src = engine_source_from_dataset(&d->train_set);
    d->test_src = engine_source_from_dataset(&d->test_set);
    /* One permutation, drawn from the stored seed: validation is its head, training the rest, so
     * the split is the same for every candidate and for a resumed run. */
    int *perm = FN_MALLOC((size_t)n * sizeof *perm);
    for (int i = 0; i < n; i++)
        perm[i] = i;
    rng_t r;
    rng_seed(&r, o->split_seed);
    rng_shuffle_int(&r, perm, n);
    int nv = o->val_size, nt = n - o->val_size;
    if (o->val_subset > 0 && o->val_subset < nv)
        nv = o->val_subset;
    if (o->train_subset > 0 && o->train_subset < nt)
        nt = o->train_subset;
    d->val_idx = FN_MALLOC((size_t)nv * sizeof(int));
    d->train_idx = FN_MALLOC((size_t)nt * sizeof(int));
    d->all_idx = FN_MALLOC((size_t)(nv + nt) * sizeof(int));
    memcpy(d->val_idx, perm, (size_t)nv * sizeof(int));
    memcpy(d->train_idx, perm + o->val_size, (size_t)nt * sizeof(int));
    memcpy(d->all_idx, d->train_idx, (size_t)nt * sizeof(int));
    memcpy(d->all_idx + nt, d->val_idx, (size_t)nv * sizeof(int));
    d->n_val = nv;
    d->n_train = nt;
    d->n_all = nv + nt;
    d->n_test = o->test_subset > 0 && o->test_subset < d->test_set.count ? o->test_subset : d->test_set.count;
    d->test_idx = FN_MALLOC((size_t)d->n_test * sizeof(int));
    for (int i = 0; i < d->n_test; i++)
        d->test_idx[i] = i;
    free(perm);
    return 0;
}

void nas_data_free(nas_data_t *d)
{
    engine_dataset_free(&d->train_set);
    engine_dataset_free(&d->test_set);
    free(d->train_idx);
    free(d->val_idx);
    free(d->all_idx);
    free(d->test_idx);
    memset(d, 0, sizeof *d);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int nas_eval_latency(engine_model_t *m, int reps, double *ms, err_t *err)
{
    enum { B = 64, WARMUP = 3 };
    engine_net_t *net = engine_model_net(m);
    int dim = engine_model_input_dim(m);
    float *x = malloc((size_t)B * dim * sizeof(float));
    double *t = malloc((size_t)(reps > 0 ? reps : 1) * sizeof(double));
    engine_graph_t *g = engine_graph_create((size_t)4 << 20, 1);
    if (!x || !t || !g) {
        free(x);
        free(t);
        engine_graph_free(g);
        return err_set(err, FN_ENOMEM, "latency: out of memory");
    }
    /* Content does not change the work done; a fixed pattern keeps runs comparable. */
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)B * dim; i++)
        x[i] = (float)rng_uniform(&r);
    engine_graph_set_grad(g, 0);
    int side = (int)lround(sqrt((double)dim));
    int64_t shape4[4] = {B, 1, side, side}, shape2[2] = {B, dim};
    int square = side * side == dim;
    int rc = 0;
    for (int i = 0; i < WARMUP + reps && rc == 0; i++) {
        double t0 = fn_mono();
        engine_graph_reset(g);
        engine_tensor_t *xt = square ? engine_graph_view(g, x, NULL, ENGINE_F32, 4, shape4)
                                     : engine_graph_view(g, x, NULL, ENGINE_F32, 2, shape2);
        engine_tensor_t *y = engine_net_forward(net, g, xt, 0);
        if (!y) {
            rc = engine_graph_error(g, err);
            if (rc == 0)
                rc = err_set(err, FN_EINVAL, "latency: the forward pass failed");
            break;
        }
        if (i >= WARMUP)
            t[i - WARMUP] = (fn_mono() - t0) * 1e3;
    }
    if (rc == 0 && reps > 0) {
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        *ms = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    }
    engine_graph_free(g);
    free(x);
    free(t);
    return rc;
}

static int finite_vector(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* A budget that is not a whole number of epochs, e = q + f (q whole, 0 < f < 1), as one pass
 * over a list of round(e * n) samples: q seed-shuffled copies of the split and a seed-shuffled
 * head of f * n of it, so every image is seen q or q + 1 times (a fraction below 1 is one pass
 * over a head, different images for different seeds, the same for the same seed). The engine
 * then runs one "epoch" over that list; a schedule counted in epochs is rescaled to steps of
 * the real epoch so that its shape over the budget is kept (exponential decays per step by
 * gamma^(1/steps per epoch)). */
int nas_eval_fraction(const int *idx, int n, double epochs, uint64_t seed, engine_train_config_t *tc, int **list,
                      int *len, err_t *err)
{
    *list = NULL;
    *len = 0;
    if (n < 1 || !(epochs > 0) || epochs > 10000)
        return err_set(err, FN_EINVAL, "budget %g epochs over %d samples: expected samples and epochs in (0, 10000]",
                       epochs, n);
    long total = (long)llround(epochs * n);
    if (total < 1)
        total = 1;
    if (total > 0x7fffffffL)
        return err_set(err, FN_EINVAL, "budget %g epochs over %d samples: %ld samples do not fit one pass", epochs, n,
                       total);
    int *out = malloc((size_t)total * sizeof *out);
    if (!out)
        return err_set(err, FN_ENOMEM, "budget %g epochs: out of memory for %ld sample indices", epochs, total);
    int *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) {
        free(out);
        return err_set(err, FN_ENOMEM, "budget %g epochs: out of memory", epochs);
    }
    rng_t rr;
    rng_seed(&rr, rng_derive(seed, 0x6672616320ULL));
    for (long k = 0; k < total; k += n) {
        /* a shuffled copy of the split, whole or its head: the head is a uniform sample */
        long take = total - k < n ? total - k : n;
        memcpy(tmp, idx, (size_t)n * sizeof *tmp);
        rng_shuffle_int(&rr, tmp, n);
        memcpy(out + k, tmp, (size_t)take * sizeof *out);
    }
    free(tmp);
    engine_schedule_t *sc = &tc->schedule;
    /* a warmup counted in epochs needs the rescaling too, whatever follows it */
    if (!sc->per_step && (sc->type != ENGINE_SCHED_CONSTANT || sc->warmup > 0)) {
        const int B = tc->batch_size < n ? tc->batch_size : n, acc = tc->accumulate > 0 ? tc->accumulate : 1;
        const long spe = ((n + B - 1) / B + acc - 1) / acc; /* optimizer steps of one real epoch */
        sc->per_step = 1;
        sc->step_size *= spe;
        for (int i = 0; i < sc->num_milestones; i++)
            sc->milestones[i] *= spe;
        sc->total *= spe; /* 0 stays 0: the engine then spans the whole pass */
        sc->warmup *= spe;
        if (sc->type == ENGINE_SCHED_EXPONENTIAL)
            sc->gamma = pow(sc->gamma, 1.0 / (double)spe);
    }
    tc->epochs = 1;
    *list = out;
    *len = (int)total;
    return 0;
}

int nas_eval_run(const json_t *arch, const nas_data_t *d, const nas_eval_opts_t *o, nas_eval_result_t *r,
                 engine_model_t **keep, err_t *err)
{
    memset(r, 0, sizeof *r);
    if (keep)
        *keep = NULL;
    if (!(o->epochs > 0) || o->epochs > 10000)
        return err_set(err, FN_EINVAL, "budget %g epochs: expected a number of epochs in (0, 10000]", o->epochs);
    engine_model_t *m = NULL;
    const engine_source_t *src = &d->train_src;
    int rc = engine_model_create_shape(arch, src->channels, src->height, src->width, 10, &m, err);
    if (rc < 0)
        return err_wrap(err, "building the candidate: ");
    engine_model_init(m, o->seed);
    r->params = (int64_t)engine_model_num_params(m);
    r->flops = engine_net_flops_per_sample(engine_model_net(m));
    snprintf(r->device, sizeof r->device, "cpu");
    r->threads = engine_threadpool_size(engine_threadpool_default());

    const int *idx = o->final ? d->all_idx : d->train_idx;
    int n = o->final ? d->n_all : d->n_train;
    int *sub = NULL;
    engine_train_config_t tc = o->train;
    tc.seed = o->seed;
    tc.on_step = NULL;
    tc.on_epoch = NULL;
    if (o->epochs != floor(o->epochs)) {
        rc = nas_eval_fraction(idx, n, o->epochs, o->seed, &tc, &sub, &n, err);
        if (rc) {
            engine_model_free(m);
            return rc;
        }
        idx = sub;
    } else {
        tc.epochs = (int)o->epochs;
    }
    engine_train_stats_t st;
    double t0 = fn_mono();
    rc = engine_model_train_source(m, src, idx, n, &tc, &st, err);
    r->train_seconds = fn_mono() - t0;
    free(sub);
    if (rc < 0) {
        engine_model_free(m);
        return err_wrap(err, "training the candidate: ");
    }
    r->train_loss = st.loss;
    r->train_accuracy = st.accuracy;
    r->samples = st.samples;
    if (!isfinite(st.loss) || !finite_vector(engine_model_params(m), engine_model_num_federated(m))) {
        snprintf(r->reason, sizeof r->reason, "diverged: training loss %g after %lld samples (non-finite loss or weights)",
                 st.loss, (long long)st.samples);
        engine_model_free(m);
        return 0;
    }
    const engine_source_t *es = o->final ? &d->test_src : &d->train_src;
    rc = o->final ? engine_model_evaluate_source(m, es, d->test_idx, d->n_test, &r->loss, &r->accuracy, err)
                  : engine_model_evaluate_source(m, es, d->val_idx, d->n_val, &r->loss, &r->accuracy, err);
    if (rc == 0 && o->latency_reps > 0)
        rc = nas_eval_latency(m, o->latency_reps, &r->latency_ms, err);
    if (rc < 0) {
        engine_model_free(m);
        return err_wrap(err, "evaluating the candidate: ");
    }
    if (!isfinite(r->loss)) {
        snprintf(r->reason, sizeof r->reason, "diverged: %s loss is %g", o->final ? "test" : "validation", r->loss);
        engine_model_free(m);
        return 0;
    }
    r->ok = 1;
    if (keep)
        *keep = m;
    else
        engine_model_free(m);
    return 0;
}
