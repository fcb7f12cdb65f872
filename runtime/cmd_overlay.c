#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/commands.h"
#include "runtime/config.h"

static int usage_error(const char *message)
{
	log_error("%s", message);
	print_usage_hint("overlay");
	return EXIT_RUNTIME_ERROR;
}

int cmd_overlay(struct context *ctx, int argc, char **argv)
{
	struct image img;
	_cleanup_free_ char *config = NULL;
	_cleanup_free_ char *updated = NULL;
	enum overlay_mode mode;
	int r;

	if (argc == 0)
		return usage_error("fim-overlay needs 'set' or 'show'");
	if (strcmp(argv[0], "show") == 0) {
		if (argc > 1)
			return usage_error("fim-overlay show takes no arguments");
		if (context_open_image(ctx, &img) < 0)
			return EXIT_RUNTIME_ERROR;
		printf("%s\n", overlay_mode_display_name(effective_overlay_mode(&img)));
		image_close(&img);
		return 0;
	}
	if (strcmp(argv[0], "set") != 0) {
		log_error("unknown fim-overlay action '%s'; use 'set' or 'show'", argv[0]);
		print_usage_hint("overlay");
		return EXIT_RUNTIME_ERROR;
	}
	if (argc < 2)
		return usage_error("fim-overlay set needs a backend: " OVERLAY_MODE_NAMES);
	if (argc > 2)
		return usage_error("fim-overlay set takes exactly one backend");
	mode = overlay_mode_from_name(argv[1]);
	if (mode == OVERLAY_MODE_INVALID) {
		log_error("invalid overlay backend '%s'; use one of " OVERLAY_MODE_NAMES, argv[1]);
		return EXIT_RUNTIME_ERROR;
	}

	if (context_open_image(ctx, &img) < 0)
		return EXIT_RUNTIME_ERROR;
	r = config_read(img.fd, img.config_offset, &config);
	if (r >= 0) {
		updated = config_set(config, "overlay", overlay_mode_name(mode));
		r = config_write(img.path, img.config_offset, updated);
	}
	image_close(&img);
	return r < 0 ? EXIT_RUNTIME_ERROR : 0;
}
