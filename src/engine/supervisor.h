/* supervisor.h - start, watch and stop child model-server processes
 * (llama-server, vLLM, ... started by corral).
 *
 * A child is started from a command line that corral splits itself (no
 * shell), with "{port}"/"{model}"-style placeholders filled in. Its stdout
 * and stderr go through a pipe that the owner drains into a size-capped,
 * rotated log file. It runs in its own process group, with stdin from
 * /dev/null, only fds 0-2 open, an empty signal mask and default signal
 * dispositions, and it is killed (SIGKILL) if the thread that spawned it
 * dies. Stopping is SIGTERM to the group, a grace period, then SIGKILL.
 *
 * DESIGN
 * The fork happens in child_spawn and everything that can fail in a way the
 * caller should hear about is done before it, in the parent: resolving
 * argv[0] in PATH, opening the log and /dev/null, making the pipes. Between
 * fork and execve the child makes only async-signal-safe calls (the parent
 * may have other threads, whose locks the child inherits held). Whether
 * execve worked comes back over a close-on-exec status pipe: EOF means the
 * exec happened; otherwise the child writes the errno of the step that
 * failed and exits 127, and child_spawn reaps it and returns the message.
 * So child_spawn returns only once the new program is running (or with
 * nothing left running).
 *
 * PR_SET_PDEATHSIG is tied to the *thread* that forked, not to the process:
 * when that thread exits, the kernel kills the child even though corral
 * goes on. Spawn from a long-lived thread (the main thread or the pool's
 * own thread), never from a short-lived worker.
 *
 * Exit notification: child_pidfd (pidfd_open, Linux >= 5.3) becomes
 * readable once the child exited, so an event loop can poll it next to
 * child_out_fd; reap with child_reap afterwards. Without pidfd support
 * (child_pidfd() == -1) callers poll child_reap.
 *
 * Threads: the supervisor_* helpers are thread-safe (supervisor_state_dir
 * reads the environment). A struct child belongs to one owner at a time:
 * its functions must not be called concurrently on the same child.
 */
#ifndef CORRAL_SUPERVISOR_H
#define CORRAL_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SUPERVISOR_LOG_CAP_DEFAULT ((size_t)8 << 20) /* 8 MiB */

/* ------------------------------------------------------------ command lines */

/* Split a command line into argv without a shell: words separated by blanks
 * (space, tab, newline); '...' quotes literally; "..." quotes with backslash
 * escaping only \" and \\ (any other backslash stays as is); outside quotes
 * a backslash escapes the next char. A quoted empty string ('' or "") is an
 * empty word.
 *
 * After a word is unquoted, each "{key}" in it for the n_subst keys is
 * replaced by its value (e.g. keys {"port","model"}), in one left-to-right
 * pass: a value is never scanned again, a value with blanks stays one word,
 * and an unknown "{x}" is left as is. values[i] NULL counts as "".
 *
 * Returns a malloc'd NULL-terminated argv that the caller frees with
 * supervisor_argv_free, or NULL with a message in err (unbalanced quote,
 * empty command, trailing backslash, out of memory). err may be NULL. */
char **supervisor_split(const char *cmdline, const char *const *keys, const char *const *values,
                        size_t n_subst, char *err, size_t errlen);
/* Free an argv from supervisor_split. NULL is fine. */
void supervisor_argv_free(char **argv);
/* "a b 'c d'" for logs: argv joined with blanks; a word that is empty or
 * holds a blank, a quote or a backslash is single-quoted (a ' inside as
 * '\''), so supervisor_split reads the result back as the same argv.
 * Writes into buf (always NUL-terminated when n > 0; cut short if small). */
void supervisor_argv_str(char *const *argv, char *buf, size_t n);

/* ------------------------------------------------------------ host helpers */

/* A free TCP port on 127.0.0.1 (bind port 0, getsockname, close); 0 on
 * failure. Another process may take it before the caller binds it. */
int supervisor_free_port(void);
/* mkdir -p: create dir and every missing parent with mode (less the umask).
 * 0 on success (existing directories are fine); -1 with errno (ENOTDIR when
 * a component exists and is not a directory). */
int supervisor_mkdirs(const char *dir, mode_t mode);
/* corral's state directory: $XDG_STATE_HOME/corral when XDG_STATE_HOME is
 * set and absolute, else $HOME/.local/state/corral (HOME set and absolute).
 * 0 with the path in buf; -1 if neither is usable (errno ENOENT) or buf is
 * too small (ENAMETOOLONG). Creates nothing. */
int supervisor_state_dir(char *buf, size_t n);

/* ------------------------------------------------------------ children */

struct child; /* opaque */

struct child_params {
    char *const *argv;    /* argv[0] is searched in PATH when it has no '/' (in the parent, before fork) */
    const char *log_path; /* stdout+stderr of the child are written here (appended, mode 0600); its directory must exist */
    size_t log_cap;       /* when the file passes this many bytes it is renamed to log_path + ".1" (replacing an
                             older one) and a new file is started; 0 = SUPERVISOR_LOG_CAP_DEFAULT */
};

/* Start the child: fork + execve with the parent's environment. Nothing in
 * p is kept (argv and log_path are copied or used before return).
 *
 * In the child, before exec: its own process group (setpgid(0,0));
 * PR_SET_PDEATHSIG SIGKILL (and an immediate exit if the parent already
 * died); stdin from /dev/null; stdout and stderr to the output pipe; every
 * other fd closed; signal mask emptied and every disposition reset to
 * SIG_DFL (so a parent that blocks SIGINT/SIGTERM or ignores SIGPIPE does
 * not pass that on). See DESIGN about PR_SET_PDEATHSIG and threads.
 *
 * Returns the child, owned by the caller (free with child_free), once the
 * program is running. NULL with a message in err on failure ("cannot run
 * NAME: No such file or directory", "cannot open log PATH: ..."), with
 * nothing left running. err may be NULL. */
struct child *child_spawn(const struct child_params *p, char *err, size_t errlen);
pid_t child_pid(const struct child *c);
/* A pidfd that becomes readable once the child exited (poll for POLLIN);
 * -1 when the kernel does not support pidfd_open. Owned by the child. */
int child_pidfd(const struct child *c);
/* The non-blocking read end of the output pipe, for poll; -1 after EOF.
 * Owned by the child: read it only through child_drain. */
int child_out_fd(const struct child *c);
const char *child_log_path(const struct child *c);
/* Move whatever output is waiting into the log without blocking (at most
 * about 1 MiB per call, so a chatty child cannot starve the caller; poll
 * again), rotating at the cap. Returns the bytes moved: 0 when nothing was
 * waiting or at EOF (then the fd is closed and child_out_fd returns -1);
 * -1 on a read error other than EAGAIN. Output that cannot be written to
 * the log (disk full) is dropped, with one warning, so the child never
 * blocks on a full pipe. */
ssize_t child_drain(struct child *c);
/* Reap without blocking (waitpid WNOHANG). true once the child has exited;
 * *status (may be NULL) gets its wait status. After true, later calls
 * return true with the same status. (If someone else reaped it, ECHILD,
 * it counts as exited with status 0.) */
bool child_reap(struct child *c, int *status);
/* Describe a wait status: "exit status 3", "killed by signal 9 (Killed)"
 * (strsignal; ", core dumped" when so). Writes into buf. */
void child_describe_status(int status, char *buf, size_t n);
/* Stop it: SIGTERM to the process group, wait up to grace_ms for it to
 * exit (polling the pidfd, or waitpid every 10 ms without one) while
 * draining its output, then SIGKILL to the group and reap (blocking).
 * Afterwards SIGKILL goes to the group once more, in case grandchildren
 * linger. Returns the wait status. Idempotent: a child already reaped
 * (here or by child_reap) just gets the group kill, once, and returns its
 * status. grace_ms <= 0: SIGKILL at once. */
int child_stop(struct child *c, int grace_ms);
/* Stop it (grace 0) if still running, drain what output is left, close
 * its fds and free it. NULL is fine. */
void child_free(struct child *c);

#endif
