/* The training kernels' binding (mambaret._C.train_*): arrays come in through the buffer protocol
 * (NumPy views of torch tensors, so nothing is copied), are checked, and the kernels run over
 * an OpenMP team with the GIL released. Outputs are allocated by the caller. */
#include "py_common.h"

#include <stdlib.h>
#include <string.h>

#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"
#include "base/mr_parallel.h"

/* A float32 matrix (or vector) seen through the buffer protocol. */
typedef struct {
    Py_buffer buf;
    int held;
    float *data;
    int64_t rows, cols, ld;
} matrix_view;

static void release_views(matrix_view *views, int count) {
    for (int i = 0; i < count; i++)
        if (views[i].held) {
            PyBuffer_Release(&views[i].buf);
            views[i].held = 0;
        }
}

/* Views obj as a float32 array of `ndim` (1 or 2) dims with unit inner stride; rows / cols of
 * -1 accept any size, else they must match. None gives data NULL when optional. */
static int get_matrix(PyObject *obj, const char *name, int ndim, int64_t rows, int64_t cols, int writable,
                      int optional, matrix_view *view) {
    memset(view, 0, sizeof(*view));
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_TypeError, "%s must be an array, not None", name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, &view->buf, writable ? PyBUF_RECORDS : PyBUF_RECORDS_RO) < 0) return -1;
    view->held = 1;
    const Py_buffer *b = &view->buf;
    if (b->itemsize != 4 || !b->format || strcmp(b->format, "f") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32", name);
        return -1;
    }
    if (b->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", name, ndim, b->ndim);
        return -1;
    }
    view->rows = b->shape[0];
    view->cols = ndim == 2 ? b->shape[1] : 1;
    if ((ndim == 2 && b->shape[1] > 1 && b->strides[1] != 4) || (ndim == 1 && b->shape[0] > 1 && b->strides[0] != 4)) {
        PyErr_Format(PyExc_ValueError, "%s must have contiguous rows", name);
        return -1;
    }
    view->ld = ndim == 2 ? (view->rows > 1 ? b->strides[0] / 4 : view->cols) : 1;
    if (ndim == 2 && (b->strides[0] % 4 != 0 || (view->rows > 1 && view->ld < view->cols))) {
        PyErr_Format(PyExc_ValueError, "%s has an unsupported row stride", name);
        return -1;
    }
    if ((rows >= 0 && view->rows != rows) || (cols >= 0 && view->cols != cols)) {
        PyErr_Format(PyExc_ValueError, "%s has shape (%lld, %lld), expected (%lld, %lld)", name,
                     (long long)view->rows, (long long)view->cols, (long long)rows, (long long)cols);
        return -1;
    }
    view->data = (float *)b->buf;
    return 0;
}

/* offsets: a contiguous int64 vector [S + 1] from 0, non-decreasing. */
typedef struct {
    Py_buffer buf;
    int held;
    const int64_t *data;
    int64_t count; /* S */
    int64_t longest;
} offsets_view;

static int get_offsets(PyObject *obj, offsets_view *view) {
    memset(view, 0, sizeof(*view));
    if (PyObject_GetBuffer(obj, &view->buf, PyBUF_RECORDS_RO) < 0) return -1;
    view->held = 1;
    const Py_buffer *b = &view->buf;
    if (b->itemsize != 8 || !b->format || (strcmp(b->format, "l") != 0 && strcmp(b->format, "q") != 0) ||
        b->ndim != 1 || (b->shape[0] > 1 && b->strides[0] != 8) || b->shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must be a contiguous int64 vector [S + 1]");
        return -1;
    }
    view->data = (const int64_t *)b->buf;
    view->count = b->shape[0] - 1;
    if (view->data[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "offsets must start at 0");
        return -1;
    }
    for (int64_t s = 0; s < view->count; s++) {
        int64_t len = view->data[s + 1] - view->data[s];
        if (len < 0) {
            PyErr_SetString(PyExc_ValueError, "offsets must not decrease");
            return -1;
        }
        if (len > view->longest) view->longest = len;
    }
    return 0;
}

static void release_offsets(offsets_view *view) {
    if (view->held) PyBuffer_Release(&view->buf);
    view->held = 0;
}

/* ------------------------------------------------------------------------------------------ */

static PyObject *train_scan_boundary_count(PyObject *self, PyObject *args) {
    PyObject *offsets_obj;
    long long chunk;
    if (!PyArg_ParseTuple(args, "OL", &offsets_obj, &chunk)) return NULL;
    if (chunk < 1) return PyErr_Format(PyExc_ValueError, "chunk must be at least 1");
    offsets_view off;
    if (get_offsets(offsets_obj, &off) < 0) {
        release_offsets(&off);
        return NULL;
    }
    int64_t count = mr_scan_boundary_count(off.count, off.data, chunk);
    release_offsets(&off);
    return PyLong_FromLongLong(count);
}

enum { CV_X, CV_W, CV_BIAS, CV_GOUT, CV_GX, CV_GW, CV_GBIAS, CV_COUNT };

/* train_conv_silu(x [T, E], w [E, K], bias [E] | None, offsets, out [T, E], threads) */
static PyObject *train_conv_silu(PyObject *self, PyObject *args) {
    PyObject *x_obj, *w_obj, *bias_obj, *offsets_obj, *out_obj;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOi", &x_obj, &w_obj, &bias_obj, &offsets_obj, &out_obj, &threads)) return NULL;
    matrix_view v[5] = {0};
    offsets_view off = {0};
    PyObject *result = NULL;
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    if (get_matrix(x_obj, "x", 2, off.data[off.count], -1, 0, 0, &v[0]) < 0) goto done;
    const int64_t E = v[0].cols;
    if (get_matrix(w_obj, "weight", 2, E, -1, 0, 0, &v[1]) < 0 || get_matrix(bias_obj, "bias", 1, E, 1, 0, 1, &v[2]) < 0 ||
        get_matrix(out_obj, "out", 2, v[0].rows, E, 1, 0, &v[3]) < 0)
        goto done;
    const int64_t K = v[1].cols;
    if (K < 1 || K > MR_MAX_CONV_KERNEL || v[1].ld != K) {
        PyErr_Format(PyExc_ValueError, "weight must be a contiguous [E, K] array with 1 <= K <= %d", MR_MAX_CONV_KERNEL);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    mr_conv_silu_packed_f32(off.count, off.data, E, K, v[0].data, v[0].ld, v[1].data, v[2].data, v[3].data, v[3].ld,
                            mr_thread_index(), mr_thread_count());
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_views(v, 5);
    release_offsets(&off);
    return result;
}

/* train_conv_silu_backward(x, w, bias | None, offsets, gout, gx, gw, gbias | None, threads, reference) */
static PyObject *train_conv_silu_backward(PyObject *self, PyObject *args) {
    PyObject *obj[CV_COUNT], *offsets_obj;
    int threads, reference;
    if (!PyArg_ParseTuple(args, "OOOOOOOOip", &obj[CV_X], &obj[CV_W], &obj[CV_BIAS], &offsets_obj, &obj[CV_GOUT],
                          &obj[CV_GX], &obj[CV_GW], &obj[CV_GBIAS], &threads, &reference))
        return NULL;
    matrix_view v[CV_COUNT] = {0};
    offsets_view off = {0};
    PyObject *result = NULL;
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    const int64_t T = off.data[off.count];
    if (get_matrix(obj[CV_X], "x", 2, T, -1, 0, 0, &v[CV_X]) < 0) goto done;
    const int64_t E = v[CV_X].cols;
    if (get_matrix(obj[CV_W], "weight", 2, E, -1, 0, 0, &v[CV_W]) < 0) goto done;
    const int64_t K = v[CV_W].cols;
    if (K < 1 || K > MR_MAX_CONV_KERNEL || v[CV_W].ld != K) {
        PyErr_Format(PyExc_ValueError, "weight must be a contiguous [E, K] array with 1 <= K <= %d", MR_MAX_CONV_KERNEL);
        goto done;
    }
    if (get_matrix(obj[CV_BIAS], "bias", 1, E, 1, 0, 1, &v[CV_BIAS]) < 0 ||
        get_matrix(obj[CV_GOUT], "grad_out", 2, T, E, 0, 0, &v[CV_GOUT]) < 0 ||
        get_matrix(obj[CV_GX], "grad_x", 2, T, E, 1, 0, &v[CV_GX]) < 0 ||
        get_matrix(obj[CV_GW], "grad_weight", 2, E, K, 1, 0, &v[CV_GW]) < 0 ||
        get_matrix(obj[CV_GBIAS], "grad_bias", 1, E, 1, 1, 1, &v[CV_GBIAS]) < 0)
        goto done;
    if ((T > 1 && v[CV_GX].ld != E) || v[CV_GW].ld != K) {
        PyErr_SetString(PyExc_ValueError, "gradient outputs must be contiguous");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (reference) {
        mr_conv_silu_backward_f32_ref(off.count, off.data, E, K, v[CV_X].data, v[CV_X].ld, v[CV_W].data,
                                      v[CV_BIAS].data, v[CV_GOUT].data, v[CV_GOUT].ld, v[CV_GX].data,
                                      v[CV_GW].data, v[CV_GBIAS].data);
    } else {
#pragma omp parallel num_threads(threads)
        mr_conv_silu_backward_f32(off.count, off.data, E, K, v[CV_X].data, v[CV_X].ld, v[CV_W].data,
                                  v[CV_BIAS].data, v[CV_GOUT].data, v[CV_GOUT].ld, v[CV_GX].data, v[CV_GW].data,
                                  v[CV_GBIAS].data, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_views(v, CV_COUNT);
    release_offsets(&off);
    return result;
}

/* the scan's inputs, in argument order */
enum { SC_U, SC_DT, SC_DT_BIAS, SC_A, SC_B, SC_C, SC_D, SC_Z, SC_INPUTS };

typedef struct {
    matrix_view v[SC_INPUTS];
    int64_t T, E, N, ldbc;
} scan_inputs;

static int get_scan_inputs(PyObject **obj, int64_t T, scan_inputs *in) {
    matrix_view *v = in->v;
    in->T = T;
    if (get_matrix(obj[SC_U], "u", 2, T, -1, 0, 0, &v[SC_U]) < 0) return -1;
    const int64_t E = in->E = v[SC_U].cols;
    if (get_matrix(obj[SC_A], "A", 2, E, -1, 0, 0, &v[SC_A]) < 0) return -1;
    const int64_t N = in->N = v[SC_A].cols;
    if (N < 1 || N > MR_MAX_STATE_SIZE || v[SC_A].ld != N) {
        PyErr_Format(PyExc_ValueError, "A must be a contiguous [E, N] array with 1 <= N <= %d", MR_MAX_STATE_SIZE);
        return -1;
    }
    if (get_matrix(obj[SC_DT], "dt", 2, T, E, 0, 0, &v[SC_DT]) < 0 ||
        get_matrix(obj[SC_DT_BIAS], "dt_bias", 1, E, 1, 0, 1, &v[SC_DT_BIAS]) < 0 ||
        get_matrix(obj[SC_B], "B", 2, T, N, 0, 0, &v[SC_B]) < 0 ||
        get_matrix(obj[SC_C], "C", 2, T, N, 0, 0, &v[SC_C]) < 0 ||
        get_matrix(obj[SC_D], "D", 1, E, 1, 0, 1, &v[SC_D]) < 0 ||
        get_matrix(obj[SC_Z], "z", 2, T, E, 0, 1, &v[SC_Z]) < 0)
        return -1;
    if (T > 1 && v[SC_B].ld != v[SC_C].ld) {
        PyErr_SetString(PyExc_ValueError, "B and C must share a row stride");
        return -1;
    }
    in->ldbc = T > 1 ? v[SC_B].ld : N;
    return 0;
}

/* train_selective_scan(u, dt, dt_bias, A, B, C, D, z, offsets, chunk, y, boundaries, threads) */
static PyObject *train_selective_scan(PyObject *self, PyObject *args) {
    PyObject *obj[SC_INPUTS], *offsets_obj, *y_obj, *boundaries_obj;
    long long chunk;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOLOOi", &obj[SC_U], &obj[SC_DT], &obj[SC_DT_BIAS], &obj[SC_A], &obj[SC_B],
                          &obj[SC_C], &obj[SC_D], &obj[SC_Z], &offsets_obj, &chunk, &y_obj, &boundaries_obj, &threads))
        return NULL;
    scan_inputs in;
    memset(&in, 0, sizeof(in));
    matrix_view out[2] = {0};
    offsets_view off = {0};
    PyObject *result = NULL;
    if (chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk must be at least 1");
        goto done;
    }
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    if (get_scan_inputs(obj, off.data[off.count], &in) < 0) goto done;
    const int64_t count = mr_scan_boundary_count(off.count, off.data, chunk);
    if (get_matrix(y_obj, "y", 2, in.T, in.E, 1, 0, &out[0]) < 0 ||
        get_matrix(boundaries_obj, "boundaries", 1, count * in.E * in.N, 1, 1, 0, &out[1]) < 0)
        goto done;
    matrix_view *v = in.v;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    mr_selective_scan_packed_f32(off.count, off.data, chunk, in.E, in.N, v[SC_U].data, v[SC_U].ld, v[SC_DT].data,
                                 v[SC_DT].ld, v[SC_DT_BIAS].data, v[SC_A].data, v[SC_B].data, v[SC_C].data, in.ldbc,
                                 v[SC_D].data, v[SC_Z].data, v[SC_Z].ld, out[0].data, out[0].ld, out[1].data,
                                 mr_thread_index(), mr_thread_count());
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_views(in.v, SC_INPUTS);
    release_views(out, 2);
    release_offsets(&off);
    return result;
}

enum { SG_BOUNDARIES, SG_GY, SG_GU, SG_GDT, SG_GDT_BIAS, SG_GA, SG_GB, SG_GC, SG_GD, SG_GZ, SG_COUNT };

/* train_selective_scan_backward(u, dt, dt_bias, A, B, C, D, z, offsets, chunk, boundaries, gy,
 *     gu, gdt, gdt_bias | None, gA, gB, gC, gD | None, gz | None, threads, reference) */
static PyObject *train_selective_scan_backward(PyObject *self, PyObject *args) {
    PyObject *obj[SC_INPUTS], *g_obj[SG_COUNT], *offsets_obj;
    long long chunk;
    int threads, reference;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOLOOOOOOOOOOip", &obj[SC_U], &obj[SC_DT], &obj[SC_DT_BIAS], &obj[SC_A],
                          &obj[SC_B], &obj[SC_C], &obj[SC_D], &obj[SC_Z], &offsets_obj, &chunk,
                          &g_obj[SG_BOUNDARIES], &g_obj[SG_GY], &g_obj[SG_GU], &g_obj[SG_GDT], &g_obj[SG_GDT_BIAS],
                          &g_obj[SG_GA], &g_obj[SG_GB], &g_obj[SG_GC], &g_obj[SG_GD], &g_obj[SG_GZ], &threads,
                          &reference))
        return NULL;
    scan_inputs in;
    memset(&in, 0, sizeof(in));
    matrix_view g[SG_COUNT] = {0};
    offsets_view off = {0};
    float *scratch = NULL;
    PyObject *result = NULL;
    if (chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk must be at least 1");
        goto done;
    }
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    if (get_scan_inputs(obj, off.data[off.count], &in) < 0) goto done;
    const int64_t T = in.T, E = in.E, N = in.N;
    const int64_t count = reference ? 0 : mr_scan_boundary_count(off.count, off.data, chunk);
    if ((!reference && get_matrix(g_obj[SG_BOUNDARIES], "boundaries", 1, count * E * N, 1, 0, 0, &g[SG_BOUNDARIES]) < 0) ||
        get_matrix(g_obj[SG_GY], "grad_y", 2, T, E, 0, 0, &g[SG_GY]) < 0 ||
        get_matrix(g_obj[SG_GU], "grad_u", 2, T, E, 1, 0, &g[SG_GU]) < 0 ||
        get_matrix(g_obj[SG_GDT], "grad_dt", 2, T, E, 1, 0, &g[SG_GDT]) < 0 ||
        get_matrix(g_obj[SG_GDT_BIAS], "grad_dt_bias", 1, E, 1, 1, in.v[SC_DT_BIAS].data == NULL, &g[SG_GDT_BIAS]) < 0 ||
        get_matrix(g_obj[SG_GA], "grad_A", 2, E, N, 1, 0, &g[SG_GA]) < 0 ||
        get_matrix(g_obj[SG_GB], "grad_B", 2, T, N, 1, 0, &g[SG_GB]) < 0 ||
        get_matrix(g_obj[SG_GC], "grad_C", 2, T, N, 1, 0, &g[SG_GC]) < 0 ||
        get_matrix(g_obj[SG_GD], "grad_D", 1, E, 1, 1, in.v[SC_D].data == NULL, &g[SG_GD]) < 0 ||
        get_matrix(g_obj[SG_GZ], "grad_z", 2, T, E, 1, in.v[SC_Z].data == NULL, &g[SG_GZ]) < 0)
        goto done;
    if (T > 1 && (g[SG_GU].ld != E || g[SG_GDT].ld != E || g[SG_GB].ld != N || g[SG_GC].ld != N ||
                  (g[SG_GZ].data && g[SG_GZ].ld != E))) {
        PyErr_SetString(PyExc_ValueError, "gradient outputs must be contiguous");
        goto done;
    }
    if (g[SG_GA].ld != N) {
        PyErr_SetString(PyExc_ValueError, "grad_A must be contiguous");
        goto done;
    }
    if (!reference && in.v[SC_DT_BIAS].data && !g[SG_GDT_BIAS].data) {
        PyErr_SetString(PyExc_ValueError, "grad_dt_bias is needed with dt_bias");
        goto done;
    }
    /* scratch: every thread's gB partial [T, N], then every thread's gC partial, then its work */
    const int64_t work_floats = mr_scan_backward_work_floats(chunk, E, N), part = T * N;
    const size_t floats = reference ? (size_t)((off.longest + 1) * N)
                                    : (size_t)threads * (size_t)(2 * part + work_floats);
    scratch = (float *)malloc((floats ? floats : 1) * sizeof(float));
    if (!scratch) {
        PyErr_NoMemory();
        goto done;
    }
    matrix_view *v = in.v;
    Py_BEGIN_ALLOW_THREADS
    if (reference) {
        mr_selective_scan_backward_f32_ref(off.count, off.data, E, N, v[SC_U].data, v[SC_U].ld, v[SC_DT].data,
                                           v[SC_DT].ld, v[SC_DT_BIAS].data, v[SC_A].data, v[SC_B].data, v[SC_C].data,
                                           in.ldbc, v[SC_D].data, v[SC_Z].data, v[SC_Z].ld, g[SG_GY].data,
                                           g[SG_GY].ld, g[SG_GU].data, g[SG_GDT].data, g[SG_GDT_BIAS].data,
                                           g[SG_GA].data, g[SG_GD].data, g[SG_GZ].data, g[SG_GB].data,
                                           g[SG_GC].data, scratch);
    } else {
        float *gB_parts = scratch, *gC_parts = scratch + threads * part, *works = scratch + 2 * threads * part;
#pragma omp parallel num_threads(threads)
        {
            const int ith = mr_thread_index(), nth = mr_thread_count();
            mr_selective_scan_backward_f32(off.count, off.data, chunk, E, N, v[SC_U].data, v[SC_U].ld, v[SC_DT].data,
                                           v[SC_DT].ld, v[SC_DT_BIAS].data, v[SC_A].data, v[SC_B].data,
                                           v[SC_C].data, in.ldbc, v[SC_D].data, v[SC_Z].data, v[SC_Z].ld,
                                           g[SG_BOUNDARIES].data, g[SG_GY].data, g[SG_GY].ld, g[SG_GU].data,
                                           g[SG_GDT].data, g[SG_GDT_BIAS].data, g[SG_GA].data, g[SG_GD].data,
                                           g[SG_GZ].data, gB_parts + ith * part, gC_parts + ith * part,
                                           works + ith * work_floats, ith, nth);
#pragma omp barrier
            mr_sum_partials_f32(gB_parts, nth, T * N, g[SG_GB].data, ith, nth);
            mr_sum_partials_f32(gC_parts, nth, T * N, g[SG_GC].data, ith, nth);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(scratch);
    release_views(in.v, SC_INPUTS);
    release_views(g, SG_COUNT);
    release_offsets(&off);
    return result;
}

/* Mamba-2's SSD scan: the inputs both directions read, all dense and float32. */
enum { SS_X, SS_DT, SS_DT_BIAS, SS_A, SS_B, SS_C, SS_D, SS_INPUTS };

typedef struct {
    matrix_view v[SS_INPUTS];
    int64_t T, H, P, G, N;
} ssd_inputs;

static int get_ssd_inputs(PyObject *const *obj, int64_t T, long long heads, long long groups, ssd_inputs *in) {
    in->T = T;
    if (get_matrix(obj[SS_X], "x", 2, T, -1, 0, 0, &in->v[SS_X]) < 0) return -1;
    const int64_t E = in->v[SS_X].cols;
    if (heads < 1 || groups < 1 || E % heads || heads % groups) {
        PyErr_SetString(PyExc_ValueError, "heads must divide x's width and groups must divide heads");
        return -1;
    }
    in->H = heads;
    in->G = groups;
    in->P = E / heads;
    if (get_matrix(obj[SS_B], "B", 2, T, -1, 0, 0, &in->v[SS_B]) < 0) return -1;
    in->N = in->v[SS_B].cols / groups;
    if (in->N < 1 || in->N * groups != in->v[SS_B].cols) {
        PyErr_SetString(PyExc_ValueError, "B must be [T, groups * N]");
        return -1;
    }
    if (get_matrix(obj[SS_DT], "dt", 2, T, in->H, 0, 0, &in->v[SS_DT]) < 0 ||
        get_matrix(obj[SS_DT_BIAS], "dt_bias", 1, in->H, 1, 0, 1, &in->v[SS_DT_BIAS]) < 0 ||
        get_matrix(obj[SS_A], "A", 1, in->H, 1, 0, 0, &in->v[SS_A]) < 0 ||
        get_matrix(obj[SS_C], "C", 2, T, groups * in->N, 0, 0, &in->v[SS_C]) < 0 ||
        get_matrix(obj[SS_D], "D", 1, in->H, 1, 0, 1, &in->v[SS_D]) < 0)
        return -1;
    for (int i = 0; i < SS_INPUTS; i++)
        if (in->v[i].data && in->v[i].rows > 1 && in->v[i].ld != in->v[i].cols) {
            PyErr_SetString(PyExc_ValueError, "the SSD scan's inputs must be dense");
            return -1;
        }
    return 0;
}

/* train_ssd_scan(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, y, threads) */
static PyObject *train_ssd_scan(PyObject *self, PyObject *args) {
    PyObject *obj[SS_INPUTS], *offsets_obj, *y_obj;
    long long heads, groups;
    double dt_min, dt_max;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOOOOLLddOi", &obj[SS_X], &obj[SS_DT], &obj[SS_DT_BIAS], &obj[SS_A], &obj[SS_B],
                          &obj[SS_C], &obj[SS_D], &offsets_obj, &heads, &groups, &dt_min, &dt_max, &y_obj, &threads))
        return NULL;
    ssd_inputs in;
    memset(&in, 0, sizeof(in));
    matrix_view out = {0};
    offsets_view off = {0};
    PyObject *result = NULL;
    float *state = NULL;
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    if (get_ssd_inputs(obj, off.data[off.count], heads, groups, &in) < 0) goto done;
    if (get_matrix(y_obj, "y", 2, in.T, in.H * in.P, 1, 0, &out) < 0) goto done;
    state = malloc((size_t)(in.H * in.N * in.P) * sizeof *state);
    if (!state) {
        PyErr_NoMemory();
        goto done;
    }
    matrix_view *v = in.v;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    mr_ssd_scan_packed_f32(off.count, off.data, in.H, in.P, in.G, in.N, v[SS_X].data, v[SS_DT].data,
                           v[SS_DT_BIAS].data, v[SS_A].data, (float)dt_min, (float)dt_max, v[SS_B].data, v[SS_C].data,
                           v[SS_D].data, out.data, state, mr_thread_index(), mr_thread_count());
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(state);
    release_views(in.v, SS_INPUTS);
    release_views(&out, 1);
    release_offsets(&off);
    return result;
}

enum { SSG_GY, SSG_GX, SSG_GDT, SSG_GDT_BIAS, SSG_GA, SSG_GB, SSG_GC, SSG_GD, SSG_COUNT };

/* train_ssd_scan_backward(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, grad_y,
 *     grad_x, grad_dt, grad_dt_bias | None, grad_A, grad_B_heads, grad_C_heads, grad_D | None, threads) */
static PyObject *train_ssd_scan_backward(PyObject *self, PyObject *args) {
    PyObject *obj[SS_INPUTS], *g_obj[SSG_COUNT], *offsets_obj;
    long long heads, groups;
    double dt_min, dt_max;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOOOOLLddOOOOOOOOi", &obj[SS_X], &obj[SS_DT], &obj[SS_DT_BIAS], &obj[SS_A],
                          &obj[SS_B], &obj[SS_C], &obj[SS_D], &offsets_obj, &heads, &groups, &dt_min, &dt_max,
                          &g_obj[SSG_GY], &g_obj[SSG_GX], &g_obj[SSG_GDT], &g_obj[SSG_GDT_BIAS], &g_obj[SSG_GA],
                          &g_obj[SSG_GB], &g_obj[SSG_GC], &g_obj[SSG_GD], &threads))
        return NULL;
    ssd_inputs in;
    memset(&in, 0, sizeof(in));
    matrix_view g[SSG_COUNT];
    memset(g, 0, sizeof(g));
    offsets_view off = {0};
    PyObject *result = NULL;
    float *work = NULL;
    if (mr_py_check_threads(threads) < 0 || get_offsets(offsets_obj, &off) < 0) goto done;
    if (get_ssd_inputs(obj, off.data[off.count], heads, groups, &in) < 0) goto done;
    const int64_t T = in.T, H = in.H, E = in.H * in.P;
    if (get_matrix(g_obj[SSG_GY], "grad_y", 2, T, E, 0, 0, &g[SSG_GY]) < 0 ||
        get_matrix(g_obj[SSG_GX], "grad_x", 2, T, E, 1, 0, &g[SSG_GX]) < 0 ||
        get_matrix(g_obj[SSG_GDT], "grad_dt", 2, T, H, 1, 0, &g[SSG_GDT]) < 0 ||
        get_matrix(g_obj[SSG_GDT_BIAS], "grad_dt_bias", 1, H, 1, 1, 1, &g[SSG_GDT_BIAS]) < 0 ||
        get_matrix(g_obj[SSG_GA], "grad_A", 1, H, 1, 1, 0, &g[SSG_GA]) < 0 ||
        get_matrix(g_obj[SSG_GB], "grad_B_heads", 2, T, H * in.N, 1, 0, &g[SSG_GB]) < 0 ||
        get_matrix(g_obj[SSG_GC], "grad_C_heads", 2, T, H * in.N, 1, 0, &g[SSG_GC]) < 0 ||
        get_matrix(g_obj[SSG_GD], "grad_D", 1, H, 1, 1, 1, &g[SSG_GD]) < 0)
        goto done;
    for (int i = 0; i < SSG_COUNT; i++)
        if (g[i].data && g[i].rows > 1 && g[i].ld != g[i].cols) {
            PyErr_SetString(PyExc_ValueError, "the SSD scan's gradients must be dense");
            goto done;
        }
    if ((in.v[SS_D].data == NULL) != (g[SSG_GD].data == NULL) ||
        (in.v[SS_DT_BIAS].data == NULL) != (g[SSG_GDT_BIAS].data == NULL)) {
        PyErr_SetString(PyExc_ValueError, "D and grad_D, dt_bias and grad_dt_bias must be given together");
        goto done;
    }
    const int64_t per_thread = mr_ssd_backward_work_floats(off.longest, in.P, in.N);
    work = malloc((size_t)(per_thread * threads) * sizeof *work);
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    matrix_view *v = in.v;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    mr_ssd_scan_backward_f32(off.count, off.data, in.H, in.P, in.G, in.N, v[SS_X].data, v[SS_DT].data,
                             v[SS_DT_BIAS].data, v[SS_A].data, (float)dt_min, (float)dt_max, v[SS_B].data,
                             v[SS_C].data, v[SS_D].data, g[SSG_GY].data, g[SSG_GX].data, g[SSG_GDT].data,
                             g[SSG_GDT_BIAS].data, g[SSG_GA].data, g[SSG_GD].data, g[SSG_GB].data, g[SSG_GC].data,
                             work + per_thread * mr_thread_index(), mr_thread_index(), mr_thread_count());
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(work);
    release_views(in.v, SS_INPUTS);
    release_views(g, SSG_COUNT);
    release_offsets(&off);
    return result;
}

static PyMethodDef train_methods[] = {
    {"train_scan_boundary_count", train_scan_boundary_count, METH_VARARGS,
     "train_scan_boundary_count(offsets, chunk) -> states the scan's forward keeps"},
    {"train_conv_silu", train_conv_silu, METH_VARARGS,
     "train_conv_silu(x, weight, bias, offsets, out, threads): causal conv + SiLU over a packed batch"},
    {"train_conv_silu_backward", train_conv_silu_backward, METH_VARARGS,
     "train_conv_silu_backward(x, weight, bias, offsets, grad_out, grad_x, grad_weight, grad_bias, threads, "
     "reference)"},
    {"train_selective_scan", train_selective_scan, METH_VARARGS,
     "train_selective_scan(u, dt, dt_bias, A, B, C, D, z, offsets, chunk, y, boundaries, threads)"},
    {"train_selective_scan_backward", train_selective_scan_backward, METH_VARARGS,
     "train_selective_scan_backward(u, dt, dt_bias, A, B, C, D, z, offsets, chunk, boundaries, grad_y, grad_u, "
     "grad_dt, grad_dt_bias, grad_A, grad_B, grad_C, grad_D, grad_z, threads, reference)"},
    {"train_ssd_scan", train_ssd_scan, METH_VARARGS,
     "train_ssd_scan(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, y, threads): Mamba-2's "
     "scan over a packed batch"},
    {"train_ssd_scan_backward", train_ssd_scan_backward, METH_VARARGS,
     "train_ssd_scan_backward(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, grad_y, grad_x, "
     "grad_dt, grad_dt_bias, grad_A, grad_B_heads, grad_C_heads, grad_D, threads)"},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_train(PyObject *module) {
    if (PyModule_AddFunctions(module, train_methods) < 0) return -1;
    return PyModule_AddIntConstant(module, "TRAIN_BLOCK", MR_BACKWARD_BLOCK);
}
