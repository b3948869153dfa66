/* cli.h - admin commands that talk to a running server: ps, load, unload.
 *
 * Each command takes the arguments after its name (argv[0] is the first
 * option, not the command) and returns the process exit code:
 *
 *   CLI_OK       0  done
 *   CLI_FAILED   1  the server answered with an error, a load failed, or a
 *                   wait timed out (the message is on stderr)
 *   CLI_USAGE    2  bad arguments
 *   CLI_CONNECT  3  no server reachable at host:port
 *
 * Common options: --host H (CORRAL_HOST, default 127.0.0.1), --port N
 * (CORRAL_PORT, default 8080), --admin-api-key K (CORRAL_ADMIN_API_KEY, sent
 * as "Authorization: Bearer K"), --timeout S (120 for load, 30 otherwise).
 */
#ifndef CORRAL_CLI_H
#define CORRAL_CLI_H

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_CONNECT = 3 };

/* corral ps: print the pool and its models as a table on stdout. */
int cli_ps(int argc, char **argv);
/* corral load ID: start a load and wait until it is loaded or failed. */
int cli_load(int argc, char **argv);
/* corral unload ID [--force]: unload, waiting for in-flight requests. */
int cli_unload(int argc, char **argv);

/* corral run MODEL [PROMPT]: stream one answer, or chat in the terminal
 * (cli_run.c). */
int cli_run(int argc, char **argv);

/* The usage lines of the three commands and their options, for main's usage. */
extern const char cli_usage_text[];

#endif
