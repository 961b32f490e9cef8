/* LSTM, composed of recorded ops (linear, slice, sigmoid, tanh, mul, add, concat): nothing is
 * sized ahead of time, so the hidden size, the sequence length or the batch may change from
 * one step to the next. Gate order i, f, g, o, as PyTorch's nn.LSTM. */
#include <string.h>

#include "engine/ops.h"

engine_tensor_t *engine_lstm(engine_graph_t *g, engine_tensor_t *x, engine_tensor_t *Wih, engine_tensor_t *Whh,
                             engine_tensor_t *b, engine_tensor_t *h0, engine_tensor_t *c0)
{
    if (!x || !Wih || !Whh)
        return NULL;
    if (x->ndim != 3 || Wih->ndim != 2 || Whh->ndim != 2 || Wih->ne[0] % 4 || Whh->ne[0] != Wih->ne[0] ||
        Whh->ne[1] != Wih->ne[0] / 4 || Wih->ne[1] != x->ne[2]) {
        engine_graph_fail(g, FN_EINVAL, "lstm: need x [B, T, I], Wih [4H, I], Whh [4H, H]");
        return NULL;
    }
    const int64_t B = x->ne[0], T = x->ne[1], I = x->ne[2], H = Whh->ne[1];
    int64_t bh[2] = {B, H};
    engine_tensor_t *h = h0, *c = c0;
    if (!h) {
        h = engine_graph_tensor(g, ENGINE_F32, 2, bh);
        if (h)
            memset(h->data, 0, engine_tensor_bytes(h));
    }
    if (!c) {
        c = engine_graph_tensor(g, ENGINE_F32, 2, bh);
        if (c)
            memset(c->data, 0, engine_tensor_bytes(c));
    }
    engine_tensor_t **hs = engine_arena_alloc(engine_graph_arena(g), (size_t)T * sizeof *hs);
    if (!h || !c || !hs)
        return NULL;
    int64_t bi[2] = {B, I}, b1h[3] = {B, 1, H};
    for (int64_t s = 0; s < T; s++) {
        engine_tensor_t *xt = engine_reshape(g, engine_slice(g, x, 1, s, 1), 2, bi);
        engine_tensor_t *z = engine_add(g, engine_linear(g, xt, Wih, b), engine_linear(g, h, Whh, NULL));
        engine_tensor_t *ig = engine_sigmoid(g, engine_slice(g, z, 1, 0, H));
        engine_tensor_t *fg = engine_sigmoid(g, engine_slice(g, z, 1, H, H));
        engine_tensor_t *gg = engine_tanh(g, engine_slice(g, z, 1, 2 * H, H));
        engine_tensor_t *og = engine_sigmoid(g, engine_slice(g, z, 1, 3 * H, H));
        c = engine_add(g, engine_mul(g, fg, c), engine_mul(g, ig, gg));
        h = engine_mul(g, og, engine_tanh(g, c));
        hs[s] = engine_reshape(g, h, 3, b1h);
        if (!hs[s])
            return NULL;
    }
    return T == 1 ? hs[0] : engine_concat(g, (int)T, hs, 1);
}
