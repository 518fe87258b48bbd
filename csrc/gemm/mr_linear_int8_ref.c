/* Reference twin of the int8 linear: unpacked weights, one plain loop per output, the same
 * per-token quantization and the same epilogue, so every kernel must equal it exactly. */
#include <stdlib.h>

#include "gemm/mr_linear_int8.h"

void mr_linear_int8_f32_ref(const int8_t *w, const float *scales, int64_t N, int64_t K, int64_t T, const float *a,
                            int64_t lda, const float *bias, int accumulate, float *out, int64_t ldo) {
    uint8_t *q = malloc((size_t)(K > 0 ? K : 1));
    if (!q) return; /* a test-only twin: the caller sees the output untouched */
    for (int64_t t = 0; t < T; t++) {
        float sa;
        mr_quantize_rows_i8(a + t * lda, lda, 1, K, q, K, &sa, 0);
        for (int64_t n = 0; n < N; n++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (int64_t)(int8_t)q[k] * (int64_t)w[n * K + k];
            out[t * ldo + n] = mr_int8_epilogue((int32_t)acc, scales[n], sa, bias, n, accumulate, &out[t * ldo + n]);
        }
    }
    free(q);
}
