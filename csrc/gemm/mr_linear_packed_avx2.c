/* The packed linear for AVX2 + FMA: the shared body over this instruction set's vocabulary. */
#include "base/mr_vec_avx2.h"
#include "gemm/mr_linear_packed.h"

#define MR_LINEAR_ROWS 6 /* with MR_LINEAR_GROUPS: 12 accumulators (6 rows x 2 vectors) of the 16 registers */
#define MR_LINEAR_GROUPS 1

#include "gemm/mr_linear_packed_body.h"
