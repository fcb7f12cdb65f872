"""Clear errors when the host lacks user namespaces or /dev/fuse.

Each test takes the feature away inside a user and mount namespace of its
own (util-linux unshare), then runs the image there.
"""

import os
import shutil

import pytest

from conftest import RUNTIME_ERROR, run_command, runtime_env

# Runs ARGS with /dev replaced by a tmpfs that contains the usual device
# nodes but no fuse node. $1 is a scratch directory for the original /dev.
WITHOUT_FUSE_NODE = r"""
set -e
saved=$1
shift
mkdir -p "$saved"
mount --rbind /dev "$saved"
mount -t tmpfs none /dev
for name in null zero full random urandom tty ptmx; do
    touch "/dev/$name"
    mount --bind "$saved/$name" "/dev/$name"
done
mkdir /dev/pts /dev/shm
mount --rbind "$saved/pts" /dev/pts
mount --rbind "$saved/shm" /dev/shm
umount -l "$saved"
exec "$@"
"""

# Runs ARGS as the original user with /dev/fuse replaced by a file of mode
# 000. $1 is the path for that file; OUTER_UID and OUTER_GID name the user.
WITHOUT_FUSE_ACCESS = r"""
set -e
blocker=$1
shift
: > "$blocker"
chmod 000 "$blocker"
mount --bind "$blocker" /dev/fuse
exec unshare -U --map-user="$OUTER_UID" --map-group="$OUTER_GID" "$@"
"""


@pytest.fixture(scope="module")
def unshare():
    path = shutil.which("unshare")
    if path is None:
        pytest.skip("util-linux unshare is not installed, so the tests cannot take features away")
    probe = run_command([path, "-Urm", "true"])
    if probe.returncode != 0:
        pytest.skip(f"unshare -Urm fails here, so the tests cannot take features away: {probe.stderr.strip()}")
    return path


def test_no_user_namespaces_exit(image, unshare):
    result = run_command([unshare, "-Ur", "sh", "-c",
                          'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
                          image.path, "fim-exec", "true"])
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_no_user_namespaces_message(image, unshare):
    result = run_command([unshare, "-Ur", "sh", "-c",
                          'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
                          image.path, "fim-exec", "true"])
    assert "max_user_namespaces" in result.stderr, result.describe()


def test_no_fuse_node_exit(image, unshare, tmp_path):
    result = run_command([unshare, "-Urm", "sh", "-c", WITHOUT_FUSE_NODE, "sh", tmp_path / "saved-dev",
                          image.path, "fim-exec", "true"])
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_no_fuse_node_message(image, unshare, tmp_path):
    result = run_command([unshare, "-Urm", "sh", "-c", WITHOUT_FUSE_NODE, "sh", tmp_path / "saved-dev",
                          image.path, "fim-exec", "true"])
    assert "/dev/fuse" in result.stderr, result.describe()
    assert "modprobe" in result.stderr, result.describe()


def test_no_fuse_access_exit(image, unshare, tmp_path):
    result = run_command([unshare, "-Urm", "sh", "-c", WITHOUT_FUSE_ACCESS, "sh", tmp_path / "blocker",
                          image.path, "fim-exec", "true"],
                         env=runtime_env({"OUTER_UID": os.getuid(), "OUTER_GID": os.getgid()}))
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_no_fuse_access_message(image, unshare, tmp_path):
    result = run_command([unshare, "-Urm", "sh", "-c", WITHOUT_FUSE_ACCESS, "sh", tmp_path / "blocker",
                          image.path, "fim-exec", "true"],
                         env=runtime_env({"OUTER_UID": os.getuid(), "OUTER_GID": os.getgid()}))
    assert "/dev/fuse" in result.stderr, result.describe()
    assert "chmod" in result.stderr, result.describe()
