/* The CUDA model behind the C ABI table (csrc/mr_cuda.h); see mr_cuda_model.cu. */
#ifndef MR_CUDA_MODEL_CUH
#define MR_CUDA_MODEL_CUH

#include "mr_cuda.h"

mr_status mr_cuda_model_create(const mr_config *cfg, mr_dtype dtype, int device, mr_cuda_model **out, mr_error *err);
void mr_cuda_model_free(mr_cuda_model *model);
mr_status mr_cuda_model_set_tensor(mr_cuda_model *model, mr_tensor_kind kind, int64_t layer, const float *host_data,
                                   int64_t numel, mr_error *err);
mr_status mr_cuda_model_set_exit_gain(mr_cuda_model *model, int64_t layer, const float *host_data, int64_t numel,
                                      mr_error *err);
mr_status mr_cuda_model_finish(mr_cuda_model *model, mr_error *err);
int64_t mr_cuda_model_weight_bytes(const mr_cuda_model *model);
int64_t mr_cuda_model_workspace_bytes(const mr_cuda_model *model, int64_t tokens);
mr_status mr_cuda_model_forward(mr_cuda_model *model, const mr_cuda_forward_args *args, mr_error *err);

#endif
