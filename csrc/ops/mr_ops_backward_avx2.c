/* The training kernels for AVX2 + FMA: the shared body compiled for this instruction set. */
#include "ops/mr_ops_backward_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#define MR_BWD_TARGET __attribute__((target("avx2,fma")))
#define MR_BWD_NAME(name) name##_avx2
#include "ops/mr_ops_backward_body.h"
#endif
