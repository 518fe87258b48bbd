#include "mr_simd.h"

#include "mr_ops_simd.h"

const char *mr_simd_path(void) {
    switch (mr_cpu_simd_level()) {
    case MR_SIMD_AVX512: return "AVX-512F+DQ (run-time dispatch)";
    case MR_SIMD_AVX2: return "AVX2 + FMA (run-time dispatch)";
    default: return "portable C (compiler-vectorised)";
    }
}
