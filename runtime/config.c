#include "runtime/config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/image.h"

#define SLOT_SIZE (CONFIG_AREA_SIZE / 2)
#define PAYLOAD_MAX (SLOT_SIZE - CONFIG_SLOT_HEADER_SIZE)

struct slot_header {
	char magic[8];
	uint64_t generation; /* little-endian */
	uint32_t length;     /* little-endian */
	uint32_t crc;	     /* little-endian, over generation, length and payload */
};

_Static_assert(sizeof(struct slot_header) == CONFIG_SLOT_HEADER_SIZE, "slot header layout");

/* CRC-32 (IEEE 802.3, reflected), the checksum zlib and gzip use. */
uint32_t crc32_compute(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int bit = 0; bit < 8; bit++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

static uint32_t slot_crc(const struct slot_header *h, const char *payload, uint32_t len)
{
	char *buf = xmalloc(12 + len);
	uint32_t crc;

	memcpy(buf, &h->generation, 8);
	memcpy(buf + 8, &h->length, 4);
	memcpy(buf + 12, payload, len);
	crc = crc32_compute(buf, 12 + len);
	free(buf);
	return crc;
}

/* Read one slot. Returns 1 with its generation and payload when valid, 0
 * when empty or corrupt. */
static int slot_read(int fd, uint64_t offset, uint64_t *ret_generation, char **ret_payload)
{
	_cleanup_free_ char *buf = xmalloc(SLOT_SIZE + 1);
	struct slot_header h;
	uint32_t len;
	int r;

	r = pread_all(fd, buf, SLOT_SIZE, (off_t)offset);
	if (r < 0)
		return r;
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, CONFIG_SLOT_MAGIC, 8) != 0)
		return 0;
	len = le32toh(h.length);
	if (len > PAYLOAD_MAX)
		return 0;
	if (le32toh(h.crc) != slot_crc(&h, buf + sizeof(h), len))
		return 0;

	*ret_generation = le64toh(h.generation);
	*ret_payload = xmalloc(len + 1);
	memcpy(*ret_payload, buf + sizeof(h), len);
	return 1;
}

/* Find the newest valid slot: returns its index, or -1 when none is valid. */
static int config_current(int fd, uint64_t offset, uint64_t *ret_generation, char **ret_payload)
{
	int current = -1;

	*ret_generation = 0;
	*ret_payload = NULL;
	for (int i = 0; i < 2; i++) {
		uint64_t generation;
		char *payload = NULL;
		int r = slot_read(fd, offset + (uint64_t)i * SLOT_SIZE, &generation, &payload);

		if (r < 0)
			return r;
		if (r == 0)
			continue;
		if (current < 0 || generation > *ret_generation) {
			free(*ret_payload);
			*ret_payload = payload;
			*ret_generation = generation;
			current = i;
		} else {
			free(payload);
		}
	}
	return current;
}

int config_read(int fd, uint64_t offset, char **ret_text)
{
	uint64_t generation;
	char *payload;
	int r = config_current(fd, offset, &generation, &payload);

	if (r < -1)
		return r;
	*ret_text = payload ? payload : xstrdup("");
	return 0;
}

int config_write(const char *image_path, uint64_t offset, const char *text)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *old = NULL;
	_cleanup_free_ char *buf = NULL;
	struct slot_header h;
	uint64_t generation;
	size_t len = strlen(text);
	int current, r;

	if (len > PAYLOAD_MAX) {
		log_error("the configuration is %zu bytes, more than the %u the image has room for", len,
			  (unsigned)PAYLOAD_MAX);
		return -EFBIG;
	}
	r = image_lock_for_write(image_path, &fd);
	if (r < 0)
		return r;

	/* Re-read under the lock, so two writers cannot pick the same slot. */
	{
		_cleanup_close_ int rfd = open(image_path, O_RDONLY | O_CLOEXEC);

		if (rfd < 0)
			return -errno;
		current = config_current(rfd, offset, &generation, &old);
		if (current < -1)
			return current;
	}

	memcpy(h.magic, CONFIG_SLOT_MAGIC, 8);
	h.generation = htole64(generation + 1);
	h.length = htole32((uint32_t)len);
	h.crc = htole32(slot_crc(&h, text, (uint32_t)len));
	buf = xmalloc(sizeof(h) + len);
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), text, len);

	r = pwrite_all(fd, buf, sizeof(h) + len, (off_t)(offset + (uint64_t)(current == 0 ? 1 : 0) * SLOT_SIZE));
	if (r >= 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r < 0) {
		log_error("cannot write the configuration of image '%s': %s; the previous configuration is kept",
			  image_path, strerror(-r));
		return r;
	}
	return 0;
}

int config_get(const char *text, const char *key, char **ret)
{
	size_t key_len = strlen(key);

	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t line_len = end ? (size_t)(end - line) : strlen(line);

		if (line_len > key_len && strncmp(line, key, key_len) == 0 && line[key_len] == '=') {
			*ret = strndup(line + key_len + 1, line_len - key_len - 1);
			if (!*ret)
				abort();
			return 1;
		}
		line = end ? end + 1 : NULL;
	}
	return 0;
}

char *config_set(const char *text, const char *key, const char *value)
{
	size_t key_len = strlen(key);
	size_t cap = strlen(text) + key_len + (value ? strlen(value) : 0) + 3;
	char *out = xmalloc(cap);
	char *p = out;

	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t line_len = end ? (size_t)(end - line) : strlen(line);

		if (!(line_len > key_len && strncmp(line, key, key_len) == 0 && line[key_len] == '=')) {
			memcpy(p, line, line_len);
			p += line_len;
			*p++ = '\n';
		}
		line = end ? end + 1 : NULL;
	}
	if (value)
		p += sprintf(p, "%s=%s\n", key, value);
	*p = '\0';
	return out;
}
