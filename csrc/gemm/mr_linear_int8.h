/* Int8 linear layers (W8A8): out[t, n] = sa[t] * sw[n] * sum_k qa[t, k] qw[n, k] (+ bias, + out),
 * with weights quantized per output channel (offline, in Python) and packed once at load, and
 * activations quantized per token on the fly (round to nearest even, [-127, 127]).
 *
 * One packed layout serves every kernel: groups of MR_I8_GROUP outputs, each [Kp / 4][16][4]
 * (four consecutive k of one output in one 32-bit lane), zero-padded in both N and K, so a
 * 32-bit broadcast of four activations meets sixteen outputs' four weights in one vpdpbusd
 * (zmm), or in two ymm halves (AVX-VNNI, AVX2's vpmaddubsw + vpmaddwd).
 *
 * The integer sums are exact in every kernel and the float epilogue is the same sequence of
 * roundings ((float)acc * sw[n] * sa[t], + bias, + out), so every path equals the reference
 * twin (mr_linear_int8_ref.c) bit for bit. Kernels: mr_linear_int8_<isa>.c. */
#ifndef MR_LINEAR_INT8_H
#define MR_LINEAR_INT8_H

#include <stdint.h>

#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The int8 product's paths, slowest first. The VNNI ones take activations offset to unsigned
 * (q + 128, vpdpbusd multiplies unsigned by signed bytes) and subtract 128 * sum_k w[n, k];
 * AVX2 multiplies |a| by w with a's sign (vpsignb), so no pair sum leaves int16. */
typedef enum {
    MR_I8_AUTO = -1,
    MR_I8_PORTABLE = 0,
    MR_I8_AVX2 = 1,       /* vpmaddubsw + vpmaddwd, ymm */
    MR_I8_AVXVNNI = 2,    /* vpdpbusd ymm: the VEX form (AVX-VNNI), else the EVEX one (AVX-512 VNNI + VL) */
    MR_I8_AVX512VNNI = 3, /* vpdpbusd zmm */
    MR_I8_COUNT = 4
} mr_int8_kernel;

#define MR_I8_GROUP 16
#define MR_I8_MAX_K 65536 /* 255 * 127 * K stays inside int32 */

/* "portable", "avx2", "avxvnni", "avx512vnni"; NULL outside the enum. */
const char *mr_int8_kernel_name(mr_int8_kernel k);
/* The kernel of a name ("auto" gives MR_I8_AUTO), -2 for an unknown one. */
int mr_int8_kernel_parse(const char *name);
/* Whether this CPU runs the kernel (ignores MAMBARET_SIMD). */
int mr_int8_kernel_available(mr_int8_kernel k);
/* The fastest kernel the CPU runs within MAMBARET_SIMD's limit: portable below avx2; at avx2 the
 * ymm kernels (AVX-VNNI when present); at avx512 the zmm VNNI one when present; unless
 * mr_int8_set_kernel named one. */
mr_int8_kernel mr_int8_kernel_best(void);
/* Names the kernel the model uses from now on (MR_I8_AUTO: back to mr_int8_kernel_best's choice),
 * for benchmarks that compare paths in one process; the caller checks it is available. Returns the
 * previous setting. */
mr_int8_kernel mr_int8_set_kernel(mr_int8_kernel k);
/* A short description for show_config(), e.g. "AVX-512 VNNI (vpdpbusd zmm)". */
const char *mr_int8_path(void);

/* One int8 weight packed for the kernels, in one 64-byte aligned block. */
typedef struct {
    int64_t N, K, Kp;  /* Kp: K rounded up to 4 */
    int8_t *packed;    /* [ceil(N / 16)][Kp / 4][16][4] */
    int32_t *comp;     /* [ceil(N / 16) * 16]: 128 * sum_k w[n, k], for the VNNI kernels */
    float *scales;     /* [ceil(N / 16) * 16], zero past N */
    void *block;
} mr_int8_linear;

/* Packs w [N, K] (values in [-127, 127]) and its per-row scales (finite, >= 0). MR_ERR_VALUE for
 * a value outside those ranges or K > MR_I8_MAX_K, MR_ERR_MEMORY without memory. */
mr_status mr_int8_linear_init(mr_int8_linear *L, const int8_t *w, const float *scales, int64_t N, int64_t K,
                              mr_error *err);
void mr_int8_linear_free(mr_int8_linear *L);
/* Bytes the packed form holds. */
int64_t mr_int8_linear_bytes(int64_t N, int64_t K);

/* Bytes of scratch mr_linear_int8_f32 needs for T rows of K inputs (the quantized rows and their
 * scales). */
int64_t mr_int8_scratch_bytes(int64_t T, int64_t K);

/* Per-token quantization: scales[t] = max_k |a[t, k]| / 127, q = round(a / scale) in [-127, 127],
 * plus 128 when `offset` (the VNNI kernels' unsigned form); columns K..ldq are zero (128). */
void mr_quantize_rows_i8(const float *a, int64_t lda, int64_t rows, int64_t K, uint8_t *q, int64_t ldq,
                         float *scales, int offset);

/* Thread ith of nth quantizes its share of the T rows (blocks of 4) into scratch and multiplies
 * them with the kernel mr_int8_kernel_best() names: out = sa * sw * (qa . qw) + bias (bias may be
 * NULL), added onto out when `accumulate`. */
void mr_linear_int8_f32(const mr_int8_linear *L, int64_t T, const float *a, int64_t lda, const float *bias,
                        int accumulate, float *out, int64_t ldo, void *scratch, int ith, int nth);
/* The same on one thread with a named kernel (tests and dev/cpu); MR_ERR_VALUE for a kernel this
 * CPU does not run. */
mr_status mr_linear_int8_f32_with(mr_int8_kernel kernel, const mr_int8_linear *L, int64_t T, const float *a,
                                  int64_t lda, const float *bias, int accumulate, float *out, int64_t ldo,
                                  void *scratch, mr_error *err);

/* Reference twin: unpacked w [N, K], plain loops, the same quantization and epilogue. */
void mr_linear_int8_f32_ref(const int8_t *w, const float *scales, int64_t N, int64_t K, int64_t T, const float *a,
                            int64_t lda, const float *bias, int accumulate, float *out, int64_t ldo);

/* The kernels: rows already quantized (q [rows][ldq], offset as their kernel wants, scales sa). */
typedef void (*mr_int8_rows_fn)(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);
void mr_linear_int8_rows_portable(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                  const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);
void mr_linear_int8_rows_avx2(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                              const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);
void mr_linear_int8_rows_avxvnni(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                 const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);
void mr_linear_int8_rows_avxvnni_evex(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                      const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);
void mr_linear_int8_rows_avx512vnni(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                    const float *sa, const float *bias, int accumulate, float *out, int64_t ldo);

/* The epilogue every kernel applies to one exact sum: the one sequence of roundings. */
static inline float mr_int8_epilogue(int32_t acc, float sw, float sa, const float *bias, int64_t n,
                                     int accumulate, const float *out) {
    float v = (float)acc * sw;
    v = v * sa;
    if (bias) v = v + bias[n];
    if (accumulate) v = *out + v;
    return v;
}

#ifdef __cplusplus
}
#endif
#endif
