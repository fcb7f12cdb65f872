#include "overlay/mode.h"

#include <string.h>

static const char *const names[OVERLAY_MODE_COUNT] = {
	[OVERLAY_BWRAP] = "bwrap",
	[OVERLAY_OVERLAYFS] = "overlayfs",
	[OVERLAY_UNIONFS] = "unionfs",
};

static const char *const display_names[OVERLAY_MODE_COUNT] = {
	[OVERLAY_BWRAP] = "BWRAP",
	[OVERLAY_OVERLAYFS] = "OVERLAYFS",
	[OVERLAY_UNIONFS] = "UNIONFS",
};

enum overlay_mode overlay_mode_from_name(const char *name)
{
	for (int i = 0; name && i < OVERLAY_MODE_COUNT; i++) {
		if (strcmp(name, names[i]) == 0)
			return (enum overlay_mode)i;
	}
	return OVERLAY_MODE_INVALID;
}

const char *overlay_mode_name(enum overlay_mode mode)
{
	return mode >= 0 && mode < OVERLAY_MODE_COUNT ? names[mode] : "invalid";
}

const char *overlay_mode_display_name(enum overlay_mode mode)
{
	return mode >= 0 && mode < OVERLAY_MODE_COUNT ? display_names[mode] : "INVALID";
}
