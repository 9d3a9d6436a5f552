/* Shared support of the libFuzzer harnesses (tests/fuzz/fuzz_*.c): reading fuzz input, fuzz-chosen cut plans
 * for feeding bytes in pieces, failing loudly, and an in-process LuaJIT VM with Lua line coverage fed back to
 * libFuzzer. See docs/fuzzing.md. */
#ifndef SL_FUZZ_H
#define SL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;

/** A cursor over the fuzz input. */
typedef struct fz_in {
    const uint8_t *p;
    size_t n;
} fz_in_t;

/** Takes one byte of the input (0 once it is exhausted). */
uint8_t fz_byte(fz_in_t *in);

/** How the bytes are cut into pieces: the piece lengths (1..256) repeat until the data ends; none = whole. */
typedef struct fz_cuts {
    uint16_t len[16];
    int n;
} fz_cuts_t;

/** Reads a cut plan from the input: a count byte (mod 17) and that many length bytes (length = byte + 1). */
void fz_cuts_read(fz_in_t *in, fz_cuts_t *c);
/** Length of piece number i of a plan (SIZE_MAX: all that is left). */
size_t fz_cuts_piece(const fz_cuts_t *c, size_t i);

/** Reports a broken invariant (printf format) on stderr and aborts: libFuzzer saves the input as a crash. */
void fz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
#define FZ_CHECK(cond, ...)                                                                                  \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            fz_fail("invariant failed at %s:%d: %s", __FILE__, __LINE__, #cond);                             \
    } while (0)

/** Whether the open finding named id (docs/fuzzing.md) is listed in SLUICE_FUZZ_KNOWN (comma-separated): a
 *  long run may look past it to find the next bug. Never set in scripts/test.sh: there every finding fails.
 */
int fz_known(const char *id);

/** FNV-1a over bytes, chained from h (start with FZ_HASH0): the fingerprint of a parse for differentials. */
#define FZ_HASH0 1469598103934665603ull
uint64_t fz_hash(uint64_t h, const void *p, size_t n);
/** Chains one integer into a fingerprint. */
uint64_t fz_hash_int(uint64_t h, int64_t v);

/** A LuaJIT VM as the gateway's workers build it (sl_vm_new: package.path = SLUICE_HOME/lua, cjson linked
 * in), with the JIT off and a line hook that turns Lua line-to-line edges into libFuzzer coverage. */
struct lua_State *fz_lua_new(void);
/** Runs Lua source that returns a function; returns a registry reference to that function. Fails on error. */
int fz_lua_function(struct lua_State *L, const char *code, const char *name);
/** Runs the Lua file SLUICE_HOME/relpath, which returns a function; returns a registry reference to it. */
int fz_lua_file(struct lua_State *L, const char *relpath);
/** Calls the function behind ref with a string argument; any Lua error is reported with fz_fail. */
void fz_lua_call_string(struct lua_State *L, int ref, const uint8_t *data, size_t len);
/** Forgets the previous Lua line (call at the start of each input, so edges do not run across inputs). */
void fz_lua_cov_reset(void);

#endif
