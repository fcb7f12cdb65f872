#pragma once

/* Make new_root the root of the calling process's mount namespace and detach
 * the old root, so no path leads back to the host file system. */
int pivot_into(const char *new_root);
