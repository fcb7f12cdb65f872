"""Ownership of layer files and copy-up of files owned by ids that are not mapped."""

import pytest

OVERFLOW_ID = "65534"


@pytest.mark.nosub
def test_exec_root_file_owner(image, user):
    result = image.run("fim-exec", "stat", "-c", "%u", "/bin/busybox")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.uid)


@pytest.mark.nosub
def test_exec_root_file_group(image, user):
    result = image.run("fim-exec", "stat", "-c", "%g", "/bin/busybox")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.gid)


@pytest.mark.nosub
def test_root_root_file_owner(image):
    result = image.run("fim-root", "stat", "-c", "%u:%g", "/bin/busybox")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "0:0"


# Mount points of host files and kernel filesystems keep their host owner.
# There, a host root without a mapping shows as 65534, as under bwrap.
HOST_MOUNT_POINTS = {"/etc/hosts", "/etc/resolv.conf", "/proc", "/sys"}


@pytest.mark.nosub
def test_exec_no_overflow_owner(image):
    result = image.run("fim-exec", "sh", "-c", "find / -xdev -user 65534; find / -xdev -group 65534")
    assert result.returncode == 0, result.describe()
    overflowed = sorted(set(result.stdout.split()) - HOST_MOUNT_POINTS)
    assert overflowed == []


@pytest.mark.nosub
def test_exec_other_owner(image, user, needs_root_tree):
    result = image.run("fim-exec", "stat", "-c", "%u", "/fimtest-root/other-owner")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.uid)


@pytest.mark.nosub
def test_root_other_owner_not_overflow(image, needs_root_tree):
    result = image.run("fim-root", "stat", "-c", "%u", "/fimtest-root/other-owner")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() != OVERFLOW_ID


@pytest.mark.nosub
def test_exec_shared_file_writable(image, needs_root_tree):
    result = image.run("fim-exec", "sh", "-c",
                       "echo changed >> /fimtest-root/shared-file && cat /fimtest-root/shared-file")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "original\nchanged\n"


@pytest.mark.nosub
def test_exec_shared_dir_create(image, needs_root_tree):
    result = image.run("fim-exec", "sh", "-c",
                       "echo new > /fimtest-root/shared-dir/new && cat /fimtest-root/shared-dir/new")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "new\n"


@pytest.mark.nosub
def test_exec_shared_dir_remove(image, needs_root_tree):
    result = image.run("fim-exec", "rm", "/fimtest-root/shared-dir/inside")
    assert result.returncode == 0, result.describe()
    listing = image.run("fim-exec", "ls", "-A", "/fimtest-root/shared-dir")
    assert listing.stdout == "", listing.describe()


@pytest.mark.nosub
def test_exec_other_owner_copy_up(image, needs_root_tree):
    # Copy-up of a file whose owner has no mapping fails with EOVERFLOW when
    # the runtime passes the real owner through.
    result = image.run("fim-exec", "sh", "-c",
                       "echo changed >> /fimtest-root/other-owner && cat /fimtest-root/other-owner")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "original\nchanged\n"


@pytest.mark.nosub
def test_root_private_file_writable(image, needs_root_tree):
    result = image.run("fim-root", "sh", "-c",
                       "echo changed >> /fimtest-root/private-file && cat /fimtest-root/private-file")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "original\nchanged\n"


@pytest.mark.nosub
def test_copy_up_keeps_mode(image, needs_root_tree):
    result = image.run("fim-exec", "sh", "-c",
                       "echo changed >> /fimtest-root/shared-file && stat -c %a /fimtest-root/shared-file")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "666"


@pytest.mark.nosub
def test_exec_new_file_owner(image, user, needs_root_tree):
    result = image.run("fim-exec", "sh", "-c", "touch /fimtest-root/shared-dir/mine && stat -c %u /fimtest-root/shared-dir/mine")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.uid)


@pytest.mark.nosub
def test_copy_up_persists(image, needs_root_tree):
    written = image.run("fim-exec", "sh", "-c", "echo changed >> /fimtest-root/shared-file")
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "cat", "/fimtest-root/shared-file")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "original\nchanged\n"
