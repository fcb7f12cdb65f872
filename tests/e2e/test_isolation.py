"""The container's view for a program: ids, privileges, namespaces and the filesystem."""

import os
import uuid
from pathlib import Path

import pytest

from conftest import copy_image, parse_mounts, parse_probe, subordinate_range

ZERO_CAPABILITIES = "0000000000000000"
DEVICE_NAMES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm")


@pytest.fixture(scope="module")
def probed_image(base_image, tmp_path_factory):
    return copy_image(base_image, tmp_path_factory.mktemp("isolation"))


@pytest.fixture(scope="module")
def exec_report(probed_image):
    result = probed_image.run("fim-exec", "fim-probe")
    assert result.returncode == 0, result.describe()
    return parse_probe(result.stdout)


@pytest.fixture(scope="module")
def root_report(probed_image):
    result = probed_image.run("fim-root", "fim-probe")
    assert result.returncode == 0, result.describe()
    return parse_probe(result.stdout)


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_exec_uid_map_single(exec_report, user):
    assert exec_report["uid_map"] == [f"{user.uid} {user.uid} 1"]


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_exec_gid_map_single(exec_report, user):
    assert exec_report["gid_map"] == [f"{user.gid} {user.gid} 1"]


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_root_uid_map_single(root_report, user):
    assert root_report["uid_map"] == [f"0 {user.uid} 1"]


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_root_gid_map_single(root_report, user):
    assert root_report["gid_map"] == [f"0 {user.gid} 1"]


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_exec_setgroups_denied(exec_report):
    assert exec_report["setgroups"] == ["deny"]


@pytest.mark.nosub
@pytest.mark.single_mapping
def test_root_setgroups_denied(root_report):
    assert root_report["setgroups"] == ["deny"]


def _outside_ranges(map_lines):
    ranges = []
    for line in map_lines:
        inside, outside, count = (int(field) for field in line.split())
        ranges.append((outside, count))
    return ranges


def _maps_outside_id(map_lines, outside_id):
    for line in map_lines:
        inside, outside, count = (int(field) for field in line.split())
        if outside <= outside_id < outside + count:
            return True
    return False


@pytest.mark.subordinate_range
def test_root_uid_map_subordinate(root_report, user):
    start, count = subordinate_range("/etc/subuid", user.name, user.uid)
    assert (start, count) in _outside_ranges(root_report["uid_map"]), root_report["uid_map"]


@pytest.mark.subordinate_range
def test_root_gid_map_subordinate(root_report, user):
    start, count = subordinate_range("/etc/subgid", user.name, user.uid)
    assert (start, count) in _outside_ranges(root_report["gid_map"]), root_report["gid_map"]


@pytest.mark.subordinate_range
def test_root_uid_map_includes_user(root_report, user):
    assert _maps_outside_id(root_report["uid_map"], user.uid), root_report["uid_map"]


@pytest.mark.subordinate_range
def test_exec_uid_map_includes_user(exec_report, user):
    assert _maps_outside_id(exec_report["uid_map"], user.uid), exec_report["uid_map"]


@pytest.mark.nosub
def test_exec_probe_uid(exec_report, user):
    assert exec_report["uid"] == [str(user.uid)]
    assert exec_report["euid"] == [str(user.uid)]


@pytest.mark.nosub
def test_root_probe_uid(root_report):
    assert root_report["uid"] == ["0"]
    assert root_report["euid"] == ["0"]


@pytest.mark.nosub
@pytest.mark.parametrize("field", ["CapInh", "CapPrm", "CapEff", "CapAmb"])
def test_exec_capabilities_dropped(exec_report, field):
    assert exec_report[field] == [ZERO_CAPABILITIES]


@pytest.mark.nosub
def test_exec_bounding_set_empty(exec_report):
    # "Drop all capabilities" includes the bounding set, as bwrap does for an
    # unprivileged user, so nothing can regain a capability later.
    assert exec_report["CapBnd"] == [ZERO_CAPABILITIES]


@pytest.mark.nosub
def test_exec_no_new_privs(exec_report):
    assert exec_report["NoNewPrivs"] == ["1"]


@pytest.mark.nosub
def test_root_has_capabilities(root_report):
    # Package managers under fim-root need CAP_CHOWN, CAP_DAC_OVERRIDE and
    # friends inside the user namespace.
    assert root_report["CapEff"] != [ZERO_CAPABILITIES]


@pytest.mark.nosub
def test_root_chown_system_user(image):
    result = image.run("fim-root", "chown", "42:42", "/fimtest/marker")
    assert result.returncode == 0, result.describe()


@pytest.mark.nosub
def test_root_setgroups_succeeds(image):
    result = image.run("fim-root", "fim-probe", "setgroups")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "setgroups_result=ok\n"


# The container's init and its FUSE serving threads take the first ids of
# the new pid namespace, so the program's pid is small but not fixed.
MAX_CONTAINER_PID = 100


def test_pid_namespace_small_pid(exec_report):
    assert int(exec_report["pid"][0]) <= MAX_CONTAINER_PID, exec_report["pid"]


def test_pid_namespace_shell_pid(image):
    result = image.run("fim-exec", "sh", "-c", "echo $$")
    assert result.returncode == 0, result.describe()
    assert int(result.stdout) <= MAX_CONTAINER_PID, result.stdout


def test_pid_namespace_few_processes(exec_report):
    # The container contains at most an init process, the probe and its shell.
    assert len(exec_report["proc"]) <= 3, exec_report["proc"]


def test_pid_namespace_hides_host(exec_report):
    commands = [entry.split(" ", 1)[1] for entry in exec_report["proc"]]
    assert not any("python" in command or "pytest" in command for command in commands), commands


def test_proc_is_procfs(exec_report):
    mounts = parse_mounts(exec_report)
    assert mounts["/proc"][0] == "proc", mounts.get("/proc")


def test_root_is_overlay(exec_report):
    mounts = parse_mounts(exec_report)
    assert mounts["/"][0] == "overlay", mounts.get("/")


def test_root_overlay_userxattr(exec_report):
    mounts = parse_mounts(exec_report)
    assert "userxattr" in mounts["/"][2], mounts.get("/")


@pytest.fixture(scope="module")
def dev_entries(probed_image):
    result = probed_image.run("fim-exec", "ls", "-a", "/dev")
    assert result.returncode == 0, result.describe()
    return result.stdout.split()


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_dev_entry_present(dev_entries, name):
    assert name in dev_entries, dev_entries


@pytest.mark.parametrize("name", ["null", "zero", "full", "random", "urandom", "tty", "ptmx"])
def test_dev_entry_is_char_device(image, name):
    result = image.run("fim-exec", "test", "-c", f"/dev/{name}")
    assert result.returncode == 0, f"/dev/{name} is not a character device: {result.describe()}"


def test_dev_null_discards(image):
    result = image.run("fim-exec", "sh", "-c", "echo x > /dev/null && cat /dev/null")
    assert result.returncode == 0, result.describe()
    assert result.stdout == ""


def test_dev_zero_reads_zeros(image):
    result = image.run("fim-exec", "sh", "-c", "head -c 4 /dev/zero | od -An -tx1")
    assert result.returncode == 0, result.describe()
    assert result.stdout.split() == ["00", "00", "00", "00"]


def test_dev_full_write_fails(image):
    result = image.run("fim-exec", "sh", "-c", "echo x > /dev/full")
    assert result.returncode != 0, result.describe()


def test_dev_has_no_host_devices(dev_entries):
    # A minimal /dev contains no disks or consoles of the host.
    unexpected = [name for name in dev_entries if name.startswith(("sd", "vd", "nvme", "loop", "tty0", "mem"))]
    assert unexpected == []


def test_dev_pts_private(exec_report):
    mounts = parse_mounts(exec_report)
    assert mounts["/dev/pts"][0] == "devpts", mounts.get("/dev/pts")


def test_dev_shm_writable(image):
    result = image.run("fim-exec", "sh", "-c", "echo x > /dev/shm/fim-test && cat /dev/shm/fim-test")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "x\n"


def test_sys_read_only_mount(exec_report):
    mounts = parse_mounts(exec_report)
    assert "ro" in mounts["/sys"][1], mounts.get("/sys")


def test_sys_write_fails(image):
    result = image.run("fim-root", "sh", "-c", "touch /sys/fim-test")
    assert result.returncode != 0, result.describe()


def test_sys_readable(image):
    result = image.run("fim-exec", "cat", "/sys/kernel/uevent_seqnum")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip().isdigit(), result.stdout


def test_tmp_is_tmpfs(exec_report):
    mounts = parse_mounts(exec_report)
    assert mounts["/tmp"][0] == "tmpfs", mounts.get("/tmp")


def test_tmp_write_not_on_host(image):
    name = f"fim-private-{uuid.uuid4().hex}"
    result = image.run("fim-exec", "sh", "-c", f"echo x > /tmp/{name} && cat /tmp/{name}")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "x\n"
    assert not Path("/tmp", name).exists()


def test_tmp_hides_host_files(image, tmp_path):
    # tmp_path is under the host's /tmp.
    marker = tmp_path / "host-marker"
    marker.write_text("host\n")
    result = image.run("fim-exec", "test", "-e", marker)
    assert result.returncode == 1, result.describe()


def test_tmp_empty_between_runs(image):
    written = image.run("fim-exec", "sh", "-c", "echo x > /tmp/fim-leftover")
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "test", "-e", "/tmp/fim-leftover")
    assert result.returncode == 1, result.describe()


@pytest.mark.parametrize("name", ["resolv.conf", "hosts"])
def test_host_network_file(image, name):
    host_path = Path("/etc", name)
    if not host_path.is_file():
        pytest.skip(f"the host has no {host_path}")
    result = image.run("fim-exec", "cat", host_path)
    assert result.returncode == 0, result.describe()
    assert result.stdout == host_path.read_text()


@pytest.fixture(scope="module")
def passwd_lines(probed_image):
    result = probed_image.run("fim-exec", "cat", "/etc/passwd")
    assert result.returncode == 0, result.describe()
    return result.stdout.splitlines()


@pytest.mark.nosub
def test_passwd_keeps_image_root(passwd_lines):
    assert any(line.startswith("root:x:0:0:") for line in passwd_lines), passwd_lines


@pytest.mark.nosub
def test_passwd_keeps_image_nobody(passwd_lines):
    # The busybox tree from tools/mkrootfs-busybox.sh has a nobody entry.
    assert any(line.startswith("nobody:") for line in passwd_lines), passwd_lines


@pytest.mark.nosub
def test_passwd_adds_user(passwd_lines, user):
    entries = [line.split(":") for line in passwd_lines]
    assert any(fields[0] == user.name and fields[2] == str(user.uid) for fields in entries), passwd_lines


@pytest.mark.nosub
def test_group_keeps_image_root(image):
    result = image.run("fim-exec", "cat", "/etc/group")
    assert result.returncode == 0, result.describe()
    assert any(line.startswith("root:x:0:") for line in result.stdout.splitlines()), result.stdout


@pytest.mark.nosub
def test_group_adds_user_group(image, user):
    result = image.run("fim-exec", "cat", "/etc/group")
    assert result.returncode == 0, result.describe()
    entries = [line.split(":") for line in result.stdout.splitlines()]
    assert any(fields[0] == user.group and fields[2] == str(user.gid) for fields in entries), result.stdout


@pytest.mark.nosub
def test_whoami_exec(image, user):
    result = image.run("fim-exec", "whoami")
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{user.name}\n"


@pytest.mark.nosub
def test_whoami_root(image):
    result = image.run("fim-root", "whoami")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "root\n"


@pytest.mark.nosub
def test_stat_shows_owner_name(image, user):
    # busybox ls -l cuts names to 8 characters, so stat shows the full name.
    result = image.run("fim-exec", "stat", "-c", "%U:%G", "/fimtest/marker")
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{user.name}:{user.group}\n"


def test_host_files_not_visible(image):
    # The Python running these tests exists on the host but not in the busybox image.
    result = image.run("fim-exec", "test", "-e", "/usr/bin/python3")
    assert result.returncode == 1, result.describe()


def test_host_pid_not_visible(image):
    # The pytest process has a large pid, which the container's pid namespace does not reach.
    result = image.run("fim-exec", "test", "-e", f"/proc/{os.getpid()}")
    assert result.returncode == 1, result.describe()
