#include "ns/userns.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/log.h"
#include "common/util.h"

extern char **environ;

int subid_lookup(const char *file, const char *user_name, uint32_t id, struct id_range *ret)
{
	_cleanup_fclose_ FILE *f = fopen(file, "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	char id_text[16];

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	snprintf(id_text, sizeof(id_text), "%" PRIu32, id);
	while (getline(&line, &cap, f) > 0) {
		char *name = strtok(line, ":\n");
		char *start = strtok(NULL, ":\n");
		char *count = strtok(NULL, ":\n");
		unsigned long s, c;
		char *end;

		if (!name || !start || !count)
			continue;
		if (!streq_ptr(name, user_name) && strcmp(name, id_text) != 0)
			continue;
		errno = 0;
		s = strtoul(start, &end, 10);
		if (errno || *end)
			continue;
		c = strtoul(count, &end, 10);
		if (errno || *end || c == 0 || s > UINT32_MAX || c > UINT32_MAX - s)
			continue;
		ret->start = (uint32_t)s;
		ret->count = (uint32_t)c;
		return 1;
	}
	return 0;
}

static int write_proc_file(pid_t pid, const char *name, const char *content)
{
	_cleanup_free_ char *path = xasprintf("/proc/%d/%s", (int)pid, name);
	int r = write_file(path, content);

	if (r < 0)
		log_error("cannot write '%s' to %s: %s", content, path, strerror(-r));
	return r;
}

int userns_map_single(pid_t pid, uid_t inside_uid, uid_t host_uid, gid_t inside_gid, gid_t host_gid)
{
	char map[64];
	int r;

	r = write_proc_file(pid, "setgroups", "deny");
	if (r < 0)
		return r;
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)inside_uid, (unsigned)host_uid);
	r = write_proc_file(pid, "uid_map", map);
	if (r < 0)
		return r;
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)inside_gid, (unsigned)host_gid);
	return write_proc_file(pid, "gid_map", map);
}

/* helper is an absolute path: these setuid programs are looked for in
 * /usr/bin only, where the uidmap package installs them. */
static int run_id_helper(const char *helper, pid_t pid, unsigned host_id, const struct id_range *range)
{
	char pid_text[16], host_text[16], start_text[16], count_text[16];
	char *argv[] = { (char *)helper, pid_text, "0", host_text, "1", "1", start_text, count_text, NULL };
	posix_spawn_file_actions_t actions;
	pid_t child;
	int status, r;

	snprintf(pid_text, sizeof(pid_text), "%d", (int)pid);
	snprintf(host_text, sizeof(host_text), "%u", host_id);
	snprintf(start_text, sizeof(start_text), "%" PRIu32, range->start);
	snprintf(count_text, sizeof(count_text), "%" PRIu32, range->count);

	/* Callers fall back to a single mapped id when the range cannot be
	 * mapped, as in a nested user namespace, so the helper's own message
	 * goes to debug output only. */
	posix_spawn_file_actions_init(&actions);
	if (!log_debug_enabled())
		posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	r = posix_spawn(&child, helper, &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	if (r != 0) {
		log_error("cannot run '%s': %s; install the 'uidmap' package", helper, strerror(r));
		return -r;
	}
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_debug("'%s %s 0 %s 1 1 %s %s' failed; check the ranges in /etc/subuid and /etc/subgid", helper,
			  pid_text, host_text, start_text, count_text);
		return -EPERM;
	}
	return 0;
}

int userns_map_root_range(pid_t pid, uid_t host_uid, gid_t host_gid, const struct id_range *uids,
			  const struct id_range *gids)
{
	int r = run_id_helper("/usr/bin/newuidmap", pid, host_uid, uids);

	if (r < 0)
		return r;
	return run_id_helper("/usr/bin/newgidmap", pid, host_gid, gids);
}
