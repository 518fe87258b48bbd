#include "models/mr_config.h"

#include <string.h>

static const char *const arch_names[MR_ARCH_COUNT] = {
    [MR_ARCH_MAMBA1] = "mamba",
    [MR_ARCH_MAMBA2] = "mamba2",
    [MR_ARCH_FALCON_MAMBA] = "falcon_mamba",
};

const char *mr_arch_name(mr_arch_kind kind) { return (int)kind >= 0 && kind < MR_ARCH_COUNT ? arch_names[kind] : NULL; }

int mr_arch_parse(const char *name) {
    for (int k = 0; name && k < MR_ARCH_COUNT; k++)
        if (strcmp(name, arch_names[k]) == 0) return k;
    return -1;
}
