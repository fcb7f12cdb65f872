#include "overlay/upper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define OPAQUE_XATTR "user.overlay.opaque"
#define FUSE_OVERLAYFS_XATTR_PREFIX "user.fuseoverlayfs."
#define FUSE_OVERLAYFS_OPAQUE_XATTR "user.fuseoverlayfs.opaque"
#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_WHITEOUT ".wh..wh..opq"
#define STATE_FILE "upper.format"

int upper_read_state(const char *data_dir, char **ret)
{
	_cleanup_free_ char *path = xasprintf("%s/" STATE_FILE, data_dir);
	char *text = NULL;
	int r = read_file(path, &text, NULL);

	if (r == -ENOENT) {
		*ret = xstrdup(UPPER_STATE_CANONICAL);
		return 0;
	}
	if (r < 0)
		return r;
	text[strcspn(text, "\n")] = '\0';
	*ret = text;
	return 0;
}

int upper_write_state(const char *data_dir, const char *state)
{
	_cleanup_free_ char *path = xasprintf("%s/" STATE_FILE, data_dir);
	_cleanup_free_ char *tmp = xasprintf("%s/" STATE_FILE ".tmp", data_dir);
	_cleanup_free_ char *content = xasprintf("%s\n", state);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	_cleanup_close_ int dir_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0 || dir_fd < 0)
		return -errno;
	r = write_all(fd, content, strlen(content));
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r >= 0 && fsync(dir_fd) < 0)
		r = -errno;
	if (r < 0)
		log_error("cannot record the writable layer format in '%s': %s", path, strerror(-r));
	return r;
}

static bool is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static int make_whiteout(const char *path)
{
	/* The kernel lets any process create a 0/0 character device, the
	 * whiteout, without CAP_MKNOD. */
	if (mknod(path, S_IFCHR | 0000, makedev(0, 0)) < 0 && errno != EEXIST) {
		int r = -errno;

		log_error("cannot create the whiteout '%s': %s", path, strerror(errno));
		return r;
	}
	return 0;
}

static int set_opaque(const char *path)
{
	if (lsetxattr(path, OPAQUE_XATTR, "y", 1, 0) < 0) {
		int r = -errno;

		log_error("cannot mark '%s' opaque: %s", path, strerror(errno));
		return r;
	}
	return 0;
}

static bool has_xattr_value(const char *path, const char *name, const char *value)
{
	char buf[8];
	ssize_t n = lgetxattr(path, name, buf, sizeof(buf));

	return n == (ssize_t)strlen(value) && memcmp(buf, value, (size_t)n) == 0;
}

static void remove_xattrs_with_prefix(const char *path, const char *prefix)
{
	char names[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));

	for (ssize_t offset = 0; n > 0 && offset < n; offset += (ssize_t)strlen(names + offset) + 1) {
		if (strncmp(names + offset, prefix, strlen(prefix)) == 0)
			lremovexattr(path, names + offset);
	}
}

/* Rewrite fuse-overlayfs's markers below dir: ".wh.NAME" files become
 * whiteouts, ".wh..wh..opq" and user.fuseoverlayfs.opaque become the
 * opaque xattr, and its other private xattrs go. */
static int canonicalize_tree(const char *dir, bool is_root)
{
	char **names = NULL;
	size_t n = 0;
	bool opaque = has_xattr_value(dir, FUSE_OVERLAYFS_OPAQUE_XATTR, "y");
	int r = read_dir_names(dir, false, &names, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		_cleanup_free_ char *path = xasprintf("%s/%s", dir, names[i]);
		struct stat st;

		if (is_root && strcmp(names[i], UNIONFS_META_DIR) == 0)
			continue;
		if (strcmp(names[i], OPAQUE_WHITEOUT) == 0) {
			opaque = true;
			unlink(path);
			continue;
		}
		if (strncmp(names[i], WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0) {
			const char *victim = names[i] + strlen(WHITEOUT_PREFIX);
			_cleanup_free_ char *victim_path = xasprintf("%s/%s", dir, victim);

			/* ".wh..opq" is a whiteout fuse-overlayfs leaves beside the
			 * opaque marker; it hides nothing. */
			if (*victim && strcmp(victim, ".opq") != 0 && lstat(victim_path, &st) < 0 && errno == ENOENT)
				r = make_whiteout(victim_path);
			if (r >= 0 && unlink(path) < 0 && errno != ENOENT)
				r = -errno;
			continue;
		}
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
			remove_xattrs_with_prefix(path, FUSE_OVERLAYFS_XATTR_PREFIX);
		if (S_ISDIR(st.st_mode))
			r = canonicalize_tree(path, false);
	}
	free_dir_names(names, n);
	if (r >= 0 && opaque && !is_root) {
		r = set_opaque(dir);
		lremovexattr(dir, FUSE_OVERLAYFS_OPAQUE_XATTR);
	}
	return r;
}

struct marker_list {
	char **paths; /* relative to the upper directory, suffix removed */
	size_t n;
};

static void collect_markers(const char *meta, const char *relative, struct marker_list *markers)
{
	_cleanup_free_ char *dir = relative ? xasprintf("%s/%s", meta, relative) : xstrdup(meta);
	char **names = NULL;
	size_t n = 0;
	size_t suffix_len = strlen(UNIONFS_HIDDEN_SUFFIX);

	if (read_dir_names(dir, false, &names, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(names[i]);
		_cleanup_free_ char *child = relative ? xasprintf("%s/%s", relative, names[i]) : xstrdup(names[i]);
		_cleanup_free_ char *child_path = xasprintf("%s/%s", meta, child);
		struct stat st;

		if (len > suffix_len && strcmp(names[i] + len - suffix_len, UNIONFS_HIDDEN_SUFFIX) == 0) {
			markers->paths = realloc(markers->paths, (markers->n + 1) * sizeof(char *));
			if (!markers->paths)
				abort();
			markers->paths[markers->n++] = strndup(child, strlen(child) - suffix_len);
			/* A marker may itself be a directory; whatever is below it
			 * was hidden with it. */
			continue;
		}
		if (lstat(child_path, &st) == 0 && S_ISDIR(st.st_mode))
			collect_markers(meta, child, markers);
	}
	free_dir_names(names, n);
}

static size_t path_depth(const char *path)
{
	size_t depth = 0;

	for (; *path; path++)
		depth += *path == '/';
	return depth;
}

static int compare_depth(const void *a, const void *b)
{
	size_t da = path_depth(*(char *const *)a), db = path_depth(*(char *const *)b);

	return da < db ? -1 : da > db;
}

/* Create upper/relative as a directory with the attributes of the topmost
 * lower directory of that name. Returns 0 when created or already present,
 * 1 when no lower layer has it (so nothing below it needs hiding). */
static int ensure_upper_dir(const char *upper, const char *relative, const char *const *lowers, size_t n_lowers)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", upper, relative);
	struct stat st;

	if (lstat(path, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : 1;
	for (size_t i = 0; i < n_lowers; i++) {
		_cleanup_free_ char *lower = xasprintf("%s/%s", lowers[i], relative);
		struct timespec times[2];

		if (lstat(lower, &st) < 0)
			continue;
		if (!S_ISDIR(st.st_mode))
			return 1;
		if (mkdir(path, st.st_mode & 07777) < 0 && errno != EEXIST)
			return -errno;
		if (lchown(path, st.st_uid, st.st_gid) < 0)
			log_debug("cannot give '%s' the owner of the lower directory: %s", path, strerror(errno));
		chmod(path, st.st_mode & 07777);
		times[0] = st.st_atim;
		times[1] = st.st_mtim;
		utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	return 1;
}

static bool under_opaque(char **done, size_t n_done, const char *path)
{
	for (size_t i = 0; i < n_done; i++) {
		size_t len = strlen(done[i]);

		if (strncmp(path, done[i], len) == 0 && path[len] == '/')
			return true;
	}
	return false;
}

/* Turn unionfs-fuse's _HIDDEN~ entries into whiteouts, or into the opaque
 * xattr where the name exists again as a directory. */
static int convert_unionfs_markers(const char *upper, const char *const *lowers, size_t n_lowers)
{
	_cleanup_free_ char *meta = xasprintf("%s/" UNIONFS_META_DIR, upper);
	struct marker_list markers = { 0 };
	char **hidden_dirs = NULL;
	size_t n_hidden = 0;
	int r = 0;

	if (access(meta, F_OK) < 0)
		return 0;
	collect_markers(meta, NULL, &markers);
	qsort(markers.paths, markers.n, sizeof(char *), compare_depth);
	hidden_dirs = xmalloc((markers.n + 1) * sizeof(char *));

	for (size_t i = 0; i < markers.n && r >= 0; i++) {
		const char *relative = markers.paths[i];
		_cleanup_free_ char *path = xasprintf("%s/%s", upper, relative);
		_cleanup_free_ char *parent = xstrdup(relative);
		char *slash = strrchr(parent, '/');
		struct stat st;
		bool skip = false;

		/* Shallow markers come first: a name below a hidden directory
		 * needs nothing more. */
		if (under_opaque(hidden_dirs, n_hidden, relative))
			continue;
		if (slash) {
			*slash = '\0';
			/* Create each missing ancestor, top down. */
			for (char *p = parent; !skip && r >= 0; p++) {
				if (*p == '/' || *p == '\0') {
					char saved = *p;
					int q;

					*p = '\0';
					q = ensure_upper_dir(upper, parent, lowers, n_lowers);
					*p = saved;
					if (q < 0)
						r = q;
					else if (q == 1)
						skip = true;
				}
				if (*p == '\0')
					break;
			}
		}
		if (skip || r < 0)
			continue;
		if (lstat(path, &st) == 0) {
			if (S_ISDIR(st.st_mode)) {
				r = set_opaque(path);
				hidden_dirs[n_hidden++] = markers.paths[i];
			}
			continue;
		}
		r = make_whiteout(path);
		hidden_dirs[n_hidden++] = markers.paths[i];
	}
	if (r >= 0)
		r = rm_rf(meta);
	for (size_t i = 0; i < markers.n; i++)
		free(markers.paths[i]);
	free(markers.paths);
	free(hidden_dirs);
	return r;
}

int upper_to_canonical(const char *upper, const char *const *lowers, size_t n_lowers)
{
	int r = convert_unionfs_markers(upper, lowers, n_lowers);

	if (r >= 0)
		r = canonicalize_tree(upper, true);
	if (r < 0)
		log_error("cannot convert the writable layer '%s' to the common format: %s", upper, strerror(-r));
	return r;
}

static int add_unionfs_marker(const char *upper, const char *relative)
{
	_cleanup_free_ char *marker = xasprintf("%s/" UNIONFS_META_DIR "/%s" UNIONFS_HIDDEN_SUFFIX, upper, relative);
	_cleanup_free_ char *parent = xstrdup(marker);
	int fd, r;

	*strrchr(parent, '/') = '\0';
	r = mkdir_p(parent, 0770);
	if (r < 0)
		return r;
	fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int unionfs_tree(const char *upper, const char *relative)
{
	_cleanup_free_ char *dir = relative ? xasprintf("%s/%s", upper, relative) : xstrdup(upper);
	char **names = NULL;
	size_t n = 0;
	int r = read_dir_names(dir, false, &names, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		_cleanup_free_ char *child = relative ? xasprintf("%s/%s", relative, names[i]) : xstrdup(names[i]);
		_cleanup_free_ char *path = xasprintf("%s/%s", upper, child);
		struct stat st;

		if (!relative && strcmp(names[i], UNIONFS_META_DIR) == 0)
			continue;
		if (lstat(path, &st) < 0)
			continue;
		if (is_whiteout(&st)) {
			r = add_unionfs_marker(upper, child);
			if (r >= 0 && unlink(path) < 0)
				r = -errno;
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			continue;
		if (has_xattr_value(path, OPAQUE_XATTR, "y"))
			r = add_unionfs_marker(upper, child);
		if (r >= 0)
			r = unionfs_tree(upper, child);
	}
	free_dir_names(names, n);
	return r;
}

int upper_to_unionfs(const char *upper)
{
	int r = unionfs_tree(upper, NULL);

	if (r < 0)
		log_error("cannot prepare the writable layer '%s' for unionfs-fuse: %s", upper, strerror(-r));
	return r;
}
