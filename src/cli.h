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

#include <stddef.h>

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

/* corral list, corral show MODEL: the models a server knows, with what
 * their GGUF headers say (cli_list.c). */
int cli_list(int argc, char **argv);
int cli_show(int argc, char **argv);
/* The table of the configured models' files when no server is asked. */
void cli_list_offline(const char *const *ids, const char *const *paths, size_t n);

/* The server's base URL: flag (--url), else http://$CORRAL_HOST:$CORRAL_PORT
 * (127.0.0.1:8080); a trailing / or /v1 dropped. */
void cli_base_url(const char *flag, char *out, size_t n);

/* GET base+path (auth: a whole "Authorization: ..." header, or NULL/"")
 * into *out (the body's JSON, or NULL). The HTTP status, or -1 when no
 * server answered (then `who`, unless NULL, prints one line saying so). */
#include <jansson.h>
long cli_get_json(const char *base, const char *auth, const char *path, json_t **out, const char *who);

/* The usage lines of the three commands and their options, for main's usage. */
extern const char cli_usage_text[];

#endif
