/* User namespace id maps. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct id_range {
	uint32_t start;
	uint32_t count;
};

/* Find the subordinate id range that a subuid/subgid file grants to the
 * user, matched by name or by numeric id. Returns 1 and fills *ret when a
 * range exists, 0 when none does. */
int subid_lookup(const char *file, const char *user_name, uint32_t id, struct id_range *ret);

/* Map one id: inside_uid to host_uid, inside_gid to host_gid, and deny
 * setgroups(2), which the kernel requires before an unprivileged process
 * may write gid_map. Written from the parent user namespace. */
int userns_map_single(pid_t pid, uid_t inside_uid, uid_t host_uid, gid_t inside_gid, gid_t host_gid);

/* Map 0 to the host ids and 1..count to the subordinate ranges through the
 * setuid helpers newuidmap and newgidmap. Logs failures at debug level
 * only, because callers fall back to userns_map_single(). */
int userns_map_root_range(pid_t pid, uid_t host_uid, gid_t host_gid, const struct id_range *uids,
			  const struct id_range *gids);
