/* AVX2 + FMA kernels, compiled with function-level target attributes so the rest of the build
 * stays portable; mr_ops.c calls them only when the CPU reports both features.
 *
 * The scan runs 8 channels per vector: per token it needs exp(delta * A) for every state
 * element, so exp is a polynomial here (relative error about 1e-7, like the float libm), and
 * softplus and SiLU use the same exp. */
#include "base/mr_vec_avx2.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"

#include "ops/mr_ops_body.h"
