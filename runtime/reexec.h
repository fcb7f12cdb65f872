#pragma once

/* Determine the image path and, on the first start, re-execute the runtime
 * from an in-memory copy of its ELF.
 *
 * The kernel refuses writes to a file that a process is executing
 * (ETXTBSY). Running from a memfd leaves the image file free, so a config
 * write or a layer append works while instances of the image run. Returns
 * the image path (owned by the caller) in the re-executed process; falls back
 * to running from the image when memfd execution is not possible. */
char *reexec_from_memory(char **argv);
