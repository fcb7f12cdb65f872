/* Unit tests for the image format: bare image creation, layer append and
 * validation, torn tails and damaged layers. Layers are real squashfs images
 * made with mksquashfs. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/image.h"

struct fixture {
	char dir[64];
	char image[128];
	char layer[128];
};

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void make_layer(const struct fixture *f, const char *path, const char *content)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
		 "set -e; d=%s/tree; rm -rf $d; mkdir -p $d; echo '%s' > $d/file; "
		 "mksquashfs $d %s -noappend -comp zstd -quiet -no-progress >/dev/null",
		 f->dir, content, path);
	assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/fim-image-test-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->image, sizeof(f->image), "%s/app.flatimage", f->dir);
	snprintf(f->layer, sizeof(f->layer), "%s/layer.sqfs", f->dir);
	assert_int_equal(image_build_bare("/proc/self/exe", f->image), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void bare_image_has_magic(void **state)
{
	struct fixture *f = *state;
	unsigned char ident[11];
	struct image img;
	uint64_t self_size;
	int fd = open(f->image, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, ident, sizeof(ident), 0), sizeof(ident));
	assert_int_equal(ident[8], 'F');
	assert_int_equal(ident[9], 'I');
	assert_int_equal(ident[10], 0x01);
	assert_int_equal(elf_size(fd, &self_size), 0);
	close(fd);

	assert_int_equal(file_size(f->image), self_size + CONFIG_AREA_SIZE);
	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(img.n_layers, 0);
	assert_int_equal(img.config_offset, self_size);
	image_close(&img);
}

static void append_and_list(void **state)
{
	struct fixture *f = *state;
	struct image img;
	uint64_t first_offset;
	off_t first_size;

	make_layer(f, f->layer, "one");
	first_size = file_size(f->layer);
	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(image_append_layer(&img, f->layer), 0);
	image_close(&img);

	make_layer(f, f->layer, "two");
	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(img.n_layers, 1);
	first_offset = img.layers[0].offset;
	assert_int_equal(first_offset, img.config_offset + CONFIG_AREA_SIZE + LAYER_HEADER_SIZE);
	assert_int_equal(img.layers[0].size, (uint64_t)first_size);
	assert_int_equal(image_append_layer(&img, f->layer), 0);
	image_close(&img);

	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(img.n_layers, 2);
	assert_int_equal(img.layers[1].offset, first_offset + img.layers[0].size + LAYER_HEADER_SIZE);
	assert_int_equal(img.layers[1].size, (uint64_t)file_size(f->layer));
	assert_int_equal(img.layers_end, (uint64_t)file_size(f->image));
	image_close(&img);
}

static void invalid_layers_leave_image_unchanged(void **state)
{
	struct fixture *f = *state;
	char truncated[160];
	struct image img;
	off_t before = file_size(f->image);
	int fd;

	/* Not squashfs at all. */
	fd = open(f->layer, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello, this is not a squashfs image at all, padding padding padding padding padding "
				   "padding padding",
			       100),
			 100);
	close(fd);
	assert_int_equal(image_open(f->image, &img), 0);
	assert_true(image_append_layer(&img, f->layer) < 0);

	/* A real image cut short. */
	make_layer(f, f->layer, "cut");
	snprintf(truncated, sizeof(truncated), "%s/truncated.sqfs", f->dir);
	{
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "head -c 200 %s > %s", f->layer, truncated);
		assert_int_equal(system(cmd), 0);
	}
	assert_true(image_append_layer(&img, truncated) < 0);

	/* A missing file. */
	assert_true(image_append_layer(&img, "/nonexistent/layer") < 0);
	image_close(&img);
	assert_int_equal(file_size(f->image), before);
}

static void torn_tail_is_trimmed(void **state)
{
	struct fixture *f = *state;
	struct image img;
	off_t complete;
	uint64_t zero = 0;
	int fd;

	make_layer(f, f->layer, "base");
	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(image_append_layer(&img, f->layer), 0);
	image_close(&img);
	complete = file_size(f->image);

	/* What an append killed before its commit point leaves behind: a zero
	 * size field followed by part of the data. */
	fd = open(f->image, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &zero, sizeof(zero)), sizeof(zero));
	assert_int_equal(write(fd, "hsqs partial data", 17), 17);
	close(fd);

	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(img.n_layers, 1);
	image_close(&img);
	assert_int_equal(file_size(f->image), complete);
}

static void damaged_layer_fails_open(void **state)
{
	struct fixture *f = *state;
	struct image img;
	uint64_t offset;
	int fd;

	make_layer(f, f->layer, "a");
	assert_int_equal(image_open(f->image, &img), 0);
	assert_int_equal(image_append_layer(&img, f->layer), 0);
	assert_int_equal(image_append_layer(&img, f->layer), 0);
	offset = img.layers[0].offset;
	image_close(&img);

	fd = open(f->image, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "XXXX", 4, (off_t)offset), 4);
	close(fd);
	assert_true(image_open(f->image, &img) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(bare_image_has_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(append_and_list, setup, teardown),
		cmocka_unit_test_setup_teardown(invalid_layers_leave_image_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(torn_tail_is_trimmed, setup, teardown),
		cmocka_unit_test_setup_teardown(damaged_layer_fails_open, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
