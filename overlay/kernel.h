#pragma once

#include <stddef.h>

/* Mount kernel overlayfs on target. lowers[0] is the top lower layer.
 * Without upper and work (both NULL) the mount is read-only.
 * Entered with CAP_SYS_ADMIN in the user namespace owning the mount
 * namespace; "userxattr" keeps whiteouts and opaque markers in user.overlay.*
 * xattrs, the only kind an unprivileged mount may write. */
int overlay_mount_kernel(const char *const *lowers, size_t n_lowers, const char *upper, const char *work,
			 const char *target);
