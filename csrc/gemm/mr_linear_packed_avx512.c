/* The packed linear for AVX-512: the shared body over this instruction set's vocabulary. */
#include "base/mr_vec_avx512.h"
#include "gemm/mr_linear_packed.h"

#define MR_LINEAR_ROWS 5 /* with MR_LINEAR_GROUPS: 25 accumulators of the 32 registers */
#define MR_LINEAR_GROUPS 5

#include "gemm/mr_linear_packed_body.h"
