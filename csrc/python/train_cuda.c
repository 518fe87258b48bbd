/* The CUDA training kernels' binding (mambaret._C.cuda_train_*): device tensors arrive as raw
 * pointers (torch's data_ptr(), 0 for None) with their shapes and row strides, already checked
 * by mambaret.nn._kernels, and run on the given stream (torch's current one). The GIL is
 * released while the kernels are queued; status codes become exceptions. */
#include "py_common.h"

#include "mr_cuda.h"
#include "py_cuda.h"

#define PTR(v) ((void *)(uintptr_t)(v))

static PyObject *run_status(mr_status st, mr_error *err) {
    if (st) return mr_py_raise(err);
    Py_RETURN_NONE;
}

/* The scans' common checks: the stream parsed, the offsets (packed sequences) on the host. */
static int scan_stream_and_offsets(PyObject *stream_obj, void **stream, const void *offsets) {
    if (mr_py_parse_stream(stream_obj, stream) < 0) return -1;
    if (!offsets) {
        PyErr_SetString(PyExc_ValueError, "offsets must be a host pointer");
        return -1;
    }
    return 0;
}

static PyObject *cuda_train_conv_silu(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *names[] = {"device", "stream", "T", "E", "K", "pos", "x", "ldx", "w", "bias", "out",
                            "gout", "ldgo", "gx", "gw", "gbias", "backward", NULL};
    int device, backward = 0;
    PyObject *stream_obj;
    long long T, E, K, ldx, ldgo = 0;
    unsigned long long pos, x, w, bias, out = 0, gout = 0, gx = 0, gw = 0, gbias = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iOLLLKKLKKK|KLKKKp", names, &device, &stream_obj, &T, &E, &K, &pos, &x,
                                     &ldx, &w, &bias, &out, &gout, &ldgo, &gx, &gw, &gbias, &backward))
        return NULL;
    const mr_cuda_api *api = mr_py_cuda_api();
    if (!api) return NULL;
    mr_cuda_conv_train_args a = {.S = 1, .T = T, .E = E, .K = K, .pos = PTR(pos), .x = PTR(x), .ldx = ldx,
                                 .w = PTR(w), .bias = PTR(bias), .out = PTR(out), .gout = PTR(gout), .ldgo = ldgo,
                                 .gx = PTR(gx), .gw = PTR(gw), .gbias = PTR(gbias)};
    if (mr_py_parse_stream(stream_obj, &a.stream) < 0) return NULL;
    mr_error err = {0};
    mr_status st;
    Py_BEGIN_ALLOW_THREADS
    st = backward ? api->train_conv_silu_backward(device, &a, &err) : api->train_conv_silu(device, &a, &err);
    Py_END_ALLOW_THREADS
    return run_status(st, &err);
}

static PyObject *cuda_train_selective_scan(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *names[] = {"device", "stream", "S", "offsets", "T", "E", "N", "pos", "u", "ldu", "dt", "lddt",
                            "dt_bias", "A", "B", "C", "ldbc", "D", "z", "ldz", "boundaries", "y", "gy", "ldgy",
                            "gu", "gdt", "gdt_bias", "gA", "gB", "gC", "gD", "gz", "backward", NULL};
    int device, backward = 0;
    PyObject *stream_obj;
    long long S, T, E, N, ldu, lddt, ldbc, ldz, ldgy = 0;
    unsigned long long offsets, pos, u, dt, dt_bias, A, B, C, D, z, boundaries, y = 0, gy = 0, gu = 0, gdt = 0,
                                                                                 gdt_bias = 0, gA = 0, gB = 0, gC = 0,
                                                                                 gD = 0, gz = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iOLKLLLKKLKLKKKKLKKLK|KKLKKKKKKKKp", names, &device, &stream_obj, &S,
                                     &offsets, &T, &E, &N, &pos, &u, &ldu, &dt, &lddt, &dt_bias, &A, &B, &C, &ldbc,
                                     &D, &z, &ldz, &boundaries, &y, &gy, &ldgy, &gu, &gdt, &gdt_bias, &gA, &gB, &gC,
                                     &gD, &gz, &backward))
        return NULL;
    const mr_cuda_api *api = mr_py_cuda_api();
    if (!api) return NULL;
    mr_cuda_scan_train_args a = {.S = S, .T = T, .E = E, .N = N, .offsets = PTR(offsets), .pos = PTR(pos),
                                 .u = PTR(u), .ldu = ldu, .dt = PTR(dt), .lddt = lddt, .dt_bias = PTR(dt_bias),
                                 .A = PTR(A), .B = PTR(B), .C = PTR(C), .ldbc = ldbc, .D = PTR(D), .z = PTR(z),
                                 .ldz = ldz, .boundaries = PTR(boundaries), .y = PTR(y), .gy = PTR(gy),
                                 .ldgy = ldgy, .gu = PTR(gu), .gdt = PTR(gdt), .gdt_bias = PTR(gdt_bias),
                                 .gA = PTR(gA), .gB = PTR(gB), .gC = PTR(gC), .gD = PTR(gD), .gz = PTR(gz)};
    if (scan_stream_and_offsets(stream_obj, &a.stream, a.offsets) < 0) return NULL;
    mr_error err = {0};
    mr_status st;
    Py_BEGIN_ALLOW_THREADS
    st = backward ? api->train_selective_scan_backward(device, &a, &err) : api->train_selective_scan(device, &a, &err);
    Py_END_ALLOW_THREADS
    return run_status(st, &err);
}

/* Mamba-2's SSD scan: both entries take the same leading arguments; the forward then y, the
 * backward the output gradient and the gradients it writes. */
#define SSD_NAMES                                                                                                     \
    "device", "stream", "S", "offsets", "T", "H", "P", "G", "N", "x", "ldx", "dt", "lddt", "dt_bias", "A", "dt_min", \
        "dt_max", "B", "C", "ldbc", "D", "boundaries"
#define SSD_FORMAT "iOLKLLLLLKLKLKKddKKLKK"

static PyObject *ssd_scan_entry(PyObject *args, PyObject *kw, int backward) {
    static char *forward_names[] = {SSD_NAMES, "y", NULL};
    static char *backward_names[] = {SSD_NAMES, "gy", "ldgy", "gx", "gdt", "gdt_bias", "gA", "gB", "gC", "gD", NULL};
    int device;
    PyObject *stream_obj;
    long long S, T, H, P, G, N, ldx, lddt, ldbc, ldgy = 0;
    double dt_min, dt_max;
    unsigned long long offsets, x, dt, dt_bias, A, B, C, D, boundaries, y = 0, gy = 0, gx = 0, gdt = 0, gdt_bias = 0,
                                                                        gA = 0, gB = 0, gC = 0, gD = 0;
    const int ok = backward
                       ? PyArg_ParseTupleAndKeywords(args, kw, SSD_FORMAT "KLKKKKKKK", backward_names, &device,
                                                     &stream_obj, &S, &offsets, &T, &H, &P, &G, &N, &x, &ldx, &dt,
                                                     &lddt, &dt_bias, &A, &dt_min, &dt_max, &B, &C, &ldbc, &D,
                                                     &boundaries, &gy, &ldgy, &gx, &gdt, &gdt_bias, &gA, &gB, &gC, &gD)
                       : PyArg_ParseTupleAndKeywords(args, kw, SSD_FORMAT "K", forward_names, &device, &stream_obj, &S,
                                                     &offsets, &T, &H, &P, &G, &N, &x, &ldx, &dt, &lddt, &dt_bias, &A,
                                                     &dt_min, &dt_max, &B, &C, &ldbc, &D, &boundaries, &y);
    if (!ok) return NULL;
    const mr_cuda_api *api = mr_py_cuda_api();
    if (!api) return NULL;
    mr_cuda_ssd_train_args a = {.S = S, .T = T, .H = H, .P = P, .G = G, .N = N, .offsets = PTR(offsets),
                                .x = PTR(x), .ldx = ldx, .dt = PTR(dt), .lddt = lddt, .dt_bias = PTR(dt_bias),
                                .A = PTR(A), .dt_min = (float)dt_min, .dt_max = (float)dt_max, .B = PTR(B),
                                .C = PTR(C), .ldbc = ldbc, .D = PTR(D), .boundaries = PTR(boundaries), .y = PTR(y),
                                .gy = PTR(gy), .ldgy = ldgy, .gx = PTR(gx), .gdt = PTR(gdt),
                                .gdt_bias = PTR(gdt_bias), .gA = PTR(gA), .gB = PTR(gB), .gC = PTR(gC), .gD = PTR(gD)};
    if (scan_stream_and_offsets(stream_obj, &a.stream, a.offsets) < 0) return NULL;
    mr_error err = {0};
    mr_status st;
    Py_BEGIN_ALLOW_THREADS
    st = backward ? api->train_ssd_scan_backward(device, &a, &err) : api->train_ssd_scan(device, &a, &err);
    Py_END_ALLOW_THREADS
    return run_status(st, &err);
}

static PyObject *cuda_train_ssd_scan(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    return ssd_scan_entry(args, kw, 0);
}

static PyObject *cuda_train_ssd_scan_backward(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    return ssd_scan_entry(args, kw, 1);
}

static PyMethodDef train_cuda_methods[] = {
    {"cuda_train_conv_silu", (PyCFunction)(void (*)(void))cuda_train_conv_silu, METH_VARARGS | METH_KEYWORDS,
     "cuda_train_conv_silu(device, stream, T, E, K, pos, x, ldx, w, bias, out, [gout, ldgo, gx, gw, gbias, backward]): "
     "the packed conv + SiLU (or its backward) on device pointers"},
    {"cuda_train_selective_scan", (PyCFunction)(void (*)(void))cuda_train_selective_scan,
     METH_VARARGS | METH_KEYWORDS,
     "cuda_train_selective_scan(device, stream, S, offsets, T, E, N, pos, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, "
     "D, z, ldz, boundaries, y, [gy, ldgy, gu, gdt, gdt_bias, gA, gB, gC, gD, gz, backward]): the packed scan (or its "
     "backward) on device pointers; offsets is a host pointer"},
    {"cuda_train_ssd_scan", (PyCFunction)(void (*)(void))cuda_train_ssd_scan, METH_VARARGS | METH_KEYWORDS,
     "cuda_train_ssd_scan(device, stream, S, offsets, T, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, dt_max, B, "
     "C, ldbc, D, boundaries, y): Mamba-2's packed SSD scan on device pointers, keeping the chunk-entry states; "
     "offsets is a host pointer"},
    {"cuda_train_ssd_scan_backward", (PyCFunction)(void (*)(void))cuda_train_ssd_scan_backward,
     METH_VARARGS | METH_KEYWORDS,
     "cuda_train_ssd_scan_backward(device, stream, S, offsets, T, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, "
     "dt_max, B, C, ldbc, D, boundaries, gy, ldgy, gx, gdt, gdt_bias, gA, gB, gC, gD): its backward"},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_train_cuda(PyObject *module) { return PyModule_AddFunctions(module, train_cuda_methods); }
