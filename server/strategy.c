#include "server/strategy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[] = {"fedavg",  "fedavgm", "fedprox",      "fedadam", "fedyogi",
                                      "fedadagrad", "median", "trimmed_mean", "krum"};

struct strategy {
    strategy_config_t c;
    size_t m, trained; /* values, and how many of them are weights (strategy_set_trained) */
    float *state[2]; /* FedAvgM: momentum; adaptive: m, v */
    int nstate;
    long long steps;
    float *scratch;  /* robust rules: one column of n values, sorted */
    double *dist;    /* Krum: n x n squared distances */
    int cap_n;
};

void strategy_defaults(strategy_kind_t kind, strategy_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->server_lr = 1.0;
    c->momentum = 0.9;
    c->beta1 = 0.9;
    c->beta2 = 0.99;
    c->tau = 1e-3;
    c->prox_mu = 0.01;
    c->trim_ratio = 0.1;
    c->krum_f = 0;
    c->krum_m = 1;
    if (kind == STRATEGY_FEDADAM || kind == STRATEGY_FEDYOGI || kind == STRATEGY_FEDADAGRAD)
        c->server_lr = 0.01; /* Reddi et al. tune eta on a log grid; 1e-2 is a common start */
}

const char *strategy_name(strategy_kind_t kind) { return k_names[kind]; }

int strategy_parse_name(const char *name, strategy_kind_t *kind)
{
    for (int i = 0; i < (int)(sizeof k_names / sizeof k_names[0]); i++)
        if (strcmp(name, k_names[i]) == 0) {
            *kind = (strategy_kind_t)i;
            return 0;
        }
    return FN_EINVAL;
}

int strategy_needs_all_updates(strategy_kind_t kind)
{
    return kind == STRATEGY_MEDIAN || kind == STRATEGY_TRIMMED_MEAN || kind == STRATEGY_KRUM;
}

int strategy_create(const strategy_config_t *c, size_t m, strategy_t **out, err_t *err)
{
    strategy_t *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, FN_ENOMEM, "out of memory");
    s->c = *c;
    s->m = m;
    s->trained = m;
    switch (c->kind) {
    case STRATEGY_FEDAVGM: s->nstate = 1; break;
    case STRATEGY_FEDADAM:
    case STRATEGY_FEDYOGI:
    case STRATEGY_FEDADAGRAD: s->nstate = 2; break;
    default: s->nstate = 0;
    }
    for (int i = 0; i < s->nstate; i++) {
        s->state[i] = calloc(m ? m : 1, sizeof(float));
        if (!s->state[i]) {
            strategy_free(s);
            return err_set(err, FN_ENOMEM, "out of memory for the server optimizer state (%zu parameters)", m);
        }
    }
    /* Reddi et al., Algorithm 2: v_{-1} >= tau^2. */
    if (s->nstate == 2)
        for (size_t i = 0; i < m; i++)
            s->state[1][i] = (float)(c->tau * c->tau);
    *out = s;
    return 0;
}

void strategy_free(strategy_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < 2; i++)
        free(s->state[i]);
    free(s->scratch);
    free(s->dist);
    free(s);
}

void strategy_set_trained(strategy_t *s, size_t trained) { s->trained = trained < s->m ? trained : s->m; }

int strategy_apply_mean(strategy_t *s, float *w, const float *delta, err_t *err)
{
    if (strategy_needs_all_updates(s->c.kind))
        return err_set(err, FN_ESTATE, "strategy %s needs every update, not their mean", k_names[s->c.kind]);
    for (size_t i = s->trained; i < s->m; i++) /* running statistics: the plain mean */
        w[i] += delta[i];
    const size_t m = s->trained;
    const float eta = (float)s->c.server_lr;
    switch (s->c.kind) {
    case STRATEGY_FEDAVG:
    case STRATEGY_FEDPROX:
        for (size_t i = 0; i < m; i++)
            w[i] += delta[i];
        break;
    case STRATEGY_FEDAVGM: {
        /* Hsu et al. 2019: v = beta v + delta; w += eta v (delta is the negative pseudo-gradient). */
        float *v = s->state[0], beta = (float)s->c.momentum;
        for (size_t i = 0; i < m; i++) {
            v[i] = beta * v[i] + delta[i];
            w[i] += eta * v[i];
        }
        break;
    }
    default: {
        /* Reddi et al. 2021, Algorithm 2 (no bias correction, as in the paper). */
        float *mo = s->state[0], *v = s->state[1];
        const float b1 = (float)s->c.beta1, b2 = (float)s->c.beta2, tau = (float)s->c.tau;
        for (size_t i = 0; i < m; i++) {
            float d = delta[i], d2 = d * d;
            mo[i] = b1 * mo[i] + (1 - b1) * d;
            if (s->c.kind == STRATEGY_FEDADAGRAD)
                v[i] = v[i] + d2;
            else if (s->c.kind == STRATEGY_FEDYOGI)
                v[i] = v[i] - (1 - b2) * d2 * (v[i] - d2 > 0 ? 1.0f : (v[i] - d2 < 0 ? -1.0f : 0.0f));
            else
                v[i] = b2 * v[i] + (1 - b2) * d2;
            w[i] += eta * mo[i] / (sqrtf(v[i]) + tau);
        }
    }
    }
    s->steps++;
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int ensure_scratch(strategy_t *s, int n, err_t *err)
{
    if (n <= s->cap_n)
        return 0;
    free(s->scratch);
    free(s->dist);
    s->scratch = malloc((size_t)n * sizeof *s->scratch);
    s->dist = malloc((size_t)n * (size_t)n * sizeof *s->dist);
    if (!s->scratch || !s->dist) {
        s->cap_n = 0;
        return err_set(err, FN_ENOMEM, "out of memory for %d updates", n);
    }
    s->cap_n = n;
    return 0;
}

/* Krum (Blanchard et al. 2017): each update's score is the sum of squared distances to its
 * n - f - 2 nearest others; multi-Krum averages the krum_m lowest-scored updates. */
static int krum(strategy_t *s, float *w, const float *const *u, int n, err_t *err)
{
    int f = s->c.krum_f, keep = s->c.krum_m;
    int near = n - f - 2;
    if (near < 1)
        return err_set(err, FN_ESTATE, "krum with f = %d needs at least %d updates, got %d", f, f + 3, n);
    if (keep > n - f)
        keep = n - f;
    const size_t m = s->m;
    for (int a = 0; a < n; a++) {
        s->dist[a * n + a] = 0;
        for (int b = a + 1; b < n; b++) {
            double d = 0;
            for (size_t i = 0; i < m; i++) {
                double t = (double)u[a][i] - u[b][i];
                d += t * t;
            }
            s->dist[a * n + b] = s->dist[b * n + a] = d;
        }
    }
    double *score = malloc((size_t)n * sizeof *score), *row = malloc((size_t)n * sizeof *row);
    int *chosen = malloc((size_t)n * sizeof *chosen);
    if (!score || !row || !chosen) {
        free(score);
        free(row);
        free(chosen);
        return err_set(err, FN_ENOMEM, "out of memory");
    }
    for (int a = 0; a < n; a++) {
        int k = 0;
        for (int b = 0; b < n; b++)
            if (b != a)
                row[k++] = s->dist[a * n + b];
        /* partial selection sort of the nearest `near` distances: n is small */
        double sum = 0;
        for (int j = 0; j < near; j++) {
            int best = j;
            for (int t = j + 1; t < k; t++)
                if (row[t] < row[best])
                    best = t;
            double tmp = row[j];
            row[j] = row[best];
            row[best] = tmp;
            sum += row[j];
        }
        score[a] = sum;
    }
    for (int j = 0; j < keep; j++) {
        int best = -1;
        for (int a = 0; a < n; a++) {
            int used = 0;
            for (int t = 0; t < j; t++)
                used |= chosen[t] == a;
            if (!used && (best < 0 || score[a] < score[best]))
                best = a;
        }
        chosen[j] = best;
    }
    for (size_t i = 0; i < m; i++) {
        double sum = 0;
        for (int j = 0; j < keep; j++)
            sum += u[chosen[j]][i];
        w[i] += (float)(sum / keep);
    }
    free(score);
    free(row);
    free(chosen);
    return 0;
}

int strategy_apply_all(strategy_t *s, float *w, const float *const *u, const double *weights, int n, err_t *err)
{
    (void)weights;
    if (!strategy_needs_all_updates(s->c.kind))
        return err_set(err, FN_ESTATE, "strategy %s works on the mean update", k_names[s->c.kind]);
    if (n < 1)
        return err_set(err, FN_ESTATE, "no updates to aggregate");
    int rc = ensure_scratch(s, n, err);
    if (rc < 0)
        return rc;
    if (s->c.kind == STRATEGY_KRUM) {
        rc = krum(s, w, u, n, err);
    } else {
        int cut = s->c.kind == STRATEGY_TRIMMED_MEAN ? (int)floor(s->c.trim_ratio * n) : 0;
        for (size_t i = 0; i < s->m; i++) {
            for (int k = 0; k < n; k++)
                s->scratch[k] = u[k][i];
            qsort(s->scratch, (size_t)n, sizeof *s->scratch, cmp_float);
            double v;
            if (s->c.kind == STRATEGY_MEDIAN) {
                v = n % 2 ? s->scratch[n / 2] : 0.5 * ((double)s->scratch[n / 2 - 1] + s->scratch[n / 2]);
            } else {
                double sum = 0;
                for (int k = cut; k < n - cut; k++)
                    sum += s->scratch[k];
                v = sum / (n - 2 * cut);
            }
            w[i] += (float)v;
        }
    }
    if (rc == 0)
        s->steps++;
    return rc;
}

int strategy_state_count(const strategy_t *s) { return s->nstate; }

const char *strategy_state_name(const strategy_t *s, int i)
{
    if (s->c.kind == STRATEGY_FEDAVGM)
        return "momentum";
    return i == 0 ? "m" : "v";
}

float *strategy_state(strategy_t *s, int i) { return i >= 0 && i < s->nstate ? s->state[i] : NULL; }
long long strategy_steps(const strategy_t *s) { return s->steps; }
void strategy_set_steps(strategy_t *s, long long steps) { s->steps = steps; }

/* The keys each strategy accepts, beside "name". */
static int allowed_key(strategy_kind_t k, const char *key)
{
    switch (k) {
    case STRATEGY_FEDAVGM: return !strcmp(key, "server_lr") || !strcmp(key, "momentum");
    case STRATEGY_FEDPROX: return !strcmp(key, "mu");
    case STRATEGY_FEDADAM:
    case STRATEGY_FEDYOGI:
        return !strcmp(key, "server_lr") || !strcmp(key, "beta1") || !strcmp(key, "beta2") || !strcmp(key, "tau");
    case STRATEGY_FEDADAGRAD: return !strcmp(key, "server_lr") || !strcmp(key, "beta1") || !strcmp(key, "tau");
    case STRATEGY_TRIMMED_MEAN: return !strcmp(key, "trim_ratio");
    case STRATEGY_KRUM: return !strcmp(key, "byzantine") || !strcmp(key, "multi");
    default: return 0;
    }
}

int strategy_config_from_json(const json_t *obj, strategy_config_t *c, char *key_out, size_t key_cap, err_t *err)
{
    snprintf(key_out, key_cap, "name");
    strategy_kind_t kind = STRATEGY_FEDAVG;
    const char *name = obj ? json_string_value(json_object_get(obj, "name")) : "fedavg";
    if (!name || strategy_parse_name(name, &kind) < 0)
        return err_set(err, FN_EINVAL,
                       "unknown strategy \"%s\" (expected fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, "
                       "median, trimmed_mean or krum)",
                       name ? name : "?");
    strategy_defaults(kind, c);
    if (!obj)
        return 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (!strcmp(key, "name"))
            continue;
        snprintf(key_out, key_cap, "%s", key);
        if (!allowed_key(kind, key))
            return err_set(err, FN_EINVAL, "unknown key for strategy %s", name);
        if (!json_is_number(v))
            return err_set(err, FN_EINVAL, "expected a number");
        double x = json_number_value(v);
        int ok = isfinite(x);
        if (!strcmp(key, "server_lr") && ok && x > 0)
            c->server_lr = x;
        else if (!strcmp(key, "momentum") && ok && x >= 0 && x < 1)
            c->momentum = x;
        else if (!strcmp(key, "mu") && ok && x >= 0)
            c->prox_mu = x;
        else if (!strcmp(key, "beta1") && ok && x >= 0 && x < 1)
            c->beta1 = x;
        else if (!strcmp(key, "beta2") && ok && x >= 0 && x < 1)
            c->beta2 = x;
        else if (!strcmp(key, "tau") && ok && x > 0)
            c->tau = x;
        else if (!strcmp(key, "trim_ratio") && ok && x >= 0 && x < 0.5)
            c->trim_ratio = x;
        else if (!strcmp(key, "byzantine") && json_is_integer(v) && x >= 0 && x <= 100000)
            c->krum_f = (int)x;
        else if (!strcmp(key, "multi") && json_is_integer(v) && x >= 1 && x <= 100000)
            c->krum_m = (int)x;
        else
            return err_set(err, FN_EINVAL, "value %g is out of range (server_lr, tau > 0; momentum, beta1, beta2 in "
                           "[0, 1); trim_ratio in [0, 0.5); mu >= 0; byzantine >= 0 and multi >= 1 integers)", x);
    }
    return 0;
}
