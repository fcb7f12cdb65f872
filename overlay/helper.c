#include "overlay/helper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "mount/squashfs.h"

extern char **environ;

/* How long a helper may take to mount before start-up fails. */
#define HELPER_MOUNT_TIMEOUT_MS 10000

static const char *helper_program(enum overlay_mode mode)
{
	return mode == OVERLAY_OVERLAYFS ? "fuse-overlayfs" : "unionfs";
}

static const char *helper_package(enum overlay_mode mode)
{
	return mode == OVERLAY_OVERLAYFS ? "fuse-overlayfs" : "unionfs-fuse";
}

static char *join_lowers(const char *const *lowers, size_t n, const char *separator, const char *suffix)
{
	size_t len = 1;
	char *out, *p;

	for (size_t i = 0; i < n; i++)
		len += strlen(lowers[i]) + strlen(separator) + strlen(suffix);
	out = xmalloc(len);
	p = out;
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%s%s", i ? separator : "", lowers[i], suffix);
	return out;
}

static char **helper_argv(enum overlay_mode mode, const char *const *lowers, size_t n, const char *upper,
			  const char *work, const char *target)
{
	char **argv = xmalloc(8 * sizeof(char *));
	_cleanup_free_ char *joined = NULL;

	argv[0] = xstrdup(helper_program(mode));
	argv[1] = xstrdup("-f");
	argv[2] = xstrdup("-o");
	if (mode == OVERLAY_OVERLAYFS) {
		/* noacl: fuse-overlayfs running as root reads POSIX ACLs of lower
		 * directories owned by other users and fails the lookup when the
		 * layers return EOPNOTSUPP, as squashfs layers do. */
		joined = join_lowers(lowers, n, ":", "");
		argv[3] = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,allow_other,default_permissions,noacl", joined,
				    upper, work);
		argv[4] = xstrdup(target);
		argv[5] = NULL;
	} else {
		/* unionfs-fuse takes branches top first, the writable one marked
		 * RW. hide_meta_files keeps its .unionfs-fuse directory of
		 * whiteout markers out of directory listings. Its attributes
		 * are not cached, because unionfs-fuse does not invalidate a
		 * file's cached link count when a hard link to it is made. */
		joined = join_lowers(lowers, n, ":", "=RO");
		argv[3] = xstrdup("cow,allow_other,default_permissions,hide_meta_files,use_ino,suid,dev,attr_timeout=0");
		argv[4] = xasprintf("%s=RW:%s", upper, joined);
		argv[5] = xstrdup(target);
		argv[6] = NULL;
	}
	(void)work;
	return argv;
}

/* Keep the capabilities this process has in the user namespace across
 * execve() of a program that runs as a non-zero uid. */
static int keep_capabilities_across_exec(void)
{
	static const cap_value_t kept[] = { CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
					    CAP_CHOWN,	   CAP_FSETID,	     CAP_MKNOD,		  CAP_SETFCAP };
	cap_t caps = cap_get_proc();
	int r = 0;

	if (!caps)
		return -errno;
	if (cap_set_flag(caps, CAP_INHERITABLE, ARRAY_SIZE(kept), kept, CAP_SET) < 0 || cap_set_proc(caps) < 0)
		r = -errno;
	cap_free(caps);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(kept); i++) {
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, kept[i], 0, 0) < 0)
			r = -errno;
	}
	return r;
}

static long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

void overlay_helper_report_exit(const struct overlay_helper *helper, int status)
{
	char how[64];

	if (WIFEXITED(status))
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
	else
		snprintf(how, sizeof(how), "was killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	log_error("the overlay helper '%s' (package %s) stopped unexpectedly: it %s; its log is '%s'", helper->program,
		  helper->package, how, helper->log_path);
}

int overlay_helper_start(enum overlay_mode mode, const char *const *lowers, size_t n_lowers, const char *upper,
			 const char *work, const char *target, const char *log_path, const char *log_display,
			 struct overlay_helper *ret)
{
	char **argv = helper_argv(mode, lowers, n_lowers, upper, work, target);
	_cleanup_free_ char *program_path = NULL;
	struct overlay_helper helper = {
		.mode = mode,
		.program = helper_program(mode),
		.package = helper_package(mode),
		.log_path = xstrdup(log_display),
	};
	struct timespec start;
	struct stat before, now;
	int log_fd, status, r;

	r = find_in_path(helper.program, "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", &program_path);
	if (r < 0) {
		log_error("the %s overlay backend needs the '%s' program, which is not installed; install the Debian "
			  "package '%s', or select another backend with 'fim-overlay set bwrap'",
			  overlay_mode_name(mode), helper.program, helper.package);
		return -ENOENT;
	}
	if (stat(target, &before) < 0)
		return -errno;
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		r = -errno;
		log_error("cannot open the helper log '%s': %s", log_display, strerror(errno));
		return r;
	}
	if (log_debug_enabled()) {
		_cleanup_free_ char *command = NULL;

		for (char **arg = argv; *arg; arg++) {
			char *grown = xasprintf("%s%s%s", command ? command : "", command ? " " : "", *arg);

			free(command);
			command = grown;
		}
		log_debug("starting the %s backend: %s (log '%s')", overlay_mode_name(mode), command, log_display);
	}

	helper.pid = fork();
	if (helper.pid < 0) {
		r = -errno;
		close(log_fd);
		return r;
	}
	if (helper.pid == 0) {
		sigset_t none;

		squashfs_close_connections();
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(log_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		if (keep_capabilities_across_exec() < 0)
			dprintf(STDERR_FILENO, "flatimage: cannot keep capabilities for the helper: %s\n", strerror(errno));
		execve(program_path, argv, environ);
		dprintf(STDERR_FILENO, "flatimage: cannot execute '%s': %s\n", program_path, strerror(errno));
		_exit(127);
	}
	close(log_fd);

	/* The helpers run in the foreground so that init can watch them; the
	 * mount is ready when target turns into another file system. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (waitpid(helper.pid, &status, WNOHANG) == helper.pid) {
			overlay_helper_report_exit(&helper, status);
			return -EIO;
		}
		if (stat(target, &now) == 0 && now.st_dev != before.st_dev)
			break;
		if (elapsed_ms(&start) > HELPER_MOUNT_TIMEOUT_MS) {
			log_error("the overlay helper '%s' did not mount within %d ms; its log is '%s'", helper.program,
				  HELPER_MOUNT_TIMEOUT_MS, helper.log_path);
			kill(helper.pid, SIGKILL);
			return -ETIMEDOUT;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000 }, NULL);
	}
	log_debug("the %s backend is mounted", overlay_mode_name(mode));
	*ret = helper;
	return 0;
}
