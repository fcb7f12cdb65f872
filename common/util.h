/* Small helpers shared by every module: scope-bound cleanup, whole-buffer
 * I/O and path utilities. Functions return 0 or a positive count on success
 * and -errno on failure. They log nothing, because the caller has the context. */
#pragma once

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))
#define _cleanup_fclose_ __attribute__((cleanup(fclosep)))
#define _cleanup_closedir_ __attribute__((cleanup(closedirp)))

/* Move ownership out of a cleanup-bound variable. */
#define TAKE_PTR(p)                                                      \
	({                                                               \
		__typeof__(p) taken_ = (p);                              \
		(p) = NULL;                                              \
		taken_;                                                  \
	})
#define TAKE_FD(fd)                                                      \
	({                                                               \
		int taken_ = (fd);                                       \
		(fd) = -1;                                               \
		taken_;                                                  \
	})

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* asprintf() that aborts on allocation failure, because there is no useful
 * recovery from a failed allocation of a path-sized string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xmalloc(size_t size);
char *xstrdup(const char *s);

int write_all(int fd, const void *buf, size_t len);
int pread_all(int fd, void *buf, size_t len, off_t offset);
int pwrite_all(int fd, const void *buf, size_t len, off_t offset);
/* Copy len bytes from in at in_offset to the current position of out. */
int copy_range(int in, off_t in_offset, int out, uint64_t len);

int write_file(const char *path, const char *content);
/* Read a whole small file; *ret is NUL-terminated and owned by the caller. */
int read_file(const char *path, char **ret, size_t *ret_len);

/* Read the names of a directory's entries, without "." and "..", before
 * any of them is changed. Sorted by strcmp() when sorted is true. Free
 * the result with free_dir_names(). */
int read_dir_names(const char *path, bool sorted, char ***ret, size_t *ret_n);
void free_dir_names(char **names, size_t n);

int mkdir_p(const char *path, mode_t mode);
/* Remove a tree, making directories writable first because overlayfs leaves
 * work directories with mode 0. Does not cross mount points. */
int rm_rf(const char *path);

/* Look a program up in a PATH-style list; *ret is owned by the caller.
 * Returns -ENOENT if no entry exists and -EACCES if one exists but none is
 * executable. */
int find_in_path(const char *name, const char *path_list, char **ret);

bool streq_ptr(const char *a, const char *b);

/* Pass a file descriptor over a unix socket (SCM_RIGHTS). recv_fd returns
 * the received fd, or -errno; -ENODATA when the peer closed without one. */
int send_fd(int socket_fd, int fd);
int recv_fd(int socket_fd);
