/* Minimal unit-test support for the C tests (one executable per core file, run by ctest). */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <stdio.h>
#include <string.h>

static int sl_test_passed, sl_test_failed;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            sl_test_passed++;                                                                                \
        } else {                                                                                             \
            sl_test_failed++;                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

#define CHECK_INT(a, b)                                                                                      \
    do {                                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                  \
        if (a_ == b_) {                                                                                      \
            sl_test_passed++;                                                                                \
        } else {                                                                                             \
            sl_test_failed++;                                                                                \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, a_, b_);           \
        }                                                                                                    \
    } while (0)

#define CHECK_STR(a, b)                                                                                      \
    do {                                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                                     \
        if (a_ && b_ && strcmp(a_, b_) == 0) {                                                               \
            sl_test_passed++;                                                                                \
        } else {                                                                                             \
            sl_test_failed++;                                                                                \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,                \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                                 \
        }                                                                                                    \
    } while (0)

/** Prints the closing line and returns the process exit code. */
static inline int sl_test_done(void)
{
    printf("%d passed, %d failed\n", sl_test_passed, sl_test_failed);
    return sl_test_failed ? 1 : 0;
}

#endif
