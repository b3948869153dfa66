/* sdnotify.c - see sdnotify.h. The protocols are systemd's sd_notify(3),
 * sd_listen_fds(3) and systemd.exec(5)'s $JOURNAL_STREAM. */
#define _DEFAULT_SOURCE
#include "util/sdnotify.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A decimal environment variable, or -1. */
static long long sd__env_num(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return -1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    return errno || *end || n < 0 ? -1 : n;
}

static bool sd__ours(const char *pid_var) {
    long long pid = sd__env_num(pid_var);
    return pid < 0 || pid == (long long)getpid();
}

int sd_notify_msg(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@')) return -1;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = '\0'; /* an abstract socket */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    close(fd);
    return w < 0 ? -1 : 0;
}

int64_t sd_watchdog_usec(void) {
    long long us = sd__env_num("WATCHDOG_USEC");
    return us > 0 && sd__ours("WATCHDOG_PID") ? (int64_t)us : 0;
}

int sd_listen_socket(void) {
    long long n = sd__env_num("LISTEN_FDS");
    if (n < 1 || !sd__ours("LISTEN_PID")) return -1;
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
    int fd = 3; /* SD_LISTEN_FDS_START */
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return -1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

bool sd_stderr_is_journal(void) {
    const char *v = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0) return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
