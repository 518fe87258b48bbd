/* The training kernels for portable C (the compiler vectorises the lane loops at its default width): the shared body compiled for this instruction set. */
#include "ops/mr_ops_backward_isa.h"

#define MR_BWD_TARGET 
#define MR_BWD_NAME(name) name##_portable
#include "ops/mr_ops_backward_body.h"
