#include "runtime/layers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

char *layers_managed_dir(const char *data_dir)
{
	return xasprintf("%s/layers", data_dir);
}

static void add_file(struct image *img, const char *path, const char *origin)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *reason = NULL;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		log_warning("ignoring %s layer '%s': %s", origin, path, strerror(errno));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		log_warning("ignoring %s layer '%s': not a regular file", origin, path);
		return;
	}
	if (layer_check(fd, 0, (uint64_t)st.st_size, &reason) < 0) {
		log_warning("ignoring %s layer '%s': it %s", origin, path, reason);
		return;
	}
	image_add_layer(img, path, 0, (uint64_t)st.st_size, false);
}

/* Add a directory's regular files in name order. Returns -errno when the
 * directory cannot be read. */
static int add_directory(struct image *img, const char *dir, const char *origin)
{
	char **names = NULL;
	size_t n = 0;
	int r = read_dir_names(dir, true, &names, &n);

	if (r < 0) {
		errno = -r;
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *path = xasprintf("%s/%s", dir, names[i]);
		struct stat st;

		if (names[i][0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
			add_file(img, path, origin);
	}
	free_dir_names(names, n);
	return 0;
}

void layers_add_external(struct image *img, const char *data_dir)
{
	const char *list = getenv("FIM_LAYERS");
	_cleanup_free_ char *managed = layers_managed_dir(data_dir);

	if (list && *list) {
		_cleanup_free_ char *copy = xstrdup(list);
		char *saveptr = NULL;

		for (char *entry = strtok_r(copy, ":", &saveptr); entry; entry = strtok_r(NULL, ":", &saveptr)) {
			_cleanup_free_ char *absolute = realpath(entry, NULL);
			struct stat st;

			if (!absolute || stat(absolute, &st) < 0) {
				log_warning("ignoring FIM_LAYERS entry '%s': %s", entry, strerror(errno));
				continue;
			}
			if (S_ISDIR(st.st_mode)) {
				if (add_directory(img, absolute, "FIM_LAYERS") < 0)
					log_warning("ignoring FIM_LAYERS entry '%s': %s", entry, strerror(errno));
			} else {
				add_file(img, absolute, "FIM_LAYERS");
			}
		}
	}
	if (add_directory(img, managed, "committed") < 0 && errno != ENOENT)
		log_warning("cannot read the committed layers in '%s': %s", managed, strerror(errno));
}
