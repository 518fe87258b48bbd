/* The training kernels' dispatch: each thread takes its channel range (blocks of
 * MR_BACKWARD_BLOCK), then the widest per-ISA body the CPU runs walks it
 * (mr_ops_backward_<isa>.c: one body, mr_ops_backward_body.h, compiled for AVX-512, AVX2 + FMA
 * and portable C; base/mr_cpu.h picks the level). Also the packed-batch drivers of the forward
 * kernels that training uses, and the partial-sum reduction. */
#include "ops/mr_ops_backward_isa.h"

#include "base/mr_parallel.h"

void mr_conv_silu_backward_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                               int64_t ldx, const float *w, const float *bias, const float *gout,
                               int64_t ldgo, float *gx, float *gw, float *gbias, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(E, BLK, ith, nth, &lo, &hi);
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_isa_best()) {
    case MR_ISA_AVX512:
        mr_conv_silu_backward_f32_avx512(S, offsets, E, K, x, ldx, w, bias, gout, ldgo, gx, gw, gbias, lo, hi);
        return;
    case MR_ISA_AVX2:
        mr_conv_silu_backward_f32_avx2(S, offsets, E, K, x, ldx, w, bias, gout, ldgo, gx, gw, gbias, lo, hi);
        return;
    default:
        break;
    }
#endif
    mr_conv_silu_backward_f32_portable(S, offsets, E, K, x, ldx, w, bias, gout, ldgo, gx, gw, gbias, lo, hi);
}

void mr_selective_scan_backward_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                    const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                    const float *dt_bias, const float *A, const float *B, const float *C,
                                    int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                    const float *boundaries, const float *gy, int64_t ldgy, float *gu,
                                    float *gdt, float *gdt_bias, float *gA, float *gD, float *gz,
                                    float *gB_part, float *gC_part, float *work, int ith, int nth) {
    const int64_t T = offsets[S];
    int64_t lo, hi;
    mr_split_range(E, BLK, ith, nth, &lo, &hi);
    if (hi <= lo) { /* no channels here: this thread's share of dB and dC is zero */
        memset(gB_part, 0, (size_t)(T * N) * sizeof(float));
        memset(gC_part, 0, (size_t)(T * N) * sizeof(float));
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_isa_best()) {
    case MR_ISA_AVX512:
        mr_selective_scan_backward_f32_avx512(S, offsets, chunk, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, boundaries,
                             gy, ldgy, gu, gdt, gdt_bias, gA, gD, gz, gB_part, gC_part, work, lo, hi);
        return;
    case MR_ISA_AVX2:
        mr_selective_scan_backward_f32_avx2(S, offsets, chunk, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, boundaries,
                           gy, ldgy, gu, gdt, gdt_bias, gA, gD, gz, gB_part, gC_part, work, lo, hi);
        return;
    default:
        break;
    }
#endif
    mr_selective_scan_backward_f32_portable(S, offsets, chunk, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, boundaries,
                           gy, ldgy, gu, gdt, gdt_bias, gA, gD, gz, gB_part, gC_part, work, lo, hi);
}

int64_t mr_scan_boundary_count(int64_t S, const int64_t *offsets, int64_t chunk) {
    int64_t count = 0;
    for (int64_t s = 0; s < S; s++) {
        int64_t n = chunks_of(offsets[s + 1] - offsets[s], chunk);
        count += n > 0 ? n - 1 : 0;
    }
    return count;
}

void mr_conv_silu_packed_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                             int64_t ldx, const float *w, const float *bias, float *out, int64_t ldo,
                             int ith, int nth) {
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], L = offsets[s + 1] - offsets[s];
        if (L > 0)
            mr_conv_silu_f32(L, E, K, x + start * ldx, ldx, w, bias, NULL, NULL, out + start * ldo, ldo, ith, nth);
    }
}

void mr_selective_scan_packed_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                  const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                  const float *dt_bias, const float *A, const float *B, const float *C,
                                  int64_t ldbc, const float *D, const float *z, int64_t ldz, float *y,
                                  int64_t ldy, float *boundaries, int ith, int nth) {
    float *next = boundaries;
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], end = offsets[s + 1];
        const int64_t n = chunks_of(end - start, chunk);
        for (int64_t c = 0; c < n; c++) {
            const int64_t t0 = start + c * chunk, len = end - t0 < chunk ? end - t0 : chunk;
            const float *state_in = c == 0 ? NULL : next - E * N;
            float *state_out = c + 1 < n ? next : NULL;
            mr_selective_scan_f32(len, E, N, u + t0 * ldu, ldu, dt + t0 * lddt, lddt, dt_bias, A, B + t0 * ldbc,
                                  C + t0 * ldbc, ldbc, D, z ? z + t0 * ldz : NULL, ldz, state_in, state_out,
                                  y + t0 * ldy, ldy, ith, nth);
            if (state_out) next += E * N;
        }
    }
}

int64_t mr_scan_backward_work_floats(int64_t chunk, int64_t E, int64_t N) {
    const int64_t blocks = (E + BLK - 1) / BLK; /* at most one thread's channel blocks */
    return (chunk + 1) * N * BLK + 2 * chunk * BLK + 2 * chunk * N * BLK + blocks * (2 * N + 2) * BLK;
}

void mr_sum_partials_f32(const float *parts, int64_t nparts, int64_t n, float *out, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(n, 64, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float sum = 0.0f;
        for (int64_t p = 0; p < nparts; p++) sum += parts[p * n + i];
        out[i] = sum;
    }
}
