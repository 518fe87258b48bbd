/* Per-call batch preparation on the device (cuda/batch.cu): token ids checked against the
 * vocabulary and narrowed to int32 (int32 and int64 sources, bad ids counted and zeroed), and
 * every token's position in its sequence (empty sequences included), checked against the CPU
 * rule that csrc/models/mr_sched.c applies; then timed.
 *
 * Build: make -C dev/cuda batch; run: ./batch [check] [n_tokens] [n_seqs] */
#include <vector>

#include "../../cuda/batch.cu"
#include "dev_common.h"

int main(int argc, char **argv) {
    const int check = dev_check_only(argc, argv);
    const int64_t n = argc > 2 ? atoll(argv[2]) : check ? 1001 : 1 << 22;
    const int64_t n_seqs = argc > 3 ? atoll(argv[3]) : check ? 40 : 8192, vocab = 50280;
    printf("batch: %lld tokens in %lld sequences\n", (long long)n, (long long)n_seqs);
    std::vector<int64_t> ids(n), offsets(n_seqs + 1);
    std::vector<int32_t> ids32(n), want(n), got(n), want_pos(n), got_pos(n);
    unsigned long long s = 3;
    int want_bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const float u = dev_uniform(&s);
        ids[i] = u < 0.01f ? -1 - (int64_t)(u * 1000) : u > 0.99f ? vocab + (int64_t)(u * 1e10) : (int64_t)(u * vocab);
        ids32[i] = (int32_t)(ids[i] > INT32_MAX ? INT32_MAX : ids[i]);
        const int okid = ids[i] >= 0 && ids[i] < vocab;
        want[i] = okid ? (int32_t)ids[i] : 0;
        want_bad += !okid;
    }
    offsets[0] = 0; /* random cut points; every 5th sequence empty */
    for (int64_t q = 1; q < n_seqs; q++) offsets[q] = q % 5 == 0 ? offsets[q - 1] : (int64_t)(dev_uniform(&s) * n);
    offsets[n_seqs] = n;
    for (int64_t q = 1; q < n_seqs; q++)
        if (offsets[q] < offsets[q - 1]) offsets[q] = offsets[q - 1];
    for (int64_t q = 0; q < n_seqs; q++)
        for (int64_t t = offsets[q]; t < offsets[q + 1]; t++) want_pos[t] = (int32_t)(t - offsets[q]);

    int64_t *d_ids = dev_upload(ids.data(), n), *d_offsets = dev_upload(offsets.data(), offsets.size());
    int32_t *d_ids32 = dev_upload(ids32.data(), n), *d_dst, *d_pos;
    int *d_bad;
    CUDA_CHECK(cudaMalloc(&d_dst, n * 4 + 4));
    CUDA_CHECK(cudaMalloc(&d_pos, n * 4 + 4));
    CUDA_CHECK(cudaMalloc(&d_bad, sizeof(int)));
    int ok = 1;
    mr_error err = {};
    for (int src64 = 0; src64 <= 1; src64++) {
        int bad = 0;
        CUDA_CHECK(cudaMemset(d_bad, 0, sizeof(int)));
        dev_check_status(mr_cuda_check_tokens(src64 ? (const void *)d_ids : d_ids32, src64, n, vocab, d_dst, d_bad, 0,
                                              &err), &err, "check_tokens");
        CUDA_CHECK(cudaMemcpy(got.data(), d_dst, n * 4, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(&bad, d_bad, sizeof(int), cudaMemcpyDeviceToHost));
        const int same = memcmp(got.data(), want.data(), n * 4) == 0 && bad == want_bad;
        printf("  check_tokens %s: %d bad ids (want %d) %s\n", src64 ? "int64" : "int32", bad, want_bad,
               same ? "OK" : "MISMATCH");
        ok &= same;
    }
    dev_check_status(mr_cuda_positions(d_offsets, n_seqs, n, d_pos, 0, &err), &err, "positions");
    CUDA_CHECK(cudaMemcpy(got_pos.data(), d_pos, n * 4, cudaMemcpyDeviceToHost));
    const int same = memcmp(got_pos.data(), want_pos.data(), n * 4) == 0;
    printf("  positions %s\n", same ? "OK" : "MISMATCH");
    ok &= same;
    if (!check) {
        auto tokens = [&] { mr_cuda_check_tokens(d_ids, 1, n, vocab, d_dst, d_bad, 0, &err); };
        auto positions = [&] { mr_cuda_positions(d_offsets, n_seqs, n, d_pos, 0, &err); };
        printf("  %-28s %8.3f ms\n", "check_tokens int64", dev_time_ms(tokens, 20));
        printf("  %-28s %8.3f ms\n", "positions", dev_time_ms(positions, 20));
    }
    return ok ? 0 : 1;
}
