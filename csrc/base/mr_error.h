/* Status codes and error messages of the C core.
 *
 * The core never prints, exits or aborts: a failing call fills an mr_error and returns its
 * status; the binding (csrc/python/) turns it into a Python exception. */
#ifndef MR_ERROR_H
#define MR_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MR_OK = 0,
    MR_ERR_VALUE = 1,   /* bad argument or bad data: ValueError */
    MR_ERR_MEMORY = 2,  /* allocation failed: MemoryError */
    MR_ERR_RUNTIME = 3, /* BLAS / CUDA / internal failure: RuntimeError */
    MR_ERR_INDEX = 4,   /* id or position out of range: IndexError */
    MR_ERR_IO = 5       /* file read/write failure: OSError */
} mr_status;

typedef struct {
    mr_status status;
    char message[512];
} mr_error;

/* Records the failure in err (when non-NULL) and returns status, so callers can write
 * `return mr_fail(err, MR_ERR_VALUE, "bad %s", what);`. */
mr_status mr_fail(mr_error *err, mr_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

void mr_error_clear(mr_error *err);

#ifdef __cplusplus
}
#endif
#endif
