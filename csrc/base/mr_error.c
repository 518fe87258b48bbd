#include "base/mr_error.h"

#include <stdarg.h>
#include <stdio.h>

mr_status mr_fail(mr_error *err, mr_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void mr_error_clear(mr_error *err) {
    if (err) {
        err->status = MR_OK;
        err->message[0] = '\0';
    }
}
