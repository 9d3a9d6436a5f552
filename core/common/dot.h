/* The dot product kernel of k-NN and IVF (vector.c, ivf.c): inlined into each caller so that every target
 * clone (CLONES) compiles it for its own instruction set. */
#ifndef SL_COMMON_DOT_H
#define SL_COMMON_DOT_H

#include <stddef.h>

/* Eight floats at a time in four independent sums (GCC vectors: AVX2 registers in the haswell clone, SSE
 * pairs in the default one): each step of 32 floats is four multiply-adds that do not wait on each other, and
 * the loop's count and branch come once per 32 (one sum of 8 floats a step took five instructions each
 * waiting on the last). */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias)); /* rows need not be 32-aligned */
#define LOAD8(p) (*(const v8u *)(p))

/** a . b over n floats. */
__attribute__((always_inline)) static inline float sl__dot(const float *restrict a, const float *restrict b,
                                                           size_t n)
{
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 += LOAD8(a + i) * LOAD8(b + i);
        s1 += LOAD8(a + i + 8) * LOAD8(b + i + 8);
        s2 += LOAD8(a + i + 16) * LOAD8(b + i + 16);
        s3 += LOAD8(a + i + 24) * LOAD8(b + i + 24);
    }
    for (; i + 8 <= n; i += 8)
        s0 += LOAD8(a + i) * LOAD8(b + i);
    v8f t = (s0 + s1) + (s2 + s3);
    float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

#endif
