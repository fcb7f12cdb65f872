#pragma once

/* Drop every capability (effective, permitted, inheritable, ambient and
 * bounding) and set no_new_privs, so nothing the program executes can regain
 * a capability in the container's user namespace. */
int caps_drop_all(void);
