#include "runtime/container.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "mount/rootfs.h"
#include "mount/squashfs.h"
#include "ns/caps.h"
#include "ns/pivot.h"
#include "ns/rename_guard.h"
#include "ns/seccomp.h"
#include "overlay/helper.h"
#include "overlay/kernel.h"
#include "overlay/upper.h"
#include <sys/file.h>
#include "runtime/signals.h"

#define EXIT_RUNTIME_ERROR 125

extern char **environ;

static const char *const CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static void explain_mount_eperm(void)
{
	_cleanup_free_ char *restrict_flag = NULL;

	if (read_file("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", &restrict_flag, NULL) == 0 &&
	    restrict_flag[0] == '1')
		log_error("AppArmor restricts unprivileged user namespaces on this system "
			  "(kernel.apparmor_restrict_unprivileged_userns=1); allow it with "
			  "'sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0' or an AppArmor profile "
			  "that grants 'userns,' to this image");
}

static int mount_layers(const struct run_request *req, char ***ret_lowers, size_t *ret_n)
{
	const struct image *img = req->image;
	struct owner_policy owner = {
		.keep_ids = req->id_range,
		.uid = getuid(),
		.gid = getgid(),
	};
	char **lowers = xmalloc((img->n_layers + 2) * sizeof(char *));
	size_t n = 0;

	/* Kernel overlayfs takes the top layer first. */
	for (size_t i = img->n_layers; i-- > 0;) {
		const struct layer *layer = &img->layers[i];
		char *mountpoint = xasprintf(STAGING_LAYERS "/%zu", i);
		struct squashfs_mount *m;
		int fd = img->fd;
		int r;

		if (!layer->embedded) {
			_cleanup_free_ char *host_path = xasprintf(STAGING_HOST "%s", layer->path);

			/* After the pivot into the staging tmpfs, host paths are
			 * below STAGING_HOST. */
			fd = open(host_path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				log_error("cannot open layer %zu '%s': %s", i, layer->path, strerror(errno));
				return -errno;
			}
		}
		if (mkdir(mountpoint, 0755) < 0)
			return -errno;
		r = squashfs_mount_start(fd, layer->offset, mountpoint, STAGING_HOST "/dev/fuse", &owner, &m);
		if (r < 0)
			return r;
		log_debug("layer %zu: '%s' offset %" PRIu64 " size %" PRIu64 " on %s", i, layer->path, layer->offset,
			  layer->size, mountpoint);
		lowers[n++] = mountpoint;
	}
	lowers[n++] = xstrdup(STAGING_SKELETON);
	*ret_lowers = lowers;
	*ret_n = n;
	return 0;
}

/* The FUSE backend's helper, watched by supervise_program(). */
static struct overlay_helper helper;

/* Helpers are host programs: link the host directories they need into the
 * staging root, so their libraries and /dev/fuse resolve while the staging
 * paths of the layers stay valid. The program's root is never the staging root. */
static int link_host_tree_for_helpers(void)
{
	static const char *const names[] = { "usr", "lib", "lib64", "lib32", "libx32", "bin", "sbin", "etc", "dev", "proc" };

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		_cleanup_free_ char *host = xasprintf(STAGING_HOST "/%s", names[i]);
		_cleanup_free_ char *link = xasprintf("/%s", names[i]);

		if (access(host, F_OK) == 0 && symlink(host, link) < 0)
			return -errno;
	}
	return 0;
}

/* Bring the writable layer into the format the backend reads, recording
 * the target format first, so a run killed halfway is repaired by the next
 * one (both conversions accept a mix of formats). */
static int prepare_upper(const struct run_request *req, char **lowers, size_t n)
{
	_cleanup_free_ char *data_dir = xasprintf(STAGING_HOST "%s", req->data_dir);
	_cleanup_free_ char *upper = xasprintf(STAGING_HOST "%s", req->upper_dir);
	_cleanup_free_ char *state = NULL;
	const char *target = req->mode == OVERLAY_BWRAP ? UPPER_STATE_CANONICAL : overlay_mode_name(req->mode);
	bool upgraded = false;
	int r;

	r = upper_read_state(data_dir, &state);
	if (r < 0)
		return r;
	if (strcmp(state, target) == 0)
		return 0;
	log_debug("converting the writable layer from the %s format for %s", state, target);

	if (req->mode == OVERLAY_BWRAP) {
		/* Other kernel-backend instances share the lock; converting
		 * needs the layer to itself. */
		if (flock(req->upper_lock_fd, LOCK_EX | LOCK_NB) < 0) {
			log_error("the writable layer in '%s' must be converted after a run with another backend, but "
				  "another instance is using it; close it and retry",
				  req->data_dir);
			return -EBUSY;
		}
		upgraded = true;
	}
	if (strcmp(state, UPPER_STATE_CANONICAL) != 0) {
		r = upper_to_canonical(upper, (const char *const *)lowers, n);
		if (r >= 0)
			r = upper_write_state(data_dir, UPPER_STATE_CANONICAL);
	}
	if (r >= 0 && req->mode != OVERLAY_BWRAP)
		r = upper_write_state(data_dir, target);
	if (r >= 0 && req->mode == OVERLAY_UNIONFS)
		r = upper_to_unionfs(upper);
	if (upgraded)
		flock(req->upper_lock_fd, LOCK_SH);
	return r;
}

/* After the program: stop the FUSE helper, so nothing writes to the upper
 * directory any more, and convert it back to the canonical format. */
static void finish_upper(const struct run_request *req, char **lowers, size_t n)
{
	_cleanup_free_ char *data_dir = xasprintf(STAGING_HOST "%s", req->data_dir);
	_cleanup_free_ char *upper = xasprintf(STAGING_HOST "%s", req->upper_dir);

	if (helper.pid <= 0)
		return;
	kill(helper.pid, SIGTERM);
	/* A helper exits within a millisecond or two of SIGTERM; poll finely
	 * for two seconds, then kill it. */
	for (int i = 0;; i++) {
		if (waitpid(helper.pid, NULL, WNOHANG) == helper.pid)
			break;
		if (i == 10000) {
			kill(helper.pid, SIGKILL);
			waitpid(helper.pid, NULL, 0);
			break;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000 }, NULL);
	}
	helper.pid = 0;
	if (upper_to_canonical(upper, (const char *const *)lowers, n) >= 0)
		upper_write_state(data_dir, UPPER_STATE_CANONICAL);
}

#define STAGING_MERGED_LOWERS "/lowers"

static int mount_overlay(const struct run_request *req, char **lowers, size_t n)
{
	_cleanup_free_ char *upper = xasprintf(STAGING_HOST "%s", req->upper_dir);
	_cleanup_free_ char *work = xasprintf(STAGING_HOST "%s", req->work_dir);
	_cleanup_free_ char *log_display = NULL;
	_cleanup_free_ char *log_path = NULL;
	const char *merged_lowers[] = { STAGING_MERGED_LOWERS };
	int r;

	r = prepare_upper(req, lowers, n);
	if (r < 0)
		return r;
	if (req->mode == OVERLAY_BWRAP)
		return overlay_mount_kernel((const char *const *)lowers, n, upper, work, STAGING_NEWROOT);

	/* The helpers get the layers as one read-only kernel overlay. Layers
	 * made by a commit keep deletions as kernel whiteouts and opaque
	 * xattrs, which unionfs-fuse does not understand, so the kernel applies
	 * them here and hides the markers. fuse-overlayfs understands them,
	 * but was no faster when given the layers directly. */
	if (mkdir(STAGING_MERGED_LOWERS, 0755) < 0)
		return -errno;
	r = overlay_mount_kernel((const char *const *)lowers, n, NULL, NULL, STAGING_MERGED_LOWERS);
	if (r < 0)
		return r;

	log_display = xasprintf("%s/logs/%s.log", req->data_dir, overlay_mode_name(req->mode));
	log_path = xasprintf(STAGING_HOST "%s", log_display);
	r = link_host_tree_for_helpers();
	if (r < 0)
		return r;
	return overlay_helper_start(req->mode, merged_lowers, 1, upper, work, STAGING_NEWROOT, log_path, log_display,
				    &helper);
}

/* Pick the working directory: the host's if it exists in the container,
 * else HOME, else "/". Runs before the pivot, so it checks inside the new
 * root by resolving in it. */
static char *choose_cwd(const struct run_request *req)
{
	const char *candidates[] = { req->host_cwd, req->home };
	_cleanup_close_ int root_fd = open(STAGING_NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);

	for (size_t i = 0; i < ARRAY_SIZE(candidates); i++) {
		int fd;

		if (!candidates[i] || candidates[i][0] != '/')
			continue;
		fd = open_in_root(root_fd, candidates[i], O_PATH | O_DIRECTORY);
		if (fd >= 0) {
			close(fd);
			return xstrdup(candidates[i]);
		}
	}
	return xstrdup("/");
}

static void setup_environment(const struct run_request *req)
{
	_cleanup_free_ char *path = NULL;

	if (req->host_path && *req->host_path)
		path = xasprintf("%s:%s", CONTAINER_PATH, req->host_path);
	else
		path = xstrdup(CONTAINER_PATH);
	setenv("PATH", path, 1);
	setenv("HOME", req->home, 1);
	setenv("USER", req->user_name, 1);
	setenv("LOGNAME", req->user_name, 1);
	setenv("FIM_FILE_BINARY", req->image->path, 1);
}

/* The program process: runs after the pivot, inside every namespace. */
static _Noreturn void exec_program(const struct run_request *req, const char *cwd)
{
	char **argv = req->argv;
	_cleanup_free_ char *resolved = NULL;
	char **boot_argv = NULL;
	sigset_t none;
	int r;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signals_reset_dispositions();

	setup_environment(req);
	if (chdir(cwd) < 0 && chdir("/") < 0)
		_exit(EXIT_RUNTIME_ERROR);

	if (req->boot) {
		size_t argc = 0;

		while (argv[argc])
			argc++;
		boot_argv = xmalloc((argc + 2) * sizeof(char *));
		boot_argv[0] = access("/bin/bash", X_OK) == 0 ? "bash" : "sh";
		memcpy(boot_argv + 1, argv, (argc + 1) * sizeof(char *));
		argv = boot_argv;
	}

	if (req->as_root) {
		if (!req->id_range && seccomp_install_fakeroot() < 0)
			_exit(EXIT_RUNTIME_ERROR);
	} else if (caps_drop_all() < 0) {
		_exit(EXIT_RUNTIME_ERROR);
	}

	r = find_in_path(argv[0], getenv("PATH"), &resolved);
	if (r == -ENOENT) {
		log_error("command not found: '%s'", argv[0]);
		_exit(127);
	}
	if (r < 0) {
		log_error("cannot execute '%s': %s", argv[0], strerror(-r));
		_exit(126);
	}
	log_debug("program: executing '%s'", resolved);
	execve(resolved, argv, environ);
	r = errno;
	log_error("cannot execute '%s': %s", resolved, strerror(r));
	_exit(r == ENOENT ? 127 : 126);
}

static int exit_code_from_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_RUNTIME_ERROR;
}

/* Forward signals to the program and reap every child until the program
 * exits. As pid 1 this process also collects orphans of the container. */
static _Noreturn void supervise_program(const struct run_request *req, pid_t program, char **lowers, size_t n_lowers)
{
	sigset_t set;

	signals_forwarded_set(&set);
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&set, &info);

		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			if (signals_should_forward(&info))
				kill(program, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);

			if (pid <= 0)
				break;
			if (helper.pid > 0 && pid == helper.pid) {
				overlay_helper_report_exit(&helper, status);
				kill(program, SIGKILL);
				_exit(EXIT_RUNTIME_ERROR);
			}
			if (pid == program) {
				int code = exit_code_from_status(status);

				log_debug("init: the program exited with status %d", code);
				finish_upper(req, lowers, n_lowers);
				_exit(code);
			}
		}
	}
}

_Noreturn void container_init(const struct run_request *request, int sync_fd)
{
	struct run_request mapped = *request;
	const struct run_request *req = &mapped;
	struct rootfs_identity id = {
		.uid = getuid(),
		.gid = getgid(),
		.user_name = req->user_name,
		.home = req->home,
		.single_id_root = req->as_root && !req->id_range,
	};
	_cleanup_free_ char *cwd = NULL;
	char **lowers = NULL;
	size_t n_lowers = 0;
	int guard_socket[2] = { -1, -1 };
	char byte;
	pid_t program;

	/* Entered in new user, mount and pid namespaces, before the id maps
	 * exist. Die with the supervisor; then wait until it has written the
	 * maps. EOF means it died before that. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (read(sync_fd, &byte, 1) != 1)
		_exit(EXIT_RUNTIME_ERROR);
	close(sync_fd);
	/* The supervisor falls back to one id when the range cannot be mapped. */
	mapped.id_range = byte == SYNC_RANGE;
	id.single_id_root = req->as_root && !req->id_range;
	/* Now uid and gid are the mapped ones, with every capability in the new
	 * user namespace. */
	id.uid = getuid();
	id.gid = getgid();

	log_debug("init: id maps written, mounting");
	if (rootfs_enter_staging() < 0) {
		if (errno == EPERM)
			explain_mount_eperm();
		_exit(EXIT_RUNTIME_ERROR);
	}
	if (mount_layers(req, &lowers, &n_lowers) < 0 || rootfs_make_skeleton(&id) < 0 ||
	    mount_overlay(req, lowers, n_lowers) < 0 || rootfs_populate(&id) < 0)
		_exit(EXIT_RUNTIME_ERROR);
	log_debug("init: root file system ready");
	cwd = choose_cwd(req);
	if (req->mode == OVERLAY_UNIONFS && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, guard_socket) < 0) {
		log_error("cannot create the rename guard's socket: %s", strerror(errno));
		_exit(EXIT_RUNTIME_ERROR);
	}

	program = fork();
	if (program < 0) {
		log_error("cannot start the program: %s", strerror(errno));
		_exit(EXIT_RUNTIME_ERROR);
	}
	if (program == 0) {
		squashfs_close_connections();
		/* pivot_root() moves the root of every process in the mount
		 * namespace, and the FUSE helper must keep the staging root, so
		 * the program pivots in a copy of the namespace of its own. */
		if (unshare(CLONE_NEWNS) < 0) {
			log_error("cannot create the program's mount namespace: %s", strerror(errno));
			_exit(EXIT_RUNTIME_ERROR);
		}
		if (pivot_into(STAGING_NEWROOT) < 0)
			_exit(EXIT_RUNTIME_ERROR);
		if (req->mode == OVERLAY_UNIONFS) {
			int listener = rename_guard_install();

			if (listener < 0 || send_fd(guard_socket[1], listener) < 0)
				_exit(EXIT_RUNTIME_ERROR);
			close(listener);
			close(guard_socket[1]);
		}
		exec_program(req, cwd);
	}
	if (req->mode == OVERLAY_UNIONFS) {
		int listener;

		close(guard_socket[1]);
		listener = recv_fd(guard_socket[0]);
		close(guard_socket[0]);
		/* The program process has exited when no listener came; the loop
		 * below reports its status. */
		if (listener >= 0)
			rename_guard_serve(listener, STAGING_NEWROOT "/proc");
	}
	log_debug("init: started the program as pid %d", (int)program);
	supervise_program(req, program, lowers, n_lowers);
}
