/* Pooling and L2 normalisation (cuda/pool_l2.cu), checked against the CPU reference
 * (the residual add + mr_rmsnorm_f32_ref for the last token, plain sums for the mean, then the L2
 * norm clamped at 1e-12 as torch's normalize) on a micro-batch that starts inside one sequence
 * and ends inside another, with empty sequences between; then timed.
 *
 * Build: make -C dev/cuda pool_l2; run: ./pool_l2 [check] [n_seqs] [d] [length] */
#include <math.h>

#include <algorithm>
#include <vector>

#include "../../cuda/pool_l2.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"

static void l2_normalize_host(float *x, int64_t n, int64_t d) {
    for (int64_t r = 0; r < n; r++) {
        double sq = 0;
        for (int64_t i = 0; i < d; i++) sq += (double)x[r * d + i] * x[r * d + i];
        const double inv = 1.0 / fmax(sqrt(sq), 1e-12);
        for (int64_t i = 0; i < d; i++) x[r * d + i] = (float)(x[r * d + i] * inv);
    }
}

int main(int argc, char **argv) {
    const int check = dev_check_only(argc, argv);
    const int64_t n_seqs = argc > 2 ? atoll(argv[2]) : check ? 23 : 4096, d = argc > 3 ? atoll(argv[3]) : check ? 1037 : 768;
    const int64_t length = argc > 4 ? atoll(argv[4]) : check ? 9 : 16;
    const float eps = 1e-5f;
    /* sequence s has (s % 4 == 3 ? 0 : 1 + (s * 7 + 5) % length) tokens; the micro-batch holds tokens
     * [first_token, first_token + T): the middle of sequence 0's tokens to the middle of the last's */
    std::vector<int64_t> offsets(n_seqs + 1, 0);
    for (int64_t s = 0; s < n_seqs; s++) offsets[s + 1] = offsets[s] + (s % 4 == 3 ? 0 : 1 + (s * 7 + 5) % length);
    const int64_t first_token = offsets[1] / 2, T = offsets[n_seqs] - first_token - 1;
    int64_t seq_lo = 0, seq_hi = 0; /* sequences with at least one token in the micro-batch */
    while (offsets[seq_lo + 1] <= first_token) seq_lo++;
    while (seq_hi < n_seqs && offsets[seq_hi] < first_token + T) seq_hi++;
    printf("pool + l2: %lld sequences, d=%lld, micro-batch of %lld tokens from token %lld\n", (long long)n_seqs,
           (long long)d, (long long)T, (long long)first_token);

    std::vector<float> x(T * d), mix(T * d), w(d), ref(n_seqs * d, 0.0f), got(n_seqs * d), row(d);
    dev_fill(x.data(), x.size(), -2, 2, 1);
    dev_fill(mix.data(), mix.size(), -1, 1, 2);
    dev_fill(w.data(), d, 0.5f, 1.5f, 3);
    float *d_x = dev_upload(x.data(), x.size()), *d_mix = dev_upload(mix.data(), mix.size());
    float *d_w = dev_upload(w.data(), d), *d_out = dev_upload(ref.data(), ref.size());
    int64_t *d_offsets = dev_upload(offsets.data(), offsets.size());
    int ok = 1;
    mr_error err = {};

    for (int normalize = 0; normalize <= 1; normalize++) { /* last token: norm_f fused, then optional L2 */
        std::fill(ref.begin(), ref.end(), 0.0f);
        for (int64_t s = seq_lo; s < seq_hi; s++) {
            const int64_t r = offsets[s + 1] - 1 - first_token;
            if (offsets[s + 1] == offsets[s] || r < 0 || r >= T) continue;
            std::copy(&x[r * d], &x[r * d] + d, row.begin());
            for (int64_t i = 0; i < d; i++) row[i] += mix[r * d + i];
            mr_rmsnorm_f32_ref(row.data(), d, w.data(), 1, d, eps, &ref[s * d], d);
            if (normalize) l2_normalize_host(&ref[s * d], 1, d);
        }
        /* pool_last pools only sequences whose last token is in the micro-batch */
        int64_t last_hi = seq_hi;
        while (last_hi > seq_lo && offsets[last_hi] > first_token + T) last_hi--;
        CUDA_CHECK(cudaMemset(d_out, 0, ref.size() * 4));
        auto run = [&] {
            dev_check_status(mr_cuda_pool_last(d_x, d_mix, d_w, d, eps, d_offsets, seq_lo, last_hi, first_token,
                                               normalize, d_out, 0, &err), &err, "pool_last");
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        dev_download_as(got.data(), d_out, got.size(), 0);
        ok &= dev_compare(normalize ? "pool last + l2" : "pool last", got.data(), ref.data(), got.size(), 1e-5f);
        if (!check) printf("  %-28s %8.3f ms\n", "pool last", dev_time_ms(run, 20));
    }

    { /* mean: every sequence touching the micro-batch gets its rows' share added */
        std::fill(ref.begin(), ref.end(), 0.0f);
        for (int64_t s = seq_lo; s < seq_hi; s++) {
            const int64_t len = offsets[s + 1] - offsets[s];
            const int64_t r0 = std::max<int64_t>(offsets[s] - first_token, 0), r1 = std::min(offsets[s + 1] - first_token, T);
            for (int64_t i = 0; i < d && len; i++) {
                double acc = 0;
                for (int64_t r = r0; r < r1; r++) acc += x[r * d + i];
                ref[s * d + i] = (float)(acc / len);
            }
        }
        CUDA_CHECK(cudaMemset(d_out, 0, ref.size() * 4));
        dev_check_status(mr_cuda_pool_mean_add(d_x, T, d, d_offsets, seq_lo, seq_hi, first_token, d_out, 0, &err),
                         &err, "pool_mean_add");
        CUDA_CHECK(cudaDeviceSynchronize());
        dev_download_as(got.data(), d_out, got.size(), 0);
        ok &= dev_compare("pool mean", got.data(), ref.data(), got.size(), 1e-5f);
        l2_normalize_host(ref.data(), n_seqs, d);
        dev_check_status(mr_cuda_l2_normalize(d_out, n_seqs, d, 0, &err), &err, "l2_normalize");
        CUDA_CHECK(cudaDeviceSynchronize());
        dev_download_as(got.data(), d_out, got.size(), 0);
        ok &= dev_compare("l2 normalize (zero rows stay 0)", got.data(), ref.data(), got.size(), 1e-6f);
        if (!check) {
            auto mean = [&] {
                dev_check_status(mr_cuda_pool_mean_add(d_x, T, d, d_offsets, seq_lo, seq_hi, first_token, d_out, 0,
                                                       &err), &err, "pool_mean_add");
            };
            printf("  %-28s %8.3f ms\n", "pool mean", dev_time_ms(mean, 20));
        }
    }
    return ok ? 0 : 1;
}
