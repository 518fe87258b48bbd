/* The CUDA model behind the C ABI table (csrc/mr_cuda.h); see mr_cuda_model.cu. */
#ifndef MR_CUDA_MODEL_CUH
#define MR_CUDA_MODEL_CUH

#include "mr_cuda.h"

mr_status mr_cuda_model_create(const mr_config *cfg, mr_dtype dtype, int device, mr_cuda_model **out, mr_error *err);
void mr_cuda_model_free(mr_cuda_model *model);
mr_status mr_cuda_model_set_tensor(mr_cuda_model *model, mr_tensor_kind kind, int64_t layer, const float *host_data,
                                   int64_t numel, mr_error *err);
mr_status mr_cuda_model_finish(mr_cuda_model *model, mr_error *err);
int64_t mr_cuda_model_weight_bytes(const mr_cuda_model *model);
int64_t mr_cuda_model_workspace_bytes(const mr_cuda_model *model, int64_t tokens);
mr_status mr_cuda_model_forward(mr_cuda_model *model, const mr_cuda_forward_args *args, mr_error *err);

/* Makes `device` current for a scope and restores the caller's device afterwards, so a call
 * never changes which device the calling thread (or torch on it) works with. */
class MrDeviceGuard {
  public:
    explicit MrDeviceGuard(int device) : previous_(-1) {
        if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
        if (previous_ != device) status_ = cudaSetDevice(device);
    }
    ~MrDeviceGuard() {
        int now = -1;
        if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    }
    cudaError_t status() const { return status_; }

  private:
    int previous_;
    cudaError_t status_ = cudaSuccess;
};

#endif
