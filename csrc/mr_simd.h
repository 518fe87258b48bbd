/* Which vector path the kernels run on this CPU, chosen at run time. */
#ifndef MR_SIMD_H
#define MR_SIMD_H

#ifdef __cplusplus
extern "C" {
#endif

/* A short description for show_config(), e.g. "portable C". */
const char *mr_simd_path(void);

#ifdef __cplusplus
}
#endif
#endif
