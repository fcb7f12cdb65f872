#include "overlay/kernel.h"

#include <errno.h>
#include <string.h>
#include <sys/mount.h>

#include "common/log.h"
#include "common/util.h"

int overlay_mount_kernel(const char *const *lowers, size_t n_lowers, const char *upper, const char *work,
			 const char *target)
{
	_cleanup_free_ char *options = xstrdup("lowerdir=");

	for (size_t i = 0; i < n_lowers; i++) {
		char *longer = xasprintf("%s%s%s", options, i ? ":" : "", lowers[i]);

		free(options);
		options = longer;
	}
	{
		char *complete = upper ? xasprintf("%s,upperdir=%s,workdir=%s,userxattr", options, upper, work)
				       : xasprintf("%s,userxattr", options);

		free(options);
		options = complete;
	}

	log_debug("mounting kernel overlayfs on '%s' with %s", target, options);
	if (mount("overlay", target, "overlay", MS_NOSUID | (upper ? 0 : MS_RDONLY), options) < 0) {
		int r = -errno;

		log_error("cannot mount kernel overlayfs on '%s': %s (options: %s)%s", target, strerror(errno), options,
			  errno == EINVAL ? "; the file system of the data directory may lack user xattrs, "
					    "set FIM_DIR_DATA to a directory on ext4, xfs or btrfs"
					  : "");
		return r;
	}
	return 0;
}
