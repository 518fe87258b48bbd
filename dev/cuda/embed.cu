/* Embedding gather variants, checked against the CPU reference (mr_embed_gather_f32_ref) in
 * float32 and bfloat16 tables, then timed.
 *
 *   1  flat: one thread per output element (index arithmetic per element).
 *   2  row per block (production, cuda/embed.cu): threads walk one contiguous row.
 *
 * Build: make -C dev/cuda embed; run: ./embed [check | variant] [T] [d] [vocab] */
#include <vector>

#include "../../cuda/embed.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"

template <typename T>
__global__ void embed_flat_kernel(const T *table, int64_t d, const int32_t *tokens, int64_t n, float *out) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n * d) out[i] = to_f32(table[(int64_t)tokens[i / d] * d + i % d]);
}

int main(int argc, char **argv) {
    const int check = dev_check_only(argc, argv), variant = check || argc <= 1 ? 0 : atoi(argv[1]);
    const int64_t T = argc > 2 ? atoll(argv[2]) : check ? 301 : 65536, d = argc > 3 ? atoll(argv[3]) : check ? 67 : 768;
    const int64_t vocab = argc > 4 ? atoll(argv[4]) : check ? 97 : 50280;
    printf("embed: T=%lld d=%lld vocab=%lld\n", (long long)T, (long long)d, (long long)vocab);

    std::vector<float> table(vocab * d), ref(T * d), got(T * d);
    std::vector<int32_t> tokens(T);
    unsigned long long s = 7;
    for (int64_t t = 0; t < T; t++) tokens[t] = (int32_t)(dev_uniform(&s) * vocab) % (int32_t)vocab;
    int32_t *d_tokens = dev_upload(tokens.data(), tokens.size());
    float *d_out = NULL;
    CUDA_CHECK(cudaMalloc(&d_out, T * d * 4 + 4));
    int ok = 1;
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        dev_fill(table.data(), table.size(), -1, 1, 11);
        if (bf16) dev_round_bf16(table.data(), table.size());
        mr_embed_gather_f32_ref(table.data(), d, tokens.data(), T, ref.data());
        void *d_table = dev_upload_as(table.data(), table.size(), bf16);
        const mr_dtype dtype = bf16 ? MR_DTYPE_BF16 : MR_DTYPE_F32;
        const double bytes = (double)T * d * (4 + (bf16 ? 2 : 4));
        for (int v = 1; v <= 2; v++) {
            if (variant && variant != v) continue;
            mr_error err = {};
            auto run = [&] {
                if (v == 1) {
                    MR_DISPATCH_DTYPE(dtype, AT, embed_flat_kernel<AT><<<mr_blocks(T * d, 256), 256>>>(
                                                     (const AT *)d_table, d, d_tokens, T, d_out));
                } else {
                    dev_check_status(mr_cuda_embed(dtype, d_table, d, d_tokens, T, d_out, 0, &err), &err, "embed");
                }
            };
            CUDA_CHECK(cudaMemset(d_out, 0, T * d * 4));
            run();
            CUDA_CHECK(cudaDeviceSynchronize());
            dev_download_as(got.data(), d_out, got.size(), 0);
            char name[64];
            snprintf(name, sizeof name, "%d %s %s", v, v == 1 ? "flat" : "row per block", bf16 ? "bf16" : "f32");
            ok &= dev_compare(name, got.data(), ref.data(), got.size(), 0.0f);
            if (!check) {
                const float ms = dev_time_ms(run, 20);
                printf("  %-28s %8.3f ms  %6.0f GB/s\n", name, ms, bytes / ms / 1e6);
            }
        }
        CUDA_CHECK(cudaFree(d_table));
    }
    return ok ? 0 : 1;
}
