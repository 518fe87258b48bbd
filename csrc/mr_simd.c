#include "mr_simd.h"

const char *mr_simd_path(void) { return "portable C (compiler-vectorised)"; }
