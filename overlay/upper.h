/* The on-disk format of the writable layer (the upper directory).
 *
 * One canonical format is kept between runs, kernel overlayfs's with
 * userxattr: a deleted name is a 0/0 character device (a whiteout), and a
 * directory that hides the lower layers' entries carries user.overlay.opaque
 * = "y". fuse-overlayfs reads that format but writes its own markers, and
 * unionfs-fuse keeps whiteouts as "<name>_HIDDEN~" entries below a
 * ".unionfs-fuse" directory, so the runtime converts before and after such
 * runs. A state file records the format on disk, written before a
 * conversion or a helper starts, so an interrupted run is repaired on the
 * next start. */
#pragma once

#include <stddef.h>

#include "overlay/mode.h"

#define UPPER_STATE_CANONICAL "canonical"
#define UNIONFS_META_DIR ".unionfs-fuse"
#define UNIONFS_HIDDEN_SUFFIX "_HIDDEN~"

/* Read the state file in data_dir; a missing file reads as canonical. */
int upper_read_state(const char *data_dir, char **ret);
/* Replace the state file in data_dir atomically and durably. */
int upper_write_state(const char *data_dir, const char *state);

/* Convert every marker that fuse-overlayfs or unionfs-fuse left in upper
 * to the canonical format, and remove the helpers' private xattrs. lowers
 * (top first) supply the attributes of directories that must be created in
 * upper to hold a whiteout. */
int upper_to_canonical(const char *upper, const char *const *lowers, size_t n_lowers);

/* Convert a canonical upper directory for unionfs-fuse: each whiteout
 * becomes a _HIDDEN~ entry, and each opaque directory gets one as well,
 * because unionfs-fuse ignores overlay xattrs. Neither helper shows
 * user.overlay.* xattrs to programs, so they stay. */
int upper_to_unionfs(const char *upper);
