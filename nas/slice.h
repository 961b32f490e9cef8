/* nas/slice.h: one loop over the slice of a stored (grown) tensor that a smaller tensor reads,
 * shared by the local supernet (supernet.c) and the federated one (fedsuper.c). */
#ifndef FEDNAS_NAS_SLICE_H
#define FEDNAS_NAS_SLICE_H

#include <stddef.h>
#include <stdint.h>

/* Where a tensor's elements sit in the stored one: element (i0, i1, i2, i3) of the smaller
 * tensor is stored element (off[d] + step[d] * i_d)_d. The leading slice (off 0, step 1) is
 * every dimension's default; a kernel view reads a 3x3 kernel as the centre (off 1, step 1) or
 * the dilated lattice (off 0, step 2) of a stored 5x5 one (nas/supernet.h). */
typedef struct nas_slice_view {
    int64_t off[4], step[4];
} nas_slice_view_t;

static inline void nas_slice_view_leading(nas_slice_view_t *v)
{
    for (int d = 0; d < 4; d++) {
        v->off[d] = 0;
        v->step[d] = 1;
    }
}

/* The shape a stored tensor needs to hold a tensor of shape sh (nd dimensions) read through v
 * (NULL: the leading slice, which needs sh itself). */
static inline void nas_slice_extent(int nd, const int64_t *sh, const nas_slice_view_t *v, int64_t *ext)
{
    for (int d = 0; d < nd; d++)
        ext[d] = v ? v->off[d] + v->step[d] * (sh[d] - 1) + 1 : sh[d];
}

/* Runs BODY for every element of the slice of stored tensor T_ (anything with an int64 shape[])
 * that a tensor of shape SH_ (ND_ dimensions, at most 4) reads through view V_ (NULL: leading),
 * with k its offset in the smaller tensor and o its offset in the store (T_ covers the slice:
 * the caller grew or checked it). */
#define NAS_SLICE_FOR(T_, ND_, SH_, V_, BODY)                                                                          \
    do {                                                                                                              \
        int64_t ss_[4] = {1, 1, 1, 1}, q_[4] = {1, 1, 1, 1}, of_[4] = {0, 0, 0, 0}, st_[4] = {1, 1, 1, 1};            \
        const nas_slice_view_t *v_ = (V_);                                                                            \
        for (int d_ = 0; d_ < (ND_); d_++) {                                                                          \
            ss_[4 - (ND_) + d_] = (SH_)[d_];                                                                          \
            q_[4 - (ND_) + d_] = (T_)->shape[d_];                                                                     \
            if (v_) {                                                                                                 \
                of_[4 - (ND_) + d_] = v_->off[d_];                                                                    \
                st_[4 - (ND_) + d_] = v_->step[d_];                                                                   \
            }                                                                                                         \
        }                                                                                                             \
        size_t k = 0;                                                                                                 \
        for (int64_t a_ = 0; a_ < ss_[0]; a_++)                                                                       \
            for (int64_t b_ = 0; b_ < ss_[1]; b_++)                                                                   \
                for (int64_t c_ = 0; c_ < ss_[2]; c_++) {                                                             \
                    size_t o = (size_t)((((of_[0] + st_[0] * a_) * q_[1] + of_[1] + st_[1] * b_) * q_[2] + of_[2] +   \
                                         st_[2] * c_) * q_[3] + of_[3]);                                              \
                    for (int64_t e_ = 0; e_ < ss_[3]; e_++, k++, o += (size_t)st_[3]) {                               \
                        BODY;                                                                                         \
                    }                                                                                                 \
                }                                                                                                     \
    } while (0)

#endif
