/* Reference twin of the Hadamard rotation: the explicit matrix, H_b[i][j] = (-1)^popcount(i & j). */
#include <math.h>

#include "ops/mr_hadamard.h"

void mr_hadamard_rows_f32_ref(const float *x, int64_t ldx, int64_t rows, int64_t n, int64_t block,
                              const int8_t *signs, float *out, int64_t ldo) {
    const double scale = 1.0 / sqrt((double)block);
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t base = i / block * block, r = i - base;
            double sum = 0.0;
            for (int64_t c = 0; c < block; c++) {
                const double v = (double)x[t * ldx + base + c] * (signs && signs[base + c] < 0 ? -1.0 : 1.0);
                sum += __builtin_popcountll((unsigned long long)(r & c)) & 1 ? -v : v;
            }
            out[t * ldo + i] = (float)(sum * scale);
        }
}
