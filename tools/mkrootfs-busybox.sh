#!/bin/bash
# Build a minimal root filesystem tree around the host's static busybox.
#
# Usage: mkrootfs-busybox.sh OUTDIR
#
# The tree contains /bin/busybox, a symlink in /bin for every applet, the
# standard top-level directories and a few /etc files (passwd, group,
# os-release, hosts, resolv.conf). Run as root, the files belong to root;
# run as another user, they belong to that user. Exit status: 0 on success,
# 2 on a usage error, 125 when the build fails.

set -Eeuo pipefail

# Debian's busybox-static package installs here.
readonly HOST_BUSYBOX=/bin/busybox

program=${0##*/}

usage() {
    echo "usage: $program OUTDIR" >&2
    echo "Builds a busybox root filesystem in OUTDIR, which must be missing or empty." >&2
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

# Reject a dynamically linked busybox, because the tree has no dynamic
# loader or shared libraries, so no command inside it could start.
check_static() {
    local output
    if ! command -v ldd >/dev/null; then
        return
    fi
    output=$(LC_ALL=C ldd "$HOST_BUSYBOX" 2>&1 || true)
    case $output in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) die "$HOST_BUSYBOX is dynamically linked; install busybox-static" ;;
    esac
}

write_etc_files() {
    local root=$1 version=$2

    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
    cat >"$root/etc/os-release" <<EOF
NAME="busybox"
ID=busybox
VERSION_ID="$version"
PRETTY_NAME="busybox $version"
EOF
    cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
    : >"$root/etc/resolv.conf"
}

if [[ $# -ne 1 ]]; then
    usage_error "expected 1 argument, got $#"
fi
if [[ -z $1 ]]; then
    usage_error "OUTDIR is empty"
fi
if [[ ! -x $HOST_BUSYBOX ]]; then
    die "$HOST_BUSYBOX not found; install busybox-static"
fi
check_static

outdir=${1%/}
if [[ -z $outdir ]]; then
    usage_error "OUTDIR / is not empty; choose another directory"
fi
if [[ -L $outdir ]]; then
    usage_error "OUTDIR $outdir is a symbolic link; pass the directory it points to"
fi
if [[ -e $outdir && ! -d $outdir ]]; then
    usage_error "OUTDIR $outdir exists and is not a directory"
fi
if [[ -d $outdir && -n $(ls -A -- "$outdir") ]]; then
    usage_error "OUTDIR $outdir is not empty; remove it or choose another directory"
fi

# Build beside OUTDIR and rename at the end, so a failed run leaves no
# half-built tree that a later run would reject as non-empty.
parent=$(dirname -- "$outdir")
mkdir -p -- "$parent"
staging=$(mktemp -d "$parent/.mkrootfs-busybox.XXXXXX")
trap 'rm -rf -- "$staging"' EXIT

umask 022
chmod 0755 "$staging"
mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,etc,proc,dev,sys,tmp,root,home,run,var}
chmod 1777 "$staging/tmp"
chmod 0700 "$staging/root"

cp -- "$HOST_BUSYBOX" "$staging/bin/busybox"
chmod 0755 "$staging/bin/busybox"

applets=$("$HOST_BUSYBOX" --list)
if ! grep -qx sh <<<"$applets"; then
    die "$HOST_BUSYBOX has no sh applet"
fi
while IFS= read -r applet; do
    if [[ $applet == busybox ]]; then
        continue
    fi
    # Relative targets keep the links valid wherever the tree is mounted.
    ln -s busybox "$staging/bin/$applet"
done <<<"$applets"

# "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary."
version=$("$HOST_BUSYBOX" 2>/dev/null | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p' || true)
write_etc_files "$staging" "${version:-unknown}"

if [[ -d $outdir ]]; then
    rmdir -- "$outdir"
fi
mv -T -- "$staging" "$outdir"
trap - EXIT

echo "$program: created $outdir with $(wc -l <<<"$applets") applets" >&2
