/* The chunked selective scan.
 *
 * Grid: x = groups of 32 channels, y = pieces of rows. Inside a block the 32 lanes of a warp
 * are 32 consecutive channels (row-major activations, so each row's load coalesces) and the
 * WARPS warps split each chunk of WARPS*ITEMS rows into runs of ITEMS consecutive rows.
 *
 * The state dimension n is the outer loop (as in mamba-ssm's forward kernel), so a thread keeps
 * only ITEMS (decay, input) pairs per n in registers and computes each exp2 once:
 *   1. each thread composes the affine maps h -> a*h + b of its ITEMS rows (inclusive prefix);
 *   2. warps exchange their composed maps in shared memory and each thread folds those of the
 *      warps before it onto the running state carried from the previous chunk;
 *   3. each thread applies its prefixes to that incoming state and accumulates C[r, n] * h.
 * A sequence start (pos 0) has decay 0, which resets the state inside a piece. The running
 * state per (n, channel) lives in shared memory between chunks; everything is float32. */
#include "common.cuh"
#include "selective_scan.cuh"

#define MR_SCAN_ITEMS 16
#define MR_SCAN_WARPS 4
#define MR_SCAN_MAX_PIECES 240 /* pieces per launch: the table travels as a kernel argument */
static_assert(MR_SCAN_ITEMS * MR_SCAN_WARPS == MR_CUDA_TRAIN_SCAN_CHUNK, "a chunk of rows is the training chunk");

struct ScanPieceTable {
    int count;
    int32_t row0[MR_SCAN_MAX_PIECES];
    int32_t rows[MR_SCAN_MAX_PIECES];
    uint8_t flags[MR_SCAN_MAX_PIECES]; /* 1: read state_in, 2: write state_out */
    int32_t first_boundary[MR_SCAN_MAX_PIECES];
};

template <typename T>
struct ScanArgs {
    int64_t E, N;
    const T *u; int64_t ldu;
    const T *dt; int64_t lddt;
    const float *dt_bias, *A2;
    const T *B, *C; int64_t ldbc;
    const float *D;
    const T *z; int64_t ldz;
    const int32_t *pos;
    const float *state_in;
    float *state_out;
    float *boundaries;
    T *y; int64_t ldy;
};

template <typename T, int ITEMS, int WARPS>
__global__ void __launch_bounds__(WARPS * 32)
selective_scan_chunked_kernel(const ScanArgs<T> a, const ScanPieceTable p) {
    extern __shared__ float run_s[]; /* [N][32]: state per (n, lane) entering the next chunk */
    __shared__ float2 agg[2][WARPS][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t e_raw = (int64_t)blockIdx.x * 32 + lane;
    const bool ch_ok = e_raw < a.E;
    const int64_t e = ch_ok ? e_raw : a.E - 1; /* idle lanes load a valid channel, store nothing */
    const int64_t N = a.N;
    const int64_t row0 = p.row0[blockIdx.y], row_end = row0 + p.rows[blockIdx.y];
    const int flags = p.flags[blockIdx.y];

    for (int64_t n = warp; n < N; n += WARPS)
        run_s[n * 32 + lane] = (flags & 1) ? a.state_in[e * N + n] : 0.0f;
    __syncthreads();

    const float dt_bias = a.dt_bias ? a.dt_bias[e] : 0.0f;
    const float Dskip = a.D ? a.D[e] : 0.0f;
    int parity = 0;
    constexpr int CHUNK = ITEMS * WARPS;

    for (int64_t c0 = row0; c0 < row_end; c0 += CHUNK) {
        const int64_t base = c0 + (int64_t)warp * ITEMS;
        float delta[ITEMS], uval[ITEMS], yacc[ITEMS];
        unsigned reset = 0; /* bit i: row base+i starts a sequence */
#pragma unroll
        for (int i = 0; i < ITEMS; i++) {
            const int64_t r = base + i;
            delta[i] = 0.0f; /* rows past the piece: decay 1, input 0, i.e. the identity map */
            uval[i] = 0.0f;
            yacc[i] = 0.0f;
            if (r < row_end) {
                delta[i] = softplus_f32(to_f32(a.dt[r * a.lddt + e]) + dt_bias);
                uval[i] = to_f32(a.u[r * a.ldu + e]);
                if (a.pos[r] == 0) reset |= 1u << i;
            }
        }
        for (int64_t n = 0; n < N; n++) {
            const float An = a.A2[e * N + n];
            float acum[ITEMS], bcum[ITEMS];
            float ap = 1.0f, bp = 0.0f;
#pragma unroll
            for (int i = 0; i < ITEMS; i++) {
                const int64_t r = base + i < row_end ? base + i : row_end - 1;
                const float ai = (reset >> i) & 1u ? 0.0f : exp2f(delta[i] * An);
                const float bi = delta[i] * uval[i] * to_f32(a.B[r * a.ldbc + n]);
                ap = ai * ap;
                bp = fmaf(ai, bp, bi);
                acum[i] = ap;
                bcum[i] = bp;
            }
            float h = run_s[n * 32 + lane]; /* read before the barrier: the last warp rewrites it after */
            agg[parity][warp][lane] = make_float2(ap, bp);
            __syncthreads();
            for (int w = 0; w < warp; w++) {
                const float2 g = agg[parity][w][lane];
                h = fmaf(g.x, h, g.y);
            }
#pragma unroll
            for (int i = 0; i < ITEMS; i++) {
                const int64_t r = base + i < row_end ? base + i : row_end - 1;
                yacc[i] = fmaf(to_f32(a.C[r * a.ldbc + n]), fmaf(acum[i], h, bcum[i]), yacc[i]);
            }
            if (warp == WARPS - 1) run_s[n * 32 + lane] = fmaf(ap, h, bp);
            parity ^= 1; /* the other buffer next: no second barrier per n */
        }
        if (ch_ok) {
#pragma unroll
            for (int i = 0; i < ITEMS; i++) {
                const int64_t r = base + i;
                if (r < row_end) {
                    float out = fmaf(Dskip, uval[i], yacc[i]);
                    if (a.z) out *= silu_f32(to_f32(a.z[r * a.ldz + e]));
                    a.y[r * a.ldy + e] = from_f32<T>(out);
                }
            }
        }
        __syncthreads(); /* run_s complete before the next chunk (or the final store) reads it */
        /* training keeps the state entering the next chunk; every read here precedes the next
         * chunk's first barrier, every rewrite of run_s follows it */
        if (a.boundaries && c0 + CHUNK < row_end && ch_ok) {
            float *kept = a.boundaries + ((int64_t)p.first_boundary[blockIdx.y] + (c0 - row0) / CHUNK) * a.E * N;
            for (int64_t n = warp; n < N; n += WARPS) kept[e * N + n] = run_s[n * 32 + lane];
        }
    }
    if ((flags & 2) && ch_ok)
        for (int64_t n = warp; n < N; n += WARPS) a.state_out[e * N + n] = run_s[n * 32 + lane];
}

template <typename T>
static mr_status launch_scan(const ScanArgs<T> &args, const mr_scan_piece *pieces, int64_t n_pieces,
                             cudaStream_t stream, mr_error *err) {
    const size_t smem = (size_t)args.N * 32 * sizeof(float);
    const unsigned channel_groups = mr_blocks(args.E, 32);
    for (int64_t first = 0; first < n_pieces; first += MR_SCAN_MAX_PIECES) {
        ScanPieceTable table;
        table.count = (int)(n_pieces - first < MR_SCAN_MAX_PIECES ? n_pieces - first : MR_SCAN_MAX_PIECES);
        for (int i = 0; i < table.count; i++) {
            const mr_scan_piece *pc = &pieces[first + i];
            table.row0[i] = pc->row0;
            table.rows[i] = pc->rows;
            table.flags[i] = (uint8_t)((pc->read_state ? 1 : 0) | (pc->write_state ? 2 : 0));
            table.first_boundary[i] = pc->first_boundary;
        }
        dim3 grid(channel_groups, (unsigned)table.count);
        selective_scan_chunked_kernel<T, MR_SCAN_ITEMS, MR_SCAN_WARPS>
            <<<grid, MR_SCAN_WARPS * 32, smem, stream>>>(args, table);
        mr_status st = mr_cuda_launched(err, "selective_scan");
        if (st) return st;
    }
    return MR_OK;
}

mr_status mr_cuda_selective_scan(mr_dtype dtype, int64_t E, int64_t N, const void *u, int64_t ldu, const void *dt,
                                 int64_t lddt, const float *dt_bias, const float *A2, const void *B, const void *C,
                                 int64_t ldbc, const float *D, const void *z, int64_t ldz, const int32_t *pos,
                                 const mr_scan_piece *pieces, int64_t n_pieces, const float *state_in,
                                 float *state_out, float *boundaries, void *y, int64_t ldy, cudaStream_t stream,
                                 mr_error *err) {
    if (n_pieces == 0 || E == 0) return MR_OK;
    if (N < 1 || N > 256) return mr_fail(err, MR_ERR_VALUE, "selective_scan: state size %lld outside [1, 256]", (long long)N);
    mr_status st = MR_OK;
    MR_DISPATCH_DTYPE(dtype, AT, {
        ScanArgs<AT> args = {E, N, (const AT *)u, ldu, (const AT *)dt, lddt, dt_bias, A2,
                             (const AT *)B, (const AT *)C, ldbc, D, (const AT *)z, ldz, pos,
                             state_in, state_out, boundaries, (AT *)y, ldy};
        st = launch_scan<AT>(args, pieces, n_pieces, stream, err);
    });
    return st;
}
