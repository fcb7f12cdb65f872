/* Layers outside the image file. The stack, bottom to top, is: the image's
 * own layers, then the FIM_LAYERS entries, then the managed "layers"
 * directory of the data directory, then the writable layer. */
#pragma once

#include "runtime/image.h"

/* Append the FIM_LAYERS entries and the files of <data_dir>/layers to
 * img->layers. FIM_LAYERS is a colon-separated list of layer files and
 * directories; a directory contributes its regular files in name order. An
 * entry that is missing or not a squashfs image is skipped with a warning. */
void layers_add_external(struct image *img, const char *data_dir);

/* The directory of committed layers: <data_dir>/layers. */
char *layers_managed_dir(const char *data_dir);
