-- The C core as seen through LuaJIT FFI.
-- Inside the sluice binary the sl_* symbols are exported (-rdynamic), so ffi.C has them.
-- Under plain luajit (busted unit specs) the same core is loaded from the shared object
-- build/libsluice_ffi.so (override with SLUICE_FFI_LIB).
local ffi = require("ffi")

ffi.cdef [[ const char *sl_version(void); ]]

local ok = pcall(function() return ffi.C.sl_version end)
if ok then
    return ffi.C
end

local home = os.getenv("SLUICE_HOME") or "."
local lib = os.getenv("SLUICE_FFI_LIB") or (home .. "/build/libsluice_ffi.so")
return ffi.load(lib, true)
