#include "runtime/image.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include <squashfuse/squashfuse.h>

#include "common/log.h"
#include "common/util.h"

int elf_size(int fd, uint64_t *ret)
{
	Elf64_Ehdr ehdr;
	uint64_t end;
	int r;

	r = pread_all(fd, &ehdr, sizeof(ehdr), 0);
	if (r < 0)
		return r;
	if (memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0 || ehdr.e_ident[EI_CLASS] != ELFCLASS64)
		return -ENOEXEC;

	end = ehdr.e_shoff + (uint64_t)ehdr.e_shnum * ehdr.e_shentsize;
	for (unsigned i = 0; i < ehdr.e_phnum; i++) {
		Elf64_Phdr phdr;

		r = pread_all(fd, &phdr, sizeof(phdr), (off_t)(ehdr.e_phoff + (uint64_t)i * ehdr.e_phentsize));
		if (r < 0)
			return r;
		if (phdr.p_offset + phdr.p_filesz > end)
			end = phdr.p_offset + phdr.p_filesz;
	}
	*ret = end;
	return 0;
}

void image_add_layer(struct image *img, const char *path, uint64_t offset, uint64_t size, bool embedded)
{
	struct layer *grown = realloc(img->layers, (img->n_layers + 1) * sizeof(*grown));

	if (!grown)
		abort();
	img->layers = grown;
	img->layers[img->n_layers++] = (struct layer){
		.path = xstrdup(path),
		.offset = offset,
		.size = size,
		.embedded = embedded,
	};
}

int layer_check(int fd, uint64_t offset, uint64_t size, char **ret_reason)
{
	struct squashfs_super_block sb;
	sqfs fs;
	sqfs_err err;
	int r;

	*ret_reason = NULL;
	if (size < SQUASHFS_SUPERBLOCK_SIZE) {
		*ret_reason = xasprintf("is not a squashfs image: %" PRIu64 " bytes is smaller than a superblock", size);
		return -EINVAL;
	}
	r = pread_all(fd, &sb, sizeof(sb), (off_t)offset);
	if (r < 0) {
		*ret_reason = xasprintf("cannot be read: %s", strerror(-r));
		return r;
	}
	if (le32toh(sb.s_magic) != SQUASHFS_MAGIC) {
		*ret_reason = xstrdup("is not a squashfs image (bad magic); create one with 'fim-layer create DIR FILE'");
		return -EINVAL;
	}
	if (le16toh(sb.s_major) != 4) {
		*ret_reason = xasprintf("is squashfs version %u, but only version 4 is supported", le16toh(sb.s_major));
		return -EINVAL;
	}
	if (le64toh(sb.bytes_used) > size) {
		*ret_reason = xasprintf("is truncated: the superblock declares %" PRIu64 " bytes but only %" PRIu64
					" are present",
					(uint64_t)le64toh(sb.bytes_used), size);
		return -EINVAL;
	}

	/* Let libsquashfuse read the id, fragment and export tables as a mount
	 * would, so a layer that would fail at run time fails here. */
	memset(&fs, 0, sizeof(fs));
	err = sqfs_init(&fs, fd, (size_t)offset);
	sqfs_destroy(&fs);
	if (err != SQFS_OK) {
		*ret_reason = xasprintf("is not a usable squashfs image (libsquashfuse error %d: %s)", err,
					err == SQFS_BADCOMP ? "unsupported compression" : "damaged or unsupported format");
		return -EINVAL;
	}
	return 0;
}

int layer_validate(int fd, uint64_t offset, uint64_t size, const char *what)
{
	_cleanup_free_ char *reason = NULL;
	int r = layer_check(fd, offset, size, &reason);

	if (r < 0)
		log_error("%s %s", what, reason);
	return r;
}

/* Trim a torn tail left by an interrupted append. Only a process that gets
 * the write lock may trim, since a tail that looks torn may belong to an
 * append that is still running. */
static void image_trim_tail(struct image *img)
{
	_cleanup_close_ int fd = open(img->path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
		log_debug("image '%s' has an incomplete layer at offset %" PRIu64 "; it is ignored", img->path,
			  img->layers_end);
		return;
	}
	/* Re-check under the lock: the append may have completed meanwhile. */
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != img->file_size)
		return;
	if (ftruncate(fd, (off_t)img->layers_end) < 0 || fsync(fd) < 0) {
		log_warning("image '%s' ends with an incomplete layer at offset %" PRIu64
			    " (an interrupted 'fim-layer add' or commit); trimming it failed: %s. It is ignored",
			    img->path, img->layers_end, strerror(errno));
		return;
	}
	log_warning("image '%s' ended with an incomplete layer at offset %" PRIu64
		    " (an interrupted 'fim-layer add' or commit); it was removed and the previous content is intact",
		    img->path, img->layers_end);
	img->file_size = img->layers_end;
}

static int image_scan_layers(struct image *img)
{
	uint64_t off = img->layers_offset;
	size_t index = 0;

	while (off < img->file_size) {
		uint64_t size_le, size;
		_cleanup_free_ char *what = NULL;
		int r;

		if (img->file_size - off < LAYER_HEADER_SIZE)
			break;
		r = pread_all(img->fd, &size_le, sizeof(size_le), (off_t)off);
		if (r < 0) {
			log_error("cannot read layer %zu header at offset %" PRIu64 " of '%s': %s", index, off,
				  img->path, strerror(-r));
			return r;
		}
		size = le64toh(size_le);
		/* An append writes the size last, so an interrupted one leaves
		 * zero. A non-zero size that runs past the end is damage, and
		 * trimming it could delete a valid layer. */
		if (size == 0)
			break;
		if (size > img->file_size - off - LAYER_HEADER_SIZE) {
			log_error("layer %zu at offset %" PRIu64 " of '%s' declares %" PRIu64 " bytes, but only %" PRIu64
				  " remain in the file; the image is damaged. Restore it from a copy",
				  index, off + LAYER_HEADER_SIZE, img->path, size, img->file_size - off - LAYER_HEADER_SIZE);
			return -EUCLEAN;
		}

		what = xasprintf("layer %zu at offset %" PRIu64 " of '%s'", index, off + LAYER_HEADER_SIZE,
				 img->path);
		r = layer_validate(img->fd, off + LAYER_HEADER_SIZE, size, what);
		if (r < 0) {
			log_error("the image is damaged; the layers from index %zu on cannot be used. "
				  "Restore the image from a copy, or remove the damaged layer by truncating the file to %" PRIu64
				  " bytes",
				  index, off);
			return -EUCLEAN;
		}
		image_add_layer(img, img->path, off + LAYER_HEADER_SIZE, size, true);
		off += LAYER_HEADER_SIZE + size;
		index++;
	}
	img->layers_end = off;
	if (img->layers_end < img->file_size)
		image_trim_tail(img);
	return 0;
}

int image_open(const char *path, struct image *ret)
{
	struct image img = { .fd = -1 };
	unsigned char ident[EI_NIDENT];
	struct stat st;
	int r;

	img.path = realpath(path, NULL);
	if (!img.path) {
		r = -errno;
		log_error("cannot resolve image path '%s': %s", path, strerror(errno));
		return r;
	}
	img.fd = open(img.path, O_RDONLY | O_CLOEXEC);
	if (img.fd < 0) {
		r = -errno;
		log_error("cannot open image '%s': %s", img.path, strerror(errno));
		goto fail;
	}
	if (fstat(img.fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	img.file_size = (uint64_t)st.st_size;

	r = elf_size(img.fd, &img.config_offset);
	if (r >= 0)
		r = pread_all(img.fd, ident, sizeof(ident), 0);
	if (r < 0 || ident[IMAGE_MAGIC_OFFSET] != IMAGE_MAGIC_0 || ident[IMAGE_MAGIC_OFFSET + 1] != IMAGE_MAGIC_1 ||
	    ident[IMAGE_MAGIC_OFFSET + 2] != IMAGE_MAGIC_2) {
		log_error("'%s' is not a flatimage: the ELF header lacks the image magic", img.path);
		r = -EINVAL;
		goto fail;
	}
	img.layers_offset = img.config_offset + CONFIG_AREA_SIZE;
	if (img.file_size < img.layers_offset) {
		log_error("image '%s' is truncated: it is %" PRIu64 " bytes but the config area ends at %" PRIu64,
			  img.path, img.file_size, img.layers_offset);
		r = -EINVAL;
		goto fail;
	}

	r = image_scan_layers(&img);
	if (r < 0)
		goto fail;
	*ret = img;
	return 0;

fail:
	image_close(&img);
	return r;
}

void image_close(struct image *img)
{
	for (size_t i = 0; i < img->n_layers; i++)
		free(img->layers[i].path);
	free(img->layers);
	free(img->path);
	if (img->fd >= 0)
		close(img->fd);
	memset(img, 0, sizeof(*img));
	img->fd = -1;
}

int image_lock_for_write(const char *path, int *ret_fd)
{
	int fd = -1;

	/* The kernel returns ETXTBSY while any process is executing the file.
	 * Every instance re-executes itself from a memory copy right after
	 * start, so that window is short: retry for up to two seconds. */
	for (int attempt = 0; attempt < 200; attempt++) {
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0 || errno != ETXTBSY)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	if (fd < 0) {
		int r = -errno;

		log_error("cannot open image '%s' for writing: %s%s", path, strerror(errno),
			  errno == ETXTBSY ? "; a process is executing it directly, stop it and retry"
			  : errno == EACCES || errno == EROFS ? "; copy the image to a writable location"
							       : "");
		return r;
	}
	if (flock(fd, LOCK_EX) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int image_append_layer_fd(struct image *img, int layer_fd, uint64_t size, const char *what)
{
	_cleanup_close_ int out = -1;
	uint64_t zero = 0, size_le = htole64(size);
	struct stat st;
	off_t start;
	int r;

	r = layer_validate(layer_fd, 0, size, what);
	if (r < 0)
		return r;
	r = image_lock_for_write(img->path, &out);
	if (r < 0)
		return r;
	if (fstat(out, &st) < 0)
		return -errno;

	/* Start after the last complete layer, which overwrites a torn tail. */
	start = (off_t)(img->layers_end && img->layers_end <= (uint64_t)st.st_size ? img->layers_end : (uint64_t)st.st_size);
	if (start != st.st_size && ftruncate(out, start) < 0)
		return -errno;

	r = pwrite_all(out, &zero, sizeof(zero), start);
	if (r >= 0 && lseek(out, start + (off_t)LAYER_HEADER_SIZE, SEEK_SET) < 0)
		r = -errno;
	if (r >= 0)
		r = copy_range(layer_fd, 0, out, size);
	if (r >= 0 && fdatasync(out) < 0)
		r = -errno;
	/* The size field is the commit point: eight bytes within one sector. */
	if (r >= 0)
		r = pwrite_all(out, &size_le, sizeof(size_le), start);
	if (r >= 0 && fdatasync(out) < 0)
		r = -errno;
	if (r < 0) {
		log_error("cannot append %s to image '%s': %s%s; the image is unchanged", what, img->path,
			  strerror(-r), r == -ENOSPC ? " (free some disk space and retry)" : "");
		if (ftruncate(out, st.st_size) < 0 || fsync(out) < 0)
			log_warning("could not trim the partial layer; the next start ignores it");
		return r;
	}
	img->file_size = (uint64_t)start + LAYER_HEADER_SIZE + size;
	img->layers_end = img->file_size;
	image_add_layer(img, img->path, (uint64_t)start + LAYER_HEADER_SIZE, size, true);
	return 0;
}

int image_append_layer(struct image *img, const char *layer_path)
{
	_cleanup_close_ int fd = open(layer_path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *what = xasprintf("layer file '%s'", layer_path);
	struct stat st;

	if (fd < 0) {
		int r = -errno;

		log_error("cannot open layer file '%s': %s", layer_path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		log_error("layer file '%s' is not a regular file", layer_path);
		return -EINVAL;
	}
	return image_append_layer_fd(img, fd, (uint64_t)st.st_size, what);
}

int image_build_bare(const char *elf_path, const char *out_path)
{
	_cleanup_close_ int in = open(elf_path, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int out = -1;
	_cleanup_free_ char *tmp = xasprintf("%s.tmp", out_path);
	_cleanup_free_ char *zeros = xmalloc(CONFIG_AREA_SIZE);
	const unsigned char magic[3] = { IMAGE_MAGIC_0, IMAGE_MAGIC_1, IMAGE_MAGIC_2 };
	struct stat st;
	uint64_t size;
	int r;

	if (in < 0 || fstat(in, &st) < 0)
		return -errno;
	r = elf_size(in, &size);
	if (r < 0)
		return r;
	if (size != (uint64_t)st.st_size) {
		log_error("'%s' has %" PRIu64 " bytes past its ELF headers; cannot locate the config area",
			  elf_path, (uint64_t)st.st_size - size);
		return -EINVAL;
	}
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (out < 0)
		return -errno;
	r = copy_range(in, 0, out, size);
	if (r >= 0)
		r = pwrite_all(out, magic, sizeof(magic), IMAGE_MAGIC_OFFSET);
	if (r >= 0)
		r = pwrite_all(out, zeros, CONFIG_AREA_SIZE, (off_t)size);
	if (r >= 0 && rename(tmp, out_path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}
