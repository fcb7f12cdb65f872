#!/bin/bash
# Start-up benchmark: the median wall time of `IMAGE fim-exec true` over 50
# runs, next to `unshare -Urm chroot ROOTFS true` on an unpacked copy of the
# same root file system. The second command is a user and mount namespace
# without FUSE, overlay or pivot. Both are measured in one hyperfine run.
#
# Usage: bench/startup.sh [IMAGE ROOTFS]
#
# Without arguments it builds a busybox image from build/flatimage. Run it
# as an ordinary user: the runtime is rootless, and the numbers of root are
# not the ones users see.
set -euo pipefail

repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
runs=50

for tool in hyperfine unshare python3; do
    command -v "$tool" >/dev/null || { echo "startup.sh: '$tool' not found; run tools/deps.sh" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ $# -eq 2 ]]; then
    image=$(realpath "$1")
    rootfs=$(realpath "$2")
elif [[ $# -eq 0 ]]; then
    rootfs=$work/rootfs
    image=$work/busybox.flatimage
    "$repository/tools/mkrootfs-busybox.sh" "$rootfs" >/dev/null
    "$repository/tools/mkimage.sh" "$repository/build/flatimage" "$rootfs" "$image" >/dev/null
else
    echo "usage: bench/startup.sh [IMAGE ROOTFS]" >&2
    exit 2
fi

export FIM_DIR_DATA=$work/data
hyperfine --style none -N --warmup 5 --runs "$runs" --export-json "$work/result.json" \
    --command-name "flatimage fim-exec true" "$image fim-exec true" \
    --command-name "unshare -Urm chroot true" "unshare -Urm chroot $rootfs /bin/true" >/dev/null

python3 - "$work/result.json" <<'PY'
import json
import sys

results = json.load(open(sys.argv[1]))["results"]
base = results[1]["median"]
print(f"{'command':<28} {'median ms':>10} {'ratio':>7}")
for result in results:
    print(f"{result['command']:<28} {result['median'] * 1000:>10.2f} {result['median'] / base:>7.2f}")
PY
