/* What the CPU kernel harnesses share: a monotonic clock and a reproducible uniform generator. */
#ifndef DEV_CPU_COMMON_H
#define DEV_CPU_COMMON_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static inline double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A linear congruential step: the same inputs on every machine and libc. */
static inline float uniform(unsigned *state, float lo, float hi) {
    *state = *state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(*state >> 8) / (float)(1u << 24);
}

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                               float *, int);

/* cblas_sgemm (or scipy-openblas32's scipy_cblas_sgemm) from a shared library, set to one
 * thread; NULL with a message when it is not there. */
static inline cblas_sgemm_fn open_blas(const char *path, const char **name) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return NULL;
    }
    const char *symbols[][2] = {{"scipy_cblas_sgemm", "scipy_openblas_set_num_threads"},
                                {"cblas_sgemm", "openblas_set_num_threads"}};
    for (int i = 0; i < 2; i++) {
        void *sgemm = dlsym(lib, symbols[i][0]), *threads = dlsym(lib, symbols[i][1]);
        if (!sgemm) continue;
        if (threads) {
            void (*set_threads)(int);
            memcpy(&set_threads, &threads, sizeof threads);
            set_threads(1);
        }
        cblas_sgemm_fn fn;
        memcpy(&fn, &sgemm, sizeof sgemm);
        *name = symbols[i][0];
        return fn;
    }
    fprintf(stderr, "%s exports no cblas_sgemm\n", path);
    return NULL;
}

#endif
