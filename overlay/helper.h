/* The FUSE overlay backends: the fuse-overlayfs and unionfs-fuse programs,
 * run by the container's init inside its user and mount namespaces. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "overlay/mode.h"

struct overlay_helper {
	enum overlay_mode mode;
	pid_t pid;
	const char *program; /* as run, for messages */
	const char *package; /* the Debian package that provides it */
	char *log_path;	     /* host path of its log */
};

/* Start the helper for mode and wait until its mount is on target.
 * lowers[0] is the top lower layer; every path is valid in the current
 * root. log_path is where the helper's output goes, and log_display is the
 * same file as the user sees it on the host. Entered with CAP_SYS_ADMIN in
 * the user namespace. The helper gets it as an ambient capability, because
 * it runs as the container's uid and execve() would otherwise drop it. */
int overlay_helper_start(enum overlay_mode mode, const char *const *lowers, size_t n_lowers, const char *upper,
			 const char *work, const char *target, const char *log_path, const char *log_display,
			 struct overlay_helper *ret);

/* Log that the helper died, naming it, its package and its log. */
void overlay_helper_report_exit(const struct overlay_helper *helper, int status);
