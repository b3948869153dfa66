/* time.h - monotonic and wall clocks. */
#ifndef CORRAL_TIME_H
#define CORRAL_TIME_H

#include <stdint.h>
#include <time.h>

/* Monotonic time in microseconds / milliseconds. */
int64_t time_now_us(void);
int64_t time_now_ms(void);
/* Wall-clock seconds since the epoch. */
int64_t time_wall_s(void);
/* Fill *ts with the CLOCK_MONOTONIC time `ms` milliseconds from now (for
 * pthread_cond_timedwait on a condvar set to CLOCK_MONOTONIC). */
void time_deadline_ms(struct timespec *ts, int64_t ms);

#endif
