#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/commands.h"
#include "runtime/layers.h"

extern char **environ;

#define DEFAULT_COMPRESSION_LEVEL 7

/* Map FIM_COMPRESSION_LEVEL 0-9 onto zstd levels 1-19, the range zstd
 * recommends for normal use. */
int zstd_level_from_env(int *ret)
{
	const char *value = getenv("FIM_COMPRESSION_LEVEL");
	char *end;
	long level;

	if (!value || !*value) {
		*ret = 1 + DEFAULT_COMPRESSION_LEVEL * 2;
		return 0;
	}
	errno = 0;
	level = strtol(value, &end, 10);
	if (errno || *end || level < 0 || level > 9) {
		log_error("invalid FIM_COMPRESSION_LEVEL '%s': use a whole number from 0 (fastest) to 9 (smallest)", value);
		return -EINVAL;
	}
	*ret = 1 + (int)level * 2;
	return 0;
}

/* Run mksquashfs into a temporary file next to output and rename it into
 * place, so an interrupted run never leaves a partial layer under the final
 * name. */
static int make_squashfs(const char *dir, const char *output, int level)
{
	_cleanup_free_ char *tmp = xasprintf("%s.tmp.%d", output, (int)getpid());
	char level_text[8];
	/* -exit-on-error: by default mksquashfs skips unreadable files with
	 * only a warning, and the layer would silently lack them. */
	char *argv[] = { "mksquashfs", (char *)dir, tmp, "-noappend", "-comp", "zstd", "-Xcompression-level",
			 level_text, "-exit-on-error", "-quiet", "-no-progress", NULL };
	posix_spawn_file_actions_t actions;
	pid_t child;
	int status, r;

	snprintf(level_text, sizeof(level_text), "%d", level);
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	r = posix_spawnp(&child, "mksquashfs", &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	if (r != 0) {
		log_error("cannot run mksquashfs: %s; install the squashfs-tools package", strerror(r));
		return -r;
	}
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_error("mksquashfs failed to create a layer from '%s'", dir);
		unlink(tmp);
		return -EIO;
	}
	if (rename(tmp, output) < 0) {
		r = -errno;
		log_error("cannot move the new layer to '%s': %s", output, strerror(errno));
		unlink(tmp);
		return r;
	}
	return 0;
}

static int layer_create(int argc, char **argv)
{
	struct stat st;
	int level;

	if (argc != 2) {
		log_error("fim-layer create needs a directory and an output file");
		print_usage_hint("layer");
		return EXIT_RUNTIME_ERROR;
	}
	if (stat(argv[0], &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("cannot create a layer from '%s': %s", argv[0], errno ? strerror(errno) : "not a directory");
		return EXIT_RUNTIME_ERROR;
	}
	if (zstd_level_from_env(&level) < 0)
		return EXIT_RUNTIME_ERROR;
	if (make_squashfs(argv[0], argv[1], level) < 0)
		return EXIT_RUNTIME_ERROR;
	printf("Filesystem created without errors\n");
	return 0;
}

static int layer_add(struct context *ctx, int argc, char **argv)
{
	struct image img;
	int r;

	if (argc != 1) {
		log_error("fim-layer add needs exactly one layer file");
		print_usage_hint("layer");
		return EXIT_RUNTIME_ERROR;
	}
	if (context_open_image(ctx, &img) < 0)
		return EXIT_RUNTIME_ERROR;
	r = image_append_layer(&img, argv[0]);
	image_close(&img);
	if (r < 0)
		return EXIT_RUNTIME_ERROR;
	printf("Included novel layer from file '%s'\n", argv[0]);
	return 0;
}

static int layer_list(struct context *ctx, int argc)
{
	struct image img;

	if (argc != 0) {
		log_error("fim-layer list takes no arguments");
		return EXIT_RUNTIME_ERROR;
	}
	if (context_open_image(ctx, &img) < 0)
		return EXIT_RUNTIME_ERROR;
	{
		_cleanup_free_ char *data_dir = data_dir_for(img.path);

		layers_add_external(&img, data_dir);
	}
	for (size_t i = 0; i < img.n_layers; i++)
		printf("%zu:%" PRIu64 ":%" PRIu64 ":%s\n", i, img.layers[i].offset, img.layers[i].size,
		       img.layers[i].path);
	image_close(&img);
	return 0;
}

int cmd_layer(struct context *ctx, int argc, char **argv)
{
	if (argc == 0) {
		log_error("fim-layer needs an action: create, add, list or commit");
		print_usage_hint("layer");
		return EXIT_RUNTIME_ERROR;
	}
	if (strcmp(argv[0], "create") == 0)
		return layer_create(argc - 1, argv + 1);
	if (strcmp(argv[0], "add") == 0)
		return layer_add(ctx, argc - 1, argv + 1);
	if (strcmp(argv[0], "list") == 0)
		return layer_list(ctx, argc - 1);
	if (strcmp(argv[0], "commit") == 0)
		return cmd_layer_commit(ctx, argc - 1, argv + 1);
	log_error("unknown fim-layer action '%s'; use create, add, list or commit", argv[0]);
	print_usage_hint("layer");
	return EXIT_RUNTIME_ERROR;
}
