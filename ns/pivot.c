#include "ns/pivot.h"

#include <errno.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"

int pivot_into(const char *new_root)
{
	if (chdir(new_root) < 0) {
		log_error("cannot enter the new root '%s': %s", new_root, strerror(errno));
		return -errno;
	}
	/* pivot_root(".", ".") stacks the old root on top of the new one, so
	 * unmounting "." afterwards removes the old root without needing a
	 * directory for it inside the new root. */
	if (syscall(SYS_pivot_root, ".", ".") < 0) {
		log_error("pivot_root into '%s' failed: %s", new_root, strerror(errno));
		return -errno;
	}
	if (umount2(".", MNT_DETACH) < 0) {
		log_error("cannot detach the old root: %s", strerror(errno));
		return -errno;
	}
	if (chdir("/") < 0)
		return -errno;
	return 0;
}
