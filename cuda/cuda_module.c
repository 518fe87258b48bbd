/* mambaret._cuda: exports the CUDA C ABI table (csrc/mr_cuda.h) in a capsule for mambaret._C,
 * plus device_count() so that mambaret.cuda_available() can ask without loading a model.
 * Argument parsing, exceptions and DLPack all live in csrc/python/ (cuda.c, cuda_model.c). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mr_cuda.h"

static PyObject *device_count(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    mr_error err = {0};
    int count = 0;
    if (mr_cuda_get_api()->device_count(&count, &err) != MR_OK) {
        PyErr_SetString(PyExc_RuntimeError, err.message);
        return NULL;
    }
    return PyLong_FromLong(count);
}

static PyMethodDef methods[] = {
    {"device_count", device_count, METH_NOARGS, "Number of visible CUDA devices (RuntimeError when the driver fails)."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    PyObject *capsule = PyCapsule_New((void *)mr_cuda_get_api(), MR_CUDA_CAPSULE_NAME, NULL);
    if (!capsule) return -1;
    if (PyModule_AddObject(module, "_C_API", capsule) < 0) {
        Py_DECREF(capsule);
        return -1;
    }
    return PyModule_AddIntConstant(module, "ABI_VERSION", MR_CUDA_ABI_VERSION);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mambaret._cuda",
    .m_doc = "The optional CUDA engine of mambaret (kernels + cuBLAS), reached through mambaret._C.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__cuda(void) { return PyModuleDef_Init(&module_def); }
