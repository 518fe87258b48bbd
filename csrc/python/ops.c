/* The kernels exposed for the tests (op_*): each runs the fast op or its reference twin on NumPy
 * inputs, so the tests can compare them. */
#include "py_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "base/mr_parallel.h"
#include "gemm/mr_linear_packed.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"
#include "ops/mr_ssd_isa.h"

static PyArrayObject *new_f32(int ndim, int64_t d0, int64_t d1) {
    npy_intp dims[2] = {(npy_intp)d0, (npy_intp)d1};
    return (PyArrayObject *)PyArray_ZEROS(ndim, dims, NPY_FLOAT32, 0);
}

static PyArrayObject *optional_f32(PyObject *obj, int ndim, const char *what, int64_t d0, int64_t d1) {
    if (obj == Py_None) return NULL;
    PyArrayObject *a = mr_py_require_array(obj, NPY_FLOAT32, ndim, what);
    if (!a) return NULL;
    if (PyArray_DIM(a, 0) != d0 || (ndim == 2 && PyArray_DIM(a, 1) != d1)) {
        PyErr_Format(PyExc_ValueError, "%s has the wrong shape", what);
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

#define F32(a) ((a) ? (float *)PyArray_DATA(a) : NULL)

enum { VARIANT_AUTO, VARIANT_PORTABLE, VARIANT_REFERENCE };

/* "auto" (what the model runs: the best path for this CPU), "portable" or "reference". */
static int parse_variant(const char *s, int *variant) {
    static const char *const names[] = {"auto", "portable", "reference"};
    static const int values[] = {VARIANT_AUTO, VARIANT_PORTABLE, VARIANT_REFERENCE};
    return mr_py_parse_choice(s, "variant", names, values, 3, variant);
}

static PyObject *op_rmsnorm(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "weight", "eps", "variant", "threads", NULL};
    PyObject *xo, *wo, *threads_obj = Py_None;
    const char *variant_s = "auto";
    double eps;
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOd|sO", kwlist, &xo, &wo, &eps, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyArrayObject *x = mr_py_require_array(xo, NPY_FLOAT32, 2, "x");
    if (!x) return NULL;
    int64_t T = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1);
    PyArrayObject *w = optional_f32(wo, 1, "weight", d, 0), *out = NULL;
    if (!w) goto done;
    out = new_f32(2, T, d);
    if (!out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_rmsnorm_f32_ref(F32(x), d, F32(w), T, d, (float)eps, F32(out), d);
    else {
#pragma omp parallel num_threads(threads)
        mr_rmsnorm_f32(F32(x), d, F32(w), T, d, (float)eps, F32(out), d, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
done:
    Py_DECREF(x);
    Py_XDECREF(w);
    return (PyObject *)out;
}

static PyObject *op_l2_normalize(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "variant", "threads", NULL};
    PyObject *xo, *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|sO", kwlist, &xo, &variant_s, &threads_obj)) return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyArrayObject *x = mr_py_require_array(xo, NPY_FLOAT32, 2, "x");
    if (!x) return NULL;
    const int64_t n = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1);
    PyArrayObject *out = (PyArrayObject *)PyArray_NewCopy(x, NPY_CORDER);
    Py_DECREF(x);
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_l2_normalize_f32_ref(F32(out), n, d);
    else {
#pragma omp parallel num_threads(threads)
        mr_l2_normalize_f32(F32(out), n, d, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *op_conv_silu(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "weight", "bias", "state", "variant", "threads", NULL};
    PyObject *xo, *wo, *bo = Py_None, *so = Py_None, *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOsO", kwlist, &xo, &wo, &bo, &so, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyArrayObject *x = mr_py_require_array(xo, NPY_FLOAT32, 2, "x"), *w = NULL, *b = NULL, *s = NULL, *out = NULL,
                  *s_out = NULL;
    PyObject *result = NULL;
    if (!x) return NULL;
    int64_t L = PyArray_DIM(x, 0), E = PyArray_DIM(x, 1);
    w = mr_py_require_array(wo, NPY_FLOAT32, 2, "weight");
    if (!w) goto done;
    int64_t K = PyArray_DIM(w, 1);
    if (PyArray_DIM(w, 0) != E || K < 1 || K > MR_MAX_CONV_KERNEL) {
        PyErr_SetString(PyExc_ValueError, "weight must be [E, K] with 1 <= K <= 64");
        goto done;
    }
    b = optional_f32(bo, 1, "bias", E, 0);
    if (!b && PyErr_Occurred()) goto done;
    s = optional_f32(so, 2, "state", K - 1, E);
    if (!s && PyErr_Occurred()) goto done;
    out = new_f32(2, L, E);
    s_out = new_f32(2, K - 1, E);
    if (!out || !s_out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_conv_silu_f32_ref(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E);
    else if (variant == VARIANT_PORTABLE)
        mr_conv_silu_f32_portable(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E, 0, E);
    else {
#pragma omp parallel num_threads(threads)
        mr_conv_silu_f32(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E, mr_thread_index(),
                         mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OO)", out, s_out);
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(s);
    Py_XDECREF(out);
    Py_XDECREF(s_out);
    return result;
}

static PyObject *op_selective_scan(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"u", "dt", "A", "B", "C", "dt_bias", "D", "z", "state", "variant", "threads", NULL};
    PyObject *uo, *dto, *Ao, *Bo, *Co, *dbo = Py_None, *Do = Py_None, *zo = Py_None, *so = Py_None,
                                         *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|OOOOsO", kwlist, &uo, &dto, &Ao, &Bo, &Co, &dbo, &Do, &zo,
                                     &so, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *u = mr_py_require_array(uo, NPY_FLOAT32, 2, "u"), *dt = NULL, *A = NULL, *B = NULL, *C = NULL,
                  *db = NULL, *D = NULL, *z = NULL, *s = NULL, *y = NULL, *s_out = NULL;
    if (!u) return NULL;
    int64_t L = PyArray_DIM(u, 0), E = PyArray_DIM(u, 1);
    if (!(dt = optional_f32(dto, 2, "dt", L, E))) goto done;
    A = mr_py_require_array(Ao, NPY_FLOAT32, 2, "A");
    if (!A) goto done;
    int64_t N = PyArray_DIM(A, 1);
    if (PyArray_DIM(A, 0) != E || N < 1 || N > MR_MAX_STATE_SIZE) {
        PyErr_SetString(PyExc_ValueError, "A must be [E, N] with 1 <= N <= 256");
        goto done;
    }
    if (!(B = optional_f32(Bo, 2, "B", L, N)) || !(C = optional_f32(Co, 2, "C", L, N))) goto done;
    if (!(db = optional_f32(dbo, 1, "dt_bias", E, 0)) && PyErr_Occurred()) goto done;
    if (!(D = optional_f32(Do, 1, "D", E, 0)) && PyErr_Occurred()) goto done;
    if (!(z = optional_f32(zo, 2, "z", L, E)) && PyErr_Occurred()) goto done;
    if (!(s = optional_f32(so, 2, "state", E, N)) && PyErr_Occurred()) goto done;
    y = new_f32(2, L, E);
    s_out = new_f32(2, E, N);
    if (!y || !s_out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_selective_scan_f32_ref(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D), F32(z),
                                  E, F32(s), F32(s_out), F32(y), E);
    else if (variant == VARIANT_PORTABLE)
        mr_selective_scan_f32_portable(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D),
                                       F32(z), E, F32(s), F32(s_out), F32(y), E, 0, E);
    else {
#pragma omp parallel num_threads(threads)
        mr_selective_scan_f32(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D), F32(z), E,
                              F32(s), F32(s_out), F32(y), E, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OO)", y, s_out);
done:
    Py_XDECREF(u);
    Py_XDECREF(dt);
    Py_XDECREF(A);
    Py_XDECREF(B);
    Py_XDECREF(C);
    Py_XDECREF(db);
    Py_XDECREF(D);
    Py_XDECREF(z);
    Py_XDECREF(s);
    Py_XDECREF(y);
    Py_XDECREF(s_out);
    return result;
}

/* Mamba-2's scan on x [L, H*P] with heads=H; B and C are [L, G*N]; state is [H, N*P]. */
enum { SSD_X, SSD_DT, SSD_A, SSD_B, SSD_C, SSD_DT_BIAS, SSD_D, SSD_STATE, SSD_Y, SSD_STATE_OUT, SSD_ARRAYS };

static PyObject *op_ssd_scan(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "dt", "A", "B", "C", "heads", "groups", "dt_bias", "D", "state", "dt_min", "dt_max",
                             "variant", "threads", NULL};
    PyObject *xo, *dto, *Ao, *Bo, *Co, *dbo = Py_None, *Do = Py_None, *so = Py_None, *threads_obj = Py_None;
    long long heads, groups;
    double dt_min = 0.0, dt_max = INFINITY;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOLL|OOOddsO", kwlist, &xo, &dto, &Ao, &Bo, &Co, &heads,
                                     &groups, &dbo, &Do, &so, &dt_min, &dt_max, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *a[SSD_ARRAYS] = {0};
    if (!(a[SSD_X] = mr_py_require_array(xo, NPY_FLOAT32, 2, "x"))) return NULL;
    const int64_t L = PyArray_DIM(a[SSD_X], 0), E = PyArray_DIM(a[SSD_X], 1), H = heads, G = groups;
    if (H < 1 || G < 1 || E % H || H % G) {
        PyErr_SetString(PyExc_ValueError, "heads must divide x's width and groups must divide heads");
        goto done;
    }
    const int64_t P = E / H;
    if (!(a[SSD_DT] = optional_f32(dto, 2, "dt", L, H)) || !(a[SSD_A] = optional_f32(Ao, 1, "A", H, 0)) ||
        !(a[SSD_B] = mr_py_require_array(Bo, NPY_FLOAT32, 2, "B")))
        goto done;
    const int64_t N = PyArray_DIM(a[SSD_B], 1) / G;
    if (PyArray_DIM(a[SSD_B], 0) != L || N < 1 || N * G != PyArray_DIM(a[SSD_B], 1)) {
        PyErr_SetString(PyExc_ValueError, "B must be [L, groups * N]");
        goto done;
    }
    if (!(a[SSD_C] = optional_f32(Co, 2, "C", L, G * N))) goto done;
    if ((!(a[SSD_DT_BIAS] = optional_f32(dbo, 1, "dt_bias", H, 0)) && PyErr_Occurred()) ||
        (!(a[SSD_D] = optional_f32(Do, 1, "D", H, 0)) && PyErr_Occurred()) ||
        (!(a[SSD_STATE] = optional_f32(so, 2, "state", H, N * P)) && PyErr_Occurred()))
        goto done;
    if (!(a[SSD_Y] = new_f32(2, L, E)) || !(a[SSD_STATE_OUT] = new_f32(2, H, N * P))) goto done;
    float *x = F32(a[SSD_X]), *dt = F32(a[SSD_DT]), *db = F32(a[SSD_DT_BIAS]), *A = F32(a[SSD_A]), *B = F32(a[SSD_B]),
          *C = F32(a[SSD_C]), *D = F32(a[SSD_D]), *s = F32(a[SSD_STATE]), *y = F32(a[SSD_Y]),
          *s_out = F32(a[SSD_STATE_OUT]);
    const float lo = (float)dt_min, hi = (float)dt_max;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_ssd_scan_f32_ref(L, H, P, G, N, x, E, dt, H, db, A, lo, hi, B, C, G * N, D, s, s_out, y, E);
    else if (variant == VARIANT_PORTABLE)
        mr_ssd_scan_f32_portable(L, H, P, G, N, x, E, dt, H, db, A, lo, hi, B, C, G * N, D, s, s_out, y, E, 0, H);
    else {
#pragma omp parallel num_threads(threads)
        mr_ssd_scan_f32(L, H, P, G, N, x, E, dt, H, db, A, lo, hi, B, C, G * N, D, s, s_out, y, E, mr_thread_index(),
                        mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OO)", a[SSD_Y], a[SSD_STATE_OUT]);
done:
    for (int i = 0; i < SSD_ARRAYS; i++) Py_XDECREF(a[i]);
    return result;
}

/* Mamba-2's gated RMSNorm of y [T, E] by z [T, E] over groups of `group` channels. */
static PyObject *op_gated_rmsnorm(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"y", "z", "weight", "group", "eps", "variant", "threads", NULL};
    PyObject *yo, *zo, *wo, *threads_obj = Py_None;
    long long group;
    double eps;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOLd|sO", kwlist, &yo, &zo, &wo, &group, &eps, &variant_s,
                                     &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *y = mr_py_require_array(yo, NPY_FLOAT32, 2, "y"), *z = NULL, *w = NULL, *out = NULL;
    if (!y) return NULL;
    const int64_t T = PyArray_DIM(y, 0), E = PyArray_DIM(y, 1);
    if (group < 1 || E % group) {
        PyErr_SetString(PyExc_ValueError, "group must divide y's width");
        goto done;
    }
    if (!(z = optional_f32(zo, 2, "z", T, E)) || !(w = optional_f32(wo, 1, "weight", E, 0))) goto done;
    if (!(out = new_f32(2, T, E))) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_gated_rmsnorm_f32_ref(T, E, group, F32(y), E, F32(z), E, F32(w), (float)eps, F32(out), E);
    else {
#pragma omp parallel num_threads(threads)
        mr_gated_rmsnorm_f32(T, E, group, F32(y), E, F32(z), E, F32(w), (float)eps, F32(out), E, mr_thread_index(),
                             mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(y);
    Py_XDECREF(z);
    Py_XDECREF(w);
    Py_XDECREF(out);
    return result;
}

/* out = a[:, :K] @ w.T with w [N, K] packed here as the model packs it; a is [T, lda >= K]. */
static PyObject *op_linear_packed(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"a", "weight", "variant", "threads", NULL};
    PyObject *ao, *wo, *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|sO", kwlist, &ao, &wo, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    if (variant == VARIANT_PORTABLE) {
        PyErr_SetString(PyExc_ValueError, "the packed linear kernels have no portable variant (the BLAS runs it)");
        return NULL;
    }
    PyArrayObject *a = mr_py_require_array(ao, NPY_FLOAT32, 2, "a"), *w = NULL, *out = NULL;
    float *packed = NULL;
    if (!a) return NULL;
    w = mr_py_require_array(wo, NPY_FLOAT32, 2, "weight");
    if (!w) goto done;
    int64_t T = PyArray_DIM(a, 0), lda = PyArray_DIM(a, 1), N = PyArray_DIM(w, 0), K = PyArray_DIM(w, 1);
    if (K > lda || K < 1 || N < 1) {
        PyErr_SetString(PyExc_ValueError, "weight must be [N, K] with 1 <= K <= a.shape[1] and N >= 1");
        goto done;
    }
    if (posix_memalign((void **)&packed, 64, (size_t)mr_packed_weight_floats(N, K) * sizeof(float)) != 0) {
        packed = NULL;
        PyErr_NoMemory();
        goto done;
    }
    out = new_f32(2, T, N);
    if (!out) goto done;
    Py_BEGIN_ALLOW_THREADS
    mr_pack_weight_f32(F32(w), N, K, packed);
    if (variant == VARIANT_REFERENCE)
        mr_linear_packed_f32_ref(T, N, K, F32(a), lda, packed, F32(out), N);
    else {
#pragma omp parallel num_threads(threads)
        mr_linear_packed_f32(T, N, K, F32(a), lda, packed, F32(out), N, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
done:
    free(packed);
    Py_DECREF(a);
    Py_XDECREF(w);
    return (PyObject *)out;
}

/* exp / softplus of a SIMD path ("avx2" or "avx512") over a float32 array, for the accuracy tests. */
static PyObject *op_vector_math(PyObject *m, PyObject *args) {
    (void)m;
    const char *fn, *isa;
    PyObject *xo;
    if (!PyArg_ParseTuple(args, "ssO:op_vector_math", &fn, &isa, &xo)) return NULL;
    int wide = strcmp(isa, "avx512") == 0;
    if (!wide && strcmp(isa, "avx2") != 0) {
        PyErr_SetString(PyExc_ValueError, "isa must be 'avx2' or 'avx512'");
        return NULL;
    }
    if (mr_isa_best() < (wide ? MR_ISA_AVX512 : MR_ISA_AVX2)) {
        PyErr_Format(PyExc_RuntimeError, "this CPU (or MAMBARET_SIMD) does not allow %s", isa);
        return NULL;
    }
    int is_exp = strcmp(fn, "exp") == 0;
    if (!is_exp && strcmp(fn, "softplus") != 0) {
        PyErr_SetString(PyExc_ValueError, "fn must be 'exp' or 'softplus'");
        return NULL;
    }
    PyArrayObject *x = mr_py_require_array(xo, NPY_FLOAT32, 1, "x");
    if (!x) return NULL;
    PyArrayObject *out = new_f32(1, PyArray_DIM(x, 0), 0);
    if (out) {
        npy_intp n = PyArray_DIM(x, 0);
        if (wide) (is_exp ? mr_exp_f32_avx512 : mr_softplus_f32_avx512)(F32(x), F32(out), n);
        else (is_exp ? mr_exp_f32_avx2 : mr_softplus_f32_avx2)(F32(x), F32(out), n);
    }
    Py_DECREF(x);
    return (PyObject *)out;
}

static PyObject *op_gemm(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"a", "w", "bias", "out", "fallback", "threads", NULL};
    PyObject *ao, *wo, *bo = Py_None, *oo = Py_None, *threads_obj = Py_None;
    int fallback = 0, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOpO", kwlist, &ao, &wo, &bo, &oo, &fallback, &threads_obj))
        return NULL;
    if (mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *a = mr_py_require_array(ao, NPY_FLOAT32, 2, "a"), *w = NULL, *b = NULL, *out = NULL;
    if (!a) return NULL;
    int64_t M = PyArray_DIM(a, 0), K = PyArray_DIM(a, 1);
    w = mr_py_require_array(wo, NPY_FLOAT32, 2, "w");
    if (!w) goto done;
    int64_t N = PyArray_DIM(w, 0);
    if (PyArray_DIM(w, 1) != K) {
        PyErr_SetString(PyExc_ValueError, "w must be [N, K] with a's K");
        goto done;
    }
    if (!(b = optional_f32(bo, 1, "bias", N, 0)) && PyErr_Occurred()) goto done;
    float beta = 0.0f;
    if (oo != Py_None) {
        PyArrayObject *given = optional_f32(oo, 2, "out", M, N);
        if (!given) goto done;
        out = (PyArrayObject *)PyArray_NewCopy(given, NPY_CORDER);
        Py_DECREF(given);
        beta = 1.0f;
    } else {
        out = new_f32(2, M, N);
    }
    if (!out) goto done;
    mr_blas fb;
    mr_blas_init_fallback(&fb);
    const mr_blas *blas = fallback ? &fb : &mr_py_state_of(module)->blas;
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    mr_blas_set_threads(blas, threads);
    s = mr_gemm_f32(blas, M, N, K, F32(a), K, F32(w), K, F32(b), beta, F32(out), N, threads, &err);
    Py_END_ALLOW_THREADS
    if (s) {
        mr_py_raise(&err);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(a);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

static PyMethodDef ops_functions[] = {
    {"op_rmsnorm", (PyCFunction)(void (*)(void))op_rmsnorm, METH_VARARGS | METH_KEYWORDS,
     "op_rmsnorm(x, weight, eps, variant='auto', threads=1): one kernel, for tests."},
    {"op_l2_normalize", (PyCFunction)(void (*)(void))op_l2_normalize, METH_VARARGS | METH_KEYWORDS,
     "op_l2_normalize(x, variant='auto', threads=1): a copy of x with rows divided by max(norm, 1e-12)."},
    {"op_conv_silu", (PyCFunction)(void (*)(void))op_conv_silu, METH_VARARGS | METH_KEYWORDS,
     "op_conv_silu(x, weight, bias=None, state=None, variant='auto', threads=1) -> (out, state)"},
    {"op_linear_packed", (PyCFunction)(void (*)(void))op_linear_packed, METH_VARARGS | METH_KEYWORDS,
     "op_linear_packed(a, weight, variant='auto', threads=1): a[:, :K] @ weight.T through the packed kernels"},
    {"op_selective_scan", (PyCFunction)(void (*)(void))op_selective_scan, METH_VARARGS | METH_KEYWORDS,
     "op_selective_scan(u, dt, A, B, C, dt_bias=None, D=None, z=None, state=None, variant='auto', threads=1)"
     " -> (y, state)"},
    {"op_ssd_scan", (PyCFunction)(void (*)(void))op_ssd_scan, METH_VARARGS | METH_KEYWORDS,
     "op_ssd_scan(x, dt, A, B, C, heads, groups, dt_bias=None, D=None, state=None, dt_min=0, dt_max=inf, "
     "variant='auto', threads=1) -> (y, state)"},
    {"op_gated_rmsnorm", (PyCFunction)(void (*)(void))op_gated_rmsnorm, METH_VARARGS | METH_KEYWORDS,
     "op_gated_rmsnorm(y, z, weight, group, eps, variant='auto', threads=1) -> out"},
    {"op_vector_math", (PyCFunction)op_vector_math, METH_VARARGS,
     "op_vector_math(fn, isa, x): 'exp' or 'softplus' of the 'avx2' or 'avx512' path over a float32 vector."},
    {"op_gemm", (PyCFunction)(void (*)(void))op_gemm, METH_VARARGS | METH_KEYWORDS,
     "op_gemm(a, w, bias=None, out=None, fallback=False, threads=1): a @ w.T (+ bias) (+ out)"},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_ops(PyObject *module) { return PyModule_AddFunctions(module, ops_functions); }
