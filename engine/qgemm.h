/* qgemm: the integer matrix product behind INT8 inference (engine/infer.h).
 * C[M,N] (int32) = A[M,K] (uint8, activations) . B[N,K]^T (int8, weights), both row-major
 * with K contiguous and rows `lda`/`ldb` bytes apart, accumulated exactly in int32.
 * Kernels: a portable C reference, AVX2 (operands widened to int16, vpmaddwd: exact, no
 * vpmaddubsw saturation), AVX-512 VNNI (vpdpbusd) in dot-product form and, faster, on packed
 * weights (below: what inference uses on VNNI CPUs), and AMX tiles on packed weights; picked at run time with
 * __builtin_cpu_supports. Callers pad K with zero bytes to a multiple of ENGINE_QGEMM_KALIGN
 * (a zero weight makes the padding's activations irrelevant). */
#ifndef FEDNAS_ENGINE_QGEMM_H
#define FEDNAS_ENGINE_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#define ENGINE_QGEMM_KALIGN 64

typedef enum engine_qgemm_impl {
    ENGINE_QGEMM_REF = 0,
    ENGINE_QGEMM_AVX2,
    ENGINE_QGEMM_VNNI,
    ENGINE_QGEMM_AMX,  /* AVX-512 VNNI for engine_qgemm_get, AMX tiles where the caller packs (below) */
    ENGINE_QGEMM_AUTO, /* the best one this CPU runs */
} engine_qgemm_impl_t;

typedef void (*engine_qgemm_fn)(int M, int N, int K, const uint8_t *A, int lda, const int8_t *B, int ldb,
                                int32_t *C, int ldc);

/* The kernel for impl, or NULL when this CPU (or compiler) cannot run it. K % KALIGN == 0. */
engine_qgemm_fn engine_qgemm_get(engine_qgemm_impl_t impl);
const char *engine_qgemm_name(engine_qgemm_impl_t impl);
/* AUTO resolved: the implementation engine_qgemm_get(ENGINE_QGEMM_AUTO) returns. */
engine_qgemm_impl_t engine_qgemm_best(void);
/* The packed form (AVX-512 VNNI, oneDNN-style): B [N][K] as blocks of 16 output channels, each
 * K/4 groups of 16 x 4 bytes, so one 64-byte load feeds vpdpbusd with a broadcast 4 bytes of A
 * and the 16 lanes accumulate 16 outputs (no horizontal sums). N is padded to 16 with zeros.
 * engine_qgemm_pack returns a malloc'ed buffer (NULL on out of memory) of
 * engine_qgemm_packed_size(N, K) bytes. */
size_t engine_qgemm_packed_size(int N, int K);
int8_t *engine_qgemm_pack(int N, int K, const int8_t *B, int ldb);
/* C = A . B^T from packed B; NULL when this CPU lacks AVX-512 VNNI. Same exact sums. */
typedef void (*engine_qgemm_packed_fn)(int M, int N, int K, const uint8_t *A, int lda, const int8_t *Bp, int32_t *C,
                                       int ldc);
engine_qgemm_packed_fn engine_qgemm_packed_get(void);

/* The same product with K in blocks at offsets (for a convolution reading its input in place),
 * on packed B (engine_qgemm_pack's layout): K is nkb blocks of 64, row i of block b read at
 * A + i*lda + koff[b] (koff NULL: b*64, a plain product). M must be a multiple of 16 and every
 * row of every block readable (64 bytes); all round16(N) columns of C are written (ldc >= that).
 * Two kernels: AMX tiles (Intel Sapphire Rapids and later: TDPBUSD multiplies a 16 x 64-byte tile
 * of A by a 64 x 16 tile of B, 16 x 16 exact int32 sums, in one instruction; B's 16 x 4-byte
 * groups are its tile rows) and AVX-512 VNNI (vpdpbusd on a broadcast 4 bytes of A, as the packed
 * kernel). engine_qgemm_koff_get(ENGINE_QGEMM_AMX or _VNNI) gives the one asked for, NULL where
 * the CPU, the kernel (AMX: arch_prctl's permission for tile data), the compiler or
 * FEDNAS_QGEMM_AMX=0 (AMX) rules it out. engine_qgemm_amx_get() is the AMX one. */
typedef void (*engine_qgemm_koff_fn)(int M, int N, int nkb, const uint8_t *A, long lda, const long *koff,
                                     const int8_t *Bp, int32_t *C, int ldc);
engine_qgemm_koff_fn engine_qgemm_koff_get(engine_qgemm_impl_t impl);
engine_qgemm_koff_fn engine_qgemm_amx_get(void);

/* Round up to the alignment. */
static inline int engine_qgemm_kpad(int k) { return (k + ENGINE_QGEMM_KALIGN - 1) / ENGINE_QGEMM_KALIGN * ENGINE_QGEMM_KALIGN; }

#endif
