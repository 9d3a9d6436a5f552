/* sluice: command line, config load, signals, worker start and stop. */
#ifndef SL_NO_MAIN
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "http/access_log.h"
#include "lua/vm.h"
#include "rag/cli.h"
#include "server/settings.h"
#include "server/stats.h"
#include "server/worker.h"
#include "shared/memcached.h"
#include "shared/shdict.h"
#include "shared/snapshot.h"
#include "tls/listener.h"
#include "tls/tls.h"

extern int luaopen_cjson(lua_State *L);
extern int luaopen_cjson_safe(lua_State *L);
extern lua_CFunction sl__luaopen_cjson, sl__luaopen_cjson_safe;

static lua_State *ML; /* the main thread's VM: loads and checks config */
static uv_signal_t sig_hup, sig_term, sig_int, sig_quit, sig_usr1;

static void usage(void)
{
    fprintf(stderr,
            "usage: sluice [-c FILE] [-t] [-d] [-p PREFIX] [-g PIDFILE]\n"
            "       sluice [-c FILE] etcd import [--merge] CONFIG   (docs/cluster.md)\n"
            "       sluice rag build|info|search|eval ... (sluice rag -h)\n"
            "       sluice [-c FILE] [-p PREFIX] secrets rotate [--new-key-file PATH | --new-key-env NAME]\n"
            "  -c FILE    config file (default PREFIX/conf/sluice.yaml)\n"
            "  -t         check the config and exit (non-zero on error)\n"
            "  -d         run as a daemon (writes node.pid_file or -g)\n"
            "  -p PREFIX  where lua/ and plugins/ are (default: SLUICE_HOME or the build's source dir)\n"
            "  -v         print the version\n");
}

static double num_field(lua_State *L, int idx, const char *k, double dflt)
{
    lua_getfield(L, idx, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static const char *str_field(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    const char *s = lua_tostring(L, -1); /* stays alive: the table holds it */
    lua_pop(L, 1);
    return s;
}

/* Reads what C needs from the table sluice.master returns (see master.lua: node_settings). */
static int apply_node(lua_State *L, int idx)
{
    sl_settings.workers = (int)num_field(L, idx, "workers", 1);
    sl_settings.max_header_size = (size_t)num_field(L, idx, "max_header_size", 16384);
    sl_settings.max_body_size = (size_t)num_field(L, idx, "max_body_size", 8 << 20);
    if (sl_settings.max_body_size > UINT32_MAX - 1) /* request lengths are 32-bit in sl_req_t */
        sl_settings.max_body_size = UINT32_MAX - 1;
    sl_settings.body_buffer_size = (size_t)num_field(L, idx, "body_buffer_size", 64 << 10);
    sl_settings.max_url_length = (size_t)num_field(L, idx, "max_url_length", 8192);
    sl_settings.header_timeout = num_field(L, idx, "header_timeout", 10);
    sl_settings.body_timeout = num_field(L, idx, "body_timeout", 30);
    sl_settings.body_deadline = num_field(L, idx, "body_deadline", 300);
    sl_settings.keepalive_timeout = num_field(L, idx, "keepalive_timeout", 60);
    sl_settings.send_timeout = num_field(L, idx, "send_timeout", 30);
    sl_settings.max_connections = (int)num_field(L, idx, "max_connections", 10000);
    sl_settings.keepalive_requests = (int)num_field(L, idx, "keepalive_requests", 10000);
    sl_settings.drain_timeout = num_field(L, idx, "drain_timeout", 30);
    lua_getfield(L, idx, "allow_encoded_slashes");
    sl_settings.allow_encoded_slashes = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "listen");
    int n = (int)lua_objlen(L, -1);
    sl_settings.nlisten = 0;
    for (int i = 1; i <= n && sl_settings.nlisten < SL_MAX_LISTEN; i++) {
        lua_rawgeti(L, -1, i);
        sl_listen_addr_t *a = &sl_settings.listen[sl_settings.nlisten++];
        snprintf(a->host, sizeof(a->host), "%s", str_field(L, -1, "host") ? str_field(L, -1, "host") : "");
        a->port = (int)num_field(L, -1, "port", 0);
        lua_getfield(L, -1, "admin");
        a->is_admin = lua_toboolean(L, -1) ? SL_LISTEN_ADMIN : 0;
        lua_getfield(L, -2, "metrics");
        if (lua_toboolean(L, -1))
            a->is_admin = SL_LISTEN_METRICS;
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
    const char *lvl = str_field(L, idx, "log_level");
    if (lvl && sl_log_level_parse(lvl) >= 0)
        sl_log_set_level(sl_log_level_parse(lvl));
    const char *elog = str_field(L, idx, "error_log");
    if (elog && sl_log_open(elog) != 0) {
        fprintf(stderr, "sluice: cannot open error log %s: %s\n", elog, strerror(errno));
        return -1;
    }
    int fields = 0;
    lua_getfield(L, idx, "access_log_fields");
    n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        fields |= sl_access_log_field(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    const char *apath = str_field(L, idx, "access_log_path");
    if (sl_access_log_open(apath ? apath : "off", fields) != 0) {
        sl_log(SL_LOG_ERROR, "cannot open access log %s", apath);
        return -1;
    }
    lua_getfield(L, idx, "shared_dicts");
    n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *name = str_field(L, -1, "name");
        size_t size = (size_t)num_field(L, -1, "size", 0);
        int rc = sl_shdict_create(name ? name : "", size);
        if (rc != 0 && rc != -EEXIST) {
            sl_log(SL_LOG_ERROR, "shared dict %s (%zu bytes): error %d", name, size, rc);
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "memcached");
    const char *mcs = lua_istable(L, -1) ? str_field(L, -1, "servers") : NULL;
    if (mcs &&
        sl_mc_configure(mcs, num_field(L, -1, "timeout", 0.2), (int)num_field(L, -1, "failure_threshold", 5),
                        num_field(L, -1, "retry_after", 5)) != 0) {
        sl_log(SL_LOG_ERROR, "node.memcached.servers: cannot use \"%s\" (expected host:port entries)", mcs);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

/* Raises the open-files soft limit to the hard one, and keeps limits.max_connections within what the limit
 * leaves: a proxied connection holds two descriptors (client and upstream), and the gateway needs some of its
 * own (loops, listeners, logs, the Admin API's connections). Past the limit accept4 fails (EMFILE): accepting
 * then pauses (core/server/listen.c), but connections are better refused with a 503 than left waiting. */
static void fit_descriptors(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
        else
            sl_log(SL_LOG_WARN, "cannot raise the open-files limit from %llu to %llu: %s",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)INT32_MAX)
        return;
    int admin = 0; /* listeners limited apart: the Admin API and the metrics listener */
    for (int i = 0; i < sl_settings.nlisten; i++)
        admin += sl_settings.listen[i].is_admin != 0;
    long reserve = 64 + 16L * sl_settings.workers + (long)admin * SL_ADMIN_MAX_CONNECTIONS;
    long cap = ((long)rl.rlim_cur - reserve) / 2;
    if (cap < sl_settings.workers)
        cap = sl_settings.workers; /* one each: they may still serve something */
    if (sl_settings.max_connections > cap) {
        sl_log(
            SL_LOG_WARN,
            "limits.max_connections %d is more than the open-files limit (%llu) allows: using %ld (a proxied "
            "connection holds two descriptors); raise the limit (ulimit -n, LimitNOFILE=) to serve more",
            sl_settings.max_connections, (unsigned long long)rl.rlim_cur, cap);
        sl_settings.max_connections = (int)cap;
    }
}

/* Loads the certificates of the TLS listeners (node settings at idx: listen[i].tls = {{cert, key}, ...}). At
 * start a failure stops the start; on reload (SIGHUP) it keeps that listener's previous certificates.
 * Listeners themselves are only set up at start, so a reload only renews certificates of listeners that had
 * TLS. */
static int apply_tls(lua_State *L, int idx, int reload)
{
    int rc = 0;
    lua_getfield(L, idx, "listen");
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n && i <= sl_settings.nlisten; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "tls");
        sl_listen_addr_t *a = &sl_settings.listen[i - 1];
        if (lua_istable(L, -1) && (!reload || a->tls)) {
            sl_tls_cert_src_t files[32];
            int m = (int)lua_objlen(L, -1), nf = 0;
            for (int j = 1; j <= m && nf < 32; j++, nf++) {
                lua_rawgeti(L, -1, j);
                memset(&files[nf], 0, sizeof(files[nf]));
                files[nf].cert_path = str_field(L, -1, "cert");
                files[nf].key_path = str_field(L, -1, "key");
                lua_pop(L, 1);
            }
            char err[512];
            if (sl_tls_listener_set(i - 1, files, nf, err, sizeof(err)) != 0) {
                sl_log(SL_LOG_ERROR, "listen %s:%d: TLS: %s%s", a->host, a->port, err,
                       reload ? " (the previous certificates stay)" : "");
                rc = -1;
            } else {
                a->tls = 1;
                if (reload)
                    sl_log(SL_LOG_INFO, "listen %s:%d: TLS certificates reloaded", a->host, a->port);
            }
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return rc;
}

/* Calls sluice.master.FN(config_path); on success leaves (node_settings, snapshot_json) on the stack. */
static int master_call(const char *fn, int quiet)
{
    lua_settop(ML, 0);
    lua_getglobal(ML, "require");
    lua_pushstring(ML, "sluice.master");
    if (lua_pcall(ML, 1, 1, 0) != 0) {
        fprintf(stderr, "sluice: cannot load the Lua runtime from %s/lua: %s\n", sl_settings.home,
                lua_tostring(ML, -1));
        return -1;
    }
    lua_getfield(ML, 1, fn);
    lua_pushstring(ML, sl_settings.config_path);
    if (lua_pcall(ML, 1, 2, 0) != 0) {
        sl_log(SL_LOG_ERROR, "config: %s", lua_tostring(ML, -1));
        return -1;
    }
    if (lua_isnil(ML, -2)) {
        if (!quiet)
            fprintf(stderr, "%s\n", lua_tostring(ML, -1) ? lua_tostring(ML, -1) : "invalid configuration");
        else {
            size_t len = 0;
            const char *errs = lua_tolstring(ML, -1, &len);
            sl_log(SL_LOG_ERROR, "config rejected, the running one stays:");
            sl_log_lines(SL_LOG_ERROR, "  ", errs ? errs : "", errs ? len : 0); /* one line per error */
        }
        return -1;
    }
    lua_remove(ML, 1); /* the module: leaves (node_settings, snapshot_json) at 1 and 2 */
    return 0;
}

/* `sluice [-c FILE] COMMAND ...`: a command-line tool (lua/sluice/cli.lua) instead of the gateway; its exit
 * code. */
static int run_command(int argc, char **argv)
{
    lua_settop(ML, 0);
    lua_getglobal(ML, "require");
    lua_pushstring(ML, "sluice.cli");
    if (lua_pcall(ML, 1, 1, 0) != 0) {
        fprintf(stderr, "sluice: cannot load the Lua runtime from %s/lua: %s\n", sl_settings.home,
                lua_tostring(ML, -1));
        return 1;
    }
    lua_getfield(ML, 1, "main");
    lua_pushstring(ML, sl_settings.config_path);
    for (int i = 0; i < argc; i++)
        lua_pushstring(ML, argv[i]);
    if (lua_pcall(ML, argc + 1, 1, 0) != 0) {
        fprintf(stderr, "sluice: %s\n", lua_tostring(ML, -1));
        return 1;
    }
    return (int)lua_tointeger(ML, -1);
}

/* A stop signal: sluice.master.stop() lets the node leave the cluster's list (its registration's lease
 * revoked, lua/sluice/config/nodes.lua) while the workers drain; bounded by a short timeout, errors only
 * logged. */
static void master_stop(void)
{
    lua_settop(ML, 0);
    lua_getglobal(ML, "require");
    lua_pushstring(ML, "sluice.master");
    if (lua_pcall(ML, 1, 1, 0) == 0) {
        lua_getfield(ML, 1, "stop");
        if (lua_isfunction(ML, -1) && lua_pcall(ML, 0, 0, 0) != 0)
            sl_log(SL_LOG_WARN, "stop: %s", lua_tostring(ML, -1));
    }
    lua_settop(ML, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGUSR1) { /* reopen log files (after logrotate moved them): plugins watch the generation */
        sl_log(SL_LOG_INFO, "SIGUSR1: reopening log files");
        sl__reopen_bump();
        return;
    }
    if (signum == SIGHUP) {
        sl_log(SL_LOG_INFO, "SIGHUP: reloading %s and plugins", sl_settings.config_path);
        if (master_call("reload", 1) == 0) {
            apply_tls(ML, 1, 1);
            size_t len;
            const char *json = lua_tolstring(ML, 2, &len);
            sl_snapshot_publish(json, len);
        }
        lua_settop(ML, 0);
        return;
    }
    int drain = signum != SIGQUIT;
    sl_log(SL_LOG_INFO, "%s: %s",
           signum == SIGQUIT  ? "SIGQUIT"
           : signum == SIGINT ? "SIGINT"
                              : "SIGTERM",
           drain ? "draining" : "stopping now");
    sl_workers_stop(drain);
    master_stop();
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_quit, NULL);
    uv_close((uv_handle_t *)&sig_usr1, NULL);
}

static int write_pid(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -errno;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    int check = 0, daemon_mode = 0, opt, rc = 1;
    const char *conf = NULL, *prefix = getenv("SLUICE_HOME"), *pid_file = NULL;
    if (argc > 1 && strcmp(argv[1], "rag") == 0) { /* sluice rag build|info|search: core/rag/cli.c */
        sl__luaopen_cjson = luaopen_cjson;
        sl__luaopen_cjson_safe = luaopen_cjson_safe;
        return sl_rag_cli(argc - 1, argv + 1);
    }
    while ((opt = getopt(argc, argv, "+c:tdp:g:vh")) != -1) { /* '+': options end at a command */
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'd':
            daemon_mode = 1;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'g':
            pid_file = optarg;
            break;
        case 'v':
            printf("sluice %s\n", sl_version());
            return 0;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    sl_settings_defaults();
    sl__luaopen_cjson = luaopen_cjson;
    sl__luaopen_cjson_safe = luaopen_cjson_safe;
    snprintf(sl_settings.home, sizeof(sl_settings.home), "%s", prefix ? prefix : SLUICE_HOME);
    if (conf == NULL) {
        static char dflt[PATH_MAX + 32];
        snprintf(dflt, sizeof(dflt), "%s/conf/sluice.yaml", sl_settings.home);
        conf = dflt;
    }
    if (strlen(conf) >= sizeof(sl_settings.config_path)) {
        fprintf(stderr, "sluice: config path too long\n");
        return 2;
    }
    memcpy(sl_settings.config_path, conf, strlen(conf) + 1);
    ML = sl_vm_new();
    if (ML == NULL)
        return 1;
    if (optind < argc) {
        rc = run_command(argc - optind, argv + optind);
        lua_close(ML);
        sl_tls_thread_cleanup();
        return rc;
    }
    if (master_call(check ? "check" : "load", 0) != 0)
        goto out;
    if (check) {
        printf("sluice: configuration %s is ok\n", sl_settings.config_path);
        rc = 0;
        goto out;
    }
    if (apply_node(ML, 1) != 0 || apply_tls(ML, 1, 0) != 0)
        goto out;
    fit_descriptors();
    lua_getfield(ML, 1, "pid_file");
    if (!pid_file && lua_isstring(ML, -1))
        pid_file = strdup(lua_tostring(ML, -1));
    lua_pop(ML, 1);
    if (daemon_mode && daemon(1, 0) != 0) {
        perror("sluice: daemon");
        goto out;
    }
    if (pid_file && write_pid(pid_file) != 0)
        sl_log(SL_LOG_WARN, "cannot write pid file %s", pid_file);
    size_t len;
    const char *json = lua_tolstring(ML, 2, &len);
    sl_snapshot_publish(json, len);
    lua_settop(ML, 0);
    sl_snapshot_on_publish(sl_workers_notify);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &sig_hup);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_quit);
    uv_signal_init(loop, &sig_usr1);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_quit, on_signal, SIGQUIT);
    uv_signal_start(&sig_usr1, on_signal, SIGUSR1);
    if (sl_workers_start(sl_settings.workers) != 0) {
        sl_log(SL_LOG_ERROR, "could not start the workers");
        uv_close((uv_handle_t *)&sig_hup, NULL);
        uv_close((uv_handle_t *)&sig_term, NULL);
        uv_close((uv_handle_t *)&sig_int, NULL);
        uv_close((uv_handle_t *)&sig_quit, NULL);
        uv_close((uv_handle_t *)&sig_usr1, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        goto out;
    }
    sl_log(SL_LOG_INFO, "sluice %s started: %d worker(s), config %s", sl_version(), sl_settings.workers,
           sl_settings.config_path);
    uv_run(loop, UV_RUN_DEFAULT);
    sl_workers_join();
    sl_log(SL_LOG_INFO, "sluice stopped");
    rc = 0;
out:
    if (pid_file && !check && rc == 0)
        unlink(pid_file);
    sl_snapshot_on_publish(NULL);
    sl_snapshot_close();
    sl_shdict_close_all();
    sl_tls_listener_close_all();
    sl_access_log_close();
    lua_close(ML);
    sl_tls_thread_cleanup(); /* the config center's first load may have used TLS on this thread */
    uv_loop_close(uv_default_loop());
    sl_log_close();
    return rc;
}
#endif
