#include "ns/rename_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

static const char *const guarded[] = { "rename", "renameat", "renameat2" };

struct guard {
	int listener_fd;
	char *proc_root;
	int rename_nr; /* rename(2) takes the path first; the others take a dirfd first */
};

int rename_guard_install(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r = 0, fd;

	if (!ctx)
		return -ENOMEM;
	for (size_t i = 0; i < ARRAY_SIZE(guarded); i++) {
		int nr = seccomp_syscall_resolve_name(guarded[i]);

		if (nr == __NR_SCMP_ERROR)
			continue;
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 0);
		if (r < 0)
			goto out;
	}
	r = seccomp_load(ctx);
	if (r < 0)
		goto out;
	fd = seccomp_notify_fd(ctx);
	r = fd;
out:
	if (r < 0)
		log_error("cannot install the directory rename guard for unionfs-fuse: %s", strerror(-r));
	seccomp_release(ctx);
	return r;
}

/* Read a NUL-terminated path from the target's memory. */
static int read_target_path(const struct guard *guard, pid_t pid, uint64_t address, char *buf, size_t size)
{
	_cleanup_free_ char *mem_path = xasprintf("%s/%d/mem", guard->proc_root, (int)pid);
	_cleanup_close_ int fd = open(mem_path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, buf, size - 1, (off_t)address);
	if (n <= 0)
		return n < 0 ? -errno : -EFAULT;
	buf[n] = '\0';
	return strlen(buf) < (size_t)n ? 0 : -ENAMETOOLONG;
}

/* Whether the rename's source names a directory, resolved as the target
 * process would: against its root, its working directory or the dirfd. */
static bool source_is_directory(const struct guard *guard, const struct seccomp_notif *req)
{
	bool plain_rename = req->data.nr == guard->rename_nr;
	uint64_t address = plain_rename ? req->data.args[0] : req->data.args[1];
	int dirfd = plain_rename ? AT_FDCWD : (int)req->data.args[0];
	_cleanup_free_ char *resolved = NULL;
	char path[PATH_MAX];
	struct stat st;

	if (read_target_path(guard, (pid_t)req->pid, address, path, sizeof(path)) < 0)
		return false;
	if (path[0] == '/')
		resolved = xasprintf("%s/%d/root%s", guard->proc_root, (int)req->pid, path);
	else if (dirfd == AT_FDCWD)
		resolved = xasprintf("%s/%d/cwd/%s", guard->proc_root, (int)req->pid, path);
	else
		resolved = xasprintf("%s/%d/fd/%d/%s", guard->proc_root, (int)req->pid, dirfd, path);
	return lstat(resolved, &st) == 0 && S_ISDIR(st.st_mode);
}

static void *serve(void *arg)
{
	struct guard *guard = arg;
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;

	if (seccomp_notify_alloc(&req, &resp) < 0)
		return NULL;
	for (;;) {
		bool directory;

		memset(req, 0, sizeof(*req));
		if (seccomp_notify_receive(guard->listener_fd, req) < 0) {
			if (errno == EINTR || errno == ENOENT)
				continue;
			break; /* every guarded process has exited */
		}
		directory = source_is_directory(guard, req);
		memset(resp, 0, sizeof(*resp));
		resp->id = req->id;
		/* The path was read from memory the target could have changed
		 * meanwhile. A response for a target that is gone is harmless. */
		if (directory) {
			resp->error = -EXDEV;
		} else {
			/* Letting the call run is safe: the guard decides only
			 * between EXDEV and the real rename, never grants more. */
			resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		}
		if (seccomp_notify_respond(guard->listener_fd, resp) < 0 && errno != ENOENT)
			log_debug("cannot respond to a guarded rename: %s", strerror(errno));
	}
	seccomp_notify_free(req, resp);
	return NULL;
}

int rename_guard_serve(int listener_fd, const char *proc_root)
{
	struct guard *guard = xmalloc(sizeof(*guard));
	pthread_t thread;
	sigset_t all, old;
	int r;

	guard->listener_fd = listener_fd;
	guard->proc_root = xstrdup(proc_root);
	guard->rename_nr = seccomp_syscall_resolve_name("rename");
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&thread, NULL, serve, guard);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		log_error("cannot start the directory rename guard: %s", strerror(-r));
	else
		pthread_detach(thread);
	return r;
}
