/* The config store inside the image's config area.
 *
 * The area contains two slots. Each slot carries a generation number, a length
 * and a CRC-32 of its payload, which is text of "key=value" lines. A write
 * goes to the slot that is not current and is synced, so a process killed at
 * any point leaves either the old slot or the new one as the newest valid
 * slot, never a mix. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define CONFIG_SLOT_MAGIC "FIMCFG01"
#define CONFIG_SLOT_HEADER_SIZE 24u

uint32_t crc32_compute(const void *data, size_t len);

/* Read the current payload of the config area at offset. An area with no
 * valid slot, such as a fresh image, reads as empty text. */
int config_read(int fd, uint64_t offset, char **ret_text);

/* Write a new payload to the image file at path. Takes the image write lock. */
int config_write(const char *image_path, uint64_t offset, const char *text);

/* Look up a key in payload text. Returns 1 and sets *ret when found, 0 when
 * not found. */
int config_get(const char *text, const char *key, char **ret);

/* Return a new payload with key set to value, or removed when value is NULL. */
char *config_set(const char *text, const char *key, const char *value);
