/* `sluice rag ...`: the index commands of the binary (docs/ai-rag.md). The work is Lua
 * (lua/sluice/rag/cli.lua): reading folders, chunking, calling the embeddings provider of the config's
 * providers map, writing the index. Provider calls need what a worker has (its loop, upstream pool,
 * sluice.http, timers), so this runs one worker on the calling thread: the config is loaded and published as
 * at start, the worker's VM opened, and the command runs as a timer coroutine until it calls sl_rag_cli_done.
 * No port is bound. */
#include "rag/cli.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "lua/vm.h"
#include "server/settings.h"
#include "server/worker.h"
#include "shared/snapshot.h"
#include "upstream/pool.h"

static int exit_code = 1;
static sl_worker_t *cli_worker;

void sl_rag_cli_done(int rc)
{
    exit_code = rc;
    if (cli_worker)
        uv_stop(&cli_worker->loop);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: sluice rag build [-c FILE] [-p PREFIX] [--full] NAME\n"
        "       sluice rag build [-c FILE] [-p PREFIX] [--full] --source DIR --out FILE --provider NAME\n"
        "                        [--model MODEL] [--chunk-size N] [--overlap N] [--quantize int8,binary]\n"
        "                        [--ivf-lists N] [--ivf-probes N]\n"
        "       sluice rag info [-c FILE] [-p PREFIX] FILE\n"
        "       sluice rag search [-c FILE] [-p PREFIX] [--mode hybrid|bm25|dense] [-k N] [--probes N] INDEX "
        "QUERY\n"
        "       sluice rag eval [-c FILE] [-p PREFIX] [-k N] [--json] [--fusion score|rrf] [--weights B,D]\n"
        "                       [--rrf-k N] [--candidates N] [--probes N] INDEX QUESTIONS.json\n"
        "  NAME       an index defined by an ai-rag plugin config (index.name) in the config file\n"
        "  INDEX      an index name or an index file\n"
        "  -c FILE    config file (default PREFIX/conf/sluice.yaml): its providers map serves the "
        "embeddings\n"
        "  -p PREFIX  where lua/ and plugins/ are (default: SLUICE_HOME or the build's source dir)\n"
        "  --full     rebuild every file (default: only files that changed since the index was built)\n"
        "  --ivf-lists N   inverted-file lists of the vectors (default: about sqrt(chunks) from 4096 chunks "
        "on;\n"
        "                  0: none, brute force); --ivf-probes N: lists a search scans (default 1/16, >= 8)\n"
        "  eval       recall@1 and recall@k of BM25, dense and hybrid search over a JSON list of questions\n"
        "             [{\"q\": ..., \"file\": ..., \"heading\": ...}] (--json: the misses too);\n"
        "             hybrid fuses by --fusion (default score) with --weights BM25,DENSE (default 1,1)\n");
}

/* Loads and publishes the config the way main() does at start; 0 or -1 (the reason printed). */
static int load_config(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.master");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "sluice: cannot load the Lua runtime from %s/lua: %s\n", sl_settings.home,
                lua_tostring(L, -1));
        return -1;
    }
    lua_getfield(L, -1, "load");
    lua_pushstring(L, sl_settings.config_path);
    if (lua_pcall(L, 1, 2, 0) != 0 || lua_isnil(L, -2)) {
        fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "invalid configuration");
        return -1;
    }
    size_t len;
    const char *json = lua_tolstring(L, -1, &len);
    sl_snapshot_publish(json, len);
    return 0;
}

/* Calls sluice.rag.cli.main(args...) in the worker's VM; it schedules the work and returns. */
static int start(sl_worker_t *w, int argc, char **argv)
{
    lua_State *L = w->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.rag.cli");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "sluice rag: %s\n", lua_tostring(L, -1));
        return -1;
    }
    lua_getfield(L, -1, "main");
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc, 0, 0) != 0) {
        fprintf(stderr, "sluice rag: %s\n", lua_tostring(L, -1));
        return -1;
    }
    lua_settop(L, 0);
    return 0;
}

int sl_rag_cli(int argc, char **argv)
{
    const char *conf = NULL, *prefix = getenv("SLUICE_HOME");
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, rc = 2;
    if (rest == NULL)
        return 1;
    for (int i = 1; i < argc; i++) { /* argv[0] is "rag" */
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "-p") == 0) && i + 1 < argc) {
            if (argv[i][1] == 'c')
                conf = argv[++i];
            else
                prefix = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            free(rest);
            return 0;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (nrest == 0 || (strcmp(rest[0], "build") != 0 && strcmp(rest[0], "info") != 0 &&
                       strcmp(rest[0], "search") != 0 && strcmp(rest[0], "eval") != 0)) {
        if (nrest > 0) /* said before the config is loaded: a typo needs no valid config */
            fprintf(stderr, "sluice rag: unknown command %s (build, info, search, eval)\n", rest[0]);
        usage();
        free(rest);
        return 2;
    }
    sl_settings_defaults();
    sl_settings.workers = 1;
    snprintf(sl_settings.home, sizeof(sl_settings.home), "%s", prefix ? prefix : SLUICE_HOME);
    char dflt[PATH_MAX + 32];
    snprintf(dflt, sizeof(dflt), "%s/conf/sluice.yaml", sl_settings.home);
    if (conf == NULL)
        conf = dflt;
    if (strlen(conf) >= sizeof(sl_settings.config_path)) {
        fprintf(stderr, "sluice: config path too long\n");
        free(rest);
        return 2;
    }
    memcpy(sl_settings.config_path, conf, strlen(conf) + 1);
    lua_State *ML = sl_vm_new();
    if (ML == NULL || load_config(ML) != 0) {
        if (ML)
            lua_close(ML);
        free(rest);
        return 1;
    }
    sl_worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL || uv_loop_init(&w->loop) != 0) {
        free(w);
        lua_close(ML);
        free(rest);
        return 1;
    }
    cli_worker = w;
    if (sl_vm_open(w) == 0 && start(w, nrest, rest) == 0) {
        uv_run(&w->loop, UV_RUN_DEFAULT);
        rc = exit_code;
    } else {
        rc = 1;
    }
    /* the command ended (or never started): close what the worker holds, as a stopping worker does */
    w->stopping = 2;
    sl__pool_close(w);
    sl__worker_close_timers(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sl_vm_close(w);
    uv_loop_close(&w->loop);
    cli_worker = NULL;
    free(w);
    lua_close(ML);
    sl_snapshot_close();
    free(rest);
    fflush(stdout);
    return rc;
}
