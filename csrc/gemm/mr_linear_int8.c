/* Int8 linears: packing, per-token quantization, and the dispatch to the fastest kernel. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "gemm/mr_linear_int8.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "base/mr_parallel.h"

static const char *const kernel_names[MR_I8_COUNT] = {"portable", "avx2", "avxvnni", "avx512vnni"};

const char *mr_int8_kernel_name(mr_int8_kernel k) { return (int)k >= 0 && k < MR_I8_COUNT ? kernel_names[k] : NULL; }

int mr_int8_kernel_parse(const char *name) {
    if (!name) return -2;
    if (strcmp(name, "auto") == 0) return MR_I8_AUTO;
    for (int i = 0; i < MR_I8_COUNT; i++)
        if (strcmp(name, kernel_names[i]) == 0) return i;
    return -2;
}

int mr_int8_kernel_available(mr_int8_kernel k) {
    switch (k) {
    case MR_I8_PORTABLE: return 1;
    case MR_I8_AVX2: return mr_cpu_has(MR_CPU_AVX2);
    case MR_I8_AVXVNNI:
        return mr_cpu_has(MR_CPU_AVX2) &&
               (mr_cpu_has(MR_CPU_AVXVNNI) || (mr_cpu_has(MR_CPU_AVX512VNNI) && mr_cpu_has(MR_CPU_AVX512VL)));
    case MR_I8_AVX512VNNI:
        return mr_cpu_has(MR_CPU_AVX512F) && mr_cpu_has(MR_CPU_AVX512BW) && mr_cpu_has(MR_CPU_AVX512VNNI);
    default: return 0;
    }
}

/* MR_I8_AUTO, or the kernel mr_int8_set_kernel chose */
static atomic_int chosen = MR_I8_AUTO;

mr_int8_kernel mr_int8_set_kernel(mr_int8_kernel k) {
    return (mr_int8_kernel)atomic_exchange(&chosen, (int)k);
}

mr_int8_kernel mr_int8_kernel_best(void) {
    const int forced = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (forced != MR_I8_AUTO) return (mr_int8_kernel)forced;
    const mr_isa limit = mr_cpu_isa_limit();
    if (limit >= MR_ISA_AVX512 && mr_int8_kernel_available(MR_I8_AVX512VNNI)) return MR_I8_AVX512VNNI;
    /* the ymm VNNI form on an AVX-512 VNNI CPU is EVEX-encoded: an AVX-512 instruction, so the
     * avx2 limit keeps it only where the VEX form (AVX-VNNI) exists */
    if (limit >= MR_ISA_AVX2 && mr_cpu_has(MR_CPU_AVX2) && mr_cpu_has(MR_CPU_AVXVNNI)) return MR_I8_AVXVNNI;
    if (limit >= MR_ISA_AVX512 && mr_int8_kernel_available(MR_I8_AVXVNNI)) return MR_I8_AVXVNNI;
    if (limit >= MR_ISA_AVX2 && mr_int8_kernel_available(MR_I8_AVX2)) return MR_I8_AVX2;
    return MR_I8_PORTABLE;
}

const char *mr_int8_path(void) {
    switch (mr_int8_kernel_best()) {
    case MR_I8_AVX512VNNI: return "AVX-512 VNNI (vpdpbusd zmm)";
    case MR_I8_AVXVNNI:
        return mr_cpu_has(MR_CPU_AVXVNNI) ? "AVX-VNNI (vpdpbusd ymm)" : "AVX-512 VNNI on ymm (vpdpbusd ymm)";
    case MR_I8_AVX2: return "AVX2 (vpmaddubsw + vpmaddwd)";
    default: return "portable C";
    }
}

static int uses_offset(mr_int8_kernel k) { return k == MR_I8_AVXVNNI || k == MR_I8_AVX512VNNI; }

static mr_int8_rows_fn kernel_fn(mr_int8_kernel k) {
#if defined(__x86_64__) || defined(__i386__)
    switch (k) {
    case MR_I8_AVX512VNNI: return mr_linear_int8_rows_avx512vnni;
    case MR_I8_AVXVNNI:
        return mr_cpu_has(MR_CPU_AVXVNNI) ? mr_linear_int8_rows_avxvnni : mr_linear_int8_rows_avxvnni_evex;
    case MR_I8_AVX2: return mr_linear_int8_rows_avx2;
    default: break;
    }
#endif
    return mr_linear_int8_rows_portable;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t mr_int8_linear_bytes(int64_t N, int64_t K) {
    const int64_t Np = round_up(N, MR_I8_GROUP), Kp = round_up(K, 4);
    return round_up(Np * Kp, 64) + round_up(Np * 4, 64) * 2;
}

mr_status mr_int8_linear_init(mr_int8_linear *L, const int8_t *w, const float *scales, int64_t N, int64_t K,
                              mr_error *err) {
    memset(L, 0, sizeof *L);
    if (N <= 0 || K <= 0 || K > MR_I8_MAX_K)
        return mr_fail(err, MR_ERR_VALUE, "int8 weight of shape (%lld, %lld): both sides must be positive, K at most %d",
                       (long long)N, (long long)K, MR_I8_MAX_K);
    for (int64_t i = 0; i < N * K; i++)
        if (w[i] == -128)
            return mr_fail(err, MR_ERR_VALUE, "int8 weight holds -128 at row %lld (the range is [-127, 127])",
                           (long long)(i / K));
    for (int64_t n = 0; n < N; n++)
        if (!isfinite(scales[n]) || scales[n] < 0.0f)
            return mr_fail(err, MR_ERR_VALUE, "int8 weight scale %lld is %g (finite and >= 0 expected)", (long long)n,
                           (double)scales[n]);
    const int64_t Np = round_up(N, MR_I8_GROUP), Kp = round_up(K, 4), Kq = Kp / 4;
    const int64_t bytes = mr_int8_linear_bytes(N, K);
    void *block = NULL;
    if (posix_memalign(&block, 64, (size_t)bytes) != 0 || !block)
        return mr_fail(err, MR_ERR_MEMORY, "out of memory packing an int8 weight (%.1f MB)", (double)bytes / 1e6);
    memset(block, 0, (size_t)bytes);
    L->block = block;
    L->N = N;
    L->K = K;
    L->Kp = Kp;
    L->packed = block;
    L->comp = (int32_t *)((char *)block + round_up(Np * Kp, 64));
    L->scales = (float *)((char *)L->comp + round_up(Np * 4, 64));
    for (int64_t n = 0; n < N; n++) {
        const int64_t g = n / MR_I8_GROUP, lane = n % MR_I8_GROUP;
        int32_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
            L->packed[((g * Kq + k / 4) * MR_I8_GROUP + lane) * 4 + k % 4] = w[n * K + k];
            sum += w[n * K + k];
        }
        L->comp[n] = 128 * sum;
        L->scales[n] = scales[n];
    }
    return MR_OK;
}

void mr_int8_linear_free(mr_int8_linear *L) {
    if (!L) return;
    free(L->block);
    memset(L, 0, sizeof *L);
}

static int64_t act_stride(int64_t K) { return round_up(K, 64); }

int64_t mr_int8_scratch_bytes(int64_t T, int64_t K) { return T * (act_stride(K) + (int64_t)sizeof(float)) + 64; }

void mr_quantize_rows_i8(const float *a, int64_t lda, int64_t rows, int64_t K, uint8_t *q, int64_t ldq,
                         float *scales, int offset) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to nearest even */
    const int bias = offset ? 128 : 0;
    for (int64_t t = 0; t < rows; t++) {
        const float *x = a + t * lda;
        uint8_t *dst = q + t * ldq;
        float m = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float v = fabsf(x[k]);
            m = v > m ? v : m;
        }
        const float inv = m > 0.0f ? 127.0f / m : 0.0f;
        scales[t] = m / 127.0f;
        for (int64_t k = 0; k < K; k++) {
            float r = (x[k] * inv + magic) - magic;
            r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
            dst[k] = (uint8_t)((int)r + bias);
        }
        for (int64_t k = K; k < ldq; k++) dst[k] = (uint8_t)bias;
    }
}

/* The scratch's rows [lo, hi): quantized bytes, then (after all T rows of bytes) the scales. */
static void run_rows(mr_int8_kernel k, const mr_int8_linear *L, int64_t T, int64_t lo, int64_t hi, const float *a,
                     int64_t lda, const float *bias, int accumulate, float *out, int64_t ldo, void *scratch) {
    const int64_t ldq = act_stride(L->K);
    uint8_t *q = (uint8_t *)scratch;
    float *sa = (float *)((char *)scratch + round_up(T * ldq, 64));
    mr_quantize_rows_i8(a + lo * lda, lda, hi - lo, L->K, q + lo * ldq, ldq, sa + lo, uses_offset(k));
    kernel_fn(k)(L, hi - lo, q + lo * ldq, ldq, sa + lo, bias, accumulate, out + lo * ldo, ldo);
}

void mr_linear_int8_f32(const mr_int8_linear *L, int64_t T, const float *a, int64_t lda, const float *bias,
                        int accumulate, float *out, int64_t ldo, void *scratch, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi > lo) run_rows(mr_int8_kernel_best(), L, T, lo, hi, a, lda, bias, accumulate, out, ldo, scratch);
}

mr_status mr_linear_int8_f32_with(mr_int8_kernel kernel, const mr_int8_linear *L, int64_t T, const float *a,
                                  int64_t lda, const float *bias, int accumulate, float *out, int64_t ldo,
                                  void *scratch, mr_error *err) {
    if (kernel == MR_I8_AUTO) kernel = mr_int8_kernel_best();
    if (!mr_int8_kernel_available(kernel))
        return mr_fail(err, MR_ERR_VALUE, "the int8 kernel '%s' does not run on this CPU",
                       mr_int8_kernel_name(kernel) ? mr_int8_kernel_name(kernel) : "?");
    if (T > 0) run_rows(kernel, L, T, 0, T, a, lda, bias, accumulate, out, ldo, scratch);
    return MR_OK;
}
