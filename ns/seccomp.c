#include "ns/seccomp.h"

#include <errno.h>
#include <seccomp.h>
#include <string.h>

#include "common/log.h"

int seccomp_install_fakeroot(void)
{
	static const char *const faked[] = {
		"chown", "fchown", "lchown", "fchownat", "chown32", "fchown32", "lchown32",
		"setgroups", "setgroups32",
		/* Dropping privileges to a system user must look successful as
		 * well, or package managers abort before they do any work. */
		"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
		"setfsuid", "setfsgid",
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r = 0;

	if (!ctx)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(faked) / sizeof(faked[0]); i++) {
		int nr = seccomp_syscall_resolve_name(faked[i]);

		if (nr == __NR_SCMP_ERROR)
			continue; /* not a system call on this architecture */
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(0), nr, 0);
		if (r < 0) {
			log_error("cannot add '%s' to the fakeroot seccomp filter: %s", faked[i], strerror(-r));
			goto out;
		}
	}
	r = seccomp_load(ctx);
	if (r < 0)
		log_error("cannot load the fakeroot seccomp filter: %s", strerror(-r));
out:
	seccomp_release(ctx);
	return r;
}
