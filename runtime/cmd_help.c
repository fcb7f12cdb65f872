#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "runtime/commands.h"

struct help_entry {
	const char *name;
	const char *summary;
	const char *usage;
};

static const struct help_entry entries[] = {
	{ "exec", "Run a program in the container as the invoking user",
	  "Usage: fim-exec PROGRAM [ARGS...]\n"
	  "  Runs PROGRAM, looked up in the container's PATH, with the invoking user's uid and gid,\n"
	  "  no capabilities and no_new_privs. Exits with the program's status: 127 when PROGRAM is\n"
	  "  not found, 126 when it is not executable, 128+N when a signal N kills it, and 125 when\n"
	  "  the runtime itself fails.\n" },
	{ "root", "Run a program in the container as root",
	  "Usage: fim-root PROGRAM [ARGS...]\n"
	  "  Runs PROGRAM as uid 0 with HOME=/root. Uses the subordinate ids that /etc/subuid and\n"
	  "  /etc/subgid grant to the user when there are any; otherwise changes of file owner and\n"
	  "  of supplementary groups succeed without effect, so package managers work.\n" },
	{ "layer", "Create, add, list and commit layers",
	  "Usage: fim-layer create DIR FILE\n"
	  "         Make a zstd-compressed squashfs layer from DIR. FIM_COMPRESSION_LEVEL (0-9,\n"
	  "         default 7) selects the compression level.\n"
	  "       fim-layer add FILE\n"
	  "         Validate the squashfs image FILE and append it to this image as the top layer.\n"
	  "       fim-layer list\n"
	  "         Print index:offset:size:path for every layer, bottom first: the image's layers,\n"
	  "         then FIM_LAYERS entries, then committed layers in the data directory.\n"
	  "       fim-layer commit binary|layer|file PATH\n"
	  "         Freeze the writable layer into a new layer and empty it: append it to this image,\n"
	  "         save it as DATA_DIR/layers/layer-NNN.layer, or write it to PATH (never overwritten).\n" },
	{ "overlay", "Select the overlay backend",
	  "Usage: fim-overlay set bwrap|overlayfs|unionfs\n"
	  "         Store the overlay backend in the image.\n"
	  "       fim-overlay show\n"
	  "         Print the backend in effect: BWRAP, OVERLAYFS or UNIONFS.\n"
	  "  bwrap is kernel overlayfs in the user namespace; overlayfs and unionfs run the\n"
	  "  fuse-overlayfs and unionfs-fuse helpers. FIM_OVERLAY overrides the stored backend\n"
	  "  for one run.\n" },
	{ "help", "Show help for a command",
	  "Usage: fim-help [COMMAND]\n"
	  "  Without COMMAND, list the commands and environment variables; with it, print the usage\n"
	  "  of that command (with or without the fim- prefix).\n" },
};

static void print_overview(void)
{
	printf("Usage: IMAGE [ARGS...]         Start the boot command (bash, else sh) with ARGS\n"
	       "       IMAGE fim-COMMAND [ARGS...]\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
		printf("  fim-%-10s %s\n", entries[i].name, entries[i].summary);
	printf("\nEnvironment:\n"
	       "  FIM_OVERLAY            overlay backend for this run (bwrap, overlayfs, unionfs)\n"
	       "  FIM_DIR_DATA           directory of the writable layer (default: .IMAGE.data beside the image)\n"
	       "  FIM_COMPRESSION_LEVEL  layer compression level, 0-9 (default 7)\n"
	       "  FIM_LAYERS             extra layers, colon-separated files or directories of layer files\n"
	       "  FIM_DEBUG=1            print what the runtime does\n"
	       "  FIM_NO_SUBID=1         make fim-root map one id even where /etc/subuid grants a range\n"
	       "\nRun 'fim-help COMMAND' for the usage of one command.\n");
}

void print_usage_hint(const char *command)
{
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		if (strcmp(entries[i].name, command) == 0)
			fputs(entries[i].usage, stderr);
	}
}

int cmd_help(int argc, char **argv)
{
	const char *name;

	if (argc == 0) {
		print_overview();
		return 0;
	}
	name = strncmp(argv[0], "fim-", 4) == 0 ? argv[0] + 4 : argv[0];
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		if (strcmp(entries[i].name, name) == 0) {
			fputs(entries[i].usage, stdout);
			return 0;
		}
	}
	log_error("no help for '%s'; run 'fim-help' to list the commands", argv[0]);
	return EXIT_RUNTIME_ERROR;
}
