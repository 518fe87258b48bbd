/* The SSD scan on AVX-512 (16 channels per vector); mr_ssd.c calls it when the CPU has AVX-512F
 * and DQ and a head's channels are a multiple of 16. */
#include "base/mr_vec_avx512.h"
#include "ops/mr_ops.h"
#include "ops/mr_ssd_isa.h"

#include "ops/mr_ssd_body.h"
