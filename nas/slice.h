/* nas/slice.h: one loop over the leading slice of a stored (grown) tensor that a smaller
 * tensor reads, shared by the local supernet (supernet.c) and the federated one (fedsuper.c). */
#ifndef FEDNAS_NAS_SLICE_H
#define FEDNAS_NAS_SLICE_H

#include <stddef.h>
#include <stdint.h>

/* Runs BODY for every element of the leading slice of stored tensor T_ (anything with an int64
 * shape[]) that a tensor of shape SH_ (ND_ dimensions, at most 4) reads, with k its offset in
 * the smaller tensor and o its offset in the store (T_ covers SH_: the caller grew or checked it). */
#define NAS_SLICE_FOR(T_, ND_, SH_, BODY)                                                                                 \
    do {                                                                                                              \
        int64_t ss_[4] = {1, 1, 1, 1}, q_[4] = {1, 1, 1, 1};                                                          \
        for (int d_ = 0; d_ < (ND_); d_++) {                                                                          \
            ss_[4 - (ND_) + d_] = (SH_)[d_];                                                                          \
            q_[4 - (ND_) + d_] = (T_)->shape[d_];                                                                     \
        }                                                                                                             \
        size_t k = 0;                                                                                                 \
        for (int64_t a_ = 0; a_ < ss_[0]; a_++)                                                                       \
            for (int64_t b_ = 0; b_ < ss_[1]; b_++)                                                                   \
                for (int64_t c_ = 0; c_ < ss_[2]; c_++) {                                                             \
                    size_t o = (size_t)(((a_ * q_[1] + b_) * q_[2] + c_) * q_[3]);                                    \
                    for (int64_t e_ = 0; e_ < ss_[3]; e_++, k++, o++) {                                               \
                        BODY;                                                                                         \
                    }                                                                                                 \
                }                                                                                                     \
    } while (0)

#endif
