/* supervisor.c - child model-server processes (see supervisor.h).
 *
 * DESIGN
 * child_spawn prepares everything in the parent, then forks:
 *
 *   parent                                  child (async-signal-safe only)
 *   resolve argv[0] in PATH                 setpgid(0, 0)
 *   open log, /dev/null                     prctl(PR_SET_PDEATHSIG, SIGKILL)
 *   pipe2(out), pipe2(status)  (CLOEXEC)    getppid() != parent? -> _exit
 *   move those fds above 2                  reset every signal to SIG_DFL
 *   block all signals                       dup2 /dev/null->0, out->1, out->2
 *   fork ----------------------------->     close every fd >= 3 but status
 *   restore the signal mask                 empty the signal mask
 *   pidfd_open(pid)                         execve
 *   read(status): EOF = running             on failure: write {step, errno}
 *                 else reap, report                     to status, _exit(127)
 *
 * All signals are blocked across fork so that no handler of the parent can
 * run in the child (a handler writing to the parent's self-pipe would fake
 * an event there); the child resets dispositions before it unblocks. The
 * fds the child uses are moved to 3 or above in the parent, so its dup2s
 * onto 0-2 never clobber one another even when the parent had closed its
 * own stdio. Every fd is close-on-exec in the parent, so a fork by another
 * thread never leaks our pipe ends into some other program.
 *
 * The log: the parent owns the file; child_drain copies the pipe into it,
 * and after a write that brings it to log_cap or more renames it to
 * log_path.1 and opens a new one. So a rotated file holds at most
 * log_cap + one read (16 KiB) bytes.
 */
#define _GNU_SOURCE
#include "engine/supervisor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/log.h"
#include "util/time.h"

extern char **environ;

#define SUPERVISOR_CHUNK 16384                 /* one read from the output pipe */
#define SUPERVISOR_DRAIN_MAX ((size_t)1 << 20) /* most bytes one child_drain moves */
#define SUPERVISOR_FD_MAX 65536                /* fallback close loop bound */
#define SUPERVISOR_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define SUPERVISOR_POLL_MS 10 /* waitpid poll period without a pidfd */

static void supervisor__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void supervisor__err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ command lines */

static bool supervisor__blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\n'; }

/* Append word with its {key} placeholders replaced (one pass). 0 or -1 (no
 * memory). */
static int supervisor__subst(struct buf *out, const char *word, size_t len, const char *const *keys,
                             const char *const *values, size_t n_subst) {
    for (size_t i = 0; i < len;) {
        if (word[i] == '{') {
            size_t k;
            for (k = 0; k < n_subst; k++) {
                if (!keys || !keys[k]) continue;
                size_t kl = strlen(keys[k]);
                if (i + kl + 2 <= len && memcmp(word + i + 1, keys[k], kl) == 0 && word[i + 1 + kl] == '}')
                    break;
            }
            if (k < n_subst) {
                const char *v = values && values[k] ? values[k] : "";
                if (buf_puts(out, v) < 0) return -1;
                i += strlen(keys[k]) + 2;
                continue;
            }
        }
        if (buf_append(out, word + i, 1) < 0) return -1;
        i++;
    }
    return 0;
}

void supervisor_argv_free(char **argv) {
    if (!argv) return;
    for (char **a = argv; *a; a++) free(*a);
    free(argv);
}

/* Add a finished word (taken over: freed here on failure) to the argv under
 * construction. 0 or -1 (no memory). */
static int supervisor__push(char ***argv, size_t *n, size_t *alloc, char *word) {
    if (*n + 2 > *alloc) {
        size_t na = *alloc ? *alloc * 2 : 8;
        char **p = realloc(*argv, na * sizeof *p);
        if (!p) {
            free(word);
            return -1;
        }
        *argv = p;
        *alloc = na;
    }
    (*argv)[(*n)++] = word;
    (*argv)[*n] = NULL;
    return 0;
}

char **supervisor_split(const char *cmdline, const char *const *keys, const char *const *values,
                        size_t n_subst, char *err, size_t errlen) {
    char **argv = NULL;
    size_t n = 0, alloc = 0;
    struct buf raw, word;
    buf_init(&raw, 0);
    buf_init(&word, 0);
    if (err && errlen) err[0] = '\0';
    if (!cmdline) cmdline = "";

    const char *s = cmdline;
    for (;;) {
        while (supervisor__blank(*s)) s++;
        if (!*s) break;
        /* one word: up to the next blank outside quotes */
        buf_reset(&raw);
        bool have = false; /* a quoted '' counts as a (possibly empty) word */
        while (*s && !supervisor__blank(*s)) {
            if (*s == '\'') {
                const char *open = s++;
                const char *close = strchr(s, '\'');
                if (!close) {
                    supervisor__err(err, errlen, "unbalanced ' quote at offset %zu", (size_t)(open - cmdline));
                    goto fail;
                }
                if (buf_append(&raw, s, (size_t)(close - s)) < 0) goto oom;
                s = close + 1;
                have = true;
            } else if (*s == '"') {
                const char *open = s++;
                while (*s && *s != '"') {
                    if (*s == '\\' && (s[1] == '"' || s[1] == '\\')) s++;
                    if (buf_append(&raw, s, 1) < 0) goto oom;
                    s++;
                }
                if (!*s) {
                    supervisor__err(err, errlen, "unbalanced \" quote at offset %zu", (size_t)(open - cmdline));
                    goto fail;
                }
                s++;
                have = true;
            } else if (*s == '\\') {
                if (!s[1]) {
                    supervisor__err(err, errlen, "trailing backslash");
                    goto fail;
                }
                if (buf_append(&raw, s + 1, 1) < 0) goto oom;
                s += 2;
                have = true;
            } else {
                if (buf_append(&raw, s, 1) < 0) goto oom;
                s++;
                have = true;
            }
        }
        if (!have) continue;
        buf_reset(&word);
        if (supervisor__subst(&word, raw.data ? raw.data : "", raw.len, keys, values, n_subst) < 0) goto oom;
        char *w = buf_steal(&word, NULL);
        if (!w || supervisor__push(&argv, &n, &alloc, w) < 0) goto oom;
    }
    if (n == 0) {
        supervisor__err(err, errlen, "empty command");
        goto fail;
    }
    buf_free(&raw);
    buf_free(&word);
    return argv;

oom:
    supervisor__err(err, errlen, "out of memory");
fail:
    buf_free(&raw);
    buf_free(&word);
    supervisor_argv_free(argv);
    return NULL;
}

/* A bounded writer for supervisor_argv_str: drops what does not fit. */
struct supervisor__out {
    char *buf;
    size_t n, len;
};

static void supervisor__putc(struct supervisor__out *o, char ch) {
    if (o->len + 1 < o->n) {
        o->buf[o->len++] = ch;
        o->buf[o->len] = '\0';
    }
}

static void supervisor__puts(struct supervisor__out *o, const char *s) {
    for (; *s; s++) supervisor__putc(o, *s);
}

void supervisor_argv_str(char *const *argv, char *buf, size_t n) {
    if (!buf || !n) return;
    struct supervisor__out o = {buf, n, 0};
    buf[0] = '\0';
    if (!argv) return;
    for (size_t i = 0; argv[i]; i++) {
        const char *w = argv[i];
        if (i) supervisor__putc(&o, ' ');
        if (*w && !w[strcspn(w, " \t\n'\"\\")]) {
            supervisor__puts(&o, w);
            continue;
        }
        supervisor__putc(&o, '\'');
        for (; *w; w++) {
            if (*w == '\'')
                supervisor__puts(&o, "'\\''");
            else
                supervisor__putc(&o, *w);
        }
        supervisor__putc(&o, '\'');
    }
}

/* ------------------------------------------------------------ host helpers */

int supervisor_free_port(void) {
    int port = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* mkdir one path; an existing directory is fine. 0 or -1 with errno. */
static int supervisor__mkdir1(const char *path, mode_t mode) {
    if (mkdir(path, mode) == 0) return 0;
    int e = errno;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        errno = ENOTDIR;
        return -1;
    }
    errno = e;
    return -1;
}

int supervisor_mkdirs(const char *dir, mode_t mode) {
    if (!dir || !*dir) {
        errno = ENOENT;
        return -1;
    }
    char *path = strdup(dir);
    if (!path) return -1;
    int rc = -1;
    /* every parent, then dir itself; repeated slashes give empty steps */
    for (char *p = path + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = '\0';
        int r = supervisor__mkdir1(path, mode);
        *p = '/';
        if (r < 0) goto fail;
    }
    if (supervisor__mkdir1(path, mode) < 0) goto fail;
    rc = 0;
fail:;
    int e = errno;
    free(path);
    errno = e;
    return rc;
}

int supervisor_state_dir(char *buf, size_t n) {
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int w;
    if (xdg && xdg[0] == '/')
        w = snprintf(buf, n, "%s/corral", xdg);
    else if (home && home[0] == '/')
        w = snprintf(buf, n, "%s/.local/state/corral", home);
    else {
        errno = ENOENT;
        return -1;
    }
    if (w < 0 || (size_t)w >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ children */

struct child {
    pid_t pid;
    int pidfd;  /* -1 when unsupported */
    int out_fd; /* read end of the output pipe, non-blocking; -1 after EOF */
    int log_fd; /* -1 when the log could not be reopened after a rotation */
    char *log_path;
    char *log_old; /* log_path + ".1" */
    size_t log_cap;
    uint64_t log_size;
    bool log_warned;   /* one warning per child when output is dropped */
    bool reaped;
    bool group_killed; /* the final SIGKILL to the group was sent */
    int status;
};

/* What the child reports through the status pipe when a step fails. */
enum child__step { CHILD_STEP_SETUP = 0, CHILD_STEP_EXEC };
struct child__report {
    int step;
    int err;
};

/* Everything the child needs between fork and exec, prepared by the parent
 * so the child only makes async-signal-safe calls. */
struct child__plan {
    const char *path;
    char *const *argv;
    char **envp;
    pid_t parent;
    int null_fd, out_w, status_w;
    long fd_max; /* bound of the fallback close loop */
    sigset_t empty;
    struct sigaction dfl;
};

pid_t child_pid(const struct child *c) { return c->pid; }
int child_pidfd(const struct child *c) { return c->pidfd; }
int child_out_fd(const struct child *c) { return c->out_fd; }
const char *child_log_path(const struct child *c) { return c->log_path; }

/* Find name in PATH (like execvp, without running anything). Returns a
 * malloc'd path, or NULL with *e = ENOENT / EACCES / ENOMEM. */
static char *supervisor__resolve(const char *name, int *e) {
    if (strchr(name, '/')) {
        char *p = strdup(name);
        if (!p) *e = ENOMEM;
        return p;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = SUPERVISOR_DEFAULT_PATH;
    *e = ENOENT;
    for (const char *p = path;;) {
        const char *q = strchr(p, ':');
        size_t dl = q ? (size_t)(q - p) : strlen(p);
        const char *dir = dl ? p : ".";
        int dn = dl ? (int)dl : 1;
        size_t sz = (size_t)dn + strlen(name) + 2;
        char *cand = malloc(sz);
        if (!cand) {
            *e = ENOMEM;
            return NULL;
        }
        snprintf(cand, sz, "%.*s/%s", dn, dir, name);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(cand, X_OK) == 0) return cand;
            *e = EACCES;
        }
        free(cand);
        if (!q) break;
        p = q + 1;
    }
    return NULL;
}

/* Move fd out of 0-2 (keeping it close-on-exec). Returns the fd to use; -1
 * with errno on failure (fd is closed either way then). */
static int supervisor__above_stdio(int fd) {
    if (fd < 0 || fd > 2) return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static void child__close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* In the child: close every fd >= 3 except keep (>= 3). */
static void child__close_others(int keep, long fd_max) {
#ifdef SYS_close_range
    bool ok = true;
    if (keep > 3 && syscall(SYS_close_range, 3U, (unsigned)keep - 1, 0U) != 0) ok = false;
    if (ok && syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U) == 0) return;
#endif
    for (int fd = 3; fd < fd_max; fd++)
        if (fd != keep) close(fd);
}

/* In the child: report a failed step to the parent and exit. */
static _Noreturn void child__die(const struct child__plan *pl, int step, int e) {
    struct child__report rep = {step, e};
    ssize_t w;
    do w = write(pl->status_w, &rep, sizeof rep);
    while (w < 0 && errno == EINTR);
    _exit(127);
}

/* In the child, after fork: only async-signal-safe calls from here on. */
static _Noreturn void child__exec(const struct child__plan *pl) {
    if (setpgid(0, 0) != 0) child__die(pl, CHILD_STEP_SETUP, errno);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child__die(pl, CHILD_STEP_SETUP, errno);
    if (getppid() != pl->parent) _exit(127); /* the parent died before prctl: nobody to report to */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &pl->dfl, NULL); /* EINVAL for libc's reserved ones: fine */
    }
    if (dup2(pl->null_fd, 0) < 0 || dup2(pl->out_w, 1) < 0 || dup2(pl->out_w, 2) < 0)
        child__die(pl, CHILD_STEP_SETUP, errno);
    child__close_others(pl->status_w, pl->fd_max);
    if (sigprocmask(SIG_SETMASK, &pl->empty, NULL) != 0) child__die(pl, CHILD_STEP_SETUP, errno);
    execve(pl->path, pl->argv, pl->envp);
    child__die(pl, CHILD_STEP_EXEC, errno);
}

/* Open (create, append) the log at c->log_path; trunc starts it empty. */
static int child__open_log(struct child *c, bool trunc) {
    int fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (trunc ? O_TRUNC : 0), 0600);
    if (fd < 0) return -1;
    struct stat st;
    c->log_size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    c->log_fd = fd;
    return 0;
}

/* Rename the log to log_path.1 and start a new one. */
static void child__rotate(struct child *c) {
    if (rename(c->log_path, c->log_old) != 0 && errno != ENOENT)
        log_warn("child %d: cannot rotate %s: %s; starting it over", (int)c->pid, c->log_path, strerror(errno));
    child__close_fd(&c->log_fd);
    c->log_size = 0;
    if (child__open_log(c, true) < 0 && !c->log_warned) {
        c->log_warned = true;
        log_warn("child %d: cannot reopen %s: %s; its output is dropped", (int)c->pid, c->log_path,
                 strerror(errno));
    }
}

/* Write one chunk of output to the log, rotating after it when due. */
static void child__log_write(struct child *c, const char *p, size_t n) {
    if (c->log_fd < 0) return;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(c->log_fd, p + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (!c->log_warned) {
                c->log_warned = true;
                log_warn("child %d: writing %s: %s; output dropped", (int)c->pid, c->log_path,
                         w < 0 ? strerror(errno) : "short write");
            }
            break;
        }
        off += (size_t)w;
        c->log_size += (uint64_t)w;
    }
    if (c->log_size >= c->log_cap) child__rotate(c);
}

struct child *child_spawn(const struct child_params *p, char *err, size_t errlen) {
    struct child *c = NULL;
    char *path = NULL;
    int null_fd = -1, out[2] = {-1, -1}, st[2] = {-1, -1};
    if (err && errlen) err[0] = '\0';
    if (!p || !p->argv || !p->argv[0] || !p->argv[0][0] || !p->log_path || !p->log_path[0]) {
        supervisor__err(err, errlen, "child_spawn: no program or no log path");
        return NULL;
    }
    const char *name = p->argv[0];

    c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->pid = -1;
    c->pidfd = c->out_fd = c->log_fd = -1;
    c->log_cap = p->log_cap ? p->log_cap : SUPERVISOR_LOG_CAP_DEFAULT;
    size_t pl = strlen(p->log_path);
    c->log_path = strdup(p->log_path);
    c->log_old = malloc(pl + 3);
    if (!c->log_path || !c->log_old) goto oom;
    memcpy(c->log_old, p->log_path, pl);
    memcpy(c->log_old + pl, ".1", 3);

    int e = 0;
    path = supervisor__resolve(name, &e);
    if (!path) {
        if (e == ENOMEM) goto oom;
        supervisor__err(err, errlen, "cannot run %s: %s (searched PATH)", name, strerror(e));
        goto fail;
    }
    if (child__open_log(c, false) < 0) {
        supervisor__err(err, errlen, "cannot open log %s: %s", c->log_path, strerror(errno));
        goto fail;
    }
    if (c->log_size >= c->log_cap) child__rotate(c);

    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || (null_fd = supervisor__above_stdio(null_fd)) < 0) {
        supervisor__err(err, errlen, "cannot open /dev/null: %s", strerror(errno));
        goto fail;
    }
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(st, O_CLOEXEC) != 0) {
        supervisor__err(err, errlen, "cannot make a pipe: %s", strerror(errno));
        goto fail;
    }
    for (int i = 0; i < 2; i++) {
        if ((out[i] = supervisor__above_stdio(out[i])) < 0 || (st[i] = supervisor__above_stdio(st[i])) < 0) {
            supervisor__err(err, errlen, "cannot move a pipe off stdio: %s", strerror(errno));
            goto fail;
        }
    }
    if (fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK) != 0) {
        supervisor__err(err, errlen, "cannot make the output pipe non-blocking: %s", strerror(errno));
        goto fail;
    }

    struct child__plan plan = {
        .path = path, .argv = p->argv, .envp = environ, .parent = getpid(),
        .null_fd = null_fd, .out_w = out[1], .status_w = st[1]};
    long mx = sysconf(_SC_OPEN_MAX);
    plan.fd_max = mx < 0 || mx > SUPERVISOR_FD_MAX ? SUPERVISOR_FD_MAX : mx;
    sigemptyset(&plan.empty);
    memset(&plan.dfl, 0, sizeof plan.dfl);
    plan.dfl.sa_handler = SIG_DFL;
    sigemptyset(&plan.dfl.sa_mask);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) child__exec(&plan);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        supervisor__err(err, errlen, "cannot run %s: fork: %s", name, strerror(fork_errno));
        goto fail;
    }
    c->pid = pid;
#ifdef SYS_pidfd_open
    c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0U); /* close-on-exec by the kernel */
    if (c->pidfd < 0) c->pidfd = -1;
#endif
    child__close_fd(&out[1]);
    child__close_fd(&st[1]);
    child__close_fd(&null_fd);
    c->out_fd = out[0];
    out[0] = -1;

    struct child__report rep;
    ssize_t r;
    do r = read(st[0], &rep, sizeof rep);
    while (r < 0 && errno == EINTR);
    child__close_fd(&st[0]);
    if (r != 0) {
        if (r == (ssize_t)sizeof rep && rep.step == CHILD_STEP_EXEC) {
            if (strcmp(path, name) != 0)
                supervisor__err(err, errlen, "cannot run %s (%s): %s", name, path, strerror(rep.err));
            else
                supervisor__err(err, errlen, "cannot run %s: %s", name, strerror(rep.err));
        } else if (r == (ssize_t)sizeof rep) {
            supervisor__err(err, errlen, "cannot run %s: setting up the child: %s", name, strerror(rep.err));
        } else {
            supervisor__err(err, errlen, "cannot run %s: lost track of the child (%s)", name,
                            r < 0 ? strerror(errno) : "short report");
        }
        goto fail; /* child_free below kills (if need be) and reaps it */
    }
    free(path);
    return c;

oom:
    supervisor__err(err, errlen, "out of memory");
fail:
    child__close_fd(&null_fd);
    child__close_fd(&out[0]);
    child__close_fd(&out[1]);
    child__close_fd(&st[0]);
    child__close_fd(&st[1]);
    free(path);
    child_free(c);
    return NULL;
}

ssize_t child_drain(struct child *c) {
    if (!c || c->out_fd < 0) return 0;
    char chunk[SUPERVISOR_CHUNK];
    size_t moved = 0;
    while (moved < SUPERVISOR_DRAIN_MAX) {
        ssize_t r = read(c->out_fd, chunk, sizeof chunk);
        if (r > 0) {
            child__log_write(c, chunk, (size_t)r);
            moved += (size_t)r;
        } else if (r == 0) {
            child__close_fd(&c->out_fd);
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            if (moved) break; /* report it on the next call */
            return -1;
        }
    }
    return (ssize_t)moved;
}

bool child_reap(struct child *c, int *status) {
    if (!c->reaped && c->pid > 0) {
        int st = 0;
        pid_t r;
        do r = waitpid(c->pid, &st, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == c->pid) {
            c->reaped = true;
            c->status = st;
        } else if (r < 0 && errno == ECHILD) {
            log_warn("child %d was reaped elsewhere; its exit status is unknown", (int)c->pid);
            c->reaped = true;
            c->status = 0;
        }
    }
    if (c->reaped && status) *status = c->status;
    return c->reaped;
}

void child_describe_status(int status, char *buf, size_t n) {
    if (!buf || !n) return;
    if (WIFEXITED(status)) {
        snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *name = strsignal(sig);
        bool core = false;
#ifdef WCOREDUMP
        core = WCOREDUMP(status);
#endif
        snprintf(buf, n, "killed by signal %d (%s)%s", sig, name ? name : "?", core ? ", core dumped" : "");
    } else if (WIFSTOPPED(status)) {
        int sig = WSTOPSIG(status);
        const char *name = strsignal(sig);
        snprintf(buf, n, "stopped by signal %d (%s)", sig, name ? name : "?");
    } else {
        snprintf(buf, n, "wait status 0x%x", (unsigned)status);
    }
}

/* Signal the child's process group (or the child alone if the group is
 * gone already). */
static void child__signal(struct child *c, int sig) {
    if (kill(-c->pid, sig) != 0) kill(c->pid, sig);
}

/* Wait up to grace_ms for the child to exit on its own, draining output. */
static void child__wait_grace(struct child *c, int grace_ms) {
    int64_t deadline = time_now_ms() + grace_ms;
    bool poll_out = true;
    while (!child_reap(c, NULL)) {
        int64_t left = deadline - time_now_ms();
        if (left <= 0) break;
        struct pollfd pf[2];
        nfds_t np = 0;
        if (c->pidfd >= 0) pf[np++] = (struct pollfd){.fd = c->pidfd, .events = POLLIN};
        if (poll_out && c->out_fd >= 0) pf[np++] = (struct pollfd){.fd = c->out_fd, .events = POLLIN};
        int tmo = (int)(c->pidfd >= 0 ? left : (left < SUPERVISOR_POLL_MS ? left : SUPERVISOR_POLL_MS));
        if (np)
            poll(pf, np, tmo);
        else
            nanosleep(&(struct timespec){0, (long)tmo * 1000000L}, NULL);
        if (poll_out && child_drain(c) < 0) poll_out = false;
    }
}

int child_stop(struct child *c, int grace_ms) {
    if (!c || c->pid <= 0) return 0;
    if (!child_reap(c, NULL)) {
        if (grace_ms > 0) {
            child__signal(c, SIGTERM);
            child__wait_grace(c, grace_ms);
        }
        if (!c->reaped) {
            child__signal(c, SIGKILL);
            int st = 0;
            pid_t r;
            do r = waitpid(c->pid, &st, 0);
            while (r < 0 && errno == EINTR);
            c->reaped = true;
            c->status = r == c->pid ? st : 0;
        }
    }
    if (!c->group_killed) {
        c->group_killed = true;
        kill(-c->pid, SIGKILL); /* grandchildren left in the group; ESRCH when none */
    }
    child_drain(c);
    return c->status;
}

void child_free(struct child *c) {
    if (!c) return;
    if (c->pid > 0) child_stop(c, 0);
    child_drain(c);
    child__close_fd(&c->out_fd);
    child__close_fd(&c->pidfd);
    child__close_fd(&c->log_fd);
    free(c->log_path);
    free(c->log_old);
    free(c);
}
