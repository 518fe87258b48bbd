#include "base/mr_cpu.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define MR_X86 1
#endif

/* Bit f + 1 holds feature f; bit 0 says the mask was filled. Detection is idempotent, so two
 * threads that race on the first question store the same value. */
static atomic_uint feature_mask;
/* MR_ISA_COUNT until MAMBARET_SIMD has been read. */
static atomic_int isa_limit = MR_ISA_COUNT;

static unsigned detect_features(void) {
    unsigned mask = 1u;
#ifdef MR_X86
    __builtin_cpu_init();
    const int has[MR_CPU_FEATURE_COUNT] = {
        [MR_CPU_AVX2] = __builtin_cpu_supports("avx2"),
        [MR_CPU_FMA] = __builtin_cpu_supports("fma"),
        [MR_CPU_POPCNT] = __builtin_cpu_supports("popcnt"),
        [MR_CPU_AVX512F] = __builtin_cpu_supports("avx512f"),
        [MR_CPU_AVX512DQ] = __builtin_cpu_supports("avx512dq"),
        [MR_CPU_AVX512BW] = __builtin_cpu_supports("avx512bw"),
        [MR_CPU_AVX512VPOPCNTDQ] = __builtin_cpu_supports("avx512vpopcntdq"),
        [MR_CPU_AVX512VNNI] = __builtin_cpu_supports("avx512vnni"),
        [MR_CPU_AVX512VL] = __builtin_cpu_supports("avx512vl"),
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11)
        [MR_CPU_AVXVNNI] = __builtin_cpu_supports("avxvnni"),
#endif
    };
    for (int f = 0; f < MR_CPU_FEATURE_COUNT; f++)
        if (has[f]) mask |= 1u << (f + 1);
#endif
    return mask;
}

int mr_cpu_has(mr_cpu_feature feature) {
    if ((int)feature < 0 || feature >= MR_CPU_FEATURE_COUNT) return 0;
    unsigned mask = atomic_load_explicit(&feature_mask, memory_order_relaxed);
    if (!mask) {
        mask = detect_features();
        atomic_store_explicit(&feature_mask, mask, memory_order_relaxed);
    }
    return (mask >> (feature + 1)) & 1u;
}

int mr_isa_supported(mr_isa isa) {
    switch (isa) {
    case MR_ISA_PORTABLE: return 1;
    case MR_ISA_AVX2: return mr_cpu_has(MR_CPU_AVX2) && mr_cpu_has(MR_CPU_FMA);
    case MR_ISA_AVX512: return mr_cpu_has(MR_CPU_AVX512F) && mr_cpu_has(MR_CPU_AVX512DQ);
    default: return 0;
    }
}

static const char *const isa_names[MR_ISA_COUNT] = {"portable", "avx2", "avx512"};

const char *mr_isa_name(mr_isa isa) { return (int)isa >= 0 && isa < MR_ISA_COUNT ? isa_names[isa] : NULL; }

int mr_isa_parse(const char *name) {
    if (!name) return -2;
    if (strcmp(name, "auto") == 0) return MR_ISA_AUTO;
    for (int i = 0; i < MR_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -2;
}

mr_isa mr_cpu_isa_limit(void) {
    int limit = atomic_load_explicit(&isa_limit, memory_order_relaxed);
    if (limit == MR_ISA_COUNT) {
        /* an unknown or empty value leaves the widest level, as it always has */
        const int asked = mr_isa_parse(getenv("MAMBARET_SIMD"));
        limit = asked >= 0 ? asked : MR_ISA_COUNT - 1;
        int unread = MR_ISA_COUNT; /* keep a limit set meanwhile by mr_cpu_set_isa_limit */
        if (!atomic_compare_exchange_strong(&isa_limit, &unread, limit)) limit = unread;
    }
    return (mr_isa)limit;
}

mr_isa mr_cpu_set_isa_limit(mr_isa limit) {
    const mr_isa previous = mr_cpu_isa_limit();
    const int value = (int)limit < 0 || limit >= MR_ISA_COUNT ? MR_ISA_COUNT - 1 : (int)limit;
    atomic_store_explicit(&isa_limit, value, memory_order_relaxed);
    return previous;
}

mr_isa mr_isa_best(void) {
    const mr_isa limit = mr_cpu_isa_limit();
    for (int isa = limit; isa > MR_ISA_PORTABLE; isa--)
        if (mr_isa_supported((mr_isa)isa)) return (mr_isa)isa;
    return MR_ISA_PORTABLE;
}

const char *mr_simd_path(void) {
    switch (mr_isa_best()) {
    case MR_ISA_AVX512: return "AVX-512F+DQ (run-time dispatch)";
    case MR_ISA_AVX2: return "AVX2 + FMA (run-time dispatch)";
    default: return "portable C (compiler-vectorised)";
    }
}
