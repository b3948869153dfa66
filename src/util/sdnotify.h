/* sdnotify.h - what systemd gives and asks of a service, by its plain
 * protocols (no libsystemd): readiness and status on $NOTIFY_SOCKET,
 * watchdog pings, a socket passed by socket activation ($LISTEN_FDS), and
 * whether stderr goes to the journal ($JOURNAL_STREAM). Every call is a
 * no-op outside systemd. */
#ifndef CORRAL_UTIL_SDNOTIFY_H
#define CORRAL_UTIL_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Send one notification ("READY=1", "STATUS=...", "STOPPING=1",
 * "WATCHDOG=1"; several lines may go in one). 0 when sent or when there is
 * no $NOTIFY_SOCKET; -1 when sending failed. */
int sd_notify_msg(const char *msg);
/* The watchdog interval systemd set for this process (WATCHDOG_USEC, when
 * WATCHDOG_PID is unset or ours), microseconds; 0 = none. */
int64_t sd_watchdog_usec(void);
/* The first socket passed by socket activation (fd 3, when LISTEN_FDS >= 1
 * and LISTEN_PID is unset or ours), made close-on-exec, with the
 * variables removed so children do not see them; -1 = none. */
int sd_listen_socket(void);
/* Whether stderr is the journal's stream ($JOURNAL_STREAM names its device
 * and inode). */
bool sd_stderr_is_journal(void);

#endif
