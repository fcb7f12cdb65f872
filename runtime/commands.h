/* The fim-* commands. Each returns the process exit status. */
#pragma once

#include "overlay/mode.h"
#include "runtime/image.h"

#define EXIT_RUNTIME_ERROR 125

struct context {
	char *image_path; /* the image file, even when running from memory */
};

int cmd_run(struct context *ctx, int argc, char **argv, bool as_root, bool boot);
int cmd_overlay(struct context *ctx, int argc, char **argv);
int cmd_layer(struct context *ctx, int argc, char **argv);
int cmd_help(int argc, char **argv);
int cmd_layer_commit(struct context *ctx, int argc, char **argv);

/* The zstd level for new layers, from FIM_COMPRESSION_LEVEL (0-9). */
int zstd_level_from_env(int *ret);

/* Open the context's image; logs on failure. */
int context_open_image(struct context *ctx, struct image *ret);

/* The overlay mode in effect: FIM_OVERLAY when valid, else the stored one,
 * else bwrap. Warns once about an invalid FIM_OVERLAY. */
enum overlay_mode effective_overlay_mode(const struct image *img);

/* The data directory: FIM_DIR_DATA, else "<dir of image>/.<image name>.data". */
char *data_dir_for(const char *image_path);

void print_usage_hint(const char *command);
