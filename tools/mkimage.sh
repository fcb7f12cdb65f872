#!/bin/bash
# Assemble a flatimage from a runtime binary and a root filesystem tree.
#
# Usage: mkimage.sh RUNTIME ROOTFS OUT
#
# Copies RUNTIME, packs ROOTFS into a layer with the copy's own
# `fim-layer create`, appends the layer with `fim-layer add`, then renames
# the copy to OUT, replacing any existing file there. The work happens in a
# temporary directory beside OUT, so OUT never contains a half-built image.
# Exit status: 0 on success, 2 on a usage error, 125 when a step fails.

set -Eeuo pipefail

program=${0##*/}

usage() {
    echo "usage: $program RUNTIME ROOTFS OUT" >&2
    echo "Builds the image OUT from the runtime binary RUNTIME and the root filesystem directory ROOTFS." >&2
}

usage_error() {
    echo "$program: $*" >&2
    usage
    exit 2
}

die() {
    echo "$program: $*" >&2
    exit 125
}

# A failure inside $(...) also fails the outer assignment, so only the
# top-level shell reports it and the message appears once.
trap 'if [[ $BASH_SUBSHELL -eq 0 ]]; then die "command failed (line $LINENO): $BASH_COMMAND"; fi; exit 125' ERR

if [[ $# -ne 3 ]]; then
    usage_error "expected 3 arguments, got $#"
fi
runtime=$1
rootfs=$2
out=$3

if [[ ! -f $runtime ]]; then
    usage_error "RUNTIME $runtime is not a regular file"
fi
if [[ ! -x $runtime ]]; then
    usage_error "RUNTIME $runtime is not executable"
fi
if [[ ! -d $rootfs ]]; then
    usage_error "ROOTFS $rootfs is not a directory"
fi
if [[ -z $out ]]; then
    usage_error "OUT is empty"
fi
if [[ -d $out ]]; then
    usage_error "OUT $out is a directory; pass a file name"
fi
out_parent=$(dirname -- "$out")
if [[ ! -d $out_parent ]]; then
    usage_error "directory $out_parent for OUT $out does not exist"
fi

# The runtime may change its working directory, so hand it an absolute path.
rootfs=$(realpath -- "$rootfs")

# fim-layer create runs mksquashfs, and mksquashfs 4.5.1 skips a file or
# directory it cannot read, warns and still exits with status 0, which would
# leave a silently incomplete image. The `|| true`
# covers find exiting on SIGPIPE once head has read its 5 lines.
unreadable=$(find "$rootfs" \( -type d \( ! -readable -o ! -executable \) -prune -print \) \
    -o \( -type f ! -readable -print \) 2>/dev/null | head -n 5) || true
if [[ -n $unreadable ]]; then
    echo "$program: permission denied for these paths in ROOTFS $rootfs (at most 5 shown):" >&2
    echo "$unreadable" >&2
    die "run as a user who can read all of ROOTFS, such as its owner or root"
fi

# A temporary directory on the same filesystem as OUT makes the final mv an
# atomic rename.
workdir=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf -- "$workdir"' EXIT
image=$workdir/image
layer=$workdir/layer

cp -- "$runtime" "$image"
chmod 0755 "$image"

echo "$program: creating layer from $rootfs" >&2
if ! "$image" fim-layer create "$rootfs" "$layer"; then
    die "fim-layer create failed for ROOTFS $rootfs, so $out was left unchanged"
fi
if [[ ! -s $layer ]]; then
    die "fim-layer create exited with status 0 but wrote an empty layer, so $out was left unchanged"
fi

echo "$program: adding layer ($(du -h -- "$layer" | cut -f1)) to the image" >&2
if ! "$image" fim-layer add "$layer"; then
    die "fim-layer add failed, so $out was left unchanged"
fi

mv -f -T -- "$image" "$out"
echo "$program: created $out ($(du -h -- "$out" | cut -f1))" >&2
