/* Signal forwarding shared by the supervisor and the container's init. */
#pragma once

#include <signal.h>
#include <stdbool.h>

/* SIGCHLD plus the signals relayed to the program: SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM and SIGCONT. */
void signals_forwarded_set(sigset_t *set);

/* Whether a received signal should be relayed. Signals the terminal driver
 * sends (Ctrl-C, a resize) reach the program's process group directly and
 * carry SI_KERNEL; relaying those too would deliver them twice. */
bool signals_should_forward(const siginfo_t *info);

/* Restore default dispositions before exec. */
void signals_reset_dispositions(void);
