#!/bin/bash
# Run the end-to-end tests as unprivileged users, the way CI does.
#
# Usage: tests/run-e2e.sh [PYTEST ARGUMENTS...]
#
# Runs as root. Creates two users: fimtest, with /etc/subuid and /etc/subgid
# ranges, and fimtest-nosub without them, so that the runtime takes its
# single-id mapping path. Copies the runtime, the probe, tools/ and
# tests/e2e into a temporary directory that both users can read. Builds the
# busybox root filesystem, and the Debian image when requested. Then runs
# pytest as fimtest (every test) and as fimtest-nosub (the tests marked
# nosub). Extra arguments go to both pytest runs, for example -k or -x.
#
# The last line of output is "N passed, N failed" summed over both runs,
# followed by ", N skipped" when tests were skipped. The exit status is 1
# when any test failed, 2 on a usage or setup error.
#
# Environment:
#   FIM_RUNTIME        runtime to test, default build/flatimage
#   FIM_PROBE          static probe program, default build/tests/fim-probe
#   FIM_FSOPS          static file system tool, default build/tests/fim-fsops
#   FIM_TEST_DEBIAN=1  also build the Debian image (debootstrap; minutes, needs the mirror)
#   FIM_DEBIAN_ROOTFS  existing Debian root filesystem to pack instead of running debootstrap
#   FIM_DEBIAN_IMAGE   existing Debian image to test as it is
#   FIM_TEST_STRICT=1  count skipped tests as failures; CI=true does the same
#   FIM_KEEP_WORK=1    keep the temporary directory and print its path
#   FIM_DEBUG          passed through to the runtime

set -uo pipefail

readonly USER_WITH_RANGES=fimtest
readonly USER_WITHOUT_RANGES=fimtest-nosub
readonly PYTHON=/usr/bin/python3
# Seconds for one pytest run; each test also bounds its own commands.
readonly PYTEST_TIMEOUT=3600

program=${0##*/}
repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "$program: $*" >&2
    exit 2
}

step() {
    echo "$program: $*" >&2
}

if [[ $EUID -ne 0 ]]; then
    die "must run as root, because it creates test users and sets /dev/fuse permissions; try: sudo $0"
fi
if ! "$PYTHON" -m pytest --version >/dev/null 2>&1; then
    die "$PYTHON -m pytest not found; install it with: apt-get install python3-pytest"
fi

runtime=${FIM_RUNTIME:-$repository/build/flatimage}
probe=${FIM_PROBE:-$repository/build/tests/fim-probe}
fsops=${FIM_FSOPS:-$repository/build/tests/fim-fsops}
if [[ ! -x $runtime ]]; then
    die "runtime $runtime not found or not executable; build it with: ninja -C build"
fi
if [[ ! -x $fsops ]]; then
    die "file system tool $fsops not found or not executable; build it with: ninja -C build"
fi
if [[ ! -x $probe ]]; then
    die "probe $probe not found or not executable; build it with: ninja -C build"
fi

strict=0
if [[ ${CI:-} == true || ${FIM_TEST_STRICT:-} == 1 ]]; then
    strict=1
fi

# Desktop distributions make /dev/fuse usable by every user; do the same here.
if [[ -c /dev/fuse ]]; then
    chmod 0666 /dev/fuse
else
    step "warning: /dev/fuse is missing; the tests will fail until the fuse module is loaded (modprobe fuse)"
fi

# useradd -m gives a new user /etc/subuid and /etc/subgid ranges on Debian
# (SUB_UID_COUNT in /etc/login.defs).
if ! id -u "$USER_WITH_RANGES" >/dev/null 2>&1; then
    useradd -m "$USER_WITH_RANGES" || die "useradd $USER_WITH_RANGES failed"
fi
if ! id -u "$USER_WITHOUT_RANGES" >/dev/null 2>&1; then
    useradd -m "$USER_WITHOUT_RANGES" || die "useradd $USER_WITHOUT_RANGES failed"
fi
for file in /etc/subuid /etc/subgid; do
    if [[ -f $file ]]; then
        sed -i "/^$USER_WITHOUT_RANGES:/d" "$file"
    fi
done
if ! grep -q "^$USER_WITH_RANGES:" /etc/subuid 2>/dev/null; then
    step "warning: $USER_WITH_RANGES has no /etc/subuid range, so its run covers the single-id mapping only"
fi

work=$(mktemp -d /tmp/fim-e2e.XXXXXX) || die "mktemp failed"
chmod 0755 "$work"
if [[ ${FIM_KEEP_WORK:-} == 1 ]]; then
    step "keeping $work after the run (FIM_KEEP_WORK=1)"
else
    trap 'rm -rf -- "$work"' EXIT
fi

# The repository clone may be unreadable to other users, so the users get
# copies in a directory that they can read.
step "copying the runtime, probe, tools and tests to $work"
mkdir -p "$work/bin" "$work/tests"
install -m 0755 "$runtime" "$work/bin/flatimage" || die "copying $runtime failed"
install -m 0755 "$probe" "$work/bin/fim-probe" || die "copying $probe failed"
install -m 0755 "$fsops" "$work/bin/fim-fsops" || die "copying $fsops failed"
cp -r "$repository/tools" "$work/tools" || die "copying tools/ failed"
cp -r "$repository/tests/e2e" "$work/tests/e2e" || die "copying tests/e2e failed"
rm -rf "$work/tests/e2e/__pycache__"
chmod -R a+rX "$work/tools" "$work/tests"

step "building the busybox root filesystem"
bash "$work/tools/mkrootfs-busybox.sh" "$work/rootfs-busybox" || die "tools/mkrootfs-busybox.sh failed"
# The tests pack this tree as an unprivileged user, who must be able to read
# every directory; mkrootfs-busybox.sh makes /root 0700.
chmod 0755 "$work/rootfs-busybox/root"

step "building the tree of root-owned test files"
(cd "$work/tests/e2e" && PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -c \
    'import pathlib, sys, conftest; conftest.build_root_tree(pathlib.Path(sys.argv[1]))' "$work/root-tree") \
    || die "building $work/root-tree failed"

debian_image=
if [[ -n ${FIM_DEBIAN_IMAGE:-} ]]; then
    step "copying the Debian image $FIM_DEBIAN_IMAGE"
    install -m 0755 "$FIM_DEBIAN_IMAGE" "$work/debian.flatimage" || die "copying $FIM_DEBIAN_IMAGE failed"
    debian_image=$work/debian.flatimage
elif [[ -n ${FIM_DEBIAN_ROOTFS:-} || ${FIM_TEST_DEBIAN:-} == 1 ]]; then
    debian_rootfs=${FIM_DEBIAN_ROOTFS:-}
    if [[ -z $debian_rootfs ]]; then
        debian_rootfs=$work/rootfs-debian
        step "building the Debian root filesystem with debootstrap"
        bash "$work/tools/mkrootfs-debian.sh" "$debian_rootfs" || die "tools/mkrootfs-debian.sh failed"
    fi
    # As root, because a Debian tree has files that only root can read.
    step "packing the Debian image from $debian_rootfs"
    bash "$work/tools/mkimage.sh" "$work/bin/flatimage" "$debian_rootfs" "$work/debian.flatimage" \
        || die "tools/mkimage.sh failed for $debian_rootfs"
    chmod 0755 "$work/debian.flatimage"
    debian_image=$work/debian.flatimage
fi

total_passed=0
total_failed=0
total_skipped=0

# Print the number before WORD in a pytest summary line, or 0.
summary_count() {
    local summary=$1 word=$2
    grep -oE "[0-9]+ $word" <<<"$summary" | grep -oE '^[0-9]+' || echo 0
}

# Run pytest as $1 with marker expression $2 and add its counts to the totals.
run_pytest() {
    local user=$1 markers=$2
    shift 2
    local home user_dir log status summary
    home=$(getent passwd "$user" | cut -d: -f6)
    user_dir=$work/run-$user
    log=$user_dir/pytest.log
    mkdir -p "$user_dir"
    chown "$user:" "$user_dir"

    local -a variables=(
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 TERM="${TERM:-dumb}"
        PYTHONDONTWRITEBYTECODE=1
        FIM_RUNTIME="$work/bin/flatimage"
        FIM_PROBE="$work/bin/fim-probe"
        FIM_FSOPS="$work/bin/fim-fsops"
        FIM_BUSYBOX_ROOTFS="$work/rootfs-busybox"
        FIM_ROOT_TREE="$work/root-tree"
    )
    if [[ -n $debian_image ]]; then
        variables+=(FIM_DEBIAN_IMAGE="$debian_image")
    fi
    if [[ -n ${FIM_DEBUG:-} ]]; then
        variables+=(FIM_DEBUG="$FIM_DEBUG")
    fi

    step "running pytest as $user (-m '$markers')"
    (cd "$work" && timeout --kill-after=30 "$PYTEST_TIMEOUT" \
        runuser -u "$user" -- env -i "${variables[@]}" \
        "$PYTHON" -m pytest -p no:cacheprovider --basetemp="$user_dir/tmp" -v -rs \
        -m "$markers" "$@" tests/e2e) 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}

    # pytest's last line reads like "=== 2 failed, 40 passed, 1 skipped in 9.87s ===".
    summary=$(grep -E '^=+ .* in [0-9.]+s' "$log" | tail -n 1)
    total_passed=$((total_passed + $(summary_count "$summary" passed)))
    total_failed=$((total_failed + $(summary_count "$summary" failed) + $(summary_count "$summary" 'errors?')))
    total_skipped=$((total_skipped + $(summary_count "$summary" skipped)))

    # Exit status 0 or 1 means that the tests ran. Any other status is a
    # failure of the run itself: interrupted, internal or usage error, no
    # tests collected, or timeout.
    if [[ $status -ne 0 && $status -ne 1 ]]; then
        step "pytest as $user ended with exit status $status; counting it as one failure"
        total_failed=$((total_failed + 1))
    fi
}

# Print the pids of the test users' processes that run from $work, with
# their descendants.
leftover_processes() {
    local user pid child
    local -a found=()
    for user in "$USER_WITH_RANGES" "$USER_WITHOUT_RANGES"; do
        for pid in $(pgrep -u "$user"); do
            # The process may exit between pgrep and the read.
            if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$work"; then
                found+=("$pid")
            fi
        done
    done
    local -a queue=("${found[@]}")
    while [[ ${#queue[@]} -gt 0 ]]; do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        for child in $(ps -o pid= --ppid "$pid"); do
            found+=("$child")
            queue+=("$child")
        done
    done
    if [[ ${#found[@]} -gt 0 ]]; then
        printf '%s\n' "${found[@]}" | sort -un
    fi
}

# Abort the FUSE connections of the mounts in process $1's mount namespace,
# which frees a process blocked on a helper that died or deadlocked.
abort_fuse_connections() {
    local pid=$1 device mounted_here=0
    if [[ -z $(ls -A /sys/fs/fuse/connections 2>/dev/null) ]]; then
        mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null && mounted_here=1
    fi
    for device in $(awk '/ - fuse/ { split($3, numbers, ":"); print numbers[2] }' "/proc/$pid/mountinfo" 2>/dev/null); do
        if [[ -w /sys/fs/fuse/connections/$device/abort ]]; then
            echo 1 >"/sys/fs/fuse/connections/$device/abort"
        fi
    done
    if [[ $mounted_here -eq 1 ]]; then
        umount /sys/fs/fuse/connections
    fi
}

# End what the tests left running, so the run ends and $work can be removed.
# Each test checks for its own leftovers, so this only reports them.
end_leftover_processes() {
    local pid
    local -a pids
    mapfile -t pids < <(leftover_processes)
    if [[ ${#pids[@]} -eq 0 ]]; then
        return
    fi
    step "warning: the tests left ${#pids[@]} processes running (${pids[*]}); ending them"
    kill -9 "${pids[@]}" 2>/dev/null
    sleep 0.5
    for pid in "${pids[@]}"; do
        if [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == D ]]; then
            abort_fuse_connections "$pid"
        fi
    done
}

markers_all="not debian"
markers_nosub="nosub and not debian"
if [[ -n $debian_image ]]; then
    markers_all=""
    markers_nosub="nosub"
else
    step "Debian tests not selected; set FIM_TEST_DEBIAN=1, FIM_DEBIAN_ROOTFS or FIM_DEBIAN_IMAGE to run them"
fi

run_pytest "$USER_WITH_RANGES" "$markers_all" "$@"
end_leftover_processes
run_pytest "$USER_WITHOUT_RANGES" "$markers_nosub" "$@"
end_leftover_processes

if [[ $strict -eq 1 && $total_skipped -gt 0 ]]; then
    step "strict mode (CI=true or FIM_TEST_STRICT=1): counting $total_skipped skipped tests as failed"
    total_failed=$((total_failed + total_skipped))
    total_skipped=0
fi

if [[ $total_skipped -gt 0 ]]; then
    echo "$total_passed passed, $total_failed failed, $total_skipped skipped"
else
    echo "$total_passed passed, $total_failed failed"
fi

if [[ $total_failed -gt 0 ]]; then
    exit 1
fi
exit 0
