/* Unit tests for the config store: slot selection, CRC checks and the
 * key=value payload helpers. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/config.h"
#include "runtime/image.h"

#define AREA_OFFSET 4096u

static char *make_area_file(void)
{
	char *path = strdup("/tmp/fim-config-test-XXXXXX");
	int fd = mkstemp(path);
	char *zeros = calloc(1, AREA_OFFSET + CONFIG_AREA_SIZE);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, zeros, AREA_OFFSET + CONFIG_AREA_SIZE), AREA_OFFSET + CONFIG_AREA_SIZE);
	close(fd);
	free(zeros);
	return path;
}

static char *read_area(const char *path)
{
	int fd = open(path, O_RDONLY);
	char *text = NULL;

	assert_true(fd >= 0);
	assert_int_equal(config_read(fd, AREA_OFFSET, &text), 0);
	close(fd);
	return text;
}

static void crc32_check_value(void **state)
{
	(void)state;
	/* The standard check value of CRC-32/ISO-HDLC. */
	assert_int_equal(crc32_compute("123456789", 9), 0xcbf43926u);
	assert_int_equal(crc32_compute("", 0), 0);
}

static void empty_area_reads_empty(void **state)
{
	char *path = make_area_file();
	char *text = read_area(path);

	(void)state;
	assert_string_equal(text, "");
	free(text);
	unlink(path);
	free(path);
}

static void write_then_read(void **state)
{
	char *path = make_area_file();
	char *text;

	(void)state;
	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=unionfs\n"), 0);
	text = read_area(path);
	assert_string_equal(text, "overlay=unionfs\n");
	free(text);

	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=bwrap\n"), 0);
	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=overlayfs\n"), 0);
	text = read_area(path);
	assert_string_equal(text, "overlay=overlayfs\n");
	free(text);
	unlink(path);
	free(path);
}

/* A write torn by a crash leaves a slot whose CRC fails: the reader must
 * fall back to the other, older slot. */
static void torn_slot_keeps_old_value(void **state)
{
	char *path = make_area_file();
	char *text;
	int fd;

	(void)state;
	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=unionfs\n"), 0); /* slot 0 */
	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=overlayfs\n"), 0); /* slot 1 */

	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	/* Damage one payload byte of slot 1. */
	assert_int_equal(pwrite(fd, "X", 1, AREA_OFFSET + CONFIG_AREA_SIZE / 2 + CONFIG_SLOT_HEADER_SIZE + 3), 1);
	close(fd);

	text = read_area(path);
	assert_string_equal(text, "overlay=unionfs\n");
	free(text);

	/* The next write goes to the damaged slot and wins again. */
	assert_int_equal(config_write(path, AREA_OFFSET, "overlay=bwrap\n"), 0);
	text = read_area(path);
	assert_string_equal(text, "overlay=bwrap\n");
	free(text);
	unlink(path);
	free(path);
}

static void oversized_payload_rejected(void **state)
{
	char *path = make_area_file();
	char *big = malloc(CONFIG_AREA_SIZE);

	(void)state;
	memset(big, 'a', CONFIG_AREA_SIZE - 1);
	big[CONFIG_AREA_SIZE - 1] = '\0';
	assert_true(config_write(path, AREA_OFFSET, big) < 0);
	free(big);
	unlink(path);
	free(path);
}

static void get_and_set_keys(void **state)
{
	char *value = NULL;
	char *text;
	char *updated;

	(void)state;
	assert_int_equal(config_get("", "overlay", &value), 0);

	text = config_set("", "overlay", "unionfs");
	assert_string_equal(text, "overlay=unionfs\n");
	updated = config_set(text, "boot", "bash");
	assert_string_equal(updated, "overlay=unionfs\nboot=bash\n");
	free(text);

	text = config_set(updated, "overlay", "bwrap");
	assert_string_equal(text, "boot=bash\noverlay=bwrap\n");
	assert_int_equal(config_get(text, "overlay", &value), 1);
	assert_string_equal(value, "bwrap");
	free(value);

	/* A key that is a prefix of another key must not match it. */
	assert_int_equal(config_get("overlayx=1\n", "overlay", &value), 0);

	free(updated);
	updated = config_set(text, "boot", NULL);
	assert_string_equal(updated, "overlay=bwrap\n");
	free(text);
	free(updated);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(crc32_check_value),
		cmocka_unit_test(empty_area_reads_empty),
		cmocka_unit_test(write_then_read),
		cmocka_unit_test(torn_slot_keeps_old_value),
		cmocka_unit_test(oversized_payload_rejected),
		cmocka_unit_test(get_and_set_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
