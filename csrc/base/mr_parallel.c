#include "base/mr_parallel.h"

void mr_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi) {
    if (nth <= 1) {
        *lo = 0;
        *hi = n;
        return;
    }
    int64_t blocks = (n + align - 1) / align;
    int64_t per = blocks / nth, extra = blocks % nth;
    int64_t b0 = ith * per + (ith < extra ? ith : extra);
    int64_t b1 = b0 + per + (ith < extra ? 1 : 0);
    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}
