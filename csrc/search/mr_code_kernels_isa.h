/* Internal: the helpers that the code kernels' per-ISA files (mr_code_kernels_<isa>.c) share. */
#ifndef MR_CODE_KERNELS_ISA_H
#define MR_CODE_KERNELS_ISA_H

#include <stdint.h>
#include <string.h>

#include "search/mr_code_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define MR_X86 1
#endif

static inline uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v); /* unaligned rows: memcpy compiles to one load */
    return v;
}

/* The byte of a tile position that holds row r: chosen so that widening the 32 byte sums
 * (unpacklo / unpackhi within each 128-bit lane) gives rows 0-15 and 16-31 in order. */
static inline int tile_slot(int r) { return r < 8 ? r : r < 16 ? r + 8 : r < 24 ? r - 8 : r; }

/* Bytes first_byte .. width of m rows (block) into their tile, position by position, so the
 * writes are sequential (the reads stride over the tile's rows, which sit in L1). */
static inline void pack_tile_bytes(const uint8_t *block, int m, int64_t width, int64_t first_byte, uint8_t *tile) {
    for (int64_t b = first_byte; b < width; b++) {
        uint8_t *low = tile + 2 * b * MR_TILE_ROWS, *high = low + MR_TILE_ROWS;
        for (int r = 0; r < m; r++) {
            const uint8_t v = block[r * width + b];
            low[tile_slot(r)] = v & 15;
            high[tile_slot(r)] = v >> 4;
        }
    }
}

#endif
