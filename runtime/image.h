/* The image file format.
 *
 *   [runtime ELF][config area, CONFIG_AREA_SIZE bytes][layer]...
 *   layer = [u64 little-endian byte size][squashfs image of that size]
 *
 * The runtime finds the end of its own ELF from the ELF headers, so the
 * runtime, its configuration and its layers travel as one file. Bytes 8-10 of
 * the ELF identification carry 'F', 'I', 0x01 so tools can recognise an image.
 *
 * A layer is appended with its size field zeroed, synced, and only then
 * given its real size. A process killed during an append therefore leaves a
 * tail that image_open() recognises as incomplete, never a layer that looks
 * whole but is not. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAGIC_OFFSET 8
#define IMAGE_MAGIC_0 'F'
#define IMAGE_MAGIC_1 'I'
#define IMAGE_MAGIC_2 0x01
#define CONFIG_AREA_SIZE (64u * 1024u)
#define LAYER_HEADER_SIZE 8u
#define SQUASHFS_MAGIC 0x73717368u
#define SQUASHFS_SUPERBLOCK_SIZE 96u

struct layer {
	char *path;	 /* file holding the layer */
	uint64_t offset; /* of the squashfs image within that file */
	uint64_t size;	 /* bytes from offset, at least the squashfs bytes_used */
	bool embedded;	 /* inside the image itself, rather than a separate file */
};

struct image {
	char *path;
	int fd; /* read-only, O_CLOEXEC */
	uint64_t file_size;
	uint64_t config_offset;
	uint64_t layers_offset;
	/* End of the last complete layer. Less than file_size when an append
	 * was interrupted and left a torn tail. */
	uint64_t layers_end;
	struct layer *layers;
	size_t n_layers;
};

/* Compute the byte size of the ELF file at the start of fd from its program
 * and section headers. */
int elf_size(int fd, uint64_t *ret);

/* Open and validate an image: ELF headers, magic bytes, and every embedded
 * layer. A damaged layer is logged with its index and offset and fails the
 * whole open, so it never hides the layers after it. A torn tail is logged
 * once and trimmed, or ignored when the file is not writable or another
 * process is appending. */
int image_open(const char *path, struct image *ret);
void image_close(struct image *img);

/* Check a layer without logging. *ret_reason, owned by the caller,
 * describes what is wrong and is phrased to follow the layer's name. */
int layer_check(int fd, uint64_t offset, uint64_t size, char **ret_reason);

/* Check that the bytes at [offset, offset + size) of fd hold a complete
 * squashfs image that libsquashfuse can open. `what` names the source in
 * error messages. */
int layer_validate(int fd, uint64_t offset, uint64_t size, const char *what);

/* Append the squashfs image in layer_path to the image, crash-safely. */
int image_append_layer(struct image *img, const char *layer_path);

/* Append a new layer of size bytes copied from fd, crash-safely. */
int image_append_layer_fd(struct image *img, int layer_fd, uint64_t size, const char *what);

/* Turn a freshly linked runtime ELF into a bare image: write the magic and
 * an empty config area. */
int image_build_bare(const char *elf_path, const char *out_path);

/* Take an exclusive lock on the image file for writing. Returns an fd opened
 * for writing, which must be closed to release the lock. */
int image_lock_for_write(const char *path, int *ret_fd);

/* Add a layer record to img->layers. */
void image_add_layer(struct image *img, const char *path, uint64_t offset, uint64_t size, bool embedded);
