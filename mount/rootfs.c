#include "mount/rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

static int mount_logged(const char *source, const char *target, const char *type, unsigned long flags,
			const char *data)
{
	if (mount(source, target, type, flags, data) < 0) {
		int r = -errno;

		log_error("cannot mount '%s' on '%s': %s", type ? type : source ? source : "(remount)", target,
			  strerror(errno));
		return r;
	}
	return 0;
}

int open_in_root(int root_fd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

int rootfs_enter_staging(void)
{
	int r;

	r = mount_logged(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL);
	if (r < 0)
		return r;
	/* /tmp exists on every system this runs on, and the tmpfs covers it
	 * only inside this namespace. After the pivot, the host's /tmp is
	 * reachable below STAGING_HOST. */
	r = mount_logged("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	if (r < 0)
		return r;
	if (mkdir("/tmp/oldroot", 0755) < 0)
		return -errno;
	if (syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot") < 0) {
		r = -errno;
		log_error("pivot_root into the staging tmpfs failed: %s", strerror(errno));
		return r;
	}
	if (chdir("/") < 0)
		return -errno;
	if (mkdir(STAGING_NEWROOT, 0755) < 0 || mkdir(STAGING_LAYERS, 0755) < 0 ||
	    mkdir(STAGING_GENERATED, 0755) < 0)
		return -errno;
	return 0;
}

static int skeleton_file(const char *path, mode_t mode)
{
	_cleanup_free_ char *full = xasprintf(STAGING_SKELETON "%s", path);
	_cleanup_free_ char *parent = xstrdup(full);
	int fd;

	*strrchr(parent, '/') = '\0';
	if (mkdir_p(parent, 0755) < 0)
		return -errno;
	fd = open(full, O_WRONLY | O_CREAT | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

#define APT_SANDBOX_CONFIG "/etc/apt/apt.conf.d/00flatimage-single-id"

static bool image_has_apt(void)
{
	_cleanup_closedir_ DIR *layers = opendir(STAGING_LAYERS);
	struct dirent *de;

	while (layers && (de = readdir(layers))) {
		_cleanup_free_ char *apt = xasprintf(STAGING_LAYERS "/%s/etc/apt", de->d_name);

		if (de->d_name[0] != '.' && access(apt, F_OK) == 0)
			return true;
	}
	return false;
}

int rootfs_make_skeleton(const struct rootfs_identity *id)
{
	static const char *const dirs[] = { "/proc", "/dev", "/sys", "/tmp", "/etc", "/root", "/home", "/run" };
	static const char *const files[] = { "/etc/resolv.conf", "/etc/hosts", "/etc/passwd", "/etc/group" };
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		_cleanup_free_ char *full = xasprintf(STAGING_SKELETON "%s", dirs[i]);

		r = mkdir_p(full, 0755);
		if (r < 0)
			return r;
	}
	chmod(STAGING_SKELETON "/tmp", 01777);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		r = skeleton_file(files[i], 0644);
		if (r < 0)
			return r;
	}
	if (id->single_id_root && image_has_apt()) {
		r = skeleton_file(APT_SANDBOX_CONFIG, 0644);
		if (r >= 0)
			r = write_file(STAGING_SKELETON APT_SANDBOX_CONFIG,
				       "// Written by the flatimage runtime for fim-root with a single mapped id:\n"
				       "// apt cannot switch to its _apt user, whose id does not exist here.\n"
				       "APT::Sandbox::User \"root\";\n");
		if (r < 0)
			return r;
	}
	return 0;
}

/* Bind source over path inside the new root, resolving path as the
 * container would, so a symbolic link in the image cannot redirect the
 * mount outside the new root. */
static int bind_into_root(int root_fd, const char *source, const char *path, bool read_only)
{
	_cleanup_close_ int target = open_in_root(root_fd, path, O_PATH);
	char target_path[64];
	int r;

	if (target < 0) {
		log_debug("not mounting '%s': '%s' is missing in the image (%s)", source, path, strerror(-target));
		return 0;
	}
	snprintf(target_path, sizeof(target_path), STAGING_NEWROOT "/proc/self/fd/%d", target);
	r = mount_logged(source, target_path, NULL, MS_BIND, NULL);
	if (r < 0 || !read_only)
		return r;

	/* The open target still names the file under the new mount; only a
	 * fresh lookup reaches the mount that the remount must change. */
	close(target);
	target = open_in_root(root_fd, path, O_PATH);
	if (target < 0)
		return target;
	snprintf(target_path, sizeof(target_path), STAGING_NEWROOT "/proc/self/fd/%d", target);
	return mount_logged(NULL, target_path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

static int populate_dev(void)
{
	static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
	static const char *const links[][2] = {
		{ "ptmx", "pts/ptmx" },	      { "fd", "/proc/self/fd" },	 { "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" }, { "core", "/proc/kcore" },
	};
	int r;

	r = mount_logged("tmpfs", STAGING_NEWROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755");
	if (r < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(nodes); i++) {
		_cleanup_free_ char *target = xasprintf(STAGING_NEWROOT "/dev/%s", nodes[i]);
		_cleanup_free_ char *source = xasprintf(STAGING_HOST "/dev/%s", nodes[i]);
		int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);

		if (fd < 0)
			return -errno;
		close(fd);
		/* Device nodes cannot be created in a user namespace; binding the
		 * host's nodes is the only way to provide them. */
		r = mount_logged(source, target, NULL, MS_BIND, NULL);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(links); i++) {
		_cleanup_free_ char *target = xasprintf(STAGING_NEWROOT "/dev/%s", links[i][0]);

		if (symlink(links[i][1], target) < 0)
			return -errno;
	}
	if (mkdir(STAGING_NEWROOT "/dev/pts", 0755) < 0 || mkdir(STAGING_NEWROOT "/dev/shm", 01777) < 0)
		return -errno;
	/* A private devpts instance: the container can open new terminals but
	 * cannot reach the host's other terminals. */
	r = mount_logged("devpts", STAGING_NEWROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
			 "newinstance,ptmxmode=0666,mode=0620");
	if (r < 0)
		return r;
	return mount_logged("tmpfs", STAGING_NEWROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

static int populate_sys(void)
{
	struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };
	int r;

	/* A new sysfs needs a network namespace owned by this user namespace,
	 * so bind the host's tree recursively instead and make every mount in
	 * it read-only. */
	r = mount_logged(STAGING_HOST "/sys", STAGING_NEWROOT "/sys", NULL, MS_BIND | MS_REC, NULL);
	if (r < 0)
		return r;
	if (syscall(SYS_mount_setattr, AT_FDCWD, STAGING_NEWROOT "/sys", AT_RECURSIVE, &attr, sizeof(attr)) < 0) {
		r = -errno;
		log_error("cannot make /sys read-only: %s", strerror(errno));
		return r;
	}
	return 0;
}

static bool id_listed(const char *db, unsigned id)
{
	for (const char *line = db; line && *line;) {
		const char *end = strchr(line, '\n');
		const char *field = line;
		unsigned parsed;

		/* name:password:ID:... */
		for (int i = 0; i < 2 && field; i++) {
			field = memchr(field, ':', end ? (size_t)(end - field) : strlen(field));
			if (field)
				field++;
		}
		if (field && sscanf(field, "%u:", &parsed) == 1 && parsed == id)
			return true;
		line = end ? end + 1 : NULL;
	}
	return false;
}

/* Write STAGING_GENERATED/name: the image's file plus extra when the id is
 * not listed yet, and bind it over /etc/name. */
static int generate_id_db(int root_fd, const char *name, unsigned id, const char *extra)
{
	_cleanup_free_ char *image_path = xasprintf("/etc/%s", name);
	_cleanup_free_ char *generated_path = xasprintf(STAGING_GENERATED "/%s", name);
	_cleanup_free_ char *content = NULL;
	_cleanup_free_ char *merged = NULL;
	_cleanup_close_ int fd = open_in_root(root_fd, image_path, O_RDONLY);
	int r;

	if (fd >= 0) {
		char fd_path[64];

		snprintf(fd_path, sizeof(fd_path), STAGING_NEWROOT "/proc/self/fd/%d", fd);
		if (read_file(fd_path, &content, NULL) < 0)
			content = xstrdup("");
	} else {
		content = xstrdup("");
	}
	if (id_listed(content, id))
		return 0;
	merged = xasprintf("%s%s%s\n", content, *content && content[strlen(content) - 1] != '\n' ? "\n" : "", extra);
	r = write_file(generated_path, merged);
	if (r < 0)
		return r;
	chmod(generated_path, 0644);
	return bind_into_root(root_fd, generated_path, image_path, true);
}

int rootfs_populate(const struct rootfs_identity *id)
{
	_cleanup_close_ int root_fd = open(STAGING_NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *passwd_line = NULL;
	_cleanup_free_ char *group_line = NULL;
	_cleanup_close_ int bash = -1;
	int r;

	if (root_fd < 0)
		return -errno;
	r = mount_logged("proc", STAGING_NEWROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	if (r < 0)
		return r;
	r = populate_dev();
	if (r < 0)
		return r;
	r = populate_sys();
	if (r < 0)
		return r;
	r = mount_logged("tmpfs", STAGING_NEWROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	if (r < 0)
		return r;

	if (access(STAGING_HOST "/etc/resolv.conf", R_OK) == 0) {
		r = bind_into_root(root_fd, STAGING_HOST "/etc/resolv.conf", "/etc/resolv.conf", true);
		if (r < 0)
			return r;
	}
	if (access(STAGING_HOST "/etc/hosts", R_OK) == 0) {
		r = bind_into_root(root_fd, STAGING_HOST "/etc/hosts", "/etc/hosts", true);
		if (r < 0)
			return r;
	}

	bash = open_in_root(root_fd, "/bin/bash", O_PATH);
	passwd_line = xasprintf("%s:x:%u:%u:%s:%s:%s", id->user_name, (unsigned)id->uid, (unsigned)id->gid,
				id->user_name, id->home, bash >= 0 ? "/bin/bash" : "/bin/sh");
	group_line = xasprintf("%s:x:%u:", id->user_name, (unsigned)id->gid);
	r = generate_id_db(root_fd, "passwd", id->uid, passwd_line);
	if (r < 0)
		return r;
	return generate_id_db(root_fd, "group", id->gid, group_line);
}
