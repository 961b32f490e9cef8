#include "engine/model.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rng.h"

/* Evaluation runs in chunks of at least this many rows; scratch is sized for it up front so
 * alternating train and evaluate calls never reallocate. */
#define EVAL_ROWS 256

struct engine_model {
    json_t *arch;
    int num_layers; /* linear layers: hidden layers + the output layer */
    int *dims;      /* num_layers + 1 widths: dims[0] input ... dims[num_layers] classes */
    size_t *w_off;  /* per layer: offset of W (dims[l+1] x dims[l]) in params */
    size_t *b_off;  /* per layer: offset of b (dims[l+1]) */
    size_t num_params;
    float *params;
    float *grads;
    /* Scratch for up to cap rows, allocated once and reused by every batch. */
    int cap;
    float *acts;     /* one block: the layer inputs/outputs, see act() */
    size_t *act_off; /* num_layers + 1 offsets into acts: the input batch, hidden activations, logits */
    float *dbuf[2];  /* ping-pong gradient buffers, cap x max width of dims[1..] */
    uint8_t *y;      /* the batch's labels */
};

/* ---------------------------------------------------------------------------------------------
 * Layers: pure functions with explicit dimensions (B rows, IN inputs, OUT outputs), as llm.c. */

/* out (B,OUT) = inp (B,IN) @ W^T (W is OUT,IN) + b */
static void linear_forward(float *out, const float *inp, const float *W, const float *b, int B, int IN, int OUT)
{
    for (int r = 0; r < B; r++)
        memcpy(out + (size_t)r * OUT, b, (size_t)OUT * sizeof *out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, IN, 1.0f, inp, IN, W, IN, 1.0f, out, OUT);
}

/* Accumulates dW += dout^T @ inp and db += column sums of dout; dinp = dout @ W unless NULL
 * (the network's input needs no gradient). */
static void linear_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp, const float *W,
                            int B, int IN, int OUT)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, B, 1.0f, dout, OUT, inp, IN, 1.0f, dW, IN);
    for (int r = 0; r < B; r++) {
        const float *d = dout + (size_t)r * OUT;
        for (int o = 0; o < OUT; o++)
            db[o] += d[o];
    }
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, IN, OUT, 1.0f, dout, OUT, W, IN, 0.0f, dinp, IN);
}

static void relu_forward(float *x, size_t N)
{
    for (size_t i = 0; i < N; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* The forward pass keeps only the ReLU outputs; out > 0 exactly where the input was > 0. */
static void relu_backward(float *dx, const float *out, size_t N)
{
    for (size_t i = 0; i < N; i++)
        if (!(out[i] > 0.0f))
            dx[i] = 0.0f;
}

/* Softmax cross-entropy over logits (B,C) with labels y. Adds the summed loss and the number of
 * correct argmaxes to *loss_sum and *correct. When dlogits is not NULL, writes
 * (softmax - onehot) * scale there (scale = 1/N for the gradient of a mean over N samples).
 * Log-sum-exp after subtracting the row max, so large logits neither overflow nor lose the loss. */
static void softmax_xent(float *dlogits, double *loss_sum, int *correct, const float *logits, const uint8_t *y,
                         int B, int C, float scale)
{
    for (int r = 0; r < B; r++) {
        const float *z = logits + (size_t)r * C;
        int arg = 0;
        float mx = z[0];
        for (int c = 1; c < C; c++)
            if (z[c] > mx) {
                mx = z[c];
                arg = c;
            }
        double s = 0.0;
        for (int c = 0; c < C; c++)
            s += exp((double)(z[c] - mx));
        double lse = log(s);
        *loss_sum += lse - (double)(z[y[r]] - mx);
        *correct += arg == y[r];
        if (dlogits) {
            float *d = dlogits + (size_t)r * C;
            for (int c = 0; c < C; c++)
                d[c] = (float)exp((double)(z[c] - mx) - lse) * scale;
            d[y[r]] -= scale;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Model plumbing. */

static float *act(engine_model_t *m, int l) { return m->acts + m->act_off[l]; }

static void forward(engine_model_t *m, int B)
{
    const int L = m->num_layers;
    for (int l = 0; l < L; l++) {
        int IN = m->dims[l], OUT = m->dims[l + 1];
        linear_forward(act(m, l + 1), act(m, l), m->params + m->w_off[l], m->params + m->b_off[l], B, IN, OUT);
        if (l < L - 1)
            relu_forward(act(m, l + 1), (size_t)B * OUT);
    }
}

/* Backpropagates from the logits' gradient in dbuf[0], accumulating into grads. */
static void backward(engine_model_t *m, float *grads, int B)
{
    int cur = 0;
    for (int l = m->num_layers - 1; l >= 0; l--) {
        int IN = m->dims[l], OUT = m->dims[l + 1];
        float *dinp = l > 0 ? m->dbuf[cur ^ 1] : NULL;
        linear_backward(dinp, grads + m->w_off[l], grads + m->b_off[l], m->dbuf[cur], act(m, l),
                        m->params + m->w_off[l], B, IN, OUT);
        if (l > 0) {
            relu_backward(dinp, act(m, l), (size_t)B * IN);
            cur ^= 1;
        }
    }
}

/* Scales the batch's pixels to [0,1] into the input activation and gathers the labels: samples
 * idx[0..B), or first..first+B when idx is NULL. */
static void load_batch(engine_model_t *m, const engine_dataset_t *d, const int *idx, int first, int B)
{
    const size_t IN = (size_t)m->dims[0];
    float *x = act(m, 0);
    for (int r = 0; r < B; r++) {
        int s = idx ? idx[r] : first + r;
        const uint8_t *px = d->images + (size_t)s * IN;
        float *row = x + (size_t)r * IN;
        for (size_t k = 0; k < IN; k++)
            row[k] = (float)px[k] * (1.0f / 255.0f);
        m->y[r] = d->labels[s];
    }
}

static void free_scratch(engine_model_t *m)
{
    free(m->acts);
    free(m->dbuf[0]);
    free(m->dbuf[1]);
    free(m->y);
    m->acts = m->dbuf[0] = m->dbuf[1] = NULL;
    m->y = NULL;
    m->cap = 0;
}

/* Makes room for `rows` rows; only grows, so steady-state training never allocates. */
static int ensure_scratch(engine_model_t *m, int rows, err_t *err)
{
    if (rows < EVAL_ROWS)
        rows = EVAL_ROWS;
    if (rows <= m->cap)
        return 0;
    free_scratch(m);
    size_t total = 0, widest = 1;
    for (int l = 0; l <= m->num_layers; l++) {
        m->act_off[l] = total;
        total += (size_t)rows * (size_t)m->dims[l];
        if (l > 0 && (size_t)m->dims[l] > widest)
            widest = (size_t)m->dims[l];
    }
    m->acts = malloc(total * sizeof(float));
    m->dbuf[0] = malloc((size_t)rows * widest * sizeof(float));
    m->dbuf[1] = malloc((size_t)rows * widest * sizeof(float));
    m->y = malloc((size_t)rows);
    if (!m->acts || !m->dbuf[0] || !m->dbuf[1] || !m->y) {
        free_scratch(m);
        return err_set(err, FN_ENOMEM, "model scratch for %d rows (%zu floats) does not fit in memory; use a smaller batch",
                       rows, total + 2 * (size_t)rows * widest);
    }
    m->cap = rows;
    return 0;
}

/* Checks that d fits the model and that every sample idx[0..n) exists and has a valid label.
 * Done before touching parameters, so a bad call leaves the model as it was. */
static int check_data(const engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, const char *fn,
                      err_t *err)
{
    if (!m || !d)
        return err_set(err, FN_EINVAL, "%s: model and data set must not be NULL", fn);
    if (!d->images || !d->labels || d->count <= 0)
        return err_set(err, FN_EINVAL, "%s: the data set is empty; load it with engine_idx_load first", fn);
    if ((long long)d->rows * d->cols != m->dims[0])
        return err_set(err, FN_EINVAL,
                       "%s: the model takes %d inputs but the data set's samples are %dx%d = %lld pixels; "
                       "create the model with input_dim %lld",
                       fn, m->dims[0], d->rows, d->cols, (long long)d->rows * d->cols,
                       (long long)d->rows * d->cols);
    if (n <= 0)
        return err_set(err, FN_EINVAL, "%s: n is %d; need at least one sample", fn, n);
    const int C = m->dims[m->num_layers];
    for (int i = 0; i < n; i++) {
        int s = idx ? idx[i] : i;
        if (s < 0 || s >= d->count)
            return err_set(err, FN_EINVAL, "%s: idx[%d] is %d, outside the data set's %d samples", fn, i, s, d->count);
        if (d->labels[s] >= C)
            return err_set(err, FN_EINVAL,
                           "%s: sample %d has label %d but the model has %d classes; create it with num_classes >= %d",
                           fn, s, d->labels[s], C, d->num_classes > d->labels[s] ? d->num_classes : d->labels[s] + 1);
    }
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------------------------------------
 * Public API. */

static int parse_arch(const json_t *arch, int *hidden, int *num_hidden, err_t *err)
{
    static const char *example = "e.g. {\"type\":\"mlp\",\"hidden\":[128]} or {\"type\":\"softmax\"}";
    if (!arch || !json_is_object(arch))
        return err_set(err, FN_EINVAL, "model arch: expected a JSON object, %s", example);
    const json_t *type = json_object_get(arch, "type");
    if (!type)
        return err_set(err, FN_EINVAL, "model arch: missing key \"type\"; %s", example);
    if (!json_is_string(type))
        return err_set(err, FN_EINVAL, "model arch.type: expected a string, \"softmax\" or \"mlp\"");
    const char *t = json_string_value(type);
    int mlp;
    if (strcmp(t, "softmax") == 0)
        mlp = 0;
    else if (strcmp(t, "mlp") == 0)
        mlp = 1;
    else
        return err_set(err, FN_EINVAL, "model arch.type: unknown type \"%s\"; expected \"softmax\" or \"mlp\"", t);

    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)arch, key, val) {
        if (strcmp(key, "type") == 0 || (mlp && strcmp(key, "hidden") == 0))
            continue;
        return err_set(err, FN_EINVAL, "model arch: unknown key \"%s\" for type \"%s\"; %s", key, t,
                       mlp ? "an mlp takes \"type\" and \"hidden\"" : "softmax takes only \"type\"");
    }
    *num_hidden = 0;
    if (!mlp)
        return 0;
    const json_t *h = json_object_get(arch, "hidden");
    if (!h)
        return err_set(err, FN_EINVAL, "model arch: type \"mlp\" needs key \"hidden\", the hidden layer widths, e.g. [128]");
    if (!json_is_array(h) || json_array_size(h) == 0 || json_array_size(h) > ENGINE_MODEL_MAX_HIDDEN)
        return err_set(err, FN_EINVAL, "model arch.hidden: expected an array of 1..%d layer widths, e.g. [128]",
                       ENGINE_MODEL_MAX_HIDDEN);
    for (size_t i = 0; i < json_array_size(h); i++) {
        const json_t *w = json_array_get(h, i);
        json_int_t v = json_is_integer(w) ? json_integer_value(w) : 0;
        if (!json_is_integer(w) || v < 1 || v > ENGINE_MODEL_MAX_WIDTH)
            return err_set(err, FN_EINVAL, "model arch.hidden[%zu]: expected an integer width in 1..%d", i,
                           ENGINE_MODEL_MAX_WIDTH);
        hidden[i] = (int)v;
    }
    *num_hidden = (int)json_array_size(h);
    return 0;
}

int engine_model_create(const json_t *arch, int input_dim, int num_classes, engine_model_t **out, err_t *err)
{
    if (!out)
        return err_set(err, FN_EINVAL, "engine_model_create: out is NULL");
    *out = NULL;
    int hidden[ENGINE_MODEL_MAX_HIDDEN], nh = 0;
    int rc = parse_arch(arch, hidden, &nh, err);
    if (rc)
        return rc;
    if (input_dim < 1 || input_dim > ENGINE_MODEL_MAX_WIDTH)
        return err_set(err, FN_EINVAL, "engine_model_create: input_dim is %d; expected 1..%d", input_dim,
                       ENGINE_MODEL_MAX_WIDTH);
    if (num_classes < 1 || num_classes > ENGINE_MODEL_MAX_WIDTH)
        return err_set(err, FN_EINVAL, "engine_model_create: num_classes is %d; expected 1..%d", num_classes,
                       ENGINE_MODEL_MAX_WIDTH);

    engine_model_t *m = FN_CALLOC(1, sizeof *m);
    m->num_layers = nh + 1;
    m->dims = FN_MALLOC(((size_t)m->num_layers + 1) * sizeof *m->dims);
    m->w_off = FN_MALLOC((size_t)m->num_layers * sizeof *m->w_off);
    m->b_off = FN_MALLOC((size_t)m->num_layers * sizeof *m->b_off);
    m->act_off = FN_MALLOC(((size_t)m->num_layers + 1) * sizeof *m->act_off);
    m->dims[0] = input_dim;
    for (int i = 0; i < nh; i++)
        m->dims[i + 1] = hidden[i];
    m->dims[m->num_layers] = num_classes;
    size_t n = 0;
    for (int l = 0; l < m->num_layers; l++) {
        m->w_off[l] = n;
        n += (size_t)m->dims[l + 1] * (size_t)m->dims[l];
        m->b_off[l] = n;
        n += (size_t)m->dims[l + 1];
    }
    m->num_params = n;
    if (n > ENGINE_MODEL_MAX_PARAMS) {
        engine_model_free(m);
        return err_set(err, FN_EINVAL, "engine_model_create: %zu parameters exceed the limit of %d; use narrower "
                       "or fewer hidden layers", n, ENGINE_MODEL_MAX_PARAMS);
    }
    /* Sizes come from configs: a typo like hidden [1000000, 1000000] must be an error, not an abort. */
    m->params = calloc(n, sizeof(float));
    m->grads = calloc(n, sizeof(float));
    if (!m->params || !m->grads) {
        engine_model_free(m);
        return err_set(err, FN_ENOMEM, "engine_model_create: %zu parameters (%zu MiB) do not fit in memory; "
                       "use narrower layers", n, 2 * n * sizeof(float) >> 20);
    }
    m->arch = json_deep_copy(arch);
    *out = m;
    return 0;
}

void engine_model_free(engine_model_t *m)
{
    if (!m)
        return;
    free_scratch(m);
    json_decref(m->arch);
    free(m->dims);
    free(m->w_off);
    free(m->b_off);
    free(m->act_off);
    free(m->params);
    free(m->grads);
    free(m);
}

size_t engine_model_num_params(const engine_model_t *m) { return m->num_params; }
float *engine_model_params(engine_model_t *m) { return m->params; }
float *engine_model_grads(engine_model_t *m) { return m->grads; }
const json_t *engine_model_arch(const engine_model_t *m) { return m->arch; }
int engine_model_input_dim(const engine_model_t *m) { return m->dims[0]; }
int engine_model_num_classes(const engine_model_t *m) { return m->dims[m->num_layers]; }
int engine_model_num_layers(const engine_model_t *m) { return m->num_layers; }

void engine_model_layer(const engine_model_t *m, int l, int *in, int *out, size_t *w_offset, size_t *b_offset)
{
    FN_CHECK(l >= 0 && l < m->num_layers);
    if (in)
        *in = m->dims[l];
    if (out)
        *out = m->dims[l + 1];
    if (w_offset)
        *w_offset = m->w_off[l];
    if (b_offset)
        *b_offset = m->b_off[l];
}

void engine_model_init(engine_model_t *m, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int l = 0; l < m->num_layers; l++) {
        size_t nw = (size_t)m->dims[l + 1] * (size_t)m->dims[l];
        double bound = sqrt(6.0 / m->dims[l]);
        float *W = m->params + m->w_off[l];
        for (size_t i = 0; i < nw; i++)
            W[i] = (float)((2.0 * rng_uniform(&r) - 1.0) * bound);
        memset(m->params + m->b_off[l], 0, (size_t)m->dims[l + 1] * sizeof(float));
    }
}

int engine_model_train_epoch(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, int batch_size,
                             float lr, uint64_t seed, engine_train_stats_t *stats, err_t *err)
{
    static const char *fn = "engine_model_train_epoch";
    if (d && !idx)
        n = d->count;
    int rc = check_data(m, d, idx, n, fn, err);
    if (rc)
        return rc;
    if (batch_size <= 0)
        return err_set(err, FN_EINVAL, "%s: batch_size is %d; expected >= 1 (e.g. 32)", fn, batch_size);
    if (!(lr > 0.0f) || !isfinite(lr))
        return err_set(err, FN_EINVAL, "%s: lr is %g; expected a finite value > 0 (e.g. 0.05)", fn, (double)lr);
    int B = batch_size < n ? batch_size : n;
    rc = ensure_scratch(m, B, err);
    if (rc)
        return rc;

    double t0 = now_seconds();
    int *order = FN_MALLOC((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++)
        order[i] = idx ? idx[i] : i;
    rng_t r;
    rng_seed(&r, seed);
    rng_shuffle_int(&r, order, n);

    const int C = engine_model_num_classes(m);
    double loss_sum = 0.0;
    int correct = 0;
    for (int start = 0; start < n; start += B) {
        int b = n - start < B ? n - start : B;
        load_batch(m, d, order + start, 0, b);
        forward(m, b);
        softmax_xent(m->dbuf[0], &loss_sum, &correct, act(m, m->num_layers), m->y, b, C, 1.0f / (float)b);
        memset(m->grads, 0, m->num_params * sizeof(float));
        backward(m, m->grads, b);
        cblas_saxpy((int)m->num_params, -lr, m->grads, 1, m->params, 1);
    }
    free(order);
    if (!isfinite(loss_sum))
        log_warn("%s: the loss is not finite (%g); training diverged, lower lr (now %g)", fn, loss_sum, (double)lr);
    if (stats) {
        stats->loss = loss_sum / n;
        stats->accuracy = (double)correct / n;
        stats->samples = n;
        stats->seconds = now_seconds() - t0;
    }
    return 0;
}

int engine_model_evaluate(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                          double *accuracy, err_t *err)
{
    if (d && !idx)
        n = d->count;
    int rc = check_data(m, d, idx, n, "engine_model_evaluate", err);
    if (rc)
        return rc;
    rc = ensure_scratch(m, EVAL_ROWS, err);
    if (rc)
        return rc;
    const int C = engine_model_num_classes(m), B = m->cap;
    double loss_sum = 0.0;
    int correct = 0;
    for (int start = 0; start < n; start += B) {
        int b = n - start < B ? n - start : B;
        load_batch(m, d, idx ? idx + start : NULL, start, b);
        forward(m, b);
        softmax_xent(NULL, &loss_sum, &correct, act(m, m->num_layers), m->y, b, C, 0.0f);
    }
    if (loss)
        *loss = loss_sum / n;
    if (accuracy)
        *accuracy = (double)correct / n;
    return 0;
}

int engine_model_loss_grad(engine_model_t *m, const engine_dataset_t *d, const int *idx, int n, double *loss,
                           float *grad_out, err_t *err)
{
    if (d && !idx)
        n = d->count;
    int rc = check_data(m, d, idx, n, "engine_model_loss_grad", err);
    if (rc)
        return rc;
    rc = ensure_scratch(m, EVAL_ROWS, err);
    if (rc)
        return rc;
    float *g = grad_out ? grad_out : m->grads;
    memset(g, 0, m->num_params * sizeof(float));
    const int C = engine_model_num_classes(m), B = m->cap;
    double loss_sum = 0.0;
    int correct = 0;
    for (int start = 0; start < n; start += B) {
        int b = n - start < B ? n - start : B;
        load_batch(m, d, idx ? idx + start : NULL, start, b);
        forward(m, b);
        /* Every chunk's gradient is scaled by 1/n, so the accumulated sum is the mean's gradient. */
        softmax_xent(m->dbuf[0], &loss_sum, &correct, act(m, m->num_layers), m->y, b, C, 1.0f / (float)n);
        backward(m, g, b);
    }
    if (loss)
        *loss = loss_sum / n;
    return 0;
}
