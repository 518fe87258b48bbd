/* The SSD scan on AVX2 + FMA (8 channels per vector); mr_ssd.c calls it when the CPU has both and
 * a head's channels are a multiple of 8. */
#include "base/mr_vec_avx2.h"
#include "ops/mr_ops.h"
#include "ops/mr_ssd_isa.h"

#include "ops/mr_ssd_body.h"
