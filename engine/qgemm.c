/* qgemm kernels (see qgemm.h). All three compute the same exact int32 sums, so tests compare
 * them bit for bit. The SIMD kernels take dot-product form (both operands K-contiguous) with
 * register blocks of rows of A by rows of B and a horizontal sum per output at the end: K of a
 * conv layer (C*KH*KW) is long against the block, so the reductions are cheap. */
#include "engine/qgemm.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static void qgemm_ref(int M, int N, int K, const uint8_t *A, int lda, const int8_t *B, int ldb, int32_t *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0;
            const uint8_t *a = A + (size_t)i * lda;
            const int8_t *b = B + (size_t)j * ldb;
            for (int k = 0; k < K; k++)
                s += (int32_t)a[k] * (int32_t)b[k];
            C[(size_t)i * ldc + j] = s;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86 1

__attribute__((target("avx2"))) static inline int32_t hsum256(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 2 rows of A by 4 rows of B: 8 accumulators + 6 operands fit the 16 ymm registers. */
__attribute__((target("avx2"))) static void qgemm_avx2(int M, int N, int K, const uint8_t *A, int lda,
                                                       const int8_t *B, int ldb, int32_t *C, int ldc)
{
    int i = 0;
    for (; i + 2 <= M; i += 2) {
        const uint8_t *a0 = A + (size_t)i * lda, *a1 = a0 + lda;
        int j = 0;
        for (; j + 4 <= N; j += 4) {
            const int8_t *b0 = B + (size_t)j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00;
            __m256i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            for (int k = 0; k < K; k += 16) {
                __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a0 + k)));
                __m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a1 + k)));
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b0 + k)));
                c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x0, w));
                c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x1, w));
                w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b1 + k)));
                c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x0, w));
                c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x1, w));
                w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b2 + k)));
                c02 = _mm256_add_epi32(c02, _mm256_madd_epi16(x0, w));
                c12 = _mm256_add_epi32(c12, _mm256_madd_epi16(x1, w));
                w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b3 + k)));
                c03 = _mm256_add_epi32(c03, _mm256_madd_epi16(x0, w));
                c13 = _mm256_add_epi32(c13, _mm256_madd_epi16(x1, w));
            }
            int32_t *c = C + (size_t)i * ldc + j;
            c[0] = hsum256(c00), c[1] = hsum256(c01), c[2] = hsum256(c02), c[3] = hsum256(c03);
            c += ldc;
            c[0] = hsum256(c10), c[1] = hsum256(c11), c[2] = hsum256(c12), c[3] = hsum256(c13);
        }
        if (j < N)
            qgemm_ref(2, N - j, K, a0, lda, B + (size_t)j * ldb, ldb, C + (size_t)i * ldc + j, ldc);
    }
    if (i < M)
        qgemm_ref(M - i, N, K, A + (size_t)i * lda, lda, B, ldb, C + (size_t)i * ldc, ldc);
}

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* The four horizontal sums of a..d as one vector: two transposing add steps, then the four
 * 128-bit lanes added (about 10 instructions where four separate reductions take 30). */
VNNI_TARGET static inline __m128i hsum4x512(__m512i a, __m512i b, __m512i c, __m512i d)
{
    __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b)); /* a0 b0 a1 b1 per lane */
    __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd)); /* a b c d per lane */
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 4 rows of A by 4 rows of B: 16 zmm accumulators, 8 operands, of 32 registers. */
VNNI_TARGET static void qgemm_vnni(int M, int N, int K, const uint8_t *A, int lda, const int8_t *B, int ldb,
                                   int32_t *C, int ldc)
{
    int i = 0;
    for (; i + 4 <= M; i += 4) {
        const uint8_t *a[4] = {A + (size_t)i * lda, A + (size_t)(i + 1) * lda, A + (size_t)(i + 2) * lda,
                               A + (size_t)(i + 3) * lda};
        int j = 0;
        for (; j + 4 <= N; j += 4) {
            const int8_t *b[4] = {B + (size_t)j * ldb, B + (size_t)(j + 1) * ldb, B + (size_t)(j + 2) * ldb,
                                  B + (size_t)(j + 3) * ldb};
            __m512i acc[4][4];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++)
                    acc[r][c] = _mm512_setzero_si512();
            for (int k = 0; k < K; k += 64) {
                __m512i x[4], w[4];
                for (int r = 0; r < 4; r++)
                    x[r] = _mm512_loadu_si512((const void *)(a[r] + k));
                for (int c = 0; c < 4; c++)
                    w[c] = _mm512_loadu_si512((const void *)(b[c] + k));
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 4; c++)
                        acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], x[r], w[c]);
            }
            for (int r = 0; r < 4; r++)
                _mm_storeu_si128((__m128i *)(C + (size_t)(i + r) * ldc + j),
                                 hsum4x512(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
        }
        for (; j < N; j++) {
            const int8_t *b = B + (size_t)j * ldb;
            for (int r = 0; r < 4; r++) {
                __m512i acc = _mm512_setzero_si512();
                for (int k = 0; k < K; k += 64)
                    acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)(a[r] + k)),
                                              _mm512_loadu_si512((const void *)(b + k)));
                C[(size_t)(i + r) * ldc + j] = _mm512_reduce_add_epi32(acc);
            }
        }
    }
    for (; i < M; i++)
        for (int j = 0; j < N; j++) {
            __m512i acc = _mm512_setzero_si512();
            for (int k = 0; k < K; k += 64)
                acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)(A + (size_t)i * lda + k)),
                                          _mm512_loadu_si512((const void *)(B + (size_t)j * ldb + k)));
            C[(size_t)i * ldc + j] = _mm512_reduce_add_epi32(acc);
        }
}
#endif

size_t engine_qgemm_packed_size(int N, int K) { return (size_t)((N + 15) / 16) * 16 * (size_t)K; }

int8_t *engine_qgemm_pack(int N, int K, const int8_t *B, int ldb)
{
    int8_t *p = calloc(engine_qgemm_packed_size(N, K) + 1, 1);
    if (!p)
        return NULL;
    for (int n = 0; n < N; n++) {
        int8_t *blk = p + (size_t)(n / 16) * 16 * K;
        for (int k = 0; k < K; k++)
            blk[(size_t)(k / 4) * 64 + (n % 16) * 4 + k % 4] = B[(size_t)n * ldb + k];
    }
    return p;
}

#ifdef HAVE_X86
/* MR rows of A by 32 outputs (two zmm per row): 2*MR accumulators. */
#define PACKED_BODY(MR)                                                                                              \
    do {                                                                                                             \
        __m512i c0[MR], c1[MR];                                                                                      \
        for (int r = 0; r < MR; r++)                                                                                 \
            c0[r] = c1[r] = _mm512_setzero_si512();                                                                  \
        for (int k = 0; k < K; k += 4) {                                                                             \
            __m512i w0 = _mm512_loadu_si512((const void *)(b0 + (size_t)k * 16));                                    \
            __m512i w1 = _mm512_loadu_si512((const void *)(b1 + (size_t)k * 16));                                    \
            for (int r = 0; r < MR; r++) {                                                                           \
                int32_t av;                                                                                          \
                memcpy(&av, a + (size_t)r * lda + k, 4);                                                             \
                __m512i x = _mm512_set1_epi32(av);                                                                   \
                c0[r] = _mm512_dpbusd_epi32(c0[r], x, w0);                                                           \
                c1[r] = _mm512_dpbusd_epi32(c1[r], x, w1);                                                           \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < MR; r++) {                                                                               \
            _mm512_mask_storeu_epi32(C + (size_t)(i + r) * ldc + j, m0, c0[r]);                                      \
            _mm512_mask_storeu_epi32(C + (size_t)(i + r) * ldc + j + 16, m1, c1[r]);                                 \
        }                                                                                                            \
    } while (0)

VNNI_TARGET static void qgemm_vnni_packed(int M, int N, int K, const uint8_t *A, int lda, const int8_t *Bp, int32_t *C,
                                          int ldc)
{
    for (int j = 0; j < N; j += 32) {
        int n0 = N - j < 16 ? N - j : 16, n1 = N - j - 16 < 0 ? 0 : (N - j - 16 < 16 ? N - j - 16 : 16);
        __mmask16 m0 = (__mmask16)((1u << n0) - 1), m1 = (__mmask16)((1u << n1) - 1);
        const int8_t *b0 = Bp + (size_t)(j / 16) * 16 * K;
        /* the second block may not exist: point it at the first (its lanes are masked off) */
        const int8_t *b1 = n1 ? b0 + (size_t)16 * K : b0;
        int i = 0;
        for (; i + 8 <= M; i += 8) {
            const uint8_t *a = A + (size_t)i * lda;
            PACKED_BODY(8);
        }
        for (; i + 4 <= M; i += 4) {
            const uint8_t *a = A + (size_t)i * lda;
            PACKED_BODY(4);
        }
        for (; i < M; i++) {
            const uint8_t *a = A + (size_t)i * lda;
            PACKED_BODY(1);
        }
    }
}
#endif

#if defined(HAVE_X86) && defined(__linux__) && !defined(__clang__)
#define HAVE_AMX 1
#define AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f")))

/* palette 1; tiles 0-3 hold C (16 x 16 int32), 4-5 A (16 x 64 bytes), 6-7 B (16 x 64 bytes). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg_t;

AMX_TARGET static void amx_config(void)
{
    amx_cfg_t c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++)
        c.rows[t] = 16, c.colsb[t] = 64;
    _tile_loadconfig(&c);
}

/* One C block of RB x CB tiles (16 rows, 16 columns each) at rows i, columns j: A's rows and
 * B's column blocks loaded once per 64-byte step of K, RB*CB products. */
#define AMX_BLOCK(RB, CB)                                                                                             \
    do {                                                                                                              \
        _tile_zero(0);                                                                                                \
        if (CB > 1)                                                                                                   \
            _tile_zero(1);                                                                                            \
        if (RB > 1)                                                                                                   \
            _tile_zero(2);                                                                                            \
        if (RB > 1 && CB > 1)                                                                                         \
            _tile_zero(3);                                                                                            \
        const int8_t *b0 = Bp + (size_t)j * K, *b1 = b0 + (size_t)16 * K;                                             \
        const uint8_t *a0 = A + (size_t)i * lda, *a1 = a0 + 16 * lda;                                                 \
        for (int b = 0; b < nkb; b++) {                                                                               \
            long o = koff ? koff[b] : (long)b * 64;                                                                   \
            _tile_loadd(4, a0 + o, lda);                                                                              \
            _tile_loadd(6, b0 + (size_t)b * 1024, 64);                                                                \
            _tile_dpbusd(0, 4, 6);                                                                                    \
            if (CB > 1) {                                                                                             \
                _tile_loadd(7, b1 + (size_t)b * 1024, 64);                                                            \
                _tile_dpbusd(1, 4, 7);                                                                                \
            }                                                                                                         \
            if (RB > 1) {                                                                                             \
                _tile_loadd(5, a1 + o, lda);                                                                          \
                _tile_dpbusd(2, 5, 6);                                                                                \
                if (CB > 1)                                                                                           \
                    _tile_dpbusd(3, 5, 7);                                                                            \
            }                                                                                                         \
        }                                                                                                             \
        int32_t *c = C + (size_t)i * ldc + j;                                                                         \
        _tile_stored(0, c, ldc * 4);                                                                                  \
        if (CB > 1)                                                                                                   \
            _tile_stored(1, c + 16, ldc * 4);                                                                         \
        if (RB > 1)                                                                                                   \
            _tile_stored(2, c + (size_t)16 * ldc, ldc * 4);                                                           \
        if (RB > 1 && CB > 1)                                                                                         \
            _tile_stored(3, c + (size_t)16 * ldc + 16, ldc * 4);                                                      \
    } while (0)

/* Blocks of 32 x 32 (four C tiles), then the odd row or column block alone. */
AMX_TARGET static void qgemm_amx(int M, int N, int nkb, const uint8_t *A, long lda, const long *koff, const int8_t *Bp,
                                 int32_t *C, int ldc)
{
    const size_t K = (size_t)nkb * 64;
    const int NP = (N + 15) / 16 * 16;
    amx_config();
    for (int j = 0; j < NP; j += 32) {
        int i = 0;
        if (j + 32 <= NP) {
            for (; i + 32 <= M; i += 32)
                AMX_BLOCK(2, 2);
            for (; i < M; i += 16)
                AMX_BLOCK(1, 2);
        } else {
            for (; i + 32 <= M; i += 32)
                AMX_BLOCK(2, 1);
            for (; i < M; i += 16)
                AMX_BLOCK(1, 1);
        }
    }
    _tile_release();
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static int amx_ok;
static void amx_probe(void)
{
    unsigned a, b, c, d;
    /* EDX bit 24: AMX-TILE, bit 25: AMX-INT8; Linux lends tile data only on request */
    amx_ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1) &&
             syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

#ifdef HAVE_X86
/* MR rows by the 16-column blocks at j and, when `two`, j + 16: 2*MR accumulators. */
#define KOFF_BODY(MR)                                                                                                \
    do {                                                                                                             \
        __m512i c0[MR], c1[MR];                                                                                      \
        for (int r = 0; r < MR; r++)                                                                                 \
            c0[r] = c1[r] = _mm512_setzero_si512();                                                                  \
        for (int b = 0; b < nkb; b++) {                                                                              \
            const uint8_t *ab = A + (size_t)i * lda + (koff ? koff[b] : (long)b * 64);                               \
            const int8_t *w0 = b0 + (size_t)b * 1024, *w1 = b1 + (size_t)b * 1024;                                   \
            for (int k = 0; k < 64; k += 4) {                                                                        \
                __m512i v0 = _mm512_loadu_si512((const void *)(w0 + k * 16));                                        \
                __m512i v1 = _mm512_loadu_si512((const void *)(w1 + k * 16));                                        \
                for (int r = 0; r < MR; r++) {                                                                       \
                    int32_t av;                                                                                      \
                    memcpy(&av, ab + r * lda + k, 4);                                                                \
                    __m512i x = _mm512_set1_epi32(av);                                                               \
                    c0[r] = _mm512_dpbusd_epi32(c0[r], x, v0);                                                       \
                    c1[r] = _mm512_dpbusd_epi32(c1[r], x, v1);                                                       \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < MR; r++) {                                                                               \
            _mm512_storeu_si512((void *)(C + (size_t)(i + r) * ldc + j), c0[r]);                                     \
            if (two)                                                                                                 \
                _mm512_storeu_si512((void *)(C + (size_t)(i + r) * ldc + j + 16), c1[r]);                            \
        }                                                                                                            \
    } while (0)

VNNI_TARGET static void qgemm_vnni_koff(int M, int N, int nkb, const uint8_t *A, long lda, const long *koff,
                                        const int8_t *Bp, int32_t *C, int ldc)
{
    const size_t K = (size_t)nkb * 64;
    const int NP = (N + 15) / 16 * 16;
    for (int j = 0; j < NP; j += 32) {
        const int two = j + 16 < NP;
        const int8_t *b0 = Bp + (size_t)j * K, *b1 = two ? b0 + 16 * K : b0;
        int i = 0;
        for (; i + 8 <= M; i += 8)
            KOFF_BODY(8);
        for (; i < M; i++)
            KOFF_BODY(1);
    }
}
#endif

engine_qgemm_koff_fn engine_qgemm_koff_get(engine_qgemm_impl_t impl)
{
    if (impl == ENGINE_QGEMM_AMX)
        return engine_qgemm_amx_get();
#ifdef HAVE_X86
    if (impl == ENGINE_QGEMM_VNNI && engine_qgemm_get(ENGINE_QGEMM_VNNI))
        return qgemm_vnni_koff;
#endif
    return NULL;
}

engine_qgemm_koff_fn engine_qgemm_amx_get(void)
{
#ifdef HAVE_AMX
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *e = getenv("FEDNAS_QGEMM_AMX");
    if (e && *e && atoi(e) <= 0)
        return NULL;
    pthread_once(&once, amx_probe);
    return amx_ok ? qgemm_amx : NULL;
#else
    return NULL;
#endif
}

engine_qgemm_packed_fn engine_qgemm_packed_get(void)
{
#ifdef HAVE_X86
    return engine_qgemm_get(ENGINE_QGEMM_VNNI) ? qgemm_vnni_packed : NULL;
#else
    return NULL;
#endif
}

engine_qgemm_fn engine_qgemm_get(engine_qgemm_impl_t impl)
{
    if (impl == ENGINE_QGEMM_AUTO)
        impl = engine_qgemm_best();
    switch (impl) {
    case ENGINE_QGEMM_REF: return qgemm_ref;
#ifdef HAVE_X86
    case ENGINE_QGEMM_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? qgemm_avx2 : NULL;
    case ENGINE_QGEMM_AMX:
        return engine_qgemm_amx_get() ? engine_qgemm_get(ENGINE_QGEMM_VNNI) : NULL;
    case ENGINE_QGEMM_VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vnni")
                   ? qgemm_vnni
                   : NULL;
#endif
    default: return NULL;
    }
}

engine_qgemm_impl_t engine_qgemm_best(void)
{
    if (engine_qgemm_get(ENGINE_QGEMM_AMX))
        return ENGINE_QGEMM_AMX;
    if (engine_qgemm_get(ENGINE_QGEMM_VNNI))
        return ENGINE_QGEMM_VNNI;
    if (engine_qgemm_get(ENGINE_QGEMM_AVX2))
        return ENGINE_QGEMM_AVX2;
    return ENGINE_QGEMM_REF;
}

const char *engine_qgemm_name(engine_qgemm_impl_t impl)
{
    static const char *const names[] = {"ref", "avx2-vpmaddwd", "avx512-vnni", "amx", "auto"};
    return (unsigned)impl <= ENGINE_QGEMM_AUTO ? names[impl] : "?";
}
