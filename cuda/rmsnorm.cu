#include "common.cuh"
#include "rmsnorm.cuh"

/* One block per row. The row is read twice (the second time from L1/L2) so that any d works
 * without a per-thread register array; sums are float32 as in HF's MambaRMSNorm. */
template <typename OutT>
__global__ void add_rmsnorm_kernel(float *x, const float *mix, int write_x, const float *w, int64_t T,
                                   int64_t d, float eps, OutT *out, int64_t ldo) {
    __shared__ float scratch[32];
    for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
        float *row = x + t * d;
        const float *mrow = mix ? mix + t * d : nullptr;
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            float v = row[i] + (mrow ? mrow[i] : 0.0f);
            if (write_x && mrow) row[i] = v;
            sum += v * v;
        }
        float total = block_sum(sum, scratch);
        float scale = rsqrtf(total / (float)d + eps);
        OutT *orow = out + t * ldo;
        /* each thread re-reads only the elements it wrote itself, so no barrier is needed */
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            float v = row[i] + ((mrow && !write_x) ? mrow[i] : 0.0f);
            orow[i] = from_f32<OutT>(w[i] * (v * scale));
        }
    }
}

mr_status mr_cuda_add_rmsnorm(float *x, const float *mix, int write_x, const float *w, int64_t T, int64_t d,
                              float eps, void *out, mr_dtype out_dtype, int64_t ldo, cudaStream_t stream,
                              mr_error *err) {
    if (T == 0) return MR_OK;
    unsigned blocks = T < 65535 * 4 ? (unsigned)T : 65535u * 4;
    int threads = d >= 1024 ? 256 : d >= 256 ? 128 : 64;
    MR_DISPATCH_DTYPE(out_dtype, OT,
                      add_rmsnorm_kernel<OT><<<blocks, threads, 0, stream>>>(x, mix, write_x, w, T, d, eps,
                                                                               (OT *)out, ldo));
    return mr_cuda_launched(err, "add_rmsnorm");
}
