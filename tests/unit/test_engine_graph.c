/* The define-by-run graph: a supernet that samples a path each step and an LSTM whose hidden
 * size changes between steps train with nothing rebuilt; no-grad mode; the arena's reuse and
 * peak; errors as values; the model builder (named architectures, bad shapes); gradient
 * accumulation; FedProx; the data pipeline (CSV, batcher with prefetch, augmentation hook). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/data.h"
#include "engine/graph.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/threadpool.h"

static void fill(float *x, size_t n, rng_t *r, double sc)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(rng_normal(r) * sc);
}

/* A supernet: per step, one of two candidate convs (3x3 or 5x5) is sampled, then a shared head.
 * Only the sampled candidate gets a gradient; the loss falls over training. */
static void test_supernet_paths(void **state)
{
    (void)state;
    enum { B = 8, C = 4, HW = 6, K = 3 };
    const size_t n3 = 4 * 1 * 3 * 3, n5 = 4 * 1 * 5 * 5, nh = K * C * HW * HW + K;
    const size_t P = n3 + n5 + nh;
    float *p = calloc(P, sizeof(float)), *gr = calloc(P, sizeof(float));
    rng_t r;
    rng_seed(&r, 3);
    fill(p, P, &r, 0.2);
    float x[B * HW * HW];
    uint8_t y[B];
    engine_graph_t *g = engine_graph_create(0, 1);
    engine_optim_config_t oc = engine_optim_defaults(ENGINE_OPTIM_SGD, 0.05f);
    engine_optim_t *opt = NULL;
    err_t e = {0};
    assert_int_equal(engine_optim_create(&oc, P, &opt, &e), 0);
    double first = 0, last = 0;
    int used[2] = {0, 0};
    for (int step = 0; step < 200; step++) {
        /* toy task: the label is the quadrant holding the brightest pixel... simplified to 3 classes */
        for (int b = 0; b < B; b++) {
            int cls = (int)rng_below(&r, K);
            for (int i = 0; i < HW * HW; i++)
                x[b * HW * HW + i] = (float)(0.1 * rng_normal(&r)) + ((i % HW) / 2 == cls ? 1.0f : 0.0f);
            y[b] = (uint8_t)cls;
        }
        int path = (int)rng_below(&r, 2);
        used[path]++;
        engine_graph_reset(g);
        int64_t xs[4] = {B, 1, HW, HW}, ys[1] = {B}, w3[4] = {4, 1, 3, 3}, w5[4] = {4, 1, 5, 5}, hw[2] = {K, C * HW * HW},
                hb[1] = {K};
        engine_tensor_t *xt = engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs);
        engine_tensor_t *h;
        if (path == 0) {
            engine_conv2d_params_t cp = {.pad_h = 1, .pad_w = 1};
            h = engine_conv2d(g, xt, engine_graph_view(g, p, gr, ENGINE_F32, 4, w3), NULL, &cp);
        } else {
            engine_conv2d_params_t cp = {.pad_h = 2, .pad_w = 2};
            h = engine_conv2d(g, xt, engine_graph_view(g, p + n3, gr + n3, ENGINE_F32, 4, w5), NULL, &cp);
        }
        h = engine_flatten(g, engine_relu(g, h));
        engine_tensor_t *logits = engine_linear(g, h, engine_graph_view(g, p + n3 + n5, gr + n3 + n5, ENGINE_F32, 2, hw),
                                                engine_graph_view(g, p + P - K, gr + P - K, ENGINE_F32, 1, hb));
        engine_tensor_t *loss = engine_softmax_xent(g, logits, engine_graph_view(g, y, NULL, ENGINE_U8, 1, ys), 0.0f);
        memset(gr, 0, P * sizeof(float));
        assert_int_equal(engine_graph_backward(g, loss, NULL, &e), 0);
        double s3 = 0, s5 = 0;
        for (size_t i = 0; i < n3; i++)
            s3 += fabs(gr[i]);
        for (size_t i = 0; i < n5; i++)
            s5 += fabs(gr[n3 + i]);
        if (path == 0) {
            assert_true(s3 > 0);
            assert_true(s5 == 0);
        } else {
            assert_true(s5 > 0);
            assert_true(s3 == 0);
        }
        double lv = ((float *)loss->data)[0];
        if (step < 20)
            first += lv / 20;
        if (step >= 180)
            last += lv / 20;
        engine_optim_step(opt, p, gr, 0.05f);
    }
    print_message("supernet: loss %.3f -> %.3f (paths %d / %d)\n", first, last, used[0], used[1]);
    assert_true(used[0] > 50 && used[1] > 50);
    assert_true(last < 0.5 * first);
    engine_optim_free(opt);
    engine_graph_free(g);
    free(p);
    free(gr);
}

/* An LSTM whose hidden size changes every step, carved from one parameter blob sized for the
 * largest: it keeps training, and the sizes it did not use get no gradient. */
static void test_lstm_dynamic_hidden(void **state)
{
    (void)state;
    enum { B = 16, T = 5, I = 2, HMAX = 8 };
    /* layout for hidden size H: Wih [4H, I], Whh [4H, H], b [4H], head [1, H] + [1] */
    const size_t P = 4 * HMAX * I + 4 * HMAX * HMAX + 4 * HMAX + HMAX + 1;
    float *p = calloc(P, sizeof(float)), *gr = calloc(P, sizeof(float));
    rng_t r;
    rng_seed(&r, 8);
    fill(p, P, &r, 0.3);
    engine_graph_t *g = engine_graph_create(0, 1);
    engine_optim_config_t oc = engine_optim_defaults(ENGINE_OPTIM_ADAM, 0.02f);
    engine_optim_t *opt = NULL;
    err_t e = {0};
    assert_int_equal(engine_optim_create(&oc, P, &opt, &e), 0);
    const int sizes[3] = {8, 4, 6};
    double first = 0, last = 0;
    float x[B * T * I], tgt[B];
    for (int step = 0; step < 300; step++) {
        /* regress the mean of the first feature over time */
        for (int b = 0; b < B; b++) {
            double s = 0;
            for (int t = 0; t < T; t++) {
                x[(b * T + t) * I] = (float)rng_normal(&r);
                x[(b * T + t) * I + 1] = (float)rng_normal(&r);
                s += x[(b * T + t) * I];
            }
            tgt[b] = (float)(s / T);
        }
        const int H = sizes[step % 3];
        engine_graph_reset(g);
        size_t o_ih = 0, o_hh = 4 * HMAX * I, o_b = o_hh + 4 * HMAX * HMAX, o_w = o_b + 4 * HMAX, o_c = o_w + HMAX;
        int64_t xs[3] = {B, T, I}, sih[2] = {4 * H, I}, shh[2] = {4 * H, H}, sb[1] = {4 * H}, sw[2] = {1, H}, sc[1] = {1},
                ts[2] = {B, 1}, bh[2] = {B, H};
        engine_tensor_t *xt = engine_graph_view(g, x, NULL, ENGINE_F32, 3, xs);
        engine_tensor_t *hs = engine_lstm(g, xt, engine_graph_view(g, p + o_ih, gr + o_ih, ENGINE_F32, 2, sih),
                                          engine_graph_view(g, p + o_hh, gr + o_hh, ENGINE_F32, 2, shh),
                                          engine_graph_view(g, p + o_b, gr + o_b, ENGINE_F32, 1, sb), NULL, NULL);
        engine_tensor_t *hlast = engine_reshape(g, engine_slice(g, hs, 1, T - 1, 1), 2, bh);
        engine_tensor_t *pred = engine_linear(g, hlast, engine_graph_view(g, p + o_w, gr + o_w, ENGINE_F32, 2, sw),
                                              engine_graph_view(g, p + o_c, gr + o_c, ENGINE_F32, 1, sc));
        engine_tensor_t *loss = engine_mse(g, pred, engine_graph_view(g, tgt, NULL, ENGINE_F32, 2, ts));
        memset(gr, 0, P * sizeof(float));
        if (engine_graph_backward(g, loss, NULL, &e))
            fail_msg("%s", e.msg);
        /* nothing beyond the H-sized views moved */
        for (size_t i = (size_t)4 * H * I; i < o_hh; i++)
            assert_true(gr[i] == 0.0f);
        for (size_t i = o_w + (size_t)H; i < o_c; i++)
            assert_true(gr[i] == 0.0f);
        double lv = ((float *)loss->data)[0];
        if (step < 30)
            first += lv / 30;
        if (step >= 270)
            last += lv / 30;
        engine_optim_step(opt, p, gr, 0.02f);
    }
    print_message("lstm with hidden 8/4/6: loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.3 * first);
    engine_optim_free(opt);
    engine_graph_free(g);
    free(p);
    free(gr);
}

static void test_no_grad_and_arena(void **state)
{
    (void)state;
    engine_graph_t *g = engine_graph_create(0, 1);
    float w[12] = {0}, gw[12] = {0}, x[6] = {1, 2, 3, 4, 5, 6};
    int64_t ws[2] = {4, 3}, xs[2] = {2, 3};
    err_t e = {0};
    assert_int_equal(engine_graph_set_grad(g, 0), 1);
    engine_tensor_t *y = engine_relu(g, engine_linear(g, engine_graph_view(g, x, NULL, ENGINE_F32, 2, xs),
                                                      engine_graph_view(g, w, gw, ENGINE_F32, 2, ws), NULL));
    assert_non_null(y);
    assert_int_equal(y->requires_grad, 0);
    engine_graph_mem_t mem;
    engine_graph_mem(g, &mem);
    assert_int_equal(mem.tape_nodes_peak, 0); /* nothing recorded */
    assert_int_equal(engine_graph_backward(g, y, NULL, &e), FN_EINVAL);
    engine_graph_set_grad(g, 1);
    /* The same step twice: the arena's peak does not grow, and a reset step reuses one block. */
    size_t peaks[3];
    for (int rep = 0; rep < 3; rep++) {
        engine_graph_reset(g);
        engine_tensor_t *t = engine_graph_view(g, x, NULL, ENGINE_F32, 2, xs);
        for (int k = 0; k < 200; k++)
            t = engine_tanh(g, engine_linear(g, t, engine_graph_view(g, w, gw, ENGINE_F32, 2, (int64_t[]){3, 3}), NULL));
        assert_non_null(t);
        engine_graph_mem(g, &mem);
        peaks[rep] = mem.arena_peak;
    }
    assert_true(peaks[0] > 0);
    assert_int_equal(peaks[1], peaks[0]);
    assert_int_equal(peaks[2], peaks[0]);
    assert_true(engine_graph_arena(g)->reserved >= peaks[0]);
    engine_graph_free(g);
}

static void test_errors_are_values(void **state)
{
    (void)state;
    engine_graph_t *g = engine_graph_create(0, 1);
    float w[12], x[10];
    int64_t ws[2] = {4, 3}, xs[2] = {2, 5};
    err_t e = {0};
    engine_tensor_t *y = engine_linear(g, engine_graph_view(g, x, NULL, ENGINE_F32, 2, xs),
                                       engine_graph_view(g, w, NULL, ENGINE_F32, 2, ws), NULL);
    assert_null(y);
    assert_null(engine_relu(g, y)); /* NULL flows through */
    assert_int_equal(engine_graph_error(g, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "[2,5]"));
    assert_non_null(strstr(e.msg, "[4,3]"));
    engine_graph_reset(g);
    assert_int_equal(engine_graph_error(g, NULL), 0);
    int64_t is[4] = {1, 1, 3, 3}, ks[4] = {2, 1, 5, 5};
    float img[9], k[50];
    assert_null(engine_conv2d(g, engine_graph_view(g, img, NULL, ENGINE_F32, 4, is),
                              engine_graph_view(g, k, NULL, ENGINE_F32, 4, ks), NULL, NULL));
    assert_int_equal(engine_graph_error(g, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "larger"));
    engine_graph_free(g);
}

static engine_model_t *model(const char *json, int c, int h, int w, int classes, err_t *e)
{
    json_error_t je;
    json_t *a = json_loads(json, 0, &je);
    assert_non_null(a);
    engine_model_t *m = NULL;
    engine_model_create_shape(a, c, h, w, classes, &m, e);
    json_decref(a);
    return m;
}

static void test_architectures(void **state)
{
    (void)state;
    err_t e = {0};
    engine_model_t *m = model("{\"type\":\"cnn\"}", 1, 28, 28, 10, &e);
    assert_non_null(m);
    assert_int_equal(engine_model_num_params(m), 1663370); /* McMahan et al. with 'same' padding */
    assert_int_equal(engine_model_num_layers(m), 4);
    engine_model_free(m);
    m = model("{\"type\":\"lenet\"}", 1, 28, 28, 10, &e);
    assert_non_null(m);
    assert_int_equal(engine_model_num_params(m), 156 + 2416 + 30840 + 10164 + 850);
    engine_model_free(m);
    /* 784 inputs are 1x28x28 images */
    json_t *a = json_pack("{s:s}", "type", "cnn");
    assert_int_equal(engine_model_create(a, 784, 10, &m, &e), 0);
    assert_int_equal(engine_model_num_params(m), 1663370);
    engine_model_free(m);
    json_decref(a);
    m = model("{\"type\":\"resnet\",\"widths\":[4,8],\"blocks\":1}", 1, 12, 12, 3, &e);
    if (!m)
        fail_msg("%s", e.msg);
    engine_model_free(m);
    m = model("{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"padding\":\"same\"},"
              "{\"type\":\"batchnorm\"},{\"type\":\"gelu\"},{\"type\":\"concat\",\"branches\":["
              "[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"padding\":1,\"groups\":4},{\"type\":\"conv2d\",\"out\":3,\"kernel\":1}],"
              "[{\"type\":\"avgpool\",\"kernel\":3,\"stride\":1,\"padding\":1}]]},"
              "{\"type\":\"residual\",\"body\":[{\"type\":\"conv2d\",\"out\":7,\"kernel\":3,\"padding\":1,\"dilation\":1}]},"
              "{\"type\":\"maxpool\",\"kernel\":2},{\"type\":\"dropout\",\"p\":0.1},{\"type\":\"flatten\"},"
              "{\"type\":\"layernorm\"},{\"type\":\"linear\",\"out\":16},{\"type\":\"sigmoid\"},{\"type\":\"tanh\"},"
              "{\"type\":\"linear\"}]}",
              1, 8, 8, 5, &e);
    if (!m)
        fail_msg("%s", e.msg);
    engine_model_free(m);
    m = model("{\"type\":\"layers\",\"layers\":[{\"type\":\"lstm\",\"hidden\":6},{\"type\":\"linear\"}]}", 1, 8, 8, 4, &e);
    if (!m)
        fail_msg("%s", e.msg);
    assert_int_equal(engine_model_num_params(m), 24 * 8 + 24 * 6 + 24 + 4 * 6 + 4);
    engine_model_free(m);
    /* bad shapes are clear errors */
    assert_null(model("{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":9},{\"type\":\"linear\"}]}",
                      1, 8, 8, 5, &e));
    assert_non_null(strstr(e.msg, "layers[0] (conv2d)"));
    assert_null(model("{\"type\":\"layers\",\"layers\":[{\"type\":\"residual\",\"body\":[{\"type\":\"conv2d\",\"out\":4,"
                      "\"kernel\":3}]},{\"type\":\"linear\"}]}",
                      1, 8, 8, 5, &e));
    assert_non_null(strstr(e.msg, "residual"));
    assert_null(model("{\"type\":\"layers\",\"layers\":[{\"type\":\"flatten\"},{\"type\":\"conv2d\",\"out\":4,\"kernel\":3}]}",
                      1, 8, 8, 5, &e));
    assert_non_null(strstr(e.msg, "not an image"));
    assert_null(model("{\"type\":\"layers\",\"layers\":[{\"type\":\"linear\",\"out\":7}]}", 1, 8, 8, 5, &e));
    assert_non_null(strstr(e.msg, "5 classes"));
    assert_null(model("{\"type\":\"layers\",\"layers\":[{\"type\":\"linear\",\"outs\":7}]}", 1, 8, 8, 5, &e));
    assert_non_null(strstr(e.msg, "\"outs\""));
    assert_null(model("{\"type\":\"cnn\"}", 1, 1, 5, 10, &e)); /* a 1x5 "image" cannot be pooled 2x2 */
    assert_non_null(strstr(e.msg, "(maxpool)"));
    assert_non_null(strstr(e.msg, "larger"));
}

/* 16x16 images: a bright block in one of 4 quadrants gives the class. */
static engine_dataset_t quadrants(int count, uint64_t seed)
{
    engine_dataset_t d = {0};
    d.count = count;
    d.rows = d.cols = 8;
    d.num_classes = 4;
    d.images = calloc((size_t)count * 64, 1);
    d.labels = calloc((size_t)count, 1);
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < count; i++) {
        int q = (int)rng_below(&r, 4);
        d.labels[i] = (uint8_t)q;
        for (int k = 0; k < 64; k++) {
            int row = k / 8, col = k % 8;
            int inq = (row / 4) * 2 + col / 4 == q;
            d.images[i * 64 + k] = (uint8_t)(rng_below(&r, 60) + (inq ? 150 : 0));
        }
    }
    return d;
}

static void test_train_configs(void **state)
{
    (void)state;
    err_t e = {0};
    engine_dataset_t tr = quadrants(400, 1), te = quadrants(200, 2);
    const char *archs[4] = {"{\"type\":\"mlp\",\"hidden\":[32]}", "{\"type\":\"resnet\",\"widths\":[4,8]}",
                            "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"stride\":2,"
                            "\"padding\":1},{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"linear\"}]}",
                            "{\"type\":\"layers\",\"layers\":[{\"type\":\"lstm\",\"hidden\":12},{\"type\":\"linear\"}]}"};
    const engine_optim_type_t opts[4] = {ENGINE_OPTIM_SGD, ENGINE_OPTIM_ADAM, ENGINE_OPTIM_ADAMW, ENGINE_OPTIM_RMSPROP};
    for (int a = 0; a < 4; a++) {
        engine_model_t *m = model(archs[a], 1, 8, 8, 4, &e);
        assert_non_null(m);
        engine_model_init(m, 4);
        engine_train_config_t c;
        engine_train_config_default(&c);
        c.epochs = a == 3 ? 8 : 4;
        c.batch_size = 16;
        c.optim = engine_optim_defaults(opts[a], opts[a] == ENGINE_OPTIM_SGD ? 0.1f : 0.01f);
        c.optim.momentum = opts[a] == ENGINE_OPTIM_SGD ? 0.9f : 0.0f;
        c.schedule.type = ENGINE_SCHED_COSINE;
        c.schedule.warmup = 1;
        c.clip_norm = 5.0;
        c.label_smoothing = 0.05f;
        engine_train_stats_t st;
        if (engine_model_train(m, &tr, NULL, 0, &c, &st, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(st.samples, 400 * c.epochs);
        assert_int_equal(st.steps, 25 * c.epochs);
        double acc = 0;
        assert_int_equal(engine_model_evaluate(m, &te, NULL, 0, NULL, &acc, &e), 0);
        print_message("%s with %s: test accuracy %.3f\n", archs[a], engine_optim_type_name(opts[a]), acc);
        assert_true(acc > 0.9);
        engine_model_free(m);
    }
    engine_dataset_free(&tr);
    engine_dataset_free(&te);
}

/* batch 16 in one step == 2 accumulated micro-batches of 8 */
static void test_accumulation_and_prox(void **state)
{
    (void)state;
    err_t e = {0};
    engine_dataset_t d = quadrants(16, 5);
    engine_model_t *a = model("{\"type\":\"mlp\",\"hidden\":[8]}", 1, 8, 8, 4, &e);
    engine_model_t *b = model("{\"type\":\"mlp\",\"hidden\":[8]}", 1, 8, 8, 4, &e);
    engine_model_init(a, 1);
    engine_model_init(b, 1);
    engine_train_config_t c;
    engine_train_config_default(&c);
    c.optim.lr = 0.5f;
    c.batch_size = 16;
    assert_int_equal(engine_model_train(a, &d, NULL, 0, &c, NULL, &e), 0);
    c.batch_size = 8;
    c.accumulate = 2;
    assert_int_equal(engine_model_train(b, &d, NULL, 0, &c, NULL, &e), 0);
    size_t n = engine_model_num_params(a);
    double diff = 0, moved = 0;
    float *pa = engine_model_params(a), *pb = engine_model_params(b);
    engine_model_t *z = model("{\"type\":\"mlp\",\"hidden\":[8]}", 1, 8, 8, 4, &e);
    engine_model_init(z, 1);
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(pa[i] - pb[i]));
        moved = fmax(moved, fabs(pa[i] - engine_model_params(z)[i]));
    }
    assert_true(moved > 1e-3);
    assert_true(diff < 1e-5 * (1 + moved));
    /* FedProx pulls toward the anchor: a large mu keeps w near w0 */
    float *w0 = malloc(n * sizeof(float));
    memcpy(w0, engine_model_params(z), n * sizeof(float));
    engine_dataset_t big = quadrants(200, 6);
    double dist[2];
    for (int k = 0; k < 2; k++) {
        engine_model_init(a, 1);
        engine_train_config_default(&c);
        c.optim.lr = 0.1f;
        c.epochs = 2;
        c.prox_mu = k ? 5.0f : 0.0f;
        c.prox_anchor = w0;
        engine_train_stats_t st;
        assert_int_equal(engine_model_train(a, &big, NULL, 0, &c, &st, &e), 0);
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += (pa[i] - w0[i]) * (pa[i] - w0[i]);
        dist[k] = sqrt(s);
        if (k)
            assert_float_equal(st.prox, 0.5 * 5.0 * s, 1e-6 * (1 + s));
    }
    assert_true(dist[1] < 0.5 * dist[0]);
    c.prox_anchor = NULL;
    assert_int_equal(engine_model_train(a, &big, NULL, 0, &c, NULL, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "prox"));
    free(w0);
    engine_model_free(a);
    engine_model_free(b);
    engine_model_free(z);
    engine_dataset_free(&d);
    engine_dataset_free(&big);
}

static int aug_calls;
static void augment(void *ctx, float *x, const uint8_t *labels, int n, int c, int h, int w, rng_t *rng)
{
    (void)labels, (void)rng;
    aug_calls++;
    assert_int_equal(c * h * w, *(int *)ctx);
    for (int i = 0; i < n * c * h * w; i++)
        x[i] = 0.0f; /* blanks the batch: training then sees only zeros */
}

static void test_batcher(void **state)
{
    (void)state;
    err_t e = {0};
    engine_dataset_t d = quadrants(103, 9);
    engine_source_t s = engine_source_from_dataset(&d);
    int *seen = calloc(103, sizeof(int));
    int order[2][103];
    for (int pf = 0; pf < 2; pf++) {
        engine_batcher_config_t bc = {.batch_size = 10, .shuffle = 1, .seed = 4, .prefetch = pf ? 3 : 0};
        engine_batcher_t *b = NULL;
        assert_int_equal(engine_batcher_create(&s, NULL, 0, &bc, &b, &e), 0);
        assert_int_equal(engine_batcher_num_batches(b), 11);
        const engine_batch_t *bt;
        int k = 0, nb = 0;
        while ((bt = engine_batcher_next(b))) {
            nb++;
            for (int i = 0; i < bt->n; i++) {
                /* find the sample by content: its label and first pixel identify it here */
                int found = -1;
                for (int j = 0; j < 103 && found < 0; j++)
                    if (d.labels[j] == bt->y[i] && fabsf(d.images[j * 64] / 255.0f - bt->x[i * 64]) < 1e-7f &&
                        fabsf(d.images[j * 64 + 63] / 255.0f - bt->x[i * 64 + 63]) < 1e-7f &&
                        fabsf(d.images[j * 64 + 20] / 255.0f - bt->x[i * 64 + 20]) < 1e-7f)
                        found = j;
                assert_true(found >= 0);
                order[pf][k++] = found;
                seen[found]++;
            }
            if (nb == 3 && pf)
                usleep(2000); /* let the producer run ahead into the ring */
        }
        assert_int_equal(k, 103);
        assert_int_equal(nb, 11);
        engine_batcher_free(b);
    }
    for (int i = 0; i < 103; i++)
        assert_int_equal(seen[i], 2);
    assert_memory_equal(order[0], order[1], sizeof order[0]);
    /* stopping early is fine */
    engine_batcher_config_t bc = {.batch_size = 7, .shuffle = 0, .prefetch = 2};
    engine_batcher_t *b = NULL;
    int idx[5] = {3, 1, 4, 1, 5};
    assert_int_equal(engine_batcher_create(&s, idx, 5, &bc, &b, &e), 0);
    const engine_batch_t *bt = engine_batcher_next(b);
    assert_int_equal(bt->n, 5);
    assert_int_equal(bt->y[2], d.labels[4]);
    engine_batcher_free(b);
    idx[0] = 500;
    assert_int_equal(engine_batcher_create(&s, idx, 5, &bc, &b, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "idx[0]"));
    /* the augmentation hook sees every float batch */
    int F = 64;
    engine_model_t *m = model("{\"type\":\"softmax\"}", 1, 8, 8, 4, &e);
    engine_model_init(m, 1);
    engine_train_config_t c;
    engine_train_config_default(&c);
    c.batch_size = 10;
    c.augment = augment;
    c.augment_ctx = &F;
    aug_calls = 0;
    engine_train_stats_t st;
    assert_int_equal(engine_model_train(m, &d, NULL, 0, &c, &st, &e), 0);
    assert_int_equal(aug_calls, 11);
    engine_model_free(m);
    free(seen);
    engine_dataset_free(&d);
}

static void test_csv(void **state)
{
    (void)state;
    char path[] = "/tmp/fednas_csv_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("f1,f2,f3,label\n", f);
    for (int i = 0; i < 60; i++)
        fprintf(f, "%d.5, %g ,%d,%d\n", i % 3 == 0 ? 5 : -5, 0.25 * i, i % 7, i % 3 == 0 ? 1 : 0);
    fclose(f);
    engine_table_t t;
    err_t e = {0};
    assert_int_equal(engine_csv_load(path, &t, &e), 0);
    assert_int_equal(t.count, 60);
    assert_int_equal(t.dim, 3);
    assert_int_equal(t.num_classes, 2);
    assert_float_equal(t.x[3 * 1 + 1], 0.25f, 0);
    assert_int_equal(t.labels[3], 1);
    /* a linear model learns it */
    engine_source_t s = engine_source_from_table(&t);
    json_t *a = json_pack("{s:s}", "type", "softmax");
    engine_model_t *m = NULL;
    assert_int_equal(engine_model_create_shape(a, 3, 1, 1, 2, &m, &e), 0);
    engine_model_init(m, 1);
    engine_train_config_t c;
    engine_train_config_default(&c);
    c.epochs = 20;
    c.batch_size = 8;
    c.optim.lr = 0.1f;
    assert_int_equal(engine_model_train_source(m, &s, NULL, 0, &c, NULL, &e), 0);
    double acc;
    assert_int_equal(engine_model_evaluate_source(m, &s, NULL, 0, NULL, &acc, &e), 0);
    assert_true(acc > 0.95);
    engine_model_free(m);
    json_decref(a);
    engine_table_free(&t);
    /* bad files */
    f = fopen(path, "w");
    fputs("1,2,0\n3,x,1\n", f);
    fclose(f);
    assert_int_equal(engine_csv_load(path, &t, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, ":2: column 2"));
    f = fopen(path, "w");
    fputs("1,2,0\n3,1\n", f);
    fclose(f);
    assert_int_equal(engine_csv_load(path, &t, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "2 columns"));
    f = fopen(path, "w");
    fputs("1,2,0.5\n", f);
    fclose(f);
    assert_int_equal(engine_csv_load(path, &t, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "label"));
    unlink(path);
    assert_int_equal(engine_csv_load(path, &t, &e), FN_ENOTFOUND);
    /* a model for 784 inputs refuses 3-feature rows */
    a = json_pack("{s:s}", "type", "softmax");
    assert_int_equal(engine_model_create(a, 784, 2, &m, &e), 0);
    json_decref(a);
    engine_table_t t2 = {.x = (float[6]){0}, .labels = (uint8_t[2]){0, 1}, .count = 2, .dim = 3, .num_classes = 2};
    s = engine_source_from_table(&t2);
    assert_int_equal(engine_model_train_source(m, &s, NULL, 0, &c, NULL, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "784"));
    engine_model_free(m);
}

typedef struct {
    engine_threadpool_t *p;
    int *marks;
} tp_job_t;

static void mark(void *ctx, int64_t b, int64_t e)
{
    int *m = ctx;
    for (int64_t i = b; i < e; i++)
        m[i]++;
}

static void *tp_thread(void *arg)
{
    tp_job_t *j = arg;
    for (int rep = 0; rep < 300; rep++)
        engine_parallel_for(j->p, 1000, 1, mark, j->marks);
    return NULL;
}

/* Every index exactly once, also with two threads submitting loops at the same time. */
static void test_threadpool(void **state)
{
    (void)state;
    engine_threadpool_t *p = engine_threadpool_create(3);
    assert_non_null(p);
    assert_int_equal(engine_threadpool_size(p), 3);
    int a[1000] = {0}, b[1000] = {0};
    engine_parallel_for(p, 1000, 1, mark, a);
    engine_parallel_for(p, 7, 100, mark, a); /* below the grain: serial */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(a[i], i < 7 ? 2 : 1);
    memset(a, 0, sizeof a);
    tp_job_t ja = {p, a}, jb = {p, b};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, tp_thread, &ja);
    pthread_create(&t2, NULL, tp_thread, &jb);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(a[i], 300);
        assert_int_equal(b[i], 300);
    }
    engine_threadpool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supernet_paths),     cmocka_unit_test(test_lstm_dynamic_hidden),
        cmocka_unit_test(test_no_grad_and_arena),  cmocka_unit_test(test_errors_are_values),
        cmocka_unit_test(test_architectures),      cmocka_unit_test(test_train_configs),
        cmocka_unit_test(test_accumulation_and_prox), cmocka_unit_test(test_batcher),
        cmocka_unit_test(test_csv),                cmocka_unit_test(test_threadpool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
