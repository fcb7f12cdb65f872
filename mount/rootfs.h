/* The container's root file system around the merged overlay: the staging
 * tmpfs, the mount-point skeleton, and the kernel file systems and host
 * files mounted into the new root. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Staging paths, valid after rootfs_enter_staging(). */
#define STAGING_HOST "/oldroot"
#define STAGING_NEWROOT "/newroot"
#define STAGING_LAYERS "/layers"
#define STAGING_SKELETON "/skeleton"
#define STAGING_GENERATED "/generated"

struct rootfs_identity {
	uid_t uid; /* inside the container */
	gid_t gid;
	const char *user_name;
	const char *home;
	/* Root with one mapped id: the ids of system users do not exist, so
	 * apt must not try to drop privileges to its _apt sandbox user. */
	bool single_id_root;
};

/* Entered with: new user and mount namespaces, full capabilities there, the
 * host root as "/". Makes "/" a slave of the host tree, so nothing mounted
 * here propagates back, and pivots into a fresh tmpfs with the host root at
 * STAGING_HOST. */
int rootfs_enter_staging(void);

/* Build the bottom layer of the overlay: empty directories and files that
 * serve as mount points, so mounting over them never creates a file in the
 * writable layer. */
int rootfs_make_skeleton(const struct rootfs_identity *id);

/* Mount /proc, /dev, /sys, /tmp, and the host's resolv.conf and hosts into
 * STAGING_NEWROOT, and bind generated passwd and group files that keep the
 * image's entries and add the invoking user. */
int rootfs_populate(const struct rootfs_identity *id);

/* Open path inside the directory tree at root_fd, resolving symbolic links
 * as if root_fd were "/". */
int open_in_root(int root_fd, const char *path, int flags);
