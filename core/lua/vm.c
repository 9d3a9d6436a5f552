/* One LuaJIT VM per worker. Requests run as coroutines of the VM's main function `handle`; C resumes a
 * coroutine when the I/O it waits for is done. Lua code lives in SLUICE_HOME/lua (lua/sluice/worker.lua). */
#include "lua/vm.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "http/access_log.h"
#include "http/conn.h"
#include "http/response.h"
#include "server/settings.h"
#include "shared/snapshot.h"
#include "upstream/fastpath.h"

#define SL_VERSION "0.1.0"

/* Set by main(): the executable links lua-cjson statically; the FFI shared object for specs does not (the
 * specs' luajit finds the system cjson module instead). */
lua_CFunction sl__luaopen_cjson, sl__luaopen_cjson_safe;
extern int luaopen_sluice_yaml(lua_State *L);

/* Registry refs of the worker module's functions, per worker thread. */
static __thread int ref_handle = LUA_NOREF, ref_timer = LUA_NOREF, ref_apply = LUA_NOREF;
static __thread sl_worker_t *cur_worker;
static __thread sl_req_t *starting_req; /* read by the new coroutine through sl_vm_req() */

/* Finished request coroutines (registry refs) kept for the next requests: a new thread per request costs an
 * allocation, a registry slot and GC work. A coroutine that failed is not reused. */
#define CO_POOL_MAX 256
static __thread int co_pool[CO_POOL_MAX];
static __thread int co_pool_n;

sl_req_t *sl_vm_req(void)
{
    return starting_req;
}

const char *sl_version(void)
{
    return SL_VERSION;
}

double sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double sl_time(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int sl_worker_id(void)
{
    return cur_worker ? cur_worker->id : -1;
}

int sl_worker_count(void)
{
    return sl_settings.workers;
}

lua_State *sl_vm_new(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    if (sl__luaopen_cjson && sl__luaopen_cjson_safe) {
        lua_pushcfunction(L, sl__luaopen_cjson);
        lua_setfield(L, -2, "cjson");
        lua_pushcfunction(L, sl__luaopen_cjson_safe);
        lua_setfield(L, -2, "cjson.safe");
    }
    lua_pushcfunction(L, luaopen_sluice_yaml);
    lua_setfield(L, -2, "sluice.yaml");
    lua_pop(L, 1);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", sl_settings.home, sl_settings.home);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath"); /* every C module the runtime needs is linked in */
    lua_pop(L, 1);
    lua_pushstring(L, sl_settings.home);
    lua_setglobal(L, "SLUICE_HOME");
    return L;
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* An error with its traceback (several lines on purpose): one log line each, under one prefix. */
static void log_traceback(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_traceback(lua_State *L, const char *fmt, ...)
{
    char prefix[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    size_t len = 0;
    const char *msg = lua_tolstring(L, -1, &len);
    sl_log_lines(SL_LOG_ERROR, prefix, msg ? msg : "(error object is not a string)", msg ? len : 30);
}

int sl_vm_open(sl_worker_t *w)
{
    cur_worker = w;
    lua_State *L = sl_vm_new();
    if (L == NULL)
        return -1;
    w->L = L;
    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.worker");
    if (lua_pcall(L, 1, 1, 1) != 0) {
        log_traceback(L, "worker %d: cannot load the Lua runtime: ", w->id);
        return -1;
    }
    lua_getfield(L, -1, "handle");
    ref_handle = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "on_timer");
    ref_timer = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "apply");
    ref_apply = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "init");
    lua_pushinteger(L, w->id);
    if (lua_pcall(L, 1, 0, 1) != 0) {
        log_traceback(L, "worker %d: init failed: ", w->id);
        return -1;
    }
    lua_settop(L, 0);
    sl_vm_apply_snapshot(w);
    return 0;
}

void sl_vm_close(sl_worker_t *w)
{
    co_pool_n = 0;   /* the refs die with the VM */
    sl_fast_close(); /* its router belongs to the VM */
    if (w->L)
        lua_close(w->L);
    w->L = NULL;
}

void sl_vm_apply_snapshot(sl_worker_t *w)
{
    char *json = NULL;
    size_t len = 0;
    if (sl_snapshot_fetch(&w->config_version, &json, &len) != 1)
        return;
    lua_State *L = w->L;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_apply);
    lua_pushlstring(L, json, len);
    lua_pushnumber(L, (lua_Number)w->config_version);
    free(json);
    if (lua_pcall(L, 2, 0, -4) != 0)
        log_traceback(L, "worker %d: applying config version %llu failed: ", w->id,
                      (unsigned long long)w->config_version);
    lua_settop(L, 0);
}

/* After a coroutine ran: finish it if it ended, answer 500 if it failed before responding. */
static void after_resume(sl_req_t *r, int rc)
{
    lua_State *co = r->co;
    if (r->abort && r->conn)
        sl__conn_close(r->conn); /* no final chunk: the client sees the body is incomplete */
    if (rc == LUA_YIELD)
        return;
    if (rc != 0) {
        const char *msg = lua_tostring(co, -1);
        char id[24];
        snprintf(id, sizeof(id), "%016llx", (unsigned long long)r->id);
        sl_log(SL_LOG_ERROR, "request %s: %s", id, msg ? msg : "(error object is not a string)");
        if (!r->resp_started && r->conn) {
            char m[96];
            snprintf(m, sizeof(m), "internal error (id %s)", id);
            sl_resp_send_error(r, 500, m);
        } else if (!r->resp_done && r->conn) {
            sl__conn_close(r->conn);
        }
    } else if (!r->resp_started && r->conn) {
        sl_resp_send_error(r, 500, "no response was produced");
    } else if (!r->resp_done && r->conn) {
        sl_resp_finish(r);
    }
    if (r->log_pending) {
        r->log_pending = 0;
        sl_access_log(cur_worker, r);
    }
    lua_State *L = cur_worker->L;
    if (rc == 0 && co_pool_n < CO_POOL_MAX) {
        lua_settop(co, 0);
        co_pool[co_pool_n++] = r->co_ref;
    } else {
        luaL_unref(L, LUA_REGISTRYINDEX, r->co_ref);
    }
    r->co_ref = LUA_NOREF;
    r->co = NULL;
    sl_req_release(r); /* the coroutine's reference */
}

void sl_vm_handle(sl_worker_t *w, sl_req_t *r)
{
    if (sl_fast_serve(w, r))
        return; /* a route that runs no Lua: proxied in C */
    lua_State *L = w->L;
    lua_State *co;
    if (co_pool_n > 0) {
        r->co_ref = co_pool[--co_pool_n];
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->co_ref);
        co = lua_tothread(L, -1);
        lua_pop(L, 1);
    } else {
        co = lua_newthread(L);
        r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    r->co = co;
    r->refs++; /* held by the coroutine until it ends */
    r->refs++; /* held by this call */
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref_handle);
    /* what every request reads first, as arguments: made into strings here instead of by FFI field reads and
     * ffi.string calls in Lua, each a call into the VM when interpreted */
    lua_pushlstring(co, r->method, r->method_len);
    lua_pushlstring(co, r->path, r->path_len);
    if (r->host_len > 0)
        lua_pushlstring(co, r->host, r->host_len);
    else
        lua_pushnil(co);
    lua_pushboolean(co, r->is_admin);
    starting_req = r;
    int rc = lua_resume(co, 4);
    starting_req = NULL;
    after_resume(r, rc);
    if (r->conn)
        sl__conn_progress(r->conn);
    sl_req_release(r);
}

void sl_vm_resume(sl_req_t *r)
{
    lua_State *co = r->co;
    if (co == NULL && r->fast) {
        sl__fast_resume(r); /* no coroutine waits: the fast path answers an upstream failure itself */
        return;
    }
    if (co == NULL || lua_status(co) != LUA_YIELD)
        return;
    r->drain_waiting = 0;
    r->refs++;
    int rc = lua_resume(co, 0);
    after_resume(r, rc);
    if (r->conn)
        sl__conn_progress(r->conn);
    sl_req_release(r);
}

void sl_vm_timer(sl_worker_t *w, int id)
{
    lua_State *L = w->L;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_timer);
    lua_pushinteger(L, id);
    if (lua_pcall(L, 1, 0, -3) != 0)
        log_traceback(L, "worker %d: timer: ", w->id);
    lua_settop(L, 0);
}

void sl_vm_wake(sl_worker_t *w, sl_req_t *req, int id)
{
    if (req)
        sl_vm_resume(req);
    else
        sl_vm_timer(w, id);
}

/* Lua timers are tagged through data so a stopping worker can tell them from other timers and free them. */
char sl__lua_timer_tag;

typedef struct lua_timer {
    uv_timer_t t;
    int id;
} lua_timer_t;

void sl__lua_timer_free(uv_handle_t *h)
{
    free(h);
}

static void on_timer(uv_timer_t *t)
{
    int id = ((lua_timer_t *)t)->id;
    uv_close((uv_handle_t *)t, sl__lua_timer_free);
    if (cur_worker && cur_worker->L && !cur_worker->stopping)
        sl_vm_timer(cur_worker, id);
}

int sl_timer_start(double delay, int id)
{
    if (cur_worker == NULL || cur_worker->stopping)
        return -1;
    lua_timer_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return -1;
    uv_timer_init(&cur_worker->loop, &t->t);
    t->t.data = &sl__lua_timer_tag;
    t->id = id;
    uv_timer_start(&t->t, on_timer, delay > 0 ? (uint64_t)(delay * 1000) : 0, 0);
    return 0;
}

typedef struct req_timer {
    uv_timer_t t;
    sl_req_t *req;
} req_timer_t;

char sl__req_timer_tag;

void sl__req_timer_shutdown(uv_handle_t *h)
{
    /* the worker stops: the sleeper wakes early (its client is gone) so that its request can end */
    req_timer_t *t = (req_timer_t *)h;
    sl_req_t *r = t->req;
    free(t);
    sl_vm_resume(r);
    sl_req_release(r);
}

static void on_req_timer(uv_timer_t *t)
{
    sl_req_t *r = ((req_timer_t *)t)->req;
    uv_close((uv_handle_t *)t, sl__lua_timer_free);
    sl_vm_resume(r);
    sl_req_release(r);
}

int sl_req_sleep(sl_req_t *r, double delay)
{
    if (cur_worker == NULL || cur_worker->stopping == 2)
        return -1; /* the worker's handles are being closed: a new timer would keep its loop alive */
    req_timer_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return -1;
    uv_timer_init(&cur_worker->loop, &t->t);
    t->t.data = &sl__req_timer_tag;
    t->req = r;
    r->refs++;
    uv_timer_start(&t->t, on_req_timer, delay > 0 ? (uint64_t)(delay * 1000) : 0, 0);
    return 0;
}

sl_worker_t *sl_worker_current(void)
{
    return cur_worker;
}

void sl__vm_set_worker(sl_worker_t *w)
{
    cur_worker = w;
}

static int resume_later(sl_req_t *r)
{
    return sl_req_sleep(r, 0);
}

const sl_handler_t sl_vm_handler = {
    .handle = sl_vm_handle, .resume = sl_vm_resume, .resume_later = resume_later};
