#!/bin/bash
# From a fresh Debian 12 machine to a running image: install the packages,
# build the runtime, make the small busybox image and run a command in it.
#
# Usage: tools/quickstart.sh
#
# Leaves build/flatimage (the bare runtime) and busybox.flatimage in the
# repository. Runs as an ordinary user with sudo, or as root.
set -euo pipefail

repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repository"

tools/deps.sh

if [[ ! -r /dev/fuse || ! -w /dev/fuse ]]; then
    echo "quickstart.sh: /dev/fuse is not usable by $(id -un); desktop distributions make it mode 0666," >&2
    echo "quickstart.sh: run 'sudo chmod 0666 /dev/fuse' and try again" >&2
    exit 125
fi

if [[ ! -d build ]]; then
    meson setup build >/dev/null
fi
ninja -C build >/dev/null

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
rmdir "$rootfs"
tools/mkrootfs-busybox.sh "$rootfs" >/dev/null
tools/mkimage.sh build/flatimage "$rootfs" busybox.flatimage >/dev/null

echo "quickstart.sh: built busybox.flatimage; running: ./busybox.flatimage fim-exec sh -c '...'" >&2
./busybox.flatimage fim-exec sh -c 'echo "hello from $(cat /etc/os-release | head -n 1) as $(whoami), pid $$"'
