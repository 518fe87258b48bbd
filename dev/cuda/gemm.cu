/* The model's matrix products through cuBLAS (cuda/gemm.cu) in float32 (pedantic: no TF32) and
 * bfloat16 with float32 accumulation, with strided operands, beta = 1 accumulation and the
 * separate bias add, checked against a double-precision CPU product of the same (rounded)
 * inputs on a sample of rows; then timed on the model's shapes (TFLOP/s).
 *
 * Build: make -C dev/cuda gemm; run: ./gemm [check] [M] [N] [K] */
#include <vector>

#include "../../cuda/gemm.cu"
#include "dev_common.h"

static int run_case(cublasHandle_t handle, int check, int64_t M, int64_t N, int64_t K) {
    const int64_t lda = K + 3, ldw = K + 1, ldo = N + 5, rows = M < 64 ? M : 64; /* rows checked */
    printf("gemm: out[%lld, %lld] = a[%lld, %lld] @ w^T (+ bias)\n", (long long)M, (long long)N, (long long)M,
           (long long)K);
    std::vector<float> a(M * lda), w(N * ldw), bias(N), out0(M * ldo), ref(M * ldo), got(M * ldo);
    dev_fill(bias.data(), N, -1, 1, 3);
    dev_fill(out0.data(), out0.size(), -1, 1, 4);
    float *d_bias = dev_upload(bias.data(), N);
    int ok = 1;
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        dev_fill(a.data(), a.size(), -1, 1, 1);
        dev_fill(w.data(), w.size(), -1, 1, 2);
        if (bf16) {
            dev_round_bf16(a.data(), a.size());
            dev_round_bf16(w.data(), w.size());
        }
        for (int64_t r = 0; r < rows; r++) /* float32 out, beta = 1: out0 + a @ w^T + bias */
            for (int64_t n = 0; n < N; n++) {
                double acc = out0[r * ldo + n];
                for (int64_t k = 0; k < K; k++) acc += (double)a[r * lda + k] * w[n * ldw + k];
                ref[r * ldo + n] = (float)(acc + bias[n]);
            }
        void *d_a = dev_upload_as(a.data(), a.size(), bf16), *d_w = dev_upload_as(w.data(), w.size(), bf16);
        float *d_out = dev_upload(out0.data(), out0.size());
        const mr_dtype dtype = bf16 ? MR_DTYPE_BF16 : MR_DTYPE_F32;
        mr_error err = {};
        dev_check_status(mr_cuda_gemm(handle, dtype, M, N, K, d_a, lda, d_w, ldw, d_out, ldo, 1, 1.0f, &err), &err,
                         "gemm");
        dev_check_status(mr_cuda_add_bias(MR_DTYPE_F32, d_out, M, N, ldo, d_bias, 0, &err), &err, "add_bias");
        CUDA_CHECK(cudaDeviceSynchronize());
        dev_download_as(got.data(), d_out, rows * ldo, 0);
        for (int64_t r = 0; r < rows; r++) /* the padding columns are not the product's */
            for (int64_t n = N; n < ldo; n++) got[r * ldo + n] = ref[r * ldo + n] = 0.0f;
        ok &= dev_compare(bf16 ? "bf16 in, f32 out, beta 1" : "f32 pedantic, beta 1", got.data(), ref.data(),
                          rows * ldo, bf16 ? 1e-5f : 1e-5f);
        if (!check) {
            auto run = [&] {
                dev_check_status(mr_cuda_gemm(handle, dtype, M, N, K, d_a, lda, d_w, ldw, d_out, ldo, 0, 0.0f, &err),
                                 &err, "gemm");
            };
            const float ms = dev_time_ms(run, 20);
            printf("  %-28s %8.3f ms  %7.1f TFLOP/s\n", bf16 ? "bf16 -> bf16" : "f32 pedantic", ms,
                   2.0 * M * N * K / ms / 1e9);
        }
        CUDA_CHECK(cudaFree(d_a));
        CUDA_CHECK(cudaFree(d_w));
        CUDA_CHECK(cudaFree(d_out));
    }
    CUDA_CHECK(cudaFree(d_bias));
    return ok;
}

int main(int argc, char **argv) {
    const int check = dev_check_only(argc, argv);
    cublasHandle_t handle;
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        return 1;
    }
    int ok;
    if (check) {
        ok = run_case(handle, 1, 37, 83, 65) & run_case(handle, 1, 5, 1, 300);
    } else if (argc > 3) {
        ok = run_case(handle, 0, atoll(argv[1]), atoll(argv[2]), atoll(argv[3]));
    } else { /* Mamba-130M's in_proj, x_proj, dt_proj and out_proj over a 16384-token micro-batch */
        ok = run_case(handle, 0, 16384, 3072, 768) & run_case(handle, 0, 16384, 80, 1536) &
             run_case(handle, 0, 16384, 1536, 48) & run_case(handle, 0, 16384, 768, 1536);
    }
    cublasDestroy(handle);
    return ok ? 0 : 1;
}
