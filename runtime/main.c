/* Entry point: the same binary is the runtime and, with layers appended, the
 * image. The first argument selects a fim-* command; anything else starts the
 * image's boot command. */
#include <stdbool.h>
#include <string.h>

#include "common/log.h"
#include "runtime/commands.h"
#include "runtime/image.h"
#include "runtime/reexec.h"

int main(int argc, char **argv)
{
	struct context ctx = { 0 };
	const char *command = argc > 1 ? argv[1] : NULL;

	log_init();

	/* Used by the build to turn the linked ELF into a bare image. */
	if (command && strcmp(command, "fim-build-image") == 0) {
		if (argc != 4) {
			log_error("usage: fim-build-image ELF OUTPUT");
			return EXIT_RUNTIME_ERROR;
		}
		return image_build_bare(argv[2], argv[3]) < 0 ? EXIT_RUNTIME_ERROR : 0;
	}
	if (command && strcmp(command, "fim-help") == 0)
		return cmd_help(argc - 2, argv + 2);

	ctx.image_path = reexec_from_memory(argv);

	if (!command || strncmp(command, "fim-", 4) != 0)
		return cmd_run(&ctx, argc - 1, argv + 1, false, true);
	if (strcmp(command, "fim-exec") == 0)
		return cmd_run(&ctx, argc - 2, argv + 2, false, false);
	if (strcmp(command, "fim-root") == 0)
		return cmd_run(&ctx, argc - 2, argv + 2, true, false);
	if (strcmp(command, "fim-overlay") == 0)
		return cmd_overlay(&ctx, argc - 2, argv + 2);
	if (strcmp(command, "fim-layer") == 0)
		return cmd_layer(&ctx, argc - 2, argv + 2);

	log_error("unknown command '%s'; run 'fim-help' to list the commands", command);
	return EXIT_RUNTIME_ERROR;
}
