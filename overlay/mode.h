/* Overlay backends and their names on the command line and in the config. */
#pragma once

enum overlay_mode {
	OVERLAY_BWRAP,	   /* kernel overlayfs mounted in the user namespace */
	OVERLAY_OVERLAYFS, /* the fuse-overlayfs helper */
	OVERLAY_UNIONFS,   /* the unionfs-fuse helper */
	OVERLAY_MODE_COUNT,
	OVERLAY_MODE_INVALID = -1,
};

#define OVERLAY_MODE_NAMES "bwrap, overlayfs, unionfs"

/* Parse a lower-case mode name; OVERLAY_MODE_INVALID when unknown. */
enum overlay_mode overlay_mode_from_name(const char *name);
const char *overlay_mode_name(enum overlay_mode mode);
/* The upper-case form that 'fim-overlay show' prints. */
const char *overlay_mode_display_name(enum overlay_mode mode);
