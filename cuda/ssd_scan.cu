/* Mamba-2's SSD scan, recurrent form: one warp per (head, 32 channels); each lane keeps its
 * channel's state column s[:, p] in shared memory and walks the micro-batch's rows in order, so
 * a row with pos 0 restarts the state and the last row's state is what the next micro-batch
 * continues. B[r, g, :] and C[r, g, :] are read by every lane of the warp at once (broadcast
 * loads). The scalar decay per head makes each update one FMA pair per state element. */
#include "common.cuh"
#include "ssd_scan.cuh"

#define MR_SSD_MAX_STATE 256

template <typename T>
__global__ void __launch_bounds__(32)
ssd_scan_kernel(int64_t T_rows, int64_t H, int64_t P, int64_t G, int64_t N, const T *x, int64_t ldx, const T *dt,
                int64_t lddt, const float *dt_bias, const float *A2, float dt_min, float dt_max, const T *B,
                const T *C, int64_t ldbc, const float *D, const int32_t *pos, const float *state_in,
                float *state_out, T *y, int64_t ldy) {
    extern __shared__ float s[]; /* [N][32] */
    const int lane = threadIdx.x;
    const int64_t blocks_per_head = (P + 31) / 32;
    const int64_t h = blockIdx.x / blocks_per_head, p = (blockIdx.x % blocks_per_head) * 32 + lane;
    const bool live = p < P;
    const int64_t pc = live ? p : P - 1; /* idle lanes read a valid channel and store nothing */
    const int64_t g = h / (H / G);
    const float bias = dt_bias ? dt_bias[h] : 0.0f, a2 = A2[h], skip = D ? D[h] : 0.0f;
    const bool carry = state_in && T_rows > 0 && pos[0] > 0;
    for (int64_t n = 0; n < N; n++) s[n * 32 + lane] = carry ? state_in[(h * N + n) * P + pc] : 0.0f;
    for (int64_t r = 0; r < T_rows; r++) {
        float delta = softplus_f32(to_f32(dt[r * lddt + h]) + bias);
        delta = fminf(fmaxf(delta, dt_min), dt_max);
        const float decay = pos[r] == 0 ? 0.0f : exp2f(delta * a2);
        const float xv = to_f32(x[r * ldx + h * P + pc]), dx = delta * xv;
        const T *b = B + r * ldbc + g * N, *c = C + r * ldbc + g * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float v = fmaf(s[n * 32 + lane], decay, to_f32(b[n]) * dx);
            s[n * 32 + lane] = v;
            acc = fmaf(to_f32(c[n]), v, acc);
        }
        if (live) y[r * ldy + h * P + p] = from_f32<T>(fmaf(skip, xv, acc));
    }
    if (state_out && live)
        for (int64_t n = 0; n < N; n++) state_out[(h * N + n) * P + p] = s[n * 32 + lane];
}

mr_status mr_cuda_ssd_scan(mr_dtype dtype, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const void *x,
                           int64_t ldx, const void *dt, int64_t lddt, const float *dt_bias, const float *A2,
                           float dt_min, float dt_max, const void *B, const void *C, int64_t ldbc, const float *D,
                           const int32_t *pos, const float *state_in, float *state_out, void *y, int64_t ldy,
                           cudaStream_t stream, mr_error *err) {
    if (N < 1 || N > MR_SSD_MAX_STATE || H < 1 || G < 1 || H % G || P < 1)
        return mr_fail(err, MR_ERR_VALUE, "ssd scan: unsupported shape (H %lld, G %lld, P %lld, N %lld)",
                       (long long)H, (long long)G, (long long)P, (long long)N);
    const unsigned blocks = (unsigned)(H * ((P + 31) / 32));
    const size_t shared = (size_t)N * 32 * sizeof(float);
    MR_DISPATCH_DTYPE(dtype, AT,
                      ssd_scan_kernel<AT><<<blocks, 32, shared, stream>>>(
                          T, H, P, G, N, (const AT *)x, ldx, (const AT *)dt, lddt, dt_bias, A2, dt_min, dt_max,
                          (const AT *)B, (const AT *)C, ldbc, D, pos, state_in, state_out, (AT *)y, ldy));
    return mr_cuda_launched(err, "ssd_scan");
}

/* One block per (row, group): the group's gated values are written to out first, then scaled
 * there (each thread rescales only what it wrote). */
template <typename T>
__global__ void gated_rmsnorm_kernel(int64_t E, int64_t group, const T *y, int64_t ldy, const T *z, int64_t ldz,
                                     const float *w, float eps, T *out, int64_t ldo) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.x, g0 = (int64_t)blockIdx.y * group;
    float sum = 0.0f;
    float v[8]; /* up to 8 values per thread stay in registers; larger groups re-read out */
    int k = 0;
    for (int64_t i = threadIdx.x; i < group; i += blockDim.x, k++) {
        const float zi = to_f32(z[r * ldz + g0 + i]);
        const float vi = to_f32(y[r * ldy + g0 + i]) * (zi / (1.0f + expf(-zi)));
        if (k < 8) v[k] = vi;
        else out[r * ldo + g0 + i] = from_f32<T>(vi);
        sum += vi * vi;
    }
    const float scale = rsqrtf(block_sum(sum, scratch) / (float)group + eps);
    k = 0;
    for (int64_t i = threadIdx.x; i < group; i += blockDim.x, k++) {
        const float vi = k < 8 ? v[k] : to_f32(out[r * ldo + g0 + i]);
        out[r * ldo + g0 + i] = from_f32<T>(w[g0 + i] * (vi * scale));
    }
}

mr_status mr_cuda_gated_rmsnorm(mr_dtype dtype, int64_t T, int64_t E, int64_t group, const void *y, int64_t ldy,
                                const void *z, int64_t ldz, const float *w, float eps, void *out, int64_t ldo,
                                cudaStream_t stream, mr_error *err) {
    if (T == 0) return MR_OK;
    if (group < 1 || E % group) return mr_fail(err, MR_ERR_VALUE, "gated rmsnorm: group must divide E");
    if (T > 2147483647 || E / group > 65535)
        return mr_fail(err, MR_ERR_VALUE, "gated rmsnorm: too many rows or groups for one launch");
    const dim3 grid((unsigned)T, (unsigned)(E / group));
    const int threads = group >= 1024 ? 256 : group >= 256 ? 128 : 64;
    MR_DISPATCH_DTYPE(dtype, AT,
                      gated_rmsnorm_kernel<AT><<<grid, threads, 0, stream>>>(E, group, (const AT *)y, ldy,
                                                                             (const AT *)z, ldz, w, eps, (AT *)out,
                                                                             ldo));
    return mr_cuda_launched(err, "gated_rmsnorm");
}
