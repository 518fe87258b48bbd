/* The code kernels for AVX2: the nibble-lookup popcount (vpshufb, then vpsadbw sums the bytes),
 * with the POPCNT instruction for the tail; int8 products by widening to int16 (vpmaddwd); and
 * for binary search, the tile kernel: rows stored as nibble planes, each query as per-position
 * lookup tables, so one vpshufb scores 32 rows at one position (the layout of FAISS's "fast
 * scan"). Compiled with function-level target attributes, so the rest of the build stays
 * portable; mr_codes_index.c calls them only when the CPU reports the features. */
#include "search/mr_code_kernels_isa.h"

#ifdef MR_X86
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,popcnt")))

/* sum += x in sum's own register. Loops that carry several sums, written with the add
 * intrinsics, got from GCC a second register per sum and a copy back every step (and spills),
 * which cost as much as the additions themselves. */
#define ADD_EPI8_IN_PLACE(sum, x)                                       \
    do {                                                                \
        const __m256i addend_ = (x);                                    \
        __asm__("vpaddb %1, %0, %0" : "+x"(sum) : "x"(addend_));        \
    } while (0)
#define ADD_EPI32_IN_PLACE(sum, x)                                      \
    do {                                                                \
        const __m256i addend_ = (x);                                    \
        __asm__("vpaddd %1, %0, %0" : "+x"(sum) : "x"(addend_));        \
    } while (0)

static inline AVX2 int64_t popcount_tail_avx2(const uint8_t *a, const uint8_t *b, int64_t i, int64_t width) {
    int64_t count = 0;
    for (; i + 8 <= width; i += 8) count += _mm_popcnt_u64(load_u64(a + i) ^ load_u64(b + i));
    for (; i < width; i++) count += _mm_popcnt_u32((unsigned)(a[i] ^ b[i]));
    return count;
}

/* Bytes of 32 per-byte bit counts: the nibble lookup (vpshufb) on both halves of each byte. */
static inline AVX2 __m256i popcount_bytes_avx2(__m256i x) {
    const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lookup, _mm256_and_si256(x, low_nibbles)),
                           _mm256_shuffle_epi8(lookup, _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles)));
}

/* A byte lane gains at most 8 per 32-byte chunk, so 31 chunks fit in a byte before vpsadbw. */
enum { BYTE_SUM_CHUNKS = 31 };

static inline AVX2 int64_t hamming_one_avx2(const uint8_t *query, const uint8_t *row, int64_t width,
                                            int64_t vector_bytes) {
    __m256i sums = _mm256_setzero_si256();
    for (int64_t i = 0; i < vector_bytes;) {
        const int64_t end = vector_bytes - i < 32 * BYTE_SUM_CHUNKS ? vector_bytes : i + 32 * BYTE_SUM_CHUNKS;
        __m256i counts = _mm256_setzero_si256();
        for (; i < end; i += 32)
            counts = _mm256_add_epi8(counts, popcount_bytes_avx2(_mm256_xor_si256(
                                                 _mm256_loadu_si256((const __m256i *)(query + i)),
                                                 _mm256_loadu_si256((const __m256i *)(row + i)))));
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(counts, _mm256_setzero_si256()));
    }
    __m128i half = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    return _mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1) + popcount_tail_avx2(query, row, vector_bytes, width);
}

/* Four rows at a time: each query chunk is loaded once for the four, and the four totals are
 * reduced together. */
AVX2 void mr_hamming_rows_avx2(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    const float bits = (float)(8 * width);
    const int64_t vector_bytes = width & ~(int64_t)31;
    const __m256i zero = _mm256_setzero_si256();
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;
        __m256i t0 = zero, t1 = zero, t2 = zero, t3 = zero;
        for (int64_t i = 0; i < vector_bytes;) {
            const int64_t end = vector_bytes - i < 32 * BYTE_SUM_CHUNKS ? vector_bytes : i + 32 * BYTE_SUM_CHUNKS;
            __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
            for (; i < end; i += 32) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(query + i));
                c0 = _mm256_add_epi8(c0, popcount_bytes_avx2(_mm256_xor_si256(q, _mm256_loadu_si256((const __m256i *)(r0 + i)))));
                c1 = _mm256_add_epi8(c1, popcount_bytes_avx2(_mm256_xor_si256(q, _mm256_loadu_si256((const __m256i *)(r1 + i)))));
                c2 = _mm256_add_epi8(c2, popcount_bytes_avx2(_mm256_xor_si256(q, _mm256_loadu_si256((const __m256i *)(r2 + i)))));
                c3 = _mm256_add_epi8(c3, popcount_bytes_avx2(_mm256_xor_si256(q, _mm256_loadu_si256((const __m256i *)(r3 + i)))));
            }
            t0 = _mm256_add_epi64(t0, _mm256_sad_epu8(c0, zero));
            t1 = _mm256_add_epi64(t1, _mm256_sad_epu8(c1, zero));
            t2 = _mm256_add_epi64(t2, _mm256_sad_epu8(c2, zero));
            t3 = _mm256_add_epi64(t3, _mm256_sad_epu8(c3, zero));
        }
        /* [t0 t1 t2 t3] lanes summed into one vector of the four totals */
        const __m256i s01 = _mm256_add_epi64(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
        const __m256i s23 = _mm256_add_epi64(_mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3));
        const __m256i total = _mm256_add_epi64(_mm256_permute2x128_si256(s01, s23, 0x20),
                                               _mm256_permute2x128_si256(s01, s23, 0x31));
        int64_t counts[4];
        _mm256_storeu_si256((__m256i *)counts, total);
        counts[0] += popcount_tail_avx2(query, r0, vector_bytes, width);
        counts[1] += popcount_tail_avx2(query, r1, vector_bytes, width);
        counts[2] += popcount_tail_avx2(query, r2, vector_bytes, width);
        counts[3] += popcount_tail_avx2(query, r3, vector_bytes, width);
        for (int t = 0; t < 4; t++) out[j + t] = bits - 2.0f * (float)counts[t];
    }
    for (; j < n; j++) out[j] = bits - 2.0f * (float)hamming_one_avx2(query, rows + j * width, width, vector_bytes);
}

static inline AVX2 int32_t int8_tail(const int8_t *query, const int8_t *row, int64_t from, int64_t width) {
    int32_t dot = 0;
    for (int64_t i = from; i < width; i++) dot += (int32_t)query[i] * (int32_t)row[i];
    return dot;
}

/* dots[k] = the sum of the eight int32 lanes of s_k: each 128-bit half of h holds partial sums of
 * rows 0..3, and the halves are added */
static inline AVX2 void sum4_epi32(__m256i s0, __m256i s1, __m256i s2, __m256i s3, int32_t *dots) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    _mm_storeu_si128((__m128i *)dots, _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
}

/* Four rows at a time, so each widened query chunk is loaded once for the four: 16 signed bytes
 * of a row widened to int16, madd multiplies and adds pairs into int32. */
AVX2 void mr_int8_dot_rows_avx2(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                                int64_t width, float *out) {
    const int64_t vector_bytes = width & ~(int64_t)15;
    int64_t j = 0;
#define WIDEN(r) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((r) + i)))
    for (; j + 4 <= n; j += 4) {
        const int8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < vector_bytes; i += 16) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(query16 + i));
            ADD_EPI32_IN_PLACE(s0, _mm256_madd_epi16(q, WIDEN(r0)));
            ADD_EPI32_IN_PLACE(s1, _mm256_madd_epi16(q, WIDEN(r1)));
            ADD_EPI32_IN_PLACE(s2, _mm256_madd_epi16(q, WIDEN(r2)));
            ADD_EPI32_IN_PLACE(s3, _mm256_madd_epi16(q, WIDEN(r3)));
        }
        int32_t dots[4];
        sum4_epi32(s0, s1, s2, s3, dots);
        out[j] = (float)(dots[0] + int8_tail(query, r0, vector_bytes, width));
        out[j + 1] = (float)(dots[1] + int8_tail(query, r1, vector_bytes, width));
        out[j + 2] = (float)(dots[2] + int8_tail(query, r2, vector_bytes, width));
        out[j + 3] = (float)(dots[3] + int8_tail(query, r3, vector_bytes, width));
    }
    for (; j < n; j++) {
        const int8_t *r0 = rows + j * width;
        __m256i s0 = _mm256_setzero_si256();
        for (int64_t i = 0; i < vector_bytes; i += 16)
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(query16 + i)), WIDEN(r0)));
        __m128i half = _mm_add_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
        half = _mm_add_epi32(half, _mm_shuffle_epi32(half, _MM_SHUFFLE(1, 0, 3, 2)));
        half = _mm_add_epi32(half, _mm_shuffle_epi32(half, _MM_SHUFFLE(2, 3, 0, 1)));
        out[j] = (float)(_mm_cvtsi128_si32(half) + int8_tail(query, r0, vector_bytes, width));
    }
#undef WIDEN
}

/* Two queries against four rows at a time: each chunk of 16 bytes of a row is widened once for
 * both queries; the 8 int32 sums stay in registers. */
AVX2 void mr_int8_dot_rows2_avx2(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                 const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width, float *out_a,
                                 float *out_b) {
    const int64_t vector_bytes = width & ~(int64_t)15;
    int64_t j = 0;
#define WIDEN(r) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((r) + i)))
    for (; j + 4 <= n; j += 4) {
        const int8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t i = 0; i < vector_bytes; i += 16) {
            const __m256i qa = _mm256_loadu_si256((const __m256i *)(query16_a + i));
            const __m256i qb = _mm256_loadu_si256((const __m256i *)(query16_b + i));
            __m256i w = WIDEN(r0);
            ADD_EPI32_IN_PLACE(a0, _mm256_madd_epi16(qa, w));
            ADD_EPI32_IN_PLACE(b0, _mm256_madd_epi16(qb, w));
            w = WIDEN(r1);
            ADD_EPI32_IN_PLACE(a1, _mm256_madd_epi16(qa, w));
            ADD_EPI32_IN_PLACE(b1, _mm256_madd_epi16(qb, w));
            w = WIDEN(r2);
            ADD_EPI32_IN_PLACE(a2, _mm256_madd_epi16(qa, w));
            ADD_EPI32_IN_PLACE(b2, _mm256_madd_epi16(qb, w));
            w = WIDEN(r3);
            ADD_EPI32_IN_PLACE(a3, _mm256_madd_epi16(qa, w));
            ADD_EPI32_IN_PLACE(b3, _mm256_madd_epi16(qb, w));
        }
        int32_t dots[8];
        sum4_epi32(a0, a1, a2, a3, dots);
        sum4_epi32(b0, b1, b2, b3, dots + 4);
        const int8_t *r[4] = {r0, r1, r2, r3};
        for (int k = 0; k < 4; k++) {
            out_a[j + k] = (float)(dots[k] + int8_tail(query_a, r[k], vector_bytes, width));
            out_b[j + k] = (float)(dots[4 + k] + int8_tail(query_b, r[k], vector_bytes, width));
        }
    }
#undef WIDEN
    if (j < n) {
        mr_int8_dot_rows_avx2(query_a, query16_a, rows + j * width, n - j, width, out_a + j);
        mr_int8_dot_rows_avx2(query_b, query16_b, rows + j * width, n - j, width, out_b + j);
    }
}

/* A byte sum gains at most 4 a position, so 63 positions fit in a byte before widening. */
enum { TILE_BYTE_POSITIONS = 63 };
/* Queries a pass of the kernel over a pair of tiles (tile_pair_distances_avx2 names six sums a
 * tile); a call's MR_TILE_QUERIES come in whole passes. */
enum { TILE_PASS_QUERIES = 6 };
_Static_assert(MR_TILE_QUERIES % TILE_PASS_QUERIES == 0, "a call's queries must fill whole passes");

/* The 16-bit distances of TILE_PASS_QUERIES (6) queries (tables + table_offset[q]) to two tiles
 * at once: totals[q] the low 16 rows of tile0 for query q, totals[6 + q] its high 16, then
 * tile1's at 12 and 18. Each nibble load serves six queries and each table load both tiles
 * (12 sums, 2 nibble vectors and a table fill 15 of the 16 registers). Byte sums are widened
 * every at most 63 positions, in equal pieces. Named variables, added in place, and no inlining
 * keep the sums in registers. */
static AVX2 __attribute__((noinline)) void tile_pair_distances_avx2(const uint8_t *tile0, const uint8_t *tile1,
                                                                    const uint8_t *tables, const int64_t *table_offset,
                                                                    int64_t positions, __m256i *totals) {
    const __m256i zero = _mm256_setzero_si256();
    const int64_t o0 = table_offset[0], o1 = table_offset[1], o2 = table_offset[2], o3 = table_offset[3],
                  o4 = table_offset[4], o5 = table_offset[5];
    const int64_t pieces = (positions + TILE_BYTE_POSITIONS - 1) / TILE_BYTE_POSITIONS;
    for (int i = 0; i < 4 * TILE_PASS_QUERIES; i++) totals[i] = zero;
#define TABLE(o) _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + (o))))
#define BOTH(o, a, b)                                                   \
    do {                                                                \
        const __m256i lut = TABLE(o);                                   \
        ADD_EPI8_IN_PLACE(a, _mm256_shuffle_epi8(lut, n0));             \
        ADD_EPI8_IN_PLACE(b, _mm256_shuffle_epi8(lut, n1));             \
    } while (0)
#define WIDEN(sum, at)                                                                  \
    do {                                                                                \
        totals[at] = _mm256_add_epi16(totals[at], _mm256_unpacklo_epi8(sum, zero));     \
        totals[(at) + TILE_PASS_QUERIES] =                                              \
            _mm256_add_epi16(totals[(at) + TILE_PASS_QUERIES], _mm256_unpackhi_epi8(sum, zero)); \
    } while (0)
    for (int64_t piece = 0; piece < pieces; piece++) {
        const int64_t p0 = positions * piece / pieces, p1 = positions * (piece + 1) / pieces;
        __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero;
        __m256i b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero;
        for (int64_t p = p0; p < p1; p++) {
            const __m256i n0 = _mm256_loadu_si256((const __m256i *)(tile0 + p * MR_TILE_ROWS));
            const __m256i n1 = _mm256_loadu_si256((const __m256i *)(tile1 + p * MR_TILE_ROWS));
            const uint8_t *table = tables + p * 16;
            BOTH(o0, a0, b0);
            BOTH(o1, a1, b1);
            BOTH(o2, a2, b2);
            BOTH(o3, a3, b3);
            BOTH(o4, a4, b4);
            BOTH(o5, a5, b5);
        }
        WIDEN(a0, 0);
        WIDEN(a1, 1);
        WIDEN(a2, 2);
        WIDEN(a3, 3);
        WIDEN(a4, 4);
        WIDEN(a5, 5);
        WIDEN(b0, 12);
        WIDEN(b1, 13);
        WIDEN(b2, 14);
        WIDEN(b3, 15);
        WIDEN(b4, 16);
        WIDEN(b5, 17);
    }
#undef WIDEN
#undef BOTH
#undef TABLE
}

/* A tile's 16-bit distances and its flags of rows within the limits. */
static inline AVX2 __attribute__((always_inline)) void finish_tile(const __m256i *low, const __m256i *high, int nq,
                                                                   int64_t t, int64_t n_tiles, const uint16_t *limits,
                                                                   uint16_t *distance, uint32_t *masks) {
    for (int q = 0; q < nq; q++) {
        uint16_t *d = distance + (q * n_tiles + t) * MR_TILE_ROWS;
        _mm256_storeu_si256((__m256i *)d, low[q]);
        _mm256_storeu_si256((__m256i *)(d + 16), high[q]);
        /* unsigned d <= limit as min(d, limit) == d; the 16-bit flags packed to bytes in row order */
        const __m256i limit = _mm256_set1_epi16((short)limits[q]);
        const __m256i in_low = _mm256_cmpeq_epi16(_mm256_min_epu16(low[q], limit), low[q]);
        const __m256i in_high = _mm256_cmpeq_epi16(_mm256_min_epu16(high[q], limit), high[q]);
        const __m256i flags = _mm256_permute4x64_epi64(_mm256_packs_epi16(in_low, in_high), 0xD8);
        masks[q * n_tiles + t] = (uint32_t)_mm256_movemask_epi8(flags);
    }
}

/* Two tiles and six queries a pass (a last odd tile is paired with itself). */
AVX2 void mr_hamming_tiles_avx2(const uint8_t *tables, int nq, int64_t width, const uint8_t *planes, int64_t n_tiles,
                                const uint16_t *limits, uint16_t *distance, uint32_t *masks) {
    const int64_t positions = 2 * width, table_stride = positions * 16, tile_bytes = positions * MR_TILE_ROWS;
    int64_t table_offset[MR_TILE_QUERIES]; /* a short group repeats query 0's tables */
    for (int q = 0; q < MR_TILE_QUERIES; q++) table_offset[q] = (q < nq ? q : 0) * table_stride;
    for (int64_t t = 0; t < n_tiles; t += 2) {
        const uint8_t *tile0 = planes + t * tile_bytes, *tile1 = t + 1 < n_tiles ? tile0 + tile_bytes : tile0;
        __m256i low[2][MR_TILE_QUERIES], high[2][MR_TILE_QUERIES], totals[4 * TILE_PASS_QUERIES];
        for (int q0 = 0; q0 < nq; q0 += TILE_PASS_QUERIES) {
            tile_pair_distances_avx2(tile0, tile1, tables, table_offset + q0, positions, totals);
            for (int q = 0; q < TILE_PASS_QUERIES; q++) {
                low[0][q0 + q] = totals[q], high[0][q0 + q] = totals[TILE_PASS_QUERIES + q];
                low[1][q0 + q] = totals[2 * TILE_PASS_QUERIES + q], high[1][q0 + q] = totals[3 * TILE_PASS_QUERIES + q];
            }
        }
        finish_tile(low[0], high[0], nq, t, n_tiles, limits, distance, masks);
        if (t + 1 < n_tiles) finish_tile(low[1], high[1], nq, t + 1, n_tiles, limits, distance, masks);
    }
}

/* Rows into nibble planes, 32 rows x 16 bytes at a time: each lane of 16 loaded vectors holds 16
 * rows (rows 0-15 in the low lanes, 16-31 in the high ones); four rounds of byte interleaving
 * transpose both 16 x 16 blocks at once, so vector c holds byte c of all 32 rows in row order;
 * swapping its middle quadwords puts the rows in tile_slot order. Partial tiles and the last
 * width % 16 bytes go through the portable loop. */
AVX2 void mr_hamming_pack_tiles_avx2(const uint8_t *rows, int64_t n, int64_t width, uint8_t *planes) {
    const int64_t positions = 2 * width, full_tiles = n / MR_TILE_ROWS, vector_bytes = width & ~(int64_t)15;
    const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
    for (int64_t t = 0; t < full_tiles; t++) {
        const uint8_t *block = rows + t * MR_TILE_ROWS * width;
        uint8_t *tile = planes + t * positions * MR_TILE_ROWS;
        for (int64_t b = 0; b < vector_bytes; b += 16) {
            __m256i v[16], w[16];
            for (int i = 0; i < 16; i++)
                v[i] = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(block + (16 + i) * width + b)),
                                        _mm_loadu_si128((const __m128i *)(block + i * width + b)));
            for (int round = 0; round < 4; round++) {
                for (int i = 0; i < 8; i++) {
                    w[2 * i] = _mm256_unpacklo_epi8(v[i], v[i + 8]);
                    w[2 * i + 1] = _mm256_unpackhi_epi8(v[i], v[i + 8]);
                }
                memcpy(v, w, sizeof v);
            }
            for (int c = 0; c < 16; c++) {
                const __m256i bytes = _mm256_permute4x64_epi64(v[c], 0xD8);
                uint8_t *low = tile + 2 * (b + c) * MR_TILE_ROWS;
                _mm256_storeu_si256((__m256i *)low, _mm256_and_si256(bytes, low_nibbles));
                _mm256_storeu_si256((__m256i *)(low + MR_TILE_ROWS),
                                    _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles));
            }
        }
        pack_tile_bytes(block, MR_TILE_ROWS, width, vector_bytes, tile);
    }
    if (full_tiles * MR_TILE_ROWS < n)
        mr_hamming_pack_tiles(rows + full_tiles * MR_TILE_ROWS * width, n - full_tiles * MR_TILE_ROWS, width,
                              planes + full_tiles * positions * MR_TILE_ROWS);
}
#endif
