-- luacheck config (scripts/test.sh runs `luacheck .`; Debian package lua-check).
std = "luajit"
max_line_length = 120
-- Phase functions take (conf, ctx, ...) whether they use them or not, callbacks take what their caller
-- passes: unused arguments are the norm, not a smell. Unused variables and values still are.
unused_args = false
globals = { "SLUICE_HOME" } -- set by the C bridge (core/lua/vm.c) before any module loads
exclude_files = { "build*/**", "tests/e2e/node_modules/**", "bench/results/**", "fuzz-out/**" }

-- specs hold literal fixtures (JSON, raw HTTP) whose lines are as long as they are
files["spec/**"] = { std = "+busted", max_line_length = false }
files["examples/**/spec/**"] = { std = "+busted" }
-- fuzz harness checks: `fz` is the harness's bridge table, installed as a global by tests/fuzz/fuzz_lua.c
files["tests/fuzz/**"] = { read_globals = { "fz" } }
