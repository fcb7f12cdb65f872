#include "ns/caps.h"

#include <errno.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "common/log.h"

int caps_drop_all(void)
{
	cap_t empty;
	int r = 0;

	/* The bounding set first: dropping from it needs CAP_SETPCAP, which the
	 * process still has until cap_set_proc() below. */
	for (cap_value_t cap = 0; cap <= CAP_LAST_CAP || CAP_IS_SUPPORTED(cap); cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
			r = -errno;
			log_error("cannot drop capability %d from the bounding set: %s", (int)cap, strerror(errno));
			return r;
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		log_debug("cannot clear ambient capabilities: %s", strerror(errno));

	empty = cap_init();
	if (!empty)
		return -ENOMEM;
	if (cap_set_proc(empty) < 0) {
		r = -errno;
		log_error("cannot drop capabilities: %s", strerror(errno));
	}
	cap_free(empty);
	if (r < 0)
		return r;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		r = -errno;
		log_error("cannot set no_new_privs: %s", strerror(errno));
	}
	return r;
}
