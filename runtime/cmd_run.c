#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/commands.h"
#include "runtime/config.h"
#include "runtime/container.h"
#include "runtime/layers.h"

int context_open_image(struct context *ctx, struct image *ret)
{
	return image_open(ctx->image_path, ret);
}

enum overlay_mode effective_overlay_mode(const struct image *img)
{
	const char *requested = getenv("FIM_OVERLAY");
	_cleanup_free_ char *config = NULL;
	_cleanup_free_ char *stored = NULL;
	enum overlay_mode mode;

	if (requested && *requested) {
		mode = overlay_mode_from_name(requested);
		if (mode != OVERLAY_MODE_INVALID)
			return mode;
		log_warning("ignoring FIM_OVERLAY='%s': accepted values are " OVERLAY_MODE_NAMES, requested);
	}
	if (config_read(img->fd, img->config_offset, &config) < 0)
		return OVERLAY_BWRAP;
	if (config_get(config, "overlay", &stored) == 1) {
		mode = overlay_mode_from_name(stored);
		if (mode != OVERLAY_MODE_INVALID)
			return mode;
		log_warning("the image stores an unknown overlay backend '%s'; using bwrap", stored);
	}
	return OVERLAY_BWRAP;
}

char *data_dir_for(const char *image_path)
{
	const char *override = getenv("FIM_DIR_DATA");
	_cleanup_free_ char *dir_copy = xstrdup(image_path);
	_cleanup_free_ char *base_copy = xstrdup(image_path);

	if (override && *override) {
		char *resolved;

		if (override[0] == '/')
			return xstrdup(override);
		resolved = realpath(".", NULL);
		if (!resolved)
			return xstrdup(override);
		char *joined = xasprintf("%s/%s", resolved, override);
		free(resolved);
		return joined;
	}
	return xasprintf("%s/.%s.data", dirname(dir_copy), basename(base_copy));
}

static void fill_identity(struct run_request *req, bool as_root)
{
	struct passwd *pw = getpwuid(req->host_uid);
	const char *home = getenv("HOME");

	if (as_root) {
		req->user_name = "root";
		req->home = "/root";
		return;
	}
	if (pw && pw->pw_name)
		req->user_name = xstrdup(pw->pw_name);
	else if (getenv("USER"))
		req->user_name = xstrdup(getenv("USER"));
	else
		req->user_name = xasprintf("user%u", (unsigned)req->host_uid);
	if (home && home[0] == '/')
		req->home = xstrdup(home);
	else if (pw && pw->pw_dir)
		req->home = xstrdup(pw->pw_dir);
	else
		req->home = "/";
}

static void select_id_mapping(struct run_request *req)
{
	struct passwd *pw = getpwuid(req->host_uid);
	const char *name = pw ? pw->pw_name : NULL;

	/* Root on the host maps itself; subordinate ranges only serve fim-root. */
	if (!req->as_root || req->host_uid == 0)
		return;
	if (subid_lookup("/etc/subuid", name, req->host_uid, &req->sub_uids) == 1 &&
	    subid_lookup("/etc/subgid", name, req->host_gid, &req->sub_gids) == 1 && access("/usr/bin/newuidmap", X_OK) == 0 &&
	    access("/usr/bin/newgidmap", X_OK) == 0 && !getenv("FIM_NO_SUBID"))
		req->id_range = true;
	log_debug("fim-root id mapping: %s", req->id_range ? "subordinate range" : "single id with fakeroot filter");
}

int cmd_run(struct context *ctx, int argc, char **argv, bool as_root, bool boot)
{
	struct image img;
	struct run_request req = { 0 };
	_cleanup_free_ char *data_dir = NULL;
	_cleanup_free_ char *upper = NULL;
	_cleanup_free_ char *work = NULL;
	_cleanup_free_ char *cwd = NULL;
	int code;

	if (!boot && argc == 0) {
		log_error("fim-%s needs a program to run", as_root ? "root" : "exec");
		print_usage_hint(as_root ? "root" : "exec");
		return EXIT_RUNTIME_ERROR;
	}
	if (context_open_image(ctx, &img) < 0)
		return EXIT_RUNTIME_ERROR;
	data_dir = data_dir_for(img.path);
	layers_add_external(&img, data_dir);
	if (img.n_layers == 0) {
		log_error("image '%s' has no layers, so there is nothing to run; add one with "
			  "'%s fim-layer create DIR FILE' and '%s fim-layer add FILE'",
			  img.path, img.path, img.path);
		image_close(&img);
		return EXIT_RUNTIME_ERROR;
	}

	upper = xasprintf("%s/upper", data_dir);
	work = xasprintf("%s/work/%d", data_dir, (int)getpid());
	cwd = getcwd(NULL, 0);

	req.image = &img;
	req.mode = effective_overlay_mode(&img);
	req.as_root = as_root;
	req.boot = boot;
	req.argv = argv;
	req.data_dir = data_dir;
	req.upper_dir = upper;
	req.work_dir = work;
	req.host_uid = getuid();
	req.host_gid = getgid();
	req.host_cwd = cwd;
	req.host_path = getenv("PATH");
	fill_identity(&req, as_root);
	select_id_mapping(&req);
	log_debug("backend %s, %zu layers, data directory '%s'", overlay_mode_name(req.mode), img.n_layers, data_dir);

	code = container_run(&req);
	image_close(&img);
	return code;
}
