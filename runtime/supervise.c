/* The supervisor half of container_run(): everything that runs on the host
 * side of the namespaces. */
#include "runtime/container.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/signals.h"

#define EXIT_RUNTIME_ERROR 125

static void explain_clone_failure(int err)
{
	_cleanup_free_ char *value = NULL;

	if (read_file("/proc/sys/kernel/unprivileged_userns_clone", &value, NULL) == 0 && value[0] == '0') {
		log_error("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0); enable "
			  "them with 'sudo sysctl kernel.unprivileged_userns_clone=1'");
		return;
	}
	free(value);
	value = NULL;
	if (read_file("/proc/sys/user/max_user_namespaces", &value, NULL) == 0 && value[0] == '0') {
		log_error("user namespaces are disabled (user.max_user_namespaces=0); enable them with "
			  "'sudo sysctl user.max_user_namespaces=15000'");
		return;
	}
	log_error("cannot create the user, mount and pid namespaces: %s; this system does not allow "
		  "unprivileged user namespaces (check the kernel.unprivileged_userns_clone and "
		  "user.max_user_namespaces sysctls, and any AppArmor or SELinux policy that restricts them)",
		  strerror(err));
}

/* Fail early, with the fix, when /dev/fuse is unusable: later the only
 * symptom would be a failed mount inside the namespace. */
static int check_dev_fuse(void)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
		log_error("/dev/fuse is missing: load the FUSE kernel module with 'sudo modprobe fuse'");
	else
		log_error("cannot open /dev/fuse: %s; allow unprivileged FUSE with 'sudo chmod 0666 /dev/fuse' "
			  "(installing the fuse3 package does this on most distributions)",
			  strerror(errno));
	return -EACCES;
}

/* Remove work directories of instances that died without cleaning up. An
 * instance holds a lock on its "<id>.lock" file while it runs. */
static void remove_stale_work_dirs(const char *work_root)
{
	_cleanup_closedir_ DIR *dir = opendir(work_root);
	struct dirent *de;

	if (!dir)
		return;
	while ((de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		_cleanup_free_ char *lock = NULL;
		_cleanup_free_ char *work = NULL;
		_cleanup_close_ int fd = -1;

		if (len < 6 || strcmp(de->d_name + len - 5, ".lock") != 0)
			continue;
		lock = xasprintf("%s/%s", work_root, de->d_name);
		fd = open(lock, O_RDWR | O_CLOEXEC);
		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
			continue;
		work = xasprintf("%s/%.*s", work_root, (int)(len - 5), de->d_name);
		log_debug("removing the work directory '%s' of an instance that is gone", work);
		rm_rf(work);
		unlink(lock);
	}
}

static int create_work_dir(const struct run_request *req, int *ret_lock_fd)
{
	_cleanup_free_ char *lock = xasprintf("%s.lock", req->work_dir);
	_cleanup_free_ char *work_root = xstrdup(req->work_dir);
	int fd, r;

	*strrchr(work_root, '/') = '\0';
	r = mkdir_p(work_root, 0700);
	if (r >= 0)
		r = mkdir_p(req->upper_dir, 0755);
	if (r >= 0 && req->mode != OVERLAY_BWRAP) {
		_cleanup_free_ char *logs = xasprintf("%s/logs", req->data_dir);

		r = mkdir_p(logs, 0755);
	}
	if (r < 0) {
		log_error("cannot create the data directory '%s': %s; set FIM_DIR_DATA to a writable directory",
			  req->data_dir, strerror(-r));
		return r;
	}
	remove_stale_work_dirs(work_root);
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) < 0) {
		log_error("cannot lock '%s': %s", lock, strerror(errno));
		return -errno;
	}
	rm_rf(req->work_dir);
	if (mkdir(req->work_dir, 0700) < 0) {
		r = -errno;
		log_error("cannot create the work directory '%s': %s", req->work_dir, strerror(errno));
		close(fd);
		return r;
	}
	*ret_lock_fd = fd;
	return 0;
}

static void remove_work_dir(const struct run_request *req, int lock_fd)
{
	_cleanup_free_ char *lock = xasprintf("%s.lock", req->work_dir);

	rm_rf(req->work_dir);
	unlink(lock);
	close(lock_fd);
}

/* Lock the writable layer: shared for the kernel backend, which several
 * instances may use at once, and exclusive for the FUSE backends, whose
 * on-disk format is converted before and after each run. */
static int lock_upper(const struct run_request *req, int *ret_fd)
{
	_cleanup_free_ char *path = xasprintf("%s/upper.lock", req->data_dir);
	bool exclusive = req->mode != OVERLAY_BWRAP;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0) {
		log_error("cannot open '%s': %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		int r = -errno;

		if (errno == EWOULDBLOCK)
			log_error("the writable layer in '%s' is in use by another instance of this image%s; close it or "
				  "set FIM_DIR_DATA to another directory for this run",
				  req->data_dir,
				  exclusive ? ", and the fuse-overlayfs and unionfs backends need it to themselves"
					    : " that runs with a FUSE backend");
		else
			log_error("cannot lock '%s': %s", path, strerror(errno));
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

/* Write the child's id maps. Returns the mapping written: SYNC_RANGE or
 * SYNC_SINGLE, or -errno. A subordinate range that cannot be mapped, as in
 * a nested user namespace whose parent does not map it, falls back to a
 * single id. */
static int write_id_maps(const struct run_request *req, pid_t child)
{
	int r;

	if (req->id_range) {
		if (userns_map_root_range(child, req->host_uid, req->host_gid, &req->sub_uids, &req->sub_gids) >= 0)
			return SYNC_RANGE;
		log_debug("cannot map the subordinate id range; mapping a single id instead");
	}
	r = userns_map_single(child, req->as_root ? 0 : req->host_uid, req->host_uid, req->as_root ? 0 : req->host_gid,
			      req->host_gid);
	return r < 0 ? r : SYNC_SINGLE;
}

static int wait_for_init(pid_t child)
{
	sigset_t set;

	signals_forwarded_set(&set);
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&set, &info);
		int status;

		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			if (signals_should_forward(&info))
				kill(child, sig);
			continue;
		}
		if (waitpid(child, &status, WNOHANG) != child)
			continue;
		if (WIFEXITED(status))
			return WEXITSTATUS(status);
		/* init died by a signal: killed from outside, or by the OOM killer. */
		return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : EXIT_RUNTIME_ERROR;
	}
}

int container_run(const struct run_request *request)
{
	struct run_request copy = *request;
	struct run_request *req = &copy;
	int sync_pipe[2];
	int lock_fd = -1;
	sigset_t set, old;
	pid_t child;
	int mapping;
	int code;

	log_debug("supervisor: starting");
	if (check_dev_fuse() < 0)
		return EXIT_RUNTIME_ERROR;
	if (create_work_dir(req, &lock_fd) < 0)
		return EXIT_RUNTIME_ERROR;
	if (lock_upper(req, &req->upper_lock_fd) < 0) {
		remove_work_dir(req, lock_fd);
		return EXIT_RUNTIME_ERROR;
	}
	if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
		remove_work_dir(req, lock_fd);
		return EXIT_RUNTIME_ERROR;
	}

	/* Block the forwarded signals before the clone, so none is lost between
	 * the clone and the wait loops of either process. */
	signals_forwarded_set(&set);
	sigprocmask(SIG_BLOCK, &set, &old);

	/* A raw clone() behaves like fork(): the child continues here on a copy
	 * of the stack, which is safe because this process has one thread. */
	child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL,
			       NULL);
	if (child < 0) {
		explain_clone_failure(errno);
		remove_work_dir(req, lock_fd);
		return EXIT_RUNTIME_ERROR;
	}
	if (child == 0) {
		close(sync_pipe[1]);
		container_init(req, sync_pipe[0]);
	}
	close(sync_pipe[0]);

	mapping = write_id_maps(req, child);
	if (mapping < 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		remove_work_dir(req, lock_fd);
		return EXIT_RUNTIME_ERROR;
	}
	if (write(sync_pipe[1], &(char){ (char)mapping }, 1) != 1)
		log_debug("cannot release the container init: %s", strerror(errno));
	close(sync_pipe[1]);

	code = wait_for_init(child);
	log_debug("supervisor: init exited with status %d", code);
	remove_work_dir(req, lock_fd);
	log_debug("supervisor: removed the work directory");
	sigprocmask(SIG_SETMASK, &old, NULL);
	return code;
}
