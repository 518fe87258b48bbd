/* What this CPU can run: its features, detected once per process, and the one instruction-set
 * ladder every per-ISA kernel family dispatches on (forward and training ops, packed linears,
 * search codes). MAMBARET_SIMD ("portable", "avx2", "avx512") lowers the level for the whole
 * process; it is read once, at the first question, and mr_cpu_set_isa_limit() changes it
 * afterwards (tests and dev/ harnesses walk every path in one process that way). */
#ifndef MR_CPU_H
#define MR_CPU_H

#ifdef __cplusplus
extern "C" {
#endif

/* Vector paths, narrowest first. A kernel family has one file per level it implements
 * (<family>_portable.c, <family>_avx2.c, <family>_avx512.c) beside its <family>_ref.c twin. */
typedef enum {
    MR_ISA_AUTO = -1, /* for callers that name a path: the widest the CPU runs within the limit */
    MR_ISA_PORTABLE = 0,
    MR_ISA_AVX2 = 1,   /* AVX2 + FMA */
    MR_ISA_AVX512 = 2, /* AVX-512 F + DQ */
    MR_ISA_COUNT = 3
} mr_isa;

typedef enum {
    MR_CPU_AVX2 = 0,
    MR_CPU_FMA,
    MR_CPU_POPCNT,
    MR_CPU_AVX512F,
    MR_CPU_AVX512DQ,
    MR_CPU_AVX512BW,
    MR_CPU_AVX512VPOPCNTDQ,
    MR_CPU_AVX512VNNI,
    MR_CPU_AVXVNNI,
    MR_CPU_AVX512VL,
    MR_CPU_FEATURE_COUNT
} mr_cpu_feature;

/* Whether the CPU reports the feature (0 off x86, 0 for an unknown value). */
int mr_cpu_has(mr_cpu_feature feature);

/* Whether the CPU has what the float kernels of this level need (ignores the limit). */
int mr_isa_supported(mr_isa isa);
/* The widest level the float kernels may take: supported and within the limit. */
mr_isa mr_isa_best(void);

/* The limit: MAMBARET_SIMD at first use, else the widest level. */
mr_isa mr_cpu_isa_limit(void);
/* Sets the limit for the process (MR_ISA_AUTO lifts it); returns the previous one. */
mr_isa mr_cpu_set_isa_limit(mr_isa limit);

/* "portable", "avx2", "avx512"; NULL for a value outside the ladder. */
const char *mr_isa_name(mr_isa isa);
/* The level of a name above ("auto" gives MR_ISA_AUTO); -2 for an unknown name. */
int mr_isa_parse(const char *name);

/* A short description of the float kernels' path for show_config(), e.g. "portable C". */
const char *mr_simd_path(void);

#ifdef __cplusplus
}
#endif
#endif
