/* The training entries of the ABI table (mr_cuda_api.cu lists them): the contracts are
 * mr_cuda.h's. */
#ifndef MR_CUDA_TRAIN_CUH
#define MR_CUDA_TRAIN_CUH

#include "mr_cuda.h"

mr_status mr_cuda_train_conv_silu(int device, const mr_cuda_conv_train_args *args, mr_error *err);
mr_status mr_cuda_train_conv_silu_backward(int device, const mr_cuda_conv_train_args *args, mr_error *err);
mr_status mr_cuda_train_selective_scan(int device, const mr_cuda_scan_train_args *args, mr_error *err);
mr_status mr_cuda_train_selective_scan_backward(int device, const mr_cuda_scan_train_args *args, mr_error *err);
mr_status mr_cuda_train_ssd_scan(int device, const mr_cuda_ssd_train_args *args, mr_error *err);
mr_status mr_cuda_train_ssd_scan_backward(int device, const mr_cuda_ssd_train_args *args, mr_error *err);

#endif
