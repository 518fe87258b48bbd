/* The int8 linear on AVX2: vpmaddubsw multiplies unsigned by signed bytes and saturates its pair
 * sums to int16, so it multiplies |a| by w carrying a's sign (vpsignb): with both in [-127, 127]
 * a pair sum is at most 2 * 127 * 127 < 32767, never saturated; vpmaddwd widens to int32. */
#if defined(__x86_64__) || defined(__i386__)
#define TGT __attribute__((target("avx2")))
#define FN mr_linear_int8_rows_avx2
#define MAX_NR 4 /* 8 accumulators + 2 weights + 3 temporaries of the 16 ymm registers */
#define PREP(a) _mm256_sign_epi8(a, a)
/* the sum added in place: the intrinsic's add made GCC copy each accumulator every step */
#define DOT(acc, a, p, w)                                                                                   \
    do {                                                                                                    \
        const __m256i prod_ = _mm256_madd_epi16(_mm256_maddubs_epi16(p, _mm256_sign_epi8(w, a)),           \
                                                _mm256_set1_epi16(1));                                      \
        __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(prod_));                                              \
    } while (0)
#define USE_COMP 0
#include "gemm/mr_linear_int8_ymm_body.h"
#endif
