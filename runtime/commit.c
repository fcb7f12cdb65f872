/* fim-layer commit: freeze the writable layer into a compressed layer.
 *
 * mksquashfs runs in a user namespace that maps ids as fim-root does, so the
 * layer stores the container's owners (root as 0, a system user as its own
 * id) rather than host ids. Whiteouts and opaque xattrs are stored as they
 * are; every backend applies them when the layer is a lower layer. The
 * writable layer is emptied only after the new layer is durable, so a
 * process killed at any point loses nothing: at worst the next run shows
 * the same files twice, once in the new layer and once above it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "ns/userns.h"
#include "overlay/upper.h"
#include "runtime/commands.h"
#include "runtime/layers.h"

#define MAX_MANAGED_LAYERS 1000

struct root_mapping {
	bool range;
	struct id_range uids;
	struct id_range gids;
};

static void select_root_mapping(struct root_mapping *mapping)
{
	struct passwd *pw = getpwuid(getuid());
	const char *name = pw ? pw->pw_name : NULL;

	mapping->range = getuid() != 0 && !getenv("FIM_NO_SUBID") &&
			 subid_lookup("/etc/subuid", name, getuid(), &mapping->uids) == 1 &&
			 subid_lookup("/etc/subgid", name, getgid(), &mapping->gids) == 1 &&
			 access("/usr/bin/newuidmap", X_OK) == 0 && access("/usr/bin/newgidmap", X_OK) == 0;
}

/* Run fn(arg) as uid 0 of a new user namespace mapped like fim-root, and
 * return its exit status, or -errno when the namespace cannot be made.
 * While it runs, poll(poll_arg) is called about every 50 ms when given. */
static int run_as_container_root_polling(int (*fn)(void *), void *arg, void (*poll)(void *), void *poll_arg)
{
	struct root_mapping mapping;
	int sync_pipe[2], status, r;
	pid_t child;
	char byte;

	select_root_mapping(&mapping);
	if (pipe2(sync_pipe, O_CLOEXEC) < 0)
		return -errno;
	child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
	if (child < 0) {
		r = -errno;
		log_error("cannot create a user namespace: %s", strerror(errno));
		close(sync_pipe[0]);
		close(sync_pipe[1]);
		return r;
	}
	if (child == 0) {
		close(sync_pipe[1]);
		if (read(sync_pipe[0], &byte, 1) != 1)
			_exit(EXIT_RUNTIME_ERROR);
		_exit(fn(arg));
	}
	close(sync_pipe[0]);
	/* As for fim-root, a range that cannot be mapped, as in a nested user
	 * namespace, falls back to one id. */
	r = -EPERM;
	if (mapping.range)
		r = userns_map_root_range(child, getuid(), getgid(), &mapping.uids, &mapping.gids);
	if (r < 0)
		r = userns_map_single(child, 0, getuid(), 0, getgid());
	if (r >= 0 && write(sync_pipe[1], "x", 1) != 1)
		r = -errno;
	close(sync_pipe[1]);
	if (r < 0)
		kill(child, SIGKILL);
	for (;;) {
		pid_t done = waitpid(child, &status, poll ? WNOHANG : 0);

		if (done == child)
			break;
		if (done < 0 && errno != EINTR)
			return -errno;
		if (poll && done == 0) {
			poll(poll_arg);
			usleep(50 * 1000);
		}
	}
	if (r < 0)
		return r;
	return WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_RUNTIME_ERROR;
}

static int run_as_container_root(int (*fn)(void *), void *arg)
{
	return run_as_container_root_polling(fn, arg, NULL, NULL);
}

struct writeback {
	const char *path;
	int fd;
};

/* Start writeback of what mksquashfs has written so far, so the fsync
 * that makes the layer durable has little left to write. */
static void start_writeback(void *arg)
{
	struct writeback *wb = arg;

	if (wb->fd < 0)
		wb->fd = open(wb->path, O_RDONLY | O_CLOEXEC);
	if (wb->fd >= 0)
		sync_file_range(wb->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

struct squash_job {
	const char *source;
	const char *output;
	int level;
};

static int squash_in_namespace(void *arg)
{
	const struct squash_job *job = arg;
	char level[8];

	snprintf(level, sizeof(level), "%d", job->level);
	/* -exit-on-error: mksquashfs otherwise skips unreadable files with a
	 * warning, which would silently drop user data from the layer. */
	execlp("mksquashfs", "mksquashfs", job->source, job->output, "-noappend", "-comp", "zstd",
	       "-Xcompression-level", level, "-exit-on-error", "-quiet", "-no-progress", (char *)NULL);
	dprintf(STDERR_FILENO, "flatimage: error: cannot run mksquashfs: %s; install the squashfs-tools package\n",
		strerror(errno));
	return 127;
}

static int remove_in_namespace(void *arg)
{
	return rm_rf(arg) < 0 ? 1 : 0;
}

/* The next free "layer-NNN.layer" in dir, from 000. */
static int next_managed_layer(const char *dir, char **ret)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int highest = -1;

	while (d && (de = readdir(d))) {
		int index;
		char tail;

		if (sscanf(de->d_name, "layer-%3d.laye%c", &index, &tail) == 2 && tail == 'r' &&
		    strlen(de->d_name) == strlen("layer-000.layer") && index > highest)
			highest = index;
	}
	if (highest + 1 >= MAX_MANAGED_LAYERS) {
		log_error("'%s' already has layer-%03d.layer, the last of %d; merge layers into the image with "
			  "'fim-layer commit binary' instead",
			  dir, MAX_MANAGED_LAYERS - 1, MAX_MANAGED_LAYERS);
		return -ENOSPC;
	}
	*ret = xasprintf("%s/layer-%03d.layer", dir, highest + 1);
	return 0;
}

static bool directory_is_empty(const char *path)
{
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			return false;
	}
	return true;
}

static int fsync_path(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

static int fsync_parent(const char *path)
{
	_cleanup_free_ char *copy = xstrdup(path);

	return fsync_path(dirname(copy));
}

/* Move the committed content out of the way and start an empty writable
 * layer, then delete the old content in the namespace that owns it. */
static int empty_upper(const char *data_dir, const char *upper)
{
	_cleanup_free_ char *retired = xasprintf("%s/upper.committed.%d", data_dir, (int)getpid());
	int r;

	if (rename(upper, retired) < 0) {
		r = -errno;
		log_error("cannot empty the writable layer '%s': %s; the layer was saved, so the next run shows its "
			  "files twice but loses nothing",
			  upper, strerror(errno));
		return r;
	}
	if (mkdir(upper, 0755) < 0 && errno != EEXIST)
		return -errno;
	fsync_path(data_dir);
	if (run_as_container_root(remove_in_namespace, retired) != 0)
		log_warning("could not delete the committed copy '%s'; delete it by hand", retired);
	return 0;
}

/* Delete what interrupted commits left in the data directory: partial
 * layers ("commit.tmp.PID") and retired writable layers
 * ("upper.committed.PID"). Called under the writable layer's exclusive
 * lock, so no other commit is using them. */
static void remove_stale_commit_files(const char *data_dir)
{
	_cleanup_closedir_ DIR *dir = opendir(data_dir);
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		_cleanup_free_ char *path = NULL;

		if (strncmp(de->d_name, "commit.tmp.", 11) == 0) {
			path = xasprintf("%s/%s", data_dir, de->d_name);
			log_debug("removing '%s', left by an interrupted commit", path);
			unlink(path);
		} else if (strncmp(de->d_name, "upper.committed.", 16) == 0) {
			path = xasprintf("%s/%s", data_dir, de->d_name);
			log_debug("removing '%s', left by an interrupted commit", path);
			if (run_as_container_root(remove_in_namespace, path) != 0)
				log_warning("could not delete '%s', left by an interrupted commit; delete it by hand", path);
		}
	}
}

enum commit_target { COMMIT_BINARY, COMMIT_LAYER, COMMIT_FILE };

static int commit_usage(const char *message)
{
	log_error("%s", message);
	print_usage_hint("layer");
	return EXIT_RUNTIME_ERROR;
}

int cmd_layer_commit(struct context *ctx, int argc, char **argv)
{
	_cleanup_free_ char *data_dir = NULL;
	_cleanup_free_ char *upper = NULL;
	_cleanup_free_ char *lock_path = NULL;
	_cleanup_free_ char *state = NULL;
	_cleanup_free_ char *destination = NULL;
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int lock_fd = -1;
	_cleanup_close_ int layer_fd = -1;
	enum commit_target target;
	struct squash_job job;
	struct writeback writeback;
	struct image img;
	struct stat st;
	int level, status, r;

	if (argc == 0)
		return commit_usage("fim-layer commit needs a target: binary, layer or file PATH");
	if (strcmp(argv[0], "binary") == 0 && argc == 1)
		target = COMMIT_BINARY;
	else if (strcmp(argv[0], "layer") == 0 && argc == 1)
		target = COMMIT_LAYER;
	else if (strcmp(argv[0], "file") == 0 && argc == 2)
		target = COMMIT_FILE;
	else if (strcmp(argv[0], "file") == 0)
		return commit_usage("fim-layer commit file needs exactly one PATH");
	else if (strcmp(argv[0], "binary") == 0 || strcmp(argv[0], "layer") == 0)
		return commit_usage("fim-layer commit binary and fim-layer commit layer take no further arguments");
	else {
		log_error("invalid fim-layer commit target '%s'; use binary, layer or file PATH", argv[0]);
		print_usage_hint("layer");
		return EXIT_RUNTIME_ERROR;
	}
	if (zstd_level_from_env(&level) < 0)
		return EXIT_RUNTIME_ERROR;

	if (context_open_image(ctx, &img) < 0)
		return EXIT_RUNTIME_ERROR;
	data_dir = data_dir_for(img.path);
	upper = xasprintf("%s/upper", data_dir);
	r = EXIT_RUNTIME_ERROR;

	if (target == COMMIT_FILE) {
		destination = realpath(argv[1], NULL);
		if (destination || errno != ENOENT) {
			log_error("'%s' already exists; fim-layer commit file does not overwrite files, choose a new path",
				  argv[1]);
			goto out;
		}
		destination = xstrdup(argv[1]);
	}
	if (stat(upper, &st) < 0 || directory_is_empty(upper)) {
		log_info("the writable layer '%s' is empty; there is nothing to commit", upper);
		r = 0;
		goto out;
	}

	/* An instance that is running could change the upper directory while
	 * mksquashfs reads it and leave a torn layer, so commit needs it to
	 * itself. */
	lock_path = xasprintf("%s/upper.lock", data_dir);
	lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("cannot commit while an instance of this image uses the writable layer in '%s'; close it and "
			  "retry",
			  data_dir);
		goto out;
	}
	remove_stale_commit_files(data_dir);
	if (upper_read_state(data_dir, &state) < 0 || strcmp(state, UPPER_STATE_CANONICAL) != 0) {
		log_error("the writable layer in '%s' is still in the format of an interrupted %s run; run the image "
			  "once to repair it, then commit",
			  data_dir, state ? state : "unknown");
		goto out;
	}

	if (target == COMMIT_FILE) {
		_cleanup_free_ char *copy = xstrdup(destination);

		tmp = xasprintf("%s/.%s.tmp.%d", dirname(copy), basename(destination), (int)getpid());
	} else {
		tmp = xasprintf("%s/commit.tmp.%d", data_dir, (int)getpid());
	}
	job = (struct squash_job){ .source = upper, .output = tmp, .level = level };
	writeback = (struct writeback){ .path = tmp, .fd = -1 };
	status = run_as_container_root_polling(squash_in_namespace, &job, start_writeback, &writeback);
	if (writeback.fd >= 0)
		close(writeback.fd);
	if (status != 0) {
		log_error("mksquashfs failed to create a layer from '%s'; the writable layer is unchanged", upper);
		unlink(tmp);
		goto out;
	}
	layer_fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (layer_fd < 0 || fstat(layer_fd, &st) < 0 || fsync(layer_fd) < 0 ||
	    layer_validate(layer_fd, 0, (uint64_t)st.st_size, "the new layer") < 0) {
		log_error("cannot write the new layer '%s': %s; the writable layer is unchanged", tmp, strerror(errno));
		unlink(tmp);
		goto out;
	}

	switch (target) {
	case COMMIT_BINARY:
		if (image_append_layer_fd(&img, layer_fd, (uint64_t)st.st_size, "the new layer") < 0) {
			unlink(tmp);
			goto out;
		}
		unlink(tmp);
		break;
	case COMMIT_LAYER: {
		_cleanup_free_ char *managed = layers_managed_dir(data_dir);

		if (mkdir_p(managed, 0755) < 0 || next_managed_layer(managed, &destination) < 0) {
			unlink(tmp);
			goto out;
		}
	}
		/* fall through */
	case COMMIT_FILE:
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, destination, RENAME_NOREPLACE) < 0) {
			log_error("cannot save the layer to '%s': %s; the writable layer is unchanged", destination,
				  strerror(errno));
			unlink(tmp);
			goto out;
		}
		fsync_parent(destination);
		break;
	}

	if (empty_upper(data_dir, upper) < 0)
		goto out;
	if (target == COMMIT_BINARY)
		printf("Filesystem appended to binary without errors\n");
	else
		printf("Layer saved to '%s'\n", destination);
	r = 0;
out:
	image_close(&img);
	return r;
}
