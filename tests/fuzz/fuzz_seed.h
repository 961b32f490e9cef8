/* fuzz_seed: writing seed inputs. Each target, started with FUZZ_WRITE_SEEDS=DIR, writes its
 * seeds into DIR from LLVMFuzzerInitialize using the project's own encoders (tests/fuzz/README.md,
 * "Seeds"), so the committed corpora can be rebuilt when a format changes. */
#ifndef FEDNAS_TESTS_FUZZ_SEED_H
#define FEDNAS_TESTS_FUZZ_SEED_H

#include <stdio.h>
#include <stdlib.h>

static inline void fuzz_write_seed(const char *dir, const char *name, const void *a, size_t alen, const void *b,
                                   size_t blen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen) || fclose(f) != 0) {
        fprintf(stderr, "cannot write seed %s\n", path);
        abort();
    }
}

#endif
