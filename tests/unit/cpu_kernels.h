/* cpu_kernels: whether the engine's AVX-512 kernels run here (an AVX-512 CPU, and a build that
 * compiles them: GCC on x86-64), for tests that must reach them or skip where they decline. */
#ifndef FEDNAS_TESTS_CPU_KERNELS_H
#define FEDNAS_TESTS_CPU_KERNELS_H

static inline int have_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    return __builtin_cpu_supports("avx512f") != 0;
#else
    return 0;
#endif
}

#endif
