#ifndef SL_VM_H
#define SL_VM_H

#include "http/request.h"
#include "server/worker.h"

struct lua_State;

/** Creates a Lua VM with the runtime's module paths and built-in C modules (cjson, sluice.yaml);
 *  returns NULL on out of memory. The caller closes it with lua_close. */
struct lua_State *sl_vm_new(void);
/** Opens the worker's VM and runs sluice.worker.init; returns 0 or -1 (error logged). */
int sl_vm_open(sl_worker_t *w);
/** Closes the worker's VM (after every request ended). */
void sl_vm_close(sl_worker_t *w);
/** The Lua VM as the handler of client connections' requests (sl_vm_handle, sl_vm_resume, sl_req_sleep 0). */
extern const sl_handler_t sl_vm_handler;
/** Runs a complete request in a new coroutine (from libuv callbacks only). */
void sl_vm_handle(sl_worker_t *w, sl_req_t *r);
/** Resumes the request's suspended coroutine (from libuv callbacks only). */
void sl_vm_resume(sl_req_t *r);
/** Applies a newer config snapshot to this worker's VM, if one was published. */
void sl_vm_apply_snapshot(sl_worker_t *w);
/** Calls a Lua function for a fired timer (from libuv callbacks only). */
void sl_vm_timer(sl_worker_t *w, int id);

/** Makes w the calling thread's worker without a VM (sl_vm_open does it otherwise): for C tests and fuzz
 *  harnesses that run worker code, such as sl_http_start, with no Lua. */
void sl__vm_set_worker(sl_worker_t *w);

/** Wakes a coroutine suspended on async C work (libuv callbacks only): a request's coroutine (req given) is
 *  resumed by C so its end is noticed; any other (timer) coroutine through sluice.worker.on_timer(id). */
void sl_vm_wake(sl_worker_t *w, sl_req_t *req, int id);

/* FFI exports for the Lua side. */
/** Starts a one-shot timer on the calling worker: after delay seconds, sluice.worker.on_timer(id) runs. */
int sl_timer_start(double delay, int id);
/** Resumes the request's coroutine after delay seconds (the coroutine yields right after). */
int sl_req_sleep(sl_req_t *r, double delay);
/** The request whose coroutine is starting (valid at the start of sluice.worker.handle only). */
sl_req_t *sl_vm_req(void);
/** Returns the calling worker's id (0 in the main thread). */
int sl_worker_id(void);
/** Returns the number of workers. */
int sl_worker_count(void);
/** Returns the running sluice version string. */
const char *sl_version(void);
/** Monotonic clock in seconds. */
double sl_now(void);
/** Wall clock in seconds. */
double sl_time(void);

#endif
