/* The fast Walsh-Hadamard transform, block by block. The first three stages run on each group of
 * eight values written out, the rest as contiguous butterflies the compiler vectorizes. */
#include "ops/mr_hadamard.h"

#include <math.h>

int mr_hadamard_block_ok(int64_t n, int64_t block) {
    return block >= 1 && (block & (block - 1)) == 0 && n > 0 && n % block == 0;
}

int64_t mr_hadamard_default_block(int64_t n, int64_t max_block) {
    int64_t b = 1;
    while (n % (b * 2) == 0 && b * 2 <= max_block) b *= 2;
    return b;
}

static void fwht_block(float *restrict x, int64_t b, float scale) {
    int64_t h = 1;
    if (b >= 8) {
        for (int64_t i = 0; i < b; i += 8) {
            float *v = x + i;
            const float a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
            const float a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7];
            const float c0 = a0 + a2, c1 = a1 + a3, c2 = a0 - a2, c3 = a1 - a3;
            const float c4 = a4 + a6, c5 = a5 + a7, c6 = a4 - a6, c7 = a5 - a7;
            v[0] = c0 + c4; v[1] = c1 + c5; v[2] = c2 + c6; v[3] = c3 + c7;
            v[4] = c0 - c4; v[5] = c1 - c5; v[6] = c2 - c6; v[7] = c3 - c7;
        }
        h = 8;
    }
    for (; h < b; h *= 2)
        for (int64_t i = 0; i < b; i += 2 * h) {
            float *restrict lo = x + i, *restrict hi = x + i + h;
            for (int64_t j = 0; j < h; j++) {
                const float a = lo[j], c = hi[j];
                lo[j] = a + c;
                hi[j] = a - c;
            }
        }
    for (int64_t j = 0; j < b; j++) x[j] *= scale;
}

void mr_hadamard_rows_f32(float *x, int64_t ldx, int64_t rows, int64_t n, int64_t block, const int8_t *signs) {
    const float scale = 1.0f / sqrtf((float)block);
    for (int64_t t = 0; t < rows; t++) {
        float *row = x + t * ldx;
        if (signs)
            for (int64_t i = 0; i < n; i++) row[i] = signs[i] < 0 ? -row[i] : row[i];
        for (int64_t i = 0; i < n; i += block) fwht_block(row + i, block, scale);
    }
}
