#pragma once

/* Install the fakeroot filter used by fim-root when only one id is mapped.
 *
 * Package managers running as root change file owners to system users and
 * call setgroups(2). With a single mapped id the kernel rejects both, since
 * the target ids do not exist in the namespace. The filter makes these calls
 * return success without effect, as Apptainer's fakeroot mode does when no
 * subordinate ids are configured. The files keep the one mapped owner. */
int seccomp_install_fakeroot(void);
