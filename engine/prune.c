/* prune: structured channel pruning of an inference plan by L1 norm (see infer.h). A conv (or a
 * hidden linear) loses its output channels with the smallest L1 norm of weights; the layers
 * between it and the next conv/linear (ReLU, pools, batch norm, dropout, flatten) shrink with
 * it, and that consumer loses the matching inputs. The result is a smaller dense model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/infer_impl.h"

typedef struct {
    double l1;
    int ch;
} chan_t;

static int by_l1_desc(const void *a, const void *b)
{
    const chan_t *x = a, *y = b;
    if (x->l1 != y->l1)
        return x->l1 < y->l1 ? 1 : -1;
    return x->ch - y->ch; /* ties: keep the lower index */
}

static int by_index(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void keep_rows(float *v, int rows, int cols, const int *keep, int nk)
{
    for (int i = 0; i < nk; i++)
        if (keep[i] != i)
            memmove(v + (size_t)i * cols, v + (size_t)keep[i] * cols, (size_t)cols * sizeof *v);
    (void)rows;
}

/* Producer l (conv/linear at index li) keeps channels keep[0..nk) (ascending). */
static int apply(engine_infer_t *p, int li, const int *keep, int nk, err_t *err)
{
    ilayer_t *l = &p->L[li];
    int old = l->cout;
    ilayer_weights_changed(l);
    keep_rows(l->w, old, l->K, keep, nk);
    if (l->b)
        keep_rows(l->b, old, 1, keep, nk);
    l->cout = nk;
    l->out[0] = nk;
    /* width: the extent of dimension 0 from here on (channels, or features after a flatten);
     * hw: how many consecutive features each channel becomes at the consumer. */
    int width = nk, hw = 1, flat = l->out_nd == 1;
    for (int j = li + 1; j < p->n; j++) {
        ilayer_t *m = &p->L[j];
        if (m->kind == IL_CONV || m->kind == IL_LINEAR) {
            int span = m->kind == IL_CONV ? m->k * m->k : hw;
            if (m->K != old * span)
                return err_set(err, FN_EINVAL, "prune: layers[%d] takes %d inputs, not %d channels x %d",
                               m->src_index, m->K, old, span);
            int nK = nk * span;
            ilayer_weights_changed(m);
            for (int o = 0; o < m->cout; o++) {
                float *row = m->w + (size_t)o * m->K, *dst = m->w + (size_t)o * nK;
                for (int i = 0; i < nk; i++)
                    memmove(dst + (size_t)i * span, row + (size_t)keep[i] * span, (size_t)span * sizeof *row);
            }
            m->K = nK;
            m->in[0] = width;
            return 0;
        }
        if (m->kind == IL_BN) {
            if (flat && hw != 1)
                return err_set(err, FN_EINVAL, "prune: layers[%d] (batchnorm) over flattened features", m->src_index);
            keep_rows(m->gamma, old, 1, keep, nk), keep_rows(m->beta, old, 1, keep, nk);
            keep_rows(m->rm, old, 1, keep, nk), keep_rows(m->rv, old, 1, keep, nk);
        }
        m->in[0] = width;
        if (m->kind == IL_FLATTEN && !flat) {
            hw = m->in[1] * m->in[2];
            width = nk * hw;
            flat = 1;
        } else if (m->kind == IL_GAP && !flat) {
            width = nk;
            flat = 1;
        }
        m->out[0] = width;
    }
    return err_set(err, FN_EINVAL, "prune: layers[%d] feeds no conv/linear", l->src_index);
}

int engine_infer_prune(engine_infer_t *p, double keep_frac, err_t *err)
{
    if (!(keep_frac > 0 && keep_frac <= 1))
        return err_set(err, FN_EINVAL, "prune: keep fraction %g is not in (0, 1]", keep_frac);
    if (p->quantized)
        return err_set(err, FN_EINVAL, "prune: prune before quantizing");
    for (int i = 0; i < p->n; i++) {
        ilayer_t *l = &p->L[i];
        if (l->kind != IL_CONV && l->kind != IL_LINEAR)
            continue;
        int last = 1;
        for (int j = i + 1; j < p->n; j++)
            last &= p->L[j].kind != IL_CONV && p->L[j].kind != IL_LINEAR;
        if (last) /* the classifier keeps its classes */
            break;
        int nk = (int)lround(l->cout * keep_frac);
        if (nk < 1)
            nk = 1;
        if (nk >= l->cout)
            continue;
        chan_t *c = malloc((size_t)l->cout * sizeof *c);
        int *keep = malloc((size_t)nk * sizeof *keep);
        if (!c || !keep) {
            free(c), free(keep);
            return err_set(err, FN_ENOMEM, "prune: out of memory");
        }
        for (int o = 0; o < l->cout; o++) {
            double s = 0;
            for (int k = 0; k < l->K; k++)
                s += fabs(l->w[(size_t)o * l->K + k]);
            c[o] = (chan_t){s, o};
        }
        qsort(c, (size_t)l->cout, sizeof *c, by_l1_desc);
        for (int k = 0; k < nk; k++)
            keep[k] = c[k].ch;
        qsort(keep, (size_t)nk, sizeof *keep, by_index);
        int rc = apply(p, i, keep, nk, err);
        free(c), free(keep);
        if (rc < 0)
            return rc;
    }
    return 0;
}

double engine_prune_schedule(engine_prune_schedule_t s, double final_sparsity, int t, int T)
{
    double f = T > 0 ? (double)t / T : 1;
    switch (s) {
    case ENGINE_PRUNE_LINEAR: return final_sparsity * f;
    case ENGINE_PRUNE_CUBIC: return final_sparsity * (1 - pow(1 - f, 3)); /* Zhu & Gupta 2017 */
    case ENGINE_PRUNE_EXPONENTIAL: return 1 - pow(1 - final_sparsity, f); /* the same share each step */
    }
    return final_sparsity;
}
