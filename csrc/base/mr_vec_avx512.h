/* The AVX-512 vector vocabulary the per-ISA kernel bodies are written in (ops/mr_ops_body.h,
 * gemm/mr_linear_packed_body.h): the lane count, types, loads, arithmetic, exp, and TARGET /
 * SUFFIX, which give each function this instruction set's target attribute and name. Included by
 * exactly one file of each kernel family, before its body. */
#ifndef MR_VEC_AVX512_H
#define MR_VEC_AVX512_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512dq")))

/* exp(x): Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, Cephes' polynomial for e^r, and
 * scalef for the 2^n (no integer exponent arithmetic, so no range checks beyond the clamp that
 * keeps infinities out of the reduction). */
static inline AVX512 __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* 1/d from the 14-bit estimate and one Newton step: a division's accuracy at a fraction of its
 * throughput cost (the divider is the slowest unit these kernels touch). */
static inline AVX512 __m512 reciprocal_avx512(__m512 d) {
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);
}

/* 2^x: the fraction x - floor(x) in [0, 1) from one vreduceps, a degree-6 polynomial (minimax
 * in relative error on [0, 1): 2e-9, ~1e-7 after float rounding), and scalef multiplying by
 * 2^floor(x), which also gives 0 for very negative x without a clamp. */
static inline AVX512 __m512 exp2_avx512(__m512 x) {
    __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_set1_ps(2.1704949904233217e-04f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.2439945712685585e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.678673930466175e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5483512580394745e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402297705411911e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931470036506653e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, x);
}

/* a / b through the reciprocal above */
static inline AVX512 __m512 divide_avx512(__m512 a, __m512 b) { return _mm512_mul_ps(a, reciprocal_avx512(b)); }

static inline AVX512 __m512 broadcast_avx512(const float *p) { return _mm512_set1_ps(*p); }

#define W 16
#define VEC __m512
#define VECI __m512i
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VZERO _mm512_setzero_ps()
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define VMUL _mm512_mul_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMAX _mm512_max_ps
#define VBROADCAST broadcast_avx512
#define vexp exp_avx512
#define vexp2 exp2_avx512
#define vabs _mm512_abs_ps
#define vdiv divide_avx512
#define TARGET AVX512
#define SUFFIX(name) name##_avx512

#endif
