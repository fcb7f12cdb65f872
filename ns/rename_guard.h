/* Directory renames under unionfs-fuse.
 *
 * unionfs-fuse 1.0 renames only its writable copy of a directory and hides
 * the old name, so the files of that directory that were never copied up
 * are lost. Kernel overlayfs without redirect_dir returns EXDEV for such a
 * rename instead, and mv then copies the directory and removes the old
 * one. The guard gives unionfs mode the same result: the program's
 * rename(2), renameat(2) and renameat2(2) go to the container's init
 * through a seccomp user notification, and init returns EXDEV when the
 * source is a directory and lets every other rename run. */
#pragma once

/* Install the filter in the calling process, which is about to exec the
 * program. Returns the notification listener's fd or -errno. */
int rename_guard_install(void);

/* Respond to the notifications on listener_fd from a new thread. proc_root is
 * the procfs of the program's pid namespace, as seen by the caller. */
int rename_guard_serve(int listener_fd, const char *proc_root);
