/* mambaret._C: module init and state, the status-to-exception map and the argument helpers every
 * binding file shares. Each concern (tensor.c, model.c, cuda.c, cuda_model.c, ops.c, search.c)
 * adds its own functions and types through mr_py_add_<concern>(). */
#define MR_PY_IMPORTS_NUMPY
#include "py_common.h"

#include <stdio.h>
#include <string.h>

#include "ops/mr_ops.h"
#include "base/mr_parallel.h"
#include "base/mr_cpu.h"
#include "gemm/mr_linear_int8.h"

mr_py_state *mr_py_state_of(PyObject *module) { return (mr_py_state *)PyModule_GetState(module); }

int mr_py_add_type(PyObject *module, PyType_Spec *spec, const char *name, PyTypeObject **out) {
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
    if (!type) return -1;
    if (PyModule_AddObjectRef(module, name, type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    if (out) *out = (PyTypeObject *)type; /* the state keeps this reference */
    else Py_DECREF(type);
    return 0;
}

PyObject *mr_py_raise(const mr_error *err) {
    PyObject *type;
    switch (err->status) {
    case MR_ERR_VALUE: type = PyExc_ValueError; break;
    case MR_ERR_MEMORY: type = PyExc_MemoryError; break;
    case MR_ERR_INDEX: type = PyExc_IndexError; break;
    case MR_ERR_IO: type = PyExc_OSError; break;
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, err->message[0] ? err->message : "unknown error in the mambaret core");
    return NULL;
}

PyArrayObject *mr_py_require_array(PyObject *obj, int type, int ndim, const char *what) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray, got %s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != type) {
        PyArray_Descr *want = PyArray_DescrFromType(type);
        PyErr_Format(PyExc_TypeError, "%s must have dtype %S, got %S", what, (PyObject *)want,
                     (PyObject *)PyArray_DESCR(arr));
        Py_XDECREF(want);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", what, ndim, PyArray_NDIM(arr));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr) || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous, aligned and in native byte order", what);
        return NULL;
    }
    Py_INCREF(arr);
    return arr;
}

int mr_py_parse_threads(PyObject *obj, int *threads) {
    if (obj == NULL || obj == Py_None) {
        *threads = 1;
        return 0;
    }
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (mr_py_check_threads(v) < 0) return -1;
    *threads = (int)v;
    return 0;
}

int mr_py_check_threads(long threads) {
    if (threads <= 0 || threads > 4096) {
        PyErr_Format(PyExc_ValueError, "threads must be between 1 and 4096, got %ld", threads);
        return -1;
    }
    return 0;
}

int mr_py_parse_count(PyObject *obj, const char *what, long long *out) {
    *out = PyLong_AsLongLong(obj);
    if (*out == -1 && PyErr_Occurred()) return -1;
    if (*out < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
        return -1;
    }
    return 0;
}

int mr_py_parse_choice(const char *s, const char *what, const char *const *names, const int *values, int count,
                       int *out) {
    for (int i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = values[i];
            return 0;
        }
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; i < count && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s'%s'", i == 0 ? "" : i == count - 1 ? " or " : ", ",
                                 names[i]);
    PyErr_Format(PyExc_ValueError, "%s must be %s, got '%s'", what, list, s);
    return -1;
}

int mr_py_parse_device_pair(PyObject *obj, long *type, long *id) {
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2) {
        PyErr_SetString(PyExc_TypeError, "dl_device must be a (device_type, device_id) tuple");
        return -1;
    }
    *type = PyLong_AsLong(PyTuple_GET_ITEM(obj, 0));
    *id = PyLong_AsLong(PyTuple_GET_ITEM(obj, 1));
    return PyErr_Occurred() ? -1 : 0;
}

/* ---- module functions ---------------------------------------------------------------------- */

static PyObject *set_blas(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "sgemm_symbol", "threads_symbol", "name", NULL};
    const char *path = NULL, *sgemm_symbol = "cblas_sgemm", *threads_symbol = "", *name = "";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "z|sss:set_blas", kwlist, &path, &sgemm_symbol, &threads_symbol,
                                     &name))
        return NULL;
    mr_py_state *st = mr_py_state_of(module);
    mr_blas next;
    if (!path) {
        mr_blas_init_fallback(&next);
    } else {
        mr_error err = {0};
        mr_status s;
        Py_BEGIN_ALLOW_THREADS
        s = mr_blas_open(&next, path, sgemm_symbol, threads_symbol, name, &err);
        Py_END_ALLOW_THREADS
        if (s) return mr_py_raise(&err);
    }
    /* the previous library stays loaded: models created with it still call into it */
    st->blas = next;
    Py_RETURN_NONE;
}

static PyObject *build_info(PyObject *module, PyObject *unused) {
    (void)unused;
    mr_py_state *st = mr_py_state_of(module);
#ifdef _OPENMP
    PyObject *openmp = Py_True;
#else
    PyObject *openmp = Py_False;
#endif
    return Py_BuildValue("{s:s,s:s,s:s,s:O,s:i,s:i}", "blas", st->blas.name, "simd", mr_simd_path(), "int8",
                         mr_int8_path(), "openmp", openmp, "max_threads", mr_max_threads(), "dlpack_version",
                         MR_DLPACK_MAJOR_VERSION);
}

/* For tests and benchmarks that walk every vector path in one process: MAMBARET_SIMD is read once. */
static PyObject *set_simd_limit(PyObject *module, PyObject *arg) {
    (void)module;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    const int isa = mr_isa_parse(name);
    if (isa < MR_ISA_AUTO) {
        PyErr_Format(PyExc_ValueError, "simd limit must be auto, portable, avx2 or avx512, got %s", name);
        return NULL;
    }
    return PyUnicode_FromString(mr_isa_name(mr_cpu_set_isa_limit((mr_isa)isa)));
}

static PyMethodDef module_methods[] = {
    {"set_blas", (PyCFunction)(void (*)(void))set_blas, METH_VARARGS | METH_KEYWORDS,
     "set_blas(path, sgemm_symbol='cblas_sgemm', threads_symbol='', name='')\n"
     "Loads a BLAS for models created afterwards; path=None selects the built-in fallback."},
    {"build_info", (PyCFunction)build_info, METH_NOARGS, "BLAS, SIMD path and thread facts of this build."},
    {"set_simd_limit", (PyCFunction)set_simd_limit, METH_O,
     "set_simd_limit(name) -> previous\n"
     "Lowers (or, with 'auto', lifts) the vector path for this process, as MAMBARET_SIMD does at start."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    mr_py_state *st = mr_py_state_of(module);
    mr_blas_init_fallback(&st->blas);
    if (mr_py_add_tensor(module) < 0 || mr_py_add_model(module) < 0 || mr_py_add_cuda(module) < 0 ||
        mr_py_add_ops(module) < 0 || mr_py_add_search(module) < 0 || mr_py_add_train(module) < 0 || mr_py_add_train_cuda(module) < 0 ||
        mr_py_add_search_codes(module) < 0 || mr_py_add_int8(module) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MAX_STATE_SIZE", MR_MAX_STATE_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_CONV_KERNEL", MR_MAX_CONV_KERNEL) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg) {
    mr_py_state *st = mr_py_state_of(module);
    if (st) {
        Py_VISIT(st->tensor_type);
        Py_VISIT(st->model_type);
        Py_VISIT(st->cuda_tensor_type);
    }
    return 0;
}

static int module_clear(PyObject *module) {
    mr_py_state *st = mr_py_state_of(module);
    if (st) {
        Py_CLEAR(st->tensor_type);
        Py_CLEAR(st->model_type);
        Py_CLEAR(st->cuda_tensor_type);
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mambaret._C",
    .m_doc = "The C core of mambaret: the Mamba-1 encoder, its kernels and DLPack tensors.",
    .m_size = sizeof(mr_py_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    return PyModuleDef_Init(&module_def);
}
