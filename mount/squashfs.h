/* In-process squashfs layers served over FUSE with libsquashfuse's low-level
 * operations. Each layer gets its own FUSE connection and serving thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct squashfs_mount;

/* The owners reported for the layer's files. */
struct owner_policy {
	/* Report the ids stored in the layer, for namespaces that map a whole
	 * id range. Otherwise every file is reported as owned by uid:gid. */
	bool keep_ids;
	uid_t uid;
	gid_t gid;
};

/* Mount the squashfs image at offset of image_fd on mountpoint and start
 * serving it, with a connection opened from dev_fuse (the path of /dev/fuse,
 * which moves when the host root does). Needs CAP_SYS_ADMIN in the user
 * namespace that owns the current mount namespace. */
int squashfs_mount_start(int image_fd, uint64_t offset, const char *mountpoint, const char *dev_fuse,
			 const struct owner_policy *owner, struct squashfs_mount **ret);

/* Close every FUSE connection this process serves, in a child that is
 * about to run something else. A child that kept them open would keep the
 * connections alive after the serving threads die, and requests to the
 * layers would then block forever instead of failing. */
void squashfs_close_connections(void);
