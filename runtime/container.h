/* Running a program in the container.
 *
 * Three processes take part:
 *   supervisor  on the host: creates the namespaces with clone(), writes the
 *               id maps, forwards signals, returns the exit status and
 *               removes the instance's work directory.
 *   init        pid 1 of the new pid namespace: serves the squashfs layers
 *               from FUSE threads, mounts the overlay and the root file
 *               system, pivots, starts the program and reaps children.
 *   program     the user's command, started by init after the pivot.
 * Every mount exists only in the new mount namespace, and init dies with the
 * supervisor (PR_SET_PDEATHSIG), which ends the namespaces and their mounts. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "overlay/mode.h"
#include "runtime/image.h"
#include "ns/userns.h"

struct run_request {
	const struct image *image; /* the layers to stack, bottom first */
	enum overlay_mode mode;
	bool as_root;	      /* fim-root: uid 0 in the container */
	bool boot;	      /* no command given: start the boot shell with argv as its arguments */
	char **argv;	      /* NULL-terminated; argv[0] is the program unless boot */
	const char *data_dir; /* absolute */
	const char *upper_dir;
	const char *work_dir; /* this instance's overlay work directory */
	uid_t host_uid;
	gid_t host_gid;
	bool id_range; /* fim-root with subordinate ids from /etc/subuid */
	struct id_range sub_uids;
	struct id_range sub_gids;
	const char *user_name; /* inside the container */
	const char *home;      /* inside the container */
	const char *host_cwd;
	const char *host_path; /* the host's PATH, appended to the container's */
	int upper_lock_fd;     /* flock on the writable layer, taken by the supervisor */
};

/* Run the request and return the exit status for the runtime: the
 * program's own, 127 not found, 126 not executable, 128+N killed by signal
 * N, 125 runtime error. */
int container_run(const struct run_request *req);

/* The byte the supervisor sends init once the id maps are written. */
#define SYNC_RANGE 'r'	/* the subordinate range is mapped */
#define SYNC_SINGLE 's' /* one id is mapped */

/* The init process. Never returns. */
_Noreturn void container_init(const struct run_request *req, int sync_fd);
