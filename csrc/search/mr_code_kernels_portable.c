/* The code kernels in portable C: 64-bit words and the compiler's popcount (a table or the
 * instruction, as built). The reference the vector paths are tested against. */
#include "search/mr_code_kernels_isa.h"

static inline int64_t hamming_portable(const uint8_t *a, const uint8_t *b, int64_t width) {
    int64_t count = 0, i = 0;
    for (; i + 8 <= width; i += 8) count += __builtin_popcountll(load_u64(a + i) ^ load_u64(b + i));
    for (; i < width; i++) count += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return count;
}

void mr_hamming_rows_portable(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    const float bits = (float)(8 * width);
    for (int64_t j = 0; j < n; j++) out[j] = bits - 2.0f * (float)hamming_portable(query, rows + j * width, width);
}

void mr_int8_dot_rows_portable(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                               int64_t width, float *out) {
    (void)query16;
    for (int64_t j = 0; j < n; j++) {
        const int8_t *row = rows + j * width;
        int32_t dot = 0; /* |dot| <= 16384 * width: the caller bounds width */
        for (int64_t i = 0; i < width; i++) dot += (int32_t)query[i] * (int32_t)row[i];
        out[j] = (float)dot;
    }
}

void mr_int8_dot_rows2_portable(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width, float *out_a,
                                float *out_b) {
    mr_int8_dot_rows_portable(query_a, query16_a, rows, n, width, out_a);
    mr_int8_dot_rows_portable(query_b, query16_b, rows, n, width, out_b);
}

void mr_hamming_pack_tiles(const uint8_t *rows, int64_t n, int64_t width, uint8_t *planes) {
    const int64_t positions = 2 * width;
    for (int64_t first = 0; first < n; first += MR_TILE_ROWS) {
        uint8_t *tile = planes + (first / MR_TILE_ROWS) * positions * MR_TILE_ROWS;
        const int m = n - first < MR_TILE_ROWS ? (int)(n - first) : MR_TILE_ROWS;
        if (m < MR_TILE_ROWS) memset(tile, 0, (size_t)(positions * MR_TILE_ROWS));
        pack_tile_bytes(rows + first * width, m, width, 0, tile);
    }
}

void mr_hamming_query_tables(const uint8_t *query, int64_t width, uint8_t *tables) {
    for (int64_t p = 0; p < 2 * width; p++) {
        const unsigned nibble = p & 1 ? query[p / 2] >> 4 : query[p / 2] & 15u;
        for (unsigned v = 0; v < 16; v++) tables[p * 16 + v] = (uint8_t)__builtin_popcount(nibble ^ v);
    }
}

void mr_hamming_tiles_portable(const uint8_t *tables, int nq, int64_t width, const uint8_t *planes, int64_t n_tiles,
                               const uint16_t *limits, uint16_t *distance, uint32_t *masks) {
    const int64_t positions = 2 * width;
    for (int q = 0; q < nq; q++)
        for (int64_t t = 0; t < n_tiles; t++) {
            const uint8_t *tile = planes + t * positions * MR_TILE_ROWS, *table = tables + q * positions * 16;
            uint32_t mask = 0;
            for (int r = 0; r < MR_TILE_ROWS; r++) {
                unsigned d = 0;
                for (int64_t p = 0; p < positions; p++) d += table[p * 16 + tile[p * MR_TILE_ROWS + tile_slot(r)]];
                distance[(q * n_tiles + t) * MR_TILE_ROWS + r] = (uint16_t)d;
                mask |= (uint32_t)(d <= limits[q]) << r;
            }
            masks[q * n_tiles + t] = mask;
        }
}
