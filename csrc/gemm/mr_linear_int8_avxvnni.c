/* The int8 linear with vpdpbusd on ymm: the VEX form (AVX-VNNI: Alder Lake and later, Zen 5) and,
 * from the same body, the EVEX form for AVX-512 VNNI CPUs that lack AVX-VNNI. Activations come
 * offset by 128 (vpdpbusd multiplies unsigned by signed bytes); 128 * sum_k w comes off after. */
#if defined(__x86_64__) || defined(__i386__)
#define MAX_NR 6 /* 12 accumulators + 2 weights + 1 broadcast of the 16 ymm registers */
#define PREP(a) (a)
#define USE_COMP 1

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11) /* the first compilers that know avxvnni */
#define TGT __attribute__((target("avx2,avxvnni")))
#define FN mr_linear_int8_rows_avxvnni
/* in place (the intrinsic made GCC copy each accumulator every step); {vex}: the AVX-VNNI encoding */
#define DOT(acc, a, p, w) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(p), "x"(w))
#define tile tile_vex
#define store_half store_half_vex
#include "gemm/mr_linear_int8_ymm_body.h"
#undef TGT
#undef FN
#undef DOT
#undef tile
#undef store_half
#else
#include "gemm/mr_linear_int8.h"
/* never chosen: the dispatch sees no AVX-VNNI flag from such a compiler's mr_cpu.c */
void mr_linear_int8_rows_avxvnni(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                 const float *sa, const float *bias, int accumulate, float *out, int64_t ldo) {
    mr_linear_int8_rows_avxvnni_evex(L, rows, q, ldq, sa, bias, accumulate, out, ldo);
}
#endif

#define TGT __attribute__((target("avx2,avx512f,avx512vl,avx512vnni")))
#define FN mr_linear_int8_rows_avxvnni_evex
#define DOT(acc, a, p, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(p), "v"(w))
#define tile tile_evex
#define store_half store_half_evex
#include "gemm/mr_linear_int8_ymm_body.h"
#endif
