#ifndef SL_FFI_LAYOUT_H
#define SL_FFI_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

/* The C truth behind every struct and constant the Lua side declares again in an ffi.cdef: a spec
 * (spec/ffi_layout_spec.lua) compares it with LuaJIT's view of the cdefs, so a layout change on one side
 * cannot go unnoticed. */

/** One fact: the size of `type` (field ""), the offset of type.field, or an enum constant (type "enum"). */
typedef struct sl_ffi_fact {
    const char *type;
    const char *field;
    int64_t value;
} sl_ffi_fact_t;

/** Every fact, in a static array; *n gets their number. */
const sl_ffi_fact_t *sl_ffi_layout(size_t *n);

#endif
