#include "runtime/reexec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/image.h"

#define IMAGE_PATH_ENV "FIM_INTERNAL_IMAGE_PATH"

extern char **environ;

char *reexec_from_memory(char **argv)
{
	const char *inherited = getenv(IMAGE_PATH_ENV);
	_cleanup_close_ int self = -1;
	_cleanup_close_ int memfd = -1;
	char *image_path;
	uint64_t size;
	int r;

	if (inherited) {
		/* The re-executed process: take the path and keep it out of the
		 * container's environment. */
		image_path = xstrdup(inherited);
		unsetenv(IMAGE_PATH_ENV);
		return image_path;
	}

	image_path = realpath("/proc/self/exe", NULL);
	if (!image_path) {
		log_error("cannot locate the running image through /proc/self/exe: %s; is /proc mounted?",
			  strerror(errno));
		exit(125);
	}
	self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (self < 0 || elf_size(self, &size) < 0)
		return image_path;

	memfd = memfd_create("flatimage", MFD_CLOEXEC);
	if (memfd < 0) {
		log_debug("memfd_create failed (%s); running from the image file", strerror(errno));
		return image_path;
	}
	r = copy_range(self, 0, memfd, size);
	if (r < 0) {
		log_debug("cannot copy the runtime into memory (%s); running from the image file", strerror(-r));
		return image_path;
	}
	setenv(IMAGE_PATH_ENV, image_path, 1);
	execveat(memfd, "", argv, environ, AT_EMPTY_PATH);
	/* vm.memfd_noexec or a security module can forbid this. */
	log_debug("cannot execute the runtime from memory (%s); running from the image file", strerror(errno));
	unsetenv(IMAGE_PATH_ENV);
	return image_path;
}
