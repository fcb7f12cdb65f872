#!/bin/bash
# Build a Debian 12 (bookworm) minbase root filesystem tree with debootstrap.
#
# Usage: mkrootfs-debian.sh OUTDIR
#
# Runs as root only, because debootstrap creates device nodes and files owned
# by other users. The mirror comes from the host's apt sources, so the tree
# installs from the same place the host does. Exit status: 0 on success,
# 2 on a usage error, 125 when the build fails.

set -Eeuo pipefail

readonly SUITE=bookworm
readonly DEFAULT_MIRROR=http://deb.debian.org/debian
readonly DEB822_SOURCES=/etc/apt/sources.list.d/debian.sources
readonly ONE_LINE_SOURCES=/etc/apt/sources.list

program=${0##*/}

usage() {
    echo "usage: $program OUTDIR" >&2
    echo "Builds a Debian $SUITE minbase root filesystem in OUTDIR, which must be missing or empty." >&2
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

# Print the first URI of the first deb822 stanza whose Suites field lists
# $SUITE itself (not bookworm-security or bookworm-updates).
find_mirror_deb822() {
    awk -v suite="$SUITE" '
        function flush() {
            if (is_deb && has_suite && uri != "") { print uri; found = 1; exit }
            is_deb = 0; has_suite = 0; uri = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") is_deb = 1 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
        tolower($1) == "uris:" && uri == "" { uri = $2 }
        END { if (!found) flush() }
    ' "$1"
}

# Print the URI of the first "deb [options] URI $SUITE ..." line.
find_mirror_one_line() {
    awk -v suite="$SUITE" '
        $1 != "deb" { next }
        {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }
    ' "$1"
}

find_mirror() {
    local uri=""
    if [[ -r $DEB822_SOURCES ]]; then
        uri=$(find_mirror_deb822 "$DEB822_SOURCES")
    fi
    if [[ -z $uri && -r $ONE_LINE_SOURCES ]]; then
        uri=$(find_mirror_one_line "$ONE_LINE_SOURCES")
    fi

    # debootstrap fetches only over http, https and file, so an apt method
    # such as mirror+file: or cdrom: falls back to the default mirror.
    case $uri in
        http://* | https://* | file://*)
            echo "${uri%/}"
            ;;
        "")
            echo "$program: no $SUITE mirror found in the host's apt sources, using $DEFAULT_MIRROR" >&2
            echo "$DEFAULT_MIRROR"
            ;;
        *)
            echo "$program: host mirror $uri uses a scheme debootstrap cannot fetch, using $DEFAULT_MIRROR" >&2
            echo "$DEFAULT_MIRROR"
            ;;
    esac
}

# Print every mount point below $1, so a cleanup never deletes through the
# /proc or /sys that debootstrap mounts inside the target. A mount at $1
# itself is harmless because the cleanup stays on that filesystem.
list_mounts_under() {
    local dir=$1
    awk -v dir="$dir" 'index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo
}

remove_partial_tree() {
    local mounts
    mounts=$(list_mounts_under "$outdir")
    if [[ -n $mounts ]]; then
        echo "$program: left $outdir in place because these mounts are still inside it:" >&2
        echo "$mounts" >&2
        return
    fi
    # OUTDIR was missing or empty before the build, so this run created
    # everything inside it.
    if [[ $outdir_created_here == yes ]]; then
        rm -rf --one-file-system -- "$outdir"
    else
        find "$outdir" -xdev -mindepth 1 -delete
    fi
}

on_exit() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        remove_partial_tree
    fi
}

if [[ $# -ne 1 ]]; then
    usage_error "expected 1 argument, got $#"
fi
if [[ -z $1 ]]; then
    usage_error "OUTDIR is empty"
fi
if [[ $(id -u) -ne 0 ]]; then
    die "must run as root (uid 0), but runs as uid $(id -u); retry with sudo"
fi
if ! command -v debootstrap >/dev/null; then
    die "debootstrap not found; install the debootstrap package"
fi

if [[ -e $1 && ! -d $1 ]]; then
    usage_error "OUTDIR $1 exists and is not a directory"
fi
if [[ -d $1 && -n $(ls -A -- "$1") ]]; then
    usage_error "OUTDIR $1 is not empty; remove it or choose another directory"
fi

outdir_created_here=no
if [[ ! -d $1 ]]; then
    mkdir -p -- "$1"
    outdir_created_here=yes
fi
outdir=$(realpath -- "$1")
trap on_exit EXIT

mirror=$(find_mirror)
echo "$program: bootstrapping $SUITE from $mirror into $outdir" >&2
debootstrap --variant=minbase "$SUITE" "$outdir" "$mirror"

# debootstrap keeps every downloaded .deb in the tree, and the image does
# not need them.
find "$outdir/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -delete
rm -f "$outdir"/var/cache/apt/*.bin
find "$outdir/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf -- {} +
rm -f "$outdir"/var/cache/debconf/*-old

# debootstrap 1.0.128 copies the build host's /etc/hostname and
# /etc/resolv.conf into the tree. Replace them so the image does not carry
# this machine's name and DNS server. minbase has no /etc/hosts because
# netbase is not part of it, so write one that resolves localhost.
echo localhost >"$outdir/etc/hostname"
rm -f "$outdir/etc/resolv.conf"
: >"$outdir/etc/resolv.conf"
chmod 0644 "$outdir/etc/hostname" "$outdir/etc/resolv.conf"
if [[ ! -e $outdir/etc/hosts ]]; then
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$outdir/etc/hosts"
    chmod 0644 "$outdir/etc/hosts"
fi

# NOTE: an https mirror needs ca-certificates, which minbase lacks, so
# `apt-get update` inside the tree fails until that package is installed.
printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$outdir/etc/apt/sources.list"

echo "$program: created $outdir ($(du -sh --one-file-system -- "$outdir" | cut -f1))" >&2
