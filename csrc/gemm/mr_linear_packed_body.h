/* The packed linear's vector kernel, written once over the vector vocabulary of base/mr_vec_<isa>.h
 * and compiled per ISA by gemm/mr_linear_packed_<isa>.c, which also sets MR_LINEAR_ROWS and
 * MR_LINEAR_GROUPS (the register tile) for its register file. */
#define MR_LINEAR_ROW_BLOCK 60 /* rows whose activations stay in cache while every panel passes */

/* Rows [0, MR) of `a` times column groups [0, NG) of a panel, over all of K, with the
 * MR x NG * (MR_PACK_GROUP / W) accumulators in registers: per k, one weight load per vector and
 * one broadcast per row feed MR x NG x GV multiply-adds. Always inlined into callers that pass
 * constants. Columns from n0 on, at most N - n0 of them, are stored. */
static inline __attribute__((always_inline)) TARGET void SUFFIX(linear_tile)(
    const int MR, const int NG, int64_t N, int64_t K, const float *a, int64_t lda, const float *panel, float *out,
    int64_t ldo, int64_t n0) {
    enum { GV = MR_PACK_GROUP / W, NV = MR_LINEAR_GROUPS * (MR_PACK_GROUP / W) };
    VEC acc[MR_LINEAR_ROWS][NV];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NG * GV; j++) acc[r][j] = VZERO;
    const int64_t group_stride = K * MR_PACK_GROUP;
    for (int64_t k = 0; k < K; k++) {
        VEC wv[NV];
        for (int g = 0; g < NG; g++)
            for (int v = 0; v < GV; v++) wv[g * GV + v] = VLOAD(panel + g * group_stride + k * MR_PACK_GROUP + v * W);
        for (int r = 0; r < MR; r++) {
            const VEC ar = VBROADCAST(a + r * lda + k);
            for (int j = 0; j < NG * GV; j++) acc[r][j] = VFMA(ar, wv[j], acc[r][j]);
        }
    }
    const int64_t cols = N - n0 < NG * MR_PACK_GROUP ? N - n0 : NG * MR_PACK_GROUP;
    for (int r = 0; r < MR; r++) {
        float *dst = out + r * ldo + n0;
        if (cols == NG * MR_PACK_GROUP) {
            for (int j = 0; j < NG * GV; j++) VSTORE(dst + j * W, acc[r][j]);
        } else { /* the zero-padded last group: only its real columns */
            float row[NV * W];
            for (int j = 0; j < NG * GV; j++) VSTORE(row + j * W, acc[r][j]);
            memcpy(dst, row, (size_t)cols * sizeof(float));
        }
    }
}

_Static_assert(MR_LINEAR_ROWS <= 6 && MR_LINEAR_GROUPS <= 5, "the tile dispatch below covers 6 rows, 5 groups");
#define MR_LINEAR_MIN(x, y) ((x) < (y) ? (x) : (y))
#define MR_LINEAR_TILE(MR_, NG_)                                                                           \
    SUFFIX(linear_tile)(MR_LINEAR_MIN(MR_, MR_LINEAR_ROWS), MR_LINEAR_MIN(NG_, MR_LINEAR_GROUPS), N, K,   \
                        a + t * lda, lda, panel, out + t * ldo, ldo, n0)
#define MR_LINEAR_GROUP_CASES(MR_)               \
    switch (ng) {                                \
    case 5: MR_LINEAR_TILE(MR_, 5); break;       \
    case 4: MR_LINEAR_TILE(MR_, 4); break;       \
    case 3: MR_LINEAR_TILE(MR_, 3); break;       \
    case 2: MR_LINEAR_TILE(MR_, 2); break;       \
    default: MR_LINEAR_TILE(MR_, 1); break;      \
    }

/* A block of rows meets every panel of up to MR_LINEAR_GROUPS column groups while its
 * activations are in L2; within a panel, tiles of MR_LINEAR_ROWS rows. */
TARGET void SUFFIX(mr_linear_packed_f32)(int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                                         float *out, int64_t ldo, int64_t lo, int64_t hi) {
    const int64_t groups = (N + MR_PACK_GROUP - 1) / MR_PACK_GROUP;
    for (int64_t r0 = lo; r0 < hi; r0 += MR_LINEAR_ROW_BLOCK) {
        const int64_t r1 = hi - r0 < MR_LINEAR_ROW_BLOCK ? hi : r0 + MR_LINEAR_ROW_BLOCK;
        for (int64_t g0 = 0; g0 < groups; g0 += MR_LINEAR_GROUPS) {
            const int ng = (int)(groups - g0 < MR_LINEAR_GROUPS ? groups - g0 : MR_LINEAR_GROUPS);
            const float *panel = packed + g0 * K * MR_PACK_GROUP;
            const int64_t n0 = g0 * MR_PACK_GROUP;
            for (int64_t t = r0; t < r1; t += MR_LINEAR_ROWS) {
                switch (r1 - t < MR_LINEAR_ROWS ? r1 - t : MR_LINEAR_ROWS) {
                case 6: MR_LINEAR_GROUP_CASES(6); break;
                case 5: MR_LINEAR_GROUP_CASES(5); break;
                case 4: MR_LINEAR_GROUP_CASES(4); break;
                case 3: MR_LINEAR_GROUP_CASES(3); break;
                case 2: MR_LINEAR_GROUP_CASES(2); break;
                default: MR_LINEAR_GROUP_CASES(1); break;
                }
            }
        }
    }
}
