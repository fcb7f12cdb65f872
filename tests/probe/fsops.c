/*
 * fim-fsops: file system operations that busybox lacks, run inside
 * containers by the overlay conformance tests.
 *
 * Usage:
 *   fim-fsops lstat PATH...            print one line of attributes per path
 *   fim-fsops tmpfile DIR NAME TEXT    write TEXT to an O_TMPFILE file in DIR,
 *                                      then link it as DIR/NAME
 *   fim-fsops flock FILE               check that a second open file
 *                                      description cannot take a held flock()
 *   fim-fsops posixlock FILE           check that a child process cannot take
 *                                      a held fcntl() write lock
 *   fim-fsops mmapwrite FILE OFFSET TEXT
 *                                      write TEXT at OFFSET through a shared
 *                                      mapping, then read it back with pread()
 *   fim-fsops setxattr PATH NAME VALUE
 *   fim-fsops getxattr PATH NAME       print the value
 *   fim-fsops listxattr PATH           print each xattr name on its own line
 *   fim-fsops socket PATH              bind a unix socket at PATH and pass one
 *                                      message through it
 *   fim-fsops statmany DIR COUNT STEP  lstat DIR/fNNNNN for NNNNN = 0, STEP,
 *                                      2*STEP, ... (COUNT names) and print
 *                                      the time taken
 *   fim-fsops markers DIR...           walk each tree without crossing mounts
 *                                      and print every entry that looks like
 *                                      an overlay helper's internal marker
 *
 * A failed system call prints "STEP ERRNO-NAME" on stdout (for example
 * "linkat EXDEV") and exits with status 1, so tests compare errno names
 * across overlay modes. Usage errors exit with status 2. The program is
 * linked statically so that it runs in any image.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* Return the symbolic name of an errno value, such as "ENOENT". */
static const char *errno_name(int error)
{
	const char *name = strerrorname_np(error);

	return name ? name : "EUNKNOWN";
}

static int fail(const char *step)
{
	printf("%s %s\n", step, errno_name(errno));
	return 1;
}

static const char *type_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "reg";
	case S_IFDIR:
		return "dir";
	case S_IFLNK:
		return "lnk";
	case S_IFIFO:
		return "fifo";
	case S_IFSOCK:
		return "sock";
	case S_IFCHR:
		return "chr";
	case S_IFBLK:
		return "blk";
	default:
		return "unknown";
	}
}

static int cmd_lstat(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		struct stat st;

		if (lstat(argv[i], &st) < 0)
			return fail("lstat");
		printf("ino=%llu nlink=%llu type=%s mode=%04o uid=%u gid=%u size=%lld mtime_ns=%lld rdev=%u:%u\n",
		       (unsigned long long)st.st_ino, (unsigned long long)st.st_nlink, type_name(st.st_mode),
		       (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid, (long long)st.st_size,
		       (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec, major(st.st_rdev),
		       minor(st.st_rdev));
	}
	return 0;
}

static int write_all(int fd, const char *text)
{
	size_t length = strlen(text);

	while (length > 0) {
		ssize_t n = write(fd, text, length);

		if (n < 0)
			return -1;
		text += n;
		length -= (size_t)n;
	}
	return 0;
}

static int cmd_tmpfile(const char *dir, const char *name, const char *text)
{
	char fd_path[64], target[PATH_MAX];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);

	if (fd < 0)
		return fail("open");
	if (write_all(fd, text) < 0)
		return fail("write");
	/* Linking through /proc needs no CAP_DAC_READ_SEARCH, unlike
	 * AT_EMPTY_PATH. */
	snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fd);
	snprintf(target, sizeof target, "%s/%s", dir, name);
	if (linkat(AT_FDCWD, fd_path, AT_FDCWD, target, AT_SYMLINK_FOLLOW) < 0)
		return fail("linkat");
	close(fd);
	printf("ok\n");
	return 0;
}

static int cmd_flock(const char *path)
{
	int first = open(path, O_RDWR | O_CLOEXEC);
	int second = open(path, O_RDWR | O_CLOEXEC);

	if (first < 0 || second < 0)
		return fail("open");
	if (flock(first, LOCK_EX | LOCK_NB) < 0)
		return fail("flock-first");
	if (flock(second, LOCK_EX | LOCK_NB) == 0) {
		printf("flock-second succeeded while the first lock was held\n");
		return 1;
	}
	printf("conflict=%s\n", errno_name(errno));
	if (flock(first, LOCK_UN) < 0)
		return fail("flock-unlock");
	if (flock(second, LOCK_EX | LOCK_NB) < 0)
		return fail("flock-after-unlock");
	printf("ok\n");
	return 0;
}

static int cmd_posixlock(const char *path)
{
	struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd = open(path, O_RDWR | O_CLOEXEC);
	pid_t child;
	int status;

	if (fd < 0)
		return fail("open");
	if (fcntl(fd, F_SETLK, &lock) < 0)
		return fail("fcntl-parent");
	fflush(stdout);
	child = fork();
	if (child < 0)
		return fail("fork");
	if (child == 0) {
		/* fcntl() locks belong to the process, so only another process
		 * gets EAGAIN for a held lock. */
		int child_fd = open(path, O_RDWR | O_CLOEXEC);

		if (child_fd < 0)
			_exit(fail("open-child"));
		if (fcntl(child_fd, F_SETLK, &lock) == 0) {
			printf("fcntl-child succeeded while the parent held the lock\n");
			_exit(1);
		}
		printf("conflict=%s\n", errno_name(errno));
		_exit(0);
	}
	if (waitpid(child, &status, 0) < 0)
		return fail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 1;
	printf("ok\n");
	return 0;
}

static int cmd_mmapwrite(const char *path, const char *offset_text, const char *text)
{
	long long offset = atoll(offset_text);
	size_t length = strlen(text);
	long page = sysconf(_SC_PAGESIZE);
	long long map_start = offset / page * page;
	size_t map_length = (size_t)(offset - map_start) + length;
	char readback[4096];
	int fd = open(path, O_RDWR | O_CLOEXEC);
	char *map;

	if (length >= sizeof readback) {
		fprintf(stderr, "invalid TEXT: longer than the maximum of %zu bytes\n", sizeof readback - 1);
		return 2;
	}
	if (fd < 0)
		return fail("open");
	map = mmap(NULL, map_length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map_start);
	if (map == MAP_FAILED)
		return fail("mmap");
	memcpy(map + (offset - map_start), text, length);
	if (msync(map, map_length, MS_SYNC) < 0)
		return fail("msync");
	if (munmap(map, map_length) < 0)
		return fail("munmap");
	if (pread(fd, readback, length, offset) != (ssize_t)length)
		return fail("pread");
	readback[length] = '\0';
	printf("%s\n", readback);
	return 0;
}

static int cmd_setxattr(const char *path, const char *name, const char *value)
{
	if (lsetxattr(path, name, value, strlen(value), 0) < 0)
		return fail("setxattr");
	printf("ok\n");
	return 0;
}

static int cmd_getxattr(const char *path, const char *name)
{
	char value[4096];
	ssize_t n = lgetxattr(path, name, value, sizeof value - 1);

	if (n < 0)
		return fail("getxattr");
	value[n] = '\0';
	printf("%s\n", value);
	return 0;
}

static int cmd_listxattr(const char *path)
{
	char names[65536];
	ssize_t n = llistxattr(path, names, sizeof names);

	if (n < 0)
		return fail("listxattr");
	for (ssize_t offset = 0; offset < n; offset += (ssize_t)strlen(names + offset) + 1)
		printf("%s\n", names + offset);
	return 0;
}

static int cmd_socket(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	char message[16] = { 0 };
	int server, connection;
	pid_t child;
	int status;

	if (strlen(path) >= sizeof address.sun_path) {
		fprintf(stderr, "invalid socket path '%s': longer than the maximum of %zu bytes\n", path,
			sizeof address.sun_path - 1);
		return 2;
	}
	strcpy(address.sun_path, path);
	server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (server < 0)
		return fail("socket");
	if (bind(server, (struct sockaddr *)&address, sizeof address) < 0)
		return fail("bind");
	if (listen(server, 1) < 0)
		return fail("listen");
	fflush(stdout);
	child = fork();
	if (child < 0)
		return fail("fork");
	if (child == 0) {
		int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (client < 0)
			_exit(fail("socket-child"));
		if (connect(client, (struct sockaddr *)&address, sizeof address) < 0)
			_exit(fail("connect"));
		if (write_all(client, "ping") < 0)
			_exit(fail("write"));
		_exit(0);
	}
	connection = accept(server, NULL, NULL);
	if (connection < 0)
		return fail("accept");
	if (read(connection, message, sizeof message - 1) < 0)
		return fail("read");
	if (waitpid(child, &status, 0) < 0)
		return fail("waitpid");
	printf("received=%s\n", message);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int cmd_statmany(const char *dir, const char *count_text, const char *step_text)
{
	long count = atol(count_text), step = atol(step_text), found = 0;
	struct timespec start, end;
	char path[PATH_MAX];

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		struct stat st;

		snprintf(path, sizeof path, "%s/f%05ld", dir, i * step);
		if (lstat(path, &st) == 0)
			found++;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("found=%ld\n", found);
	printf("seconds=%.6f\n", (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9);
	return 0;
}

static int is_marker_name(const char *name)
{
	size_t length = strlen(name);
	static const char hidden_suffix[] = "_HIDDEN~";

	return strncmp(name, ".wh.", 4) == 0 || strcmp(name, ".unionfs-fuse") == 0 || strcmp(name, ".unionfs") == 0 ||
	       (length >= sizeof hidden_suffix - 1 && strcmp(name + length - (sizeof hidden_suffix - 1), hidden_suffix) == 0);
}

static int is_marker_xattr(const char *name)
{
	return strstr(name, "overlay.") != NULL || strstr(name, "fuseoverlayfs") != NULL || strstr(name, "unionfs") != NULL;
}

/* Print each marker xattr of path. The opaque and redirect xattrs are also
 * read by name, because a file system may hide a name from listxattr() yet
 * return its value from getxattr(). */
static void report_xattr_markers(const char *path)
{
	static const char *const probed[] = {
		"user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque",
		"user.overlay.redirect", "user.overlay.origin",
	};
	char names[65536];
	ssize_t n = llistxattr(path, names, sizeof names);

	for (ssize_t offset = 0; n > 0 && offset < n; offset += (ssize_t)strlen(names + offset) + 1) {
		if (is_marker_xattr(names + offset))
			printf("xattr %s %s\n", path, names + offset);
	}
	for (size_t i = 0; i < sizeof probed / sizeof probed[0]; i++) {
		char value[256];

		if (lgetxattr(path, probed[i], value, sizeof value) >= 0)
			printf("xattr-read %s %s\n", path, probed[i]);
	}
}

static void walk_markers(const char *dir, dev_t device)
{
	DIR *stream = opendir(dir);
	struct dirent *entry;

	if (stream == NULL) {
		printf("opendir %s %s\n", dir, errno_name(errno));
		return;
	}
	while ((entry = readdir(stream)) != NULL) {
		char path[PATH_MAX];
		struct stat st;

		if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, entry->d_name);
		if (is_marker_name(entry->d_name))
			printf("name %s\n", path);
		if (lstat(path, &st) < 0) {
			printf("lstat %s %s\n", path, errno_name(errno));
			continue;
		}
		if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0))
			printf("whiteout %s\n", path);
		report_xattr_markers(path);
		if (S_ISDIR(st.st_mode) && st.st_dev == device)
			walk_markers(path, device);
	}
	closedir(stream);
}

static int cmd_markers(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		struct stat st;

		if (lstat(argv[i], &st) < 0)
			return fail("lstat");
		report_xattr_markers(argv[i]);
		walk_markers(argv[i], st.st_dev);
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: fim-fsops lstat|tmpfile|flock|posixlock|mmapwrite|setxattr|getxattr|listxattr|"
			"socket|statmany|markers ARGS...\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *command;

	if (argc < 3)
		return usage();
	command = argv[1];
	argc -= 2;
	argv += 2;

	/* Every line reaches the pipe before a child writes its own. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(command, "lstat") == 0)
		return cmd_lstat(argc, argv);
	if (strcmp(command, "markers") == 0)
		return cmd_markers(argc, argv);
	if (strcmp(command, "flock") == 0 && argc == 1)
		return cmd_flock(argv[0]);
	if (strcmp(command, "posixlock") == 0 && argc == 1)
		return cmd_posixlock(argv[0]);
	if (strcmp(command, "listxattr") == 0 && argc == 1)
		return cmd_listxattr(argv[0]);
	if (strcmp(command, "socket") == 0 && argc == 1)
		return cmd_socket(argv[0]);
	if (strcmp(command, "getxattr") == 0 && argc == 2)
		return cmd_getxattr(argv[0], argv[1]);
	if (strcmp(command, "tmpfile") == 0 && argc == 3)
		return cmd_tmpfile(argv[0], argv[1], argv[2]);
	if (strcmp(command, "mmapwrite") == 0 && argc == 3)
		return cmd_mmapwrite(argv[0], argv[1], argv[2]);
	if (strcmp(command, "setxattr") == 0 && argc == 3)
		return cmd_setxattr(argv[0], argv[1], argv[2]);
	if (strcmp(command, "statmany") == 0 && argc == 3)
		return cmd_statmany(argv[0], argv[1], argv[2]);
	return usage();
}
