#include "mount/squashfs.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <float.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <squashfuse/ll.h>

#include "common/log.h"
#include "common/util.h"

/* Exported by libsquashfuse, but its header is not installed. */
sqfs_err sqfs_stat(sqfs *fs, sqfs_inode *inode, struct stat *st);

/* A layer never changes while mounted, so the kernel may cache names,
 * attributes and absent names for as long as it likes. */
static const double CACHE_TIMEOUT = DBL_MAX;

/* libsquashfuse keeps one decompressed data block and three fragment blocks.
 * The kernel's reads for a program's page faults are not aligned to
 * squashfs blocks, so one block thrashes: measured on a 2 MiB busybox, zstd
 * decompression was a third of the start-up time. 32 blocks of up to 1 MiB
 * bound the cache at 32 MiB per layer, and it fills only as blocks are read. */
#define DATA_CACHE_BLOCKS 32
#define FRAGMENT_CACHE_BLOCKS 16

struct squashfs_mount {
	sqfs_ll ll; /* first: libsquashfuse's operations take the request's userdata as an sqfs_ll */
	struct owner_policy owner;
	struct fuse_session *session;
	pthread_t thread;
	int fuse_fd;
	bool has_xattrs;
};

/* The /dev/fuse descriptors of every mounted layer, for
 * squashfs_close_connections(). */
#define MAX_CONNECTIONS 4096
static int connection_fds[MAX_CONNECTIONS];
static size_t n_connections;

void squashfs_close_connections(void)
{
	for (size_t i = 0; i < n_connections; i++)
		close(connection_fds[i]);
	n_connections = 0;
}

/* sqfs_stat() counts every byte of a regular file as allocated. Squashfs
 * stores a block of zeros as a hole (a block list entry of size 0), so
 * count the holes and report the blocks that hold data, as the file system
 * the file came from did. Called once per file: the kernel caches the
 * attributes for as long as the layer is mounted. */
static void count_allocated_blocks(sqfs *fs, sqfs_inode *inode, struct stat *st)
{
	uint64_t block_size = fs->sb.block_size, holes = 0, size = (uint64_t)st->st_size;
	size_t count;
	sqfs_blocklist list;

	if (!S_ISREG(st->st_mode) || size <= block_size)
		return;
	count = sqfs_blocklist_count(fs, inode);
	sqfs_blocklist_init(fs, inode, &list);
	for (size_t i = 0; i < count; i++) {
		if (sqfs_blocklist_next(&list) != SQFS_OK)
			return;
		if (list.input_size == 0) {
			uint64_t start = (uint64_t)i * block_size;

			holes += size - start < block_size ? size - start : block_size;
		}
	}
	st->st_blocks = (blkcnt_t)((size - holes + 511) / 512);
}

static void apply_owner(const struct squashfs_mount *m, struct stat *st)
{
	if (m->owner.keep_ids)
		return;
	st->st_uid = m->owner.uid;
	st->st_gid = m->owner.gid;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

/* Overlayfs requests the user.overlay.* xattrs of every lower file, and the
 * FUSE kernel module does not cache the replies. A layer without an xattr
 * table replies ENOSYS once, after which the kernel sends no more requests. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct squashfs_mount *m = fuse_req_userdata(req);

	if (!m->has_xattrs) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	sqfs_ll_op_getxattr(req, ino, name, size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct squashfs_mount *m = fuse_req_userdata(req);

	if (!m->has_xattrs) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	sqfs_ll_op_listxattr(req, ino, size);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct squashfs_mount *m = fuse_req_userdata(req);
	sqfs_ll_i lli;
	struct stat st;

	if (sqfs_ll_iget(req, &lli, ino) != SQFS_OK)
		return; /* sqfs_ll_iget has replied */
	if (sqfs_stat(&lli.ll->fs, &lli.inode, &st) != SQFS_OK) {
		fuse_reply_err(req, EIO);
		return;
	}
	count_allocated_blocks(&lli.ll->fs, &lli.inode, &st);
	st.st_ino = ino;
	apply_owner(m, &st);
	fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct squashfs_mount *m = fuse_req_userdata(req);
	struct fuse_entry_param entry = { .attr_timeout = CACHE_TIMEOUT, .entry_timeout = CACHE_TIMEOUT };
	sqfs_ll_i lli;
	sqfs_name namebuf;
	sqfs_dir_entry dentry;
	sqfs_inode inode;
	bool found = false;

	if (sqfs_ll_iget(req, &lli, parent) != SQFS_OK)
		return;
	if (!S_ISDIR(lli.inode.base.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	sqfs_dentry_init(&dentry, namebuf);
	if (sqfs_dir_lookup(&lli.ll->fs, &lli.inode, name, strlen(name), &dentry, &found) != SQFS_OK) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (!found) {
		/* An entry with inode 0 is a cacheable "does not exist", which
		 * spares the lookups of every PATH directory on each exec. */
		fuse_reply_entry(req, &entry);
		return;
	}
	if (sqfs_inode_get(&lli.ll->fs, &inode, sqfs_dentry_inode(&dentry)) != SQFS_OK ||
	    sqfs_stat(&lli.ll->fs, &inode, &entry.attr) != SQFS_OK) {
		fuse_reply_err(req, EIO);
		return;
	}
	count_allocated_blocks(&lli.ll->fs, &inode, &entry.attr);
	entry.ino = lli.ll->ino_register(lli.ll, &dentry);
	entry.attr.st_ino = entry.ino;
	apply_owner(m, &entry.attr);
	fuse_reply_entry(req, &entry);
}

/* Directory entries with their attributes. The kernel then has the
 * attributes of every entry of a directory it has read, so the lookups that follow, such as
 * fuse-overlayfs's stat of each entry when it first loads a lower
 * directory, need no request each. */
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct squashfs_mount *m = fuse_req_userdata(req);
	sqfs_ll_i *lli = (sqfs_ll_i *)(intptr_t)fi->fh;
	sqfs *fs = &lli->ll->fs;
	sqfs_dir dir;
	sqfs_name namebuf;
	sqfs_dir_entry dentry;
	sqfs_err err = SQFS_OK;
	size_t used = 0;
	char *buf;

	if (sqfs_dir_open(fs, &lli->inode, &dir, off) != SQFS_OK) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	sqfs_dentry_init(&dentry, namebuf);
	while (sqfs_dir_next(fs, &dir, &dentry, &err)) {
		struct fuse_entry_param entry = { .attr_timeout = CACHE_TIMEOUT, .entry_timeout = CACHE_TIMEOUT };
		const char *name = sqfs_dentry_name(&dentry);
		size_t needed = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
		sqfs_inode inode;

		if (used + needed > size)
			break;
		if (sqfs_inode_get(fs, &inode, sqfs_dentry_inode(&dentry)) != SQFS_OK ||
		    sqfs_stat(fs, &inode, &entry.attr) != SQFS_OK) {
			err = SQFS_ERR;
			break;
		}
		count_allocated_blocks(fs, &inode, &entry.attr);
		/* Each entry returned counts as a lookup, which a later forget
		 * balances, so register only entries that fit in the reply. */
		entry.ino = lli->ll->ino_register(lli->ll, &dentry);
		entry.attr.st_ino = entry.ino;
		apply_owner(m, &entry.attr);
		used += fuse_add_direntry_plus(req, buf + used, size - used, name, &entry,
					       sqfs_dentry_next_offset(&dentry));
	}
	if (err != SQFS_OK && used == 0)
		fuse_reply_err(req, EIO);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static const struct fuse_lowlevel_ops squashfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.forget = sqfs_ll_op_forget,
	.opendir = sqfs_ll_op_opendir,
	.readdir = sqfs_ll_op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = sqfs_ll_op_releasedir,
	.open = sqfs_ll_op_open,
	.read = sqfs_ll_op_read,
	.release = sqfs_ll_op_release,
	.readlink = sqfs_ll_op_readlink,
	.listxattr = op_listxattr,
	.getxattr = op_getxattr,
	.statfs = stfs_ll_op_statfs,
};

static void *serve(void *arg)
{
	struct squashfs_mount *m = arg;

	fuse_session_loop(m->session);
	return NULL;
}

int squashfs_mount_start(int image_fd, uint64_t offset, const char *mountpoint, const char *dev_fuse,
			 const struct owner_policy *owner, struct squashfs_mount **ret)
{
	struct squashfs_mount *m = xmalloc(sizeof(*m));
	char *fuse_argv[] = { "flatimage", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, fuse_argv);
	char options[256], fd_path[32];
	sigset_t all, old;
	int r;

	m->owner = *owner;
	m->fuse_fd = -1;
	if (sqfs_init(&m->ll.fs, image_fd, (size_t)offset) != SQFS_OK || sqfs_ll_init(&m->ll) != SQFS_OK) {
		log_error("cannot read the squashfs layer at offset %" PRIu64 " for '%s'", offset, mountpoint);
		r = -EINVAL;
		goto fail;
	}
	m->has_xattrs = (int64_t)le64toh(m->ll.fs.sb.xattr_id_table_start) != SQUASHFS_INVALID_BLK;
	sqfs_cache_destroy(&m->ll.fs.data_cache);
	sqfs_cache_destroy(&m->ll.fs.frag_cache);
	if (sqfs_block_cache_init(&m->ll.fs.data_cache, DATA_CACHE_BLOCKS) != SQFS_OK ||
	    sqfs_block_cache_init(&m->ll.fs.frag_cache, FRAGMENT_CACHE_BLOCKS) != SQFS_OK) {
		r = -ENOMEM;
		goto fail;
	}

	/* Mount by hand and give libfuse the connection as /dev/fd/N, so it
	 * never falls back to the setuid fusermount3 helper. */
	m->fuse_fd = open(dev_fuse, O_RDWR | O_CLOEXEC);
	if (m->fuse_fd < 0) {
		r = -errno;
		log_error("cannot open '%s': %s", dev_fuse, strerror(errno));
		goto fail;
	}
	if (n_connections == MAX_CONNECTIONS) {
		log_error("cannot mount more than %d layers", MAX_CONNECTIONS);
		r = -EMFILE;
		goto fail;
	}
	connection_fds[n_connections++] = m->fuse_fd;
	snprintf(options, sizeof(options),
		 "fd=%d,rootmode=40000,user_id=%u,group_id=%u,allow_other,default_permissions", m->fuse_fd,
		 (unsigned)getuid(), (unsigned)getgid());
	if (mount("flatimage", mountpoint, "fuse.squashfuse", MS_NOSUID | MS_NODEV | MS_RDONLY, options) < 0) {
		r = -errno;
		log_error("cannot mount the squashfs layer on '%s': %s", mountpoint, strerror(errno));
		goto fail;
	}

	m->session = fuse_session_new(&args, &squashfs_ops, sizeof(squashfs_ops), m);
	snprintf(fd_path, sizeof(fd_path), "/dev/fd/%d", m->fuse_fd);
	if (!m->session || fuse_session_mount(m->session, fd_path) != 0) {
		log_error("cannot start the FUSE session for '%s'", mountpoint);
		r = -EIO;
		goto fail;
	}

	/* Signals belong to the main thread, which forwards them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&m->thread, NULL, serve, m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		log_error("cannot start the FUSE thread for '%s': %s", mountpoint, strerror(-r));
		goto fail;
	}
	*ret = m;
	return 0;

fail:
	/* The mount, if made, disappears with the mount namespace. */
	return r;
}
