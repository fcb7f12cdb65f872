#!/bin/bash
# Run one command in one container stack; used by bench/compare.sh.
#
# Usage: bench/stack.sh STACK COMMAND [ARGS...]
#
# STACK is one of:
#   ours-bwrap ours-overlayfs ours-unionfs
#       the image run by this runtime with that overlay backend
#   stock-overlayfs stock-unionfs
#       what FlatImage does: the squashfuse program mounts each layer on the
#       host, fuse-overlayfs or unionfs-fuse stacks a writable directory on
#       top, bwrap runs the command in the merged tree, then all is unmounted
#   floor
#       no FUSE at all: a user namespace with kernel overlayfs over the
#       unpacked root file system
# BENCH_WORK names the directory that compare.sh prepared.
set -euo pipefail

stack=$1
shift
work=${BENCH_WORK:?BENCH_WORK is not set; run bench/compare.sh}
image=$work/bench.flatimage

case $stack in
ours-bwrap | ours-overlayfs | ours-unionfs)
    FIM_OVERLAY=${stack#ours-} FIM_DIR_DATA=$work/data-$stack exec "$image" fim-exec "$@"
    ;;
stock-overlayfs | stock-unionfs)
    dir=$work/$stack
    mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
    lowers=()
    index=0
    # Unmount on every exit path, or the next run finds busy mount points.
    unmount_all() {
        fusermount3 -u -z "$dir/merged" 2>/dev/null || true
        for layer in "$dir"/layer*; do
            fusermount3 -u -z "$layer" 2>/dev/null || true
        done
    }
    trap unmount_all EXIT
    # Mount every layer with the squashfuse program, top layer first.
    while IFS=: read -r _ offset _ _; do
        mkdir -p "$dir/layer$index"
        squashfuse -o "offset=$offset" "$image" "$dir/layer$index"
        lowers=("$dir/layer$index" "${lowers[@]}")
        index=$((index + 1))
    done < <("$image" fim-layer list)
    if [[ $stack == stock-overlayfs ]]; then
        fuse-overlayfs -o "lowerdir=$(IFS=:; echo "${lowers[*]}"),upperdir=$dir/upper,workdir=$dir/work" "$dir/merged"
    else
        branches="$dir/upper=RW"
        for lower in "${lowers[@]}"; do
            branches+=":$lower=RO"
        done
        unionfs -o cow "$branches" "$dir/merged"
    fi
    bwrap --unshare-user --unshare-pid --bind "$dir/merged" / --proc /proc --dev /dev --tmpfs /tmp "$@"
    ;;
floor)
    dir=$work/floor
    mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
    exec unshare -Urm sh -c 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3,userxattr" "$4" && shift 4 && exec chroot "$0" "$@"' \
        "$dir/merged" "$work/rootfs" "$dir/upper" "$dir/work" "$dir/merged" "$@"
    ;;
*)
    echo "stack.sh: unknown stack '$stack'" >&2
    exit 2
    ;;
esac
