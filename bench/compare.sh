#!/bin/bash
# Compare this runtime's three overlay backends with the stock stack that
# FlatImage drives and with a no-FUSE floor, on five workloads, in one run.
#
# Usage: bench/compare.sh [ROOTFS]
#
# ROOTFS is a root file system tree to build the test image from; without
# it a busybox tree is built. The user must be able to read all of it, so
# give a tree from tools/mkrootfs-debian.sh to the user first, without its
# device nodes: sudo cp -a TREE COPY && sudo rm -f COPY/dev/* &&
# sudo chown -R $USER: COPY. Run as an ordinary user. Prints a table of medians in
# milliseconds and the ratio of each backend to its stock counterpart.
set -euo pipefail

repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
stack=$repository/bench/stack.sh

for tool in hyperfine squashfuse fuse-overlayfs unionfs bwrap unshare python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: '$tool' not found; run tools/deps.sh" >&2; exit 2; }
done

work=$(mktemp -d)
export BENCH_WORK=$work
cleanup() {
    local mount_point
    for mount_point in "$work"/stock-*/merged "$work"/stock-*/layer*; do
        fusermount3 -u -z "$mount_point" 2>/dev/null || true
    done
    chmod -R u+rwX "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "compare.sh: preparing the test image in $work" >&2
if [[ $# -ge 1 ]]; then
    cp -a "$1" "$work/rootfs"
else
    "$repository/tools/mkrootfs-busybox.sh" "$work/rootfs" >/dev/null
fi
mkdir -p "$work/data/bench"
head -c $((256 << 20)) /dev/urandom >"$work/data/bench/big256"
head -c $((100 << 20)) /dev/urandom >"$work/data/bench/big100"
cp "$repository/build/flatimage" "$work/bench.flatimage"
"$work/bench.flatimage" fim-layer create "$work/rootfs" "$work/base.layer" >/dev/null
FIM_COMPRESSION_LEVEL=0 "$work/bench.flatimage" fim-layer create "$work/data" "$work/data.layer" >/dev/null
"$work/bench.flatimage" fim-layer add "$work/base.layer" >/dev/null
"$work/bench.flatimage" fim-layer add "$work/data.layer" >/dev/null
rm "$work/base.layer" "$work/data.layer"
# The floor reads the same files from a plain directory.
cp -a "$work/data/bench" "$work/rootfs/bench"

stacks=(ours-bwrap ours-overlayfs ours-unionfs stock-overlayfs stock-unionfs floor)
# hyperfine -N runs --prepare without a shell, so the reset is a script.
cat >"$work/reset.sh" <<RESET
#!/bin/sh
chmod -R u+rwX "$work"/data-ours-* "$work"/stock-*/upper "$work"/stock-*/work "$work"/floor 2>/dev/null
rm -rf "$work"/data-ours-* "$work"/stock-*/upper "$work"/stock-*/work "$work"/floor/upper "$work"/floor/work
RESET
chmod +x "$work/reset.sh"

# name, runs, whether the writable layer is reset before each run, command
workloads=(
    "start-up (true)|30|no|true"
    "touch 1,000 files|10|yes|sh -c 'cd /bench && i=0 && set -- && while [ \$i -lt 1000 ]; do set -- f\$i \$@; i=\$((i + 1)); done && touch \$@'"
    "read a 256 MiB file|5|no|cat /bench/big256"
    "find / over the image|10|no|find / -xdev"
    "append 1 byte to a 100 MiB file|5|yes|sh -c 'printf x >> /bench/big100'"
)

results=$work/results
mkdir -p "$results"
: >"$results/order"
for workload in "${workloads[@]}"; do
    IFS='|' read -r name runs reset command <<<"$workload"
    echo "compare.sh: $name" >&2
    arguments=()
    for s in "${stacks[@]}"; do
        arguments+=(--command-name "$s" "$stack $s $command")
    done
    prepare=(--prepare "true")
    [[ $reset == yes ]] && prepare=(--prepare "$work/reset.sh")
    index=$(wc -l <"$results/order")
    hyperfine --style none -N --warmup 1 --runs "$runs" "${prepare[@]}" --output null \
        --export-json "$results/$index.json" "${arguments[@]}" >/dev/null ||
        { echo "compare.sh: a stack failed on '$name'; run it by hand with BENCH_WORK set to see why" >&2; exit 1; }
    echo "$name" >>"$results/order"
done

python3 - "$results" <<'PY'
import json
import os
import sys

results = sys.argv[1]
stacks = ["ours-bwrap", "ours-overlayfs", "ours-unionfs", "stock-overlayfs", "stock-unionfs", "floor"]
# Debian 12's bubblewrap 0.8 has no --overlay, so FlatImage's bwrap mode
# cannot run here. The kernel backend is therefore compared with the stock
# fuse-overlayfs stack.
stock_of = {"ours-bwrap": "stock-overlayfs", "ours-overlayfs": "stock-overlayfs", "ours-unionfs": "stock-unionfs"}
header = f"{'workload':<34}" + "".join(f"{s:>17}" for s in stacks) + "".join(f"{'ratio ' + s[5:]:>16}" for s in stock_of)
print(header)
for index, name in enumerate(open(os.path.join(results, "order")).read().splitlines()):
    path = os.path.join(results, f"{index}.json")
    medians = {r["command"]: r["median"] * 1000 for r in json.load(open(path))["results"]}
    row = f"{name:<34}" + "".join(f"{medians[s]:>17.1f}" for s in stacks)
    row += "".join(f"{medians[s] / medians[stock_of[s]]:>16.2f}" for s in stock_of)
    print(row)
print("\nmedians in milliseconds; ratio = this runtime's backend / its stock counterpart (lower is better)")
PY
