/* AVX-512 kernels: the same algorithms as mr_ops_avx2.c over 16 lanes, with the
 * instruction set's mask registers in place of blends. Compiled with a function-level
 * target attribute; mr_ops.c calls them only when the CPU reports AVX-512F and DQ. */
#include "base/mr_vec_avx512.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"

#include "ops/mr_ops_body.h"
