#ifndef SL_RAG_CLI_H
#define SL_RAG_CLI_H

/** Runs `sluice rag ...` (argv[0] is "rag"); returns the process exit code. */
int sl_rag_cli(int argc, char **argv);
/** Ends the running command with exit code rc (called from Lua, sluice.rag.cli). */
void sl_rag_cli_done(int rc);

#endif
