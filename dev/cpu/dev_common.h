/* What the CPU kernel harnesses share: a monotonic clock and a reproducible uniform generator. */
#ifndef DEV_CPU_COMMON_H
#define DEV_CPU_COMMON_H

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

#endif
