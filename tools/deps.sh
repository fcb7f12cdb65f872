#!/bin/bash
# Install the Debian 12 packages that building, running and testing need.
#
# Usage: tools/deps.sh
#
# Installs only what is missing, so a second run takes a second. Runs
# apt-get through sudo when not root.
set -euo pipefail

packages=(
    # build
    meson ninja-build pkg-config gcc libc6-dev
    libfuse3-dev libsquashfuse-dev libseccomp-dev libcap-dev libmount-dev libcmocka-dev
    # run: unprivileged FUSE, layer creation, subordinate id mapping, FUSE overlay helpers
    fuse3 squashfs-tools uidmap fuse-overlayfs unionfs-fuse
    # test images and the end-to-end tests
    busybox-static debootstrap python3 python3-pytest
    # benchmarks against the stock tools
    squashfuse bubblewrap crun hyperfine
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

sudo=()
if [[ $EUID -ne 0 ]]; then
    sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
