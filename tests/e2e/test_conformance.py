"""Overlay conformance: the same file system behaviour in every overlay mode.

Each test runs once per mode (bwrap, overlayfs, unionfs) against one shared
image and its own data directory, and expects the kernel overlayfs result of
the bwrap mode. Where a helper program cannot match it and the runtime cannot
configure it to, the test pins the helper's actual behaviour under a comment
that names the helper and the difference.

Environment variables, besides those of conftest.py:
  FIM_FSOPS  static fim-fsops program (default: build/tests/fim-fsops)
"""

import os
import stat

import pytest

from conftest import RUN_TIMEOUT, build_image, parse_probe, write_tree

MODES = ("bwrap", "overlayfs", "unionfs")
FUSE_MODES = ("overlayfs", "unionfs")

# Seconds for a run that copies more than 1 GiB through the overlay.
LARGE_COPY_TIMEOUT = 600

# Names of the helpers' internal markers, which programs must never see.
MARKER_PREFIXES = (".wh.",)
MARKER_NAMES = (".unionfs-fuse", ".unionfs")
MARKER_SUFFIXES = ("_HIDDEN~",)

# squashfs stores whole seconds, so the layer's mtime has no fraction.
LAYER_MTIME = 981173106
LAYER_MTIME_NS = LAYER_MTIME * 1_000_000_000

# Entries of the large lower directories.
TEN_THOUSAND = 10_000
THIRTY_THOUSAND = 30_000

SPARSE_SIZE = 1100 * 1024 * 1024


class Container:
    """Runs shell scripts in one image with one overlay mode and one data directory."""

    def __init__(self, image, mode, data_dir):
        self.image = image
        self.mode = mode
        self.data_dir = data_dir

    def __repr__(self):
        return f"Container({self.mode!r}, {str(self.data_dir)!r})"

    def with_mode(self, mode):
        """Return a Container for the same image and data directory in another mode."""
        return Container(self.image, mode, self.data_dir)

    def run(self, script, command="fim-exec", timeout=RUN_TIMEOUT):
        env = {"FIM_OVERLAY": self.mode, "FIM_DIR_DATA": self.data_dir}
        return self.image.run(command, "sh", "-c", script, env=env, timeout=timeout)

    def output(self, script, command="fim-exec", timeout=RUN_TIMEOUT):
        """Run script, fail the test unless it exits 0, and return its stdout."""
        result = self.run(script, command=command, timeout=timeout)
        assert result.returncode == 0, f"mode {self.mode}: {script}\n{result.describe()}"
        return result.stdout

    def lstat(self, *paths, command="fim-exec"):
        """Return {path: {field: value}} from `fim-fsops lstat` inside the container."""
        quoted = " ".join(f"'{path}'" for path in paths)
        lines = self.output(f"fim-fsops lstat {quoted}", command=command).splitlines()
        assert len(lines) == len(paths), f"mode {self.mode}: expected {len(paths)} lines, got {lines}"
        return {path: dict(field.split("=", 1) for field in line.split()) for path, line in zip(paths, lines)}


def make_lower_tree(root, fsops):
    """Write the lower layer: fim-fsops and one directory per test under /w, large directories under /big."""
    write_tree(root, {
        "w/attrs/file": ("original\n", 0o640),
        "w/attrs/plain": "plain\n",
        "w/del/file": "old\n",
        "w/del/other": "other\n",
        "w/gone/x": "x\n",
        "w/gone/y": "y\n",
        "w/gone/sub/z": "z\n",
        "w/dir/f1": "1\n",
        "w/dir/f2": "2\n",
        "w/dir/f3": "3\n",
        "w/a/b/c/file": "file\n",
        "w/links/h1": "link\n",
        "w/ren/file": "moved\n",
        "w/ren/target": "replaced\n",
        "w/ren/tree/top": "top\n",
        "w/ren/tree/in/deep": "deep\n",
        "w/ops/chmod": "chmod\n",
        "w/ops/trunc": "0123456789\n",
        "w/ops/mmap": "0123456789\n",
        "w/ops/lock": "lock\n",
        "w/sw/keep.txt": "keep\n",
        "w/sw/mod.txt": "base\n",
        "w/sw/del1.txt": "d1\n",
        "w/sw/del2.txt": "d2\n",
        "w/sw/del3.txt": "d3\n",
        "w/sw/op1/a": "a1\n",
        "w/sw/op1/b/c": "c1\n",
        "w/sw/op2/a": "a2\n",
        "w/sw/op3/a": "a3\n",
        "w/sw/ren1.txt": "r1\n",
        "w/sw/ren2.txt": "r2\n",
        "w/sw/ren3.txt": "r3\n",
    })
    listed_files = {f"e{number:02d}": f"{number}\n" for number in range(20)}
    write_tree(root / "w" / "list", {**listed_files, "sub/inner": "inner\n"})

    os.link(root / "w/links/h1", root / "w/links/h2")

    attrs_file = root / "w/attrs/file"
    try:
        os.setxattr(attrs_file, "user.test", b"value")
    except OSError as error:
        pytest.fail(f"setting a user xattr on {attrs_file} failed: {error}; run the tests on a file system "
                    "with user xattrs (ext4, xfs, btrfs, tmpfs)")
    os.utime(attrs_file, ns=(LAYER_MTIME_NS, LAYER_MTIME_NS))

    for count, name in ((TEN_THOUSAND, "tenk"), (THIRTY_THOUSAND, "many")):
        directory = root / "big" / name
        directory.mkdir(parents=True)
        for number in range(count):
            (directory / f"f{number:05d}").touch()

    target = root / "usr/local/bin/fim-fsops"
    target.parent.mkdir(parents=True)
    target.write_bytes(fsops.read_bytes())
    target.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def conformance_image(runtime, busybox_rootfs, root_tree, fsops, tmp_path_factory):
    """Busybox image with fim-fsops and the lower files of every test in this module."""
    directory = tmp_path_factory.mktemp("conformance")
    lower = make_lower_tree(directory / "lower", fsops)
    layers = [busybox_rootfs, lower]
    if root_tree is not None:
        layers.append(root_tree)
    return build_image(runtime, directory, "conformance", layers)


@pytest.fixture(params=MODES)
def container(request, conformance_image, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Container(conformance_image, request.param, data_dir)


def sorted_lines(text):
    return sorted(text.splitlines())


def is_marker_name(name):
    return name.startswith(MARKER_PREFIXES) or name in MARKER_NAMES or name.endswith(MARKER_SUFFIXES)


def upper_format_problems(data_dir):
    """Return a description of each entry in data_dir's upper directory that breaks the kernel overlay format."""
    problems = []
    state_file = data_dir / "upper.format"
    # The runtime reads a missing state file as canonical.
    if state_file.exists() and state_file.read_text() != "canonical\n":
        problems.append(f"{state_file} reads {state_file.read_text()!r}")
    upper = data_dir / "upper"
    for directory, subdirectories, files in os.walk(upper):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            if is_marker_name(name):
                problems.append(f"marker name {path}")
            for attribute in os.listxattr(path, follow_symlinks=False):
                if attribute.startswith(("user.fuseoverlayfs.", "user.unionfs")):
                    problems.append(f"helper xattr {attribute} on {path}")
    return problems


def is_whiteout(path):
    info = os.lstat(path)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0)


# Create, overwrite, append and copy-up attributes.


def test_create_new_file(container):
    assert container.output("echo created > /w/attrs/new && cat /w/attrs/new") == "created\n"
    assert container.output("cat /w/attrs/new") == "created\n"


def test_overwrite_lower_file(container):
    assert container.output("echo replaced > /w/attrs/plain && cat /w/attrs/plain") == "replaced\n"
    assert container.output("cat /w/attrs/plain") == "replaced\n"


def test_append_lower_file(container):
    assert container.output("echo more >> /w/attrs/plain && cat /w/attrs/plain") == "plain\nmore\n"
    assert container.output("cat /w/attrs/plain") == "plain\nmore\n"


def test_copy_up_keeps_mode(container):
    container.output("echo more >> /w/attrs/file")
    assert container.lstat("/w/attrs/file")["/w/attrs/file"]["mode"] == "0640"


def test_copy_up_keeps_owner(container):
    container.output("echo more >> /w/attrs/file")
    info = container.lstat("/w/attrs/file")["/w/attrs/file"]
    assert info["uid"] == str(os.getuid())
    assert info["gid"] == str(os.getgid())


def test_copy_up_keeps_mtime(container):
    # chmod copies the file up without writing to it, so the mtime must stay.
    container.output("chmod 0600 /w/attrs/file")
    assert container.lstat("/w/attrs/file")["/w/attrs/file"]["mtime_ns"] == str(LAYER_MTIME_NS)


def test_copy_up_keeps_xattr(container):
    result = container.run("echo more >> /w/attrs/file && fim-fsops getxattr /w/attrs/file user.test")
    if container.mode == "unionfs":
        # unionfs-fuse 1.0 (Debian 12) fails every xattr call with EOPNOTSUPP.
        assert result.stdout == "getxattr EOPNOTSUPP\n", result.describe()
    else:
        assert result.stdout == "value\n", result.describe()


def test_copy_up_xattr_after_switch(container):
    # The copy made in one mode is read back in the kernel mode.
    container.output("echo more >> /w/attrs/file")
    result = container.with_mode("bwrap").run("fim-fsops getxattr /w/attrs/file user.test")
    if container.mode == "unionfs":
        # unionfs-fuse 1.0 copies a file up without its xattrs, so they are
        # lost for every later run, whatever its mode.
        assert result.stdout == "getxattr ENODATA\n", result.describe()
    else:
        assert result.stdout == "value\n", result.describe()


def test_setxattr_persists(container):
    result = container.run("fim-fsops setxattr /w/attrs/plain user.added new")
    if container.mode == "unionfs":
        # unionfs-fuse 1.0 (Debian 12) fails every xattr call with EOPNOTSUPP.
        assert result.stdout == "setxattr EOPNOTSUPP\n", result.describe()
        return
    assert result.stdout == "ok\n", result.describe()
    assert container.output("fim-fsops getxattr /w/attrs/plain user.added") == "new\n"


@pytest.mark.subordinate_range
def test_copy_up_root_owner(container, root_tree):
    if root_tree is None:
        pytest.skip("FIM_ROOT_TREE is unset and the tests do not run as root, so no layer has files of "
                    "uid 4242; run the suite through tests/run-e2e.sh")
    container.output("echo more >> /fimtest-root/other-owner", command="fim-root")
    info = container.lstat("/fimtest-root/other-owner", command="fim-root")["/fimtest-root/other-owner"]
    assert info["uid"] == "4242"
    assert info["gid"] == "4242"
    assert container.output("cat /fimtest-root/other-owner", command="fim-root") == "original\nmore\n"


# Deletion and readdir.


def test_delete_lower_file(container):
    assert container.run("rm /w/del/file && test ! -e /w/del/file").returncode == 0
    assert container.run("test -e /w/del/file").returncode == 1
    assert container.output("ls -A /w/del") == "other\n"


def test_delete_then_recreate(container):
    assert container.output("rm /w/del/file && echo new > /w/del/file && cat /w/del/file") == "new\n"
    assert container.output("cat /w/del/file") == "new\n"


def test_rm_rf_recreate_empty(container):
    assert container.output("rm -rf /w/gone && mkdir /w/gone && ls -A /w/gone") == ""
    assert container.output("ls -A /w/gone") == ""


def test_rm_rf_recreate_nested(container):
    # The layer contains /w/a/b/c/file, and recreating the path must not bring it back.
    script = "rm -rf /w/a && mkdir -p /w/a/b/c && ls -A /w/a/b/c"
    assert container.output(script) == ""
    assert container.output("ls -A /w/a/b/c") == ""
    assert container.output("ls -A /w/a /w/a/b") == "/w/a:\nb\n\n/w/a/b:\nc\n"


def test_readdir_after_deletions(container):
    expected = [f"e{number:02d}" for number in range(10, 20)]
    listed = container.output("rm /w/list/e0* && rm -rf /w/list/sub && ls -A /w/list")
    assert sorted_lines(listed) == expected
    assert sorted_lines(container.output("ls -A /w/list")) == expected


def test_no_markers_visible(container):
    script = "rm /w/del/file && rm -rf /w/gone && mkdir /w/gone && fim-fsops markers /w"
    assert container.output(script) == ""
    assert container.output("fim-fsops markers /w") == ""
    names = container.output("ls -A / /w /w/gone").split()
    assert [name for name in names if is_marker_name(name)] == []


def test_unionfs_meta_dir_by_name(container):
    container.output("rm /w/del/file")
    result = container.run("ls -A /.unionfs-fuse/w/del")
    if container.mode == "unionfs":
        # unionfs-fuse 1.0: hide_meta_files hides .unionfs-fuse from readdir
        # only, so a lookup by name still finds it and the markers below it.
        assert result.stdout == "file_HIDDEN~\n", result.describe()
    else:
        assert result.returncode == 1, result.describe()


def test_upper_canonical_after_run(container):
    container.output("rm /w/del/file && rm -rf /w/gone && mkdir /w/gone")
    upper = container.data_dir / "upper"
    assert upper_format_problems(container.data_dir) == []
    assert is_whiteout(upper / "w/del/file")
    assert os.getxattr(upper / "w/gone", "user.overlay.opaque") == b"y"


# Rename across layers.


def test_rename_lower_file(container):
    assert container.output("mv /w/ren/file /w/moved && cat /w/moved") == "moved\n"
    assert container.output("cat /w/moved") == "moved\n"
    assert container.run("test -e /w/ren/file").returncode == 1


def test_rename_over_lower_file(container):
    assert container.output("echo upper > /w/ren/new && mv /w/ren/new /w/ren/target && cat /w/ren/target") == "upper\n"
    assert container.output("cat /w/ren/target") == "upper\n"
    assert container.run("test -e /w/ren/new").returncode == 1


def test_rename_lower_dir(container):
    expected = ["/w/tree-moved", "/w/tree-moved/in", "/w/tree-moved/in/deep", "/w/tree-moved/top"]
    assert sorted_lines(container.output("mv /w/ren/tree /w/tree-moved && find /w/tree-moved")) == expected
    assert sorted_lines(container.output("find /w/tree-moved")) == expected
    assert container.output("cat /w/tree-moved/in/deep") == "deep\n"
    assert container.run("test -e /w/ren/tree").returncode == 1


def test_rename_copied_up_dir(container):
    # The layer contains /w/dir/f1, f2 and f3. f2 is copied up before the directory moves.
    # unionfs-fuse 1.0 would move only its writable copy and lose f1 and f3;
    # the runtime returns EXDEV for directory renames in that mode, so mv
    # copies the directory instead.
    listed = container.output("echo hello > /w/dir/f2 && mv /w/dir /w/other && ls /w/other")
    assert listed == "f1\nf2\nf3\n"
    assert container.output("ls /w/other") == "f1\nf2\nf3\n"
    assert container.output("cat /w/other/f2") == "hello\n"
    assert container.run("test -e /w/dir").returncode == 1


# Hard links, symlinks, fifos and sockets.


def test_lower_hard_links(container):
    # The layer contains /w/links/h1 and /w/links/h2 as one inode.
    before = container.lstat("/w/links/h1", "/w/links/h2")
    assert before["/w/links/h1"]["ino"] == before["/w/links/h2"]["ino"]
    assert before["/w/links/h1"]["nlink"] == "2"
    assert before["/w/links/h2"]["nlink"] == "2"

    appended = container.output("echo x >> /w/links/h1 && cat /w/links/h1 && echo -- && cat /w/links/h2")
    next_run = container.output("cat /w/links/h1 && echo -- && cat /w/links/h2")
    if container.mode == "overlayfs":
        # fuse-overlayfs 1.10 keeps the link within the run but stores the
        # copy under one name only (h2 here), so the next run shows the
        # lower content under h1.
        assert appended == "link\nx\n--\nlink\nx\n"
        assert next_run == "link\n--\nlink\nx\n"
    else:
        # Kernel overlayfs keeps lower hard links across copy-up only with
        # index=on, which Linux 6.18 drops without an error when userxattr is
        # set (checked in /proc/self/mountinfo), and a user namespace needs
        # userxattr. unionfs-fuse 1.0 also copies up only the name written to.
        assert appended == "link\nx\n--\nlink\n"
        assert next_run == "link\nx\n--\nlink\n"


def test_new_hard_link(container):
    container.output("echo one > /w/n1 && ln /w/n1 /w/n2")
    both = container.lstat("/w/n1", "/w/n2")
    assert both["/w/n1"]["ino"] == both["/w/n2"]["ino"]
    assert both["/w/n1"]["nlink"] == "2"
    assert both["/w/n2"]["nlink"] == "2"
    assert container.output("echo two >> /w/n1 && cat /w/n2") == "one\ntwo\n"


def test_new_hard_link_same_run(container):
    # The first name's link count must change as soon as the link exists,
    # without waiting for any attribute cache to expire.
    listed = container.output("echo one > /w/n1 && ln /w/n1 /w/n2 && fim-fsops lstat /w/n1")
    assert " nlink=2 " in listed


def test_symlink(container):
    assert container.output("ln -s ren/file /w/link && readlink /w/link && cat /w/link") == "ren/file\nmoved\n"
    assert container.output("readlink /w/link") == "ren/file\n"
    assert container.lstat("/w/link")["/w/link"]["type"] == "lnk"


def test_fifo(container):
    script = "mkfifo /w/pipe && (echo through > /w/pipe &) && cat /w/pipe"
    assert container.output(script) == "through\n"
    assert container.lstat("/w/pipe")["/w/pipe"]["type"] == "fifo"


def test_unix_socket(container):
    assert container.output("fim-fsops socket /w/sock") == "received=ping\n"
    assert container.lstat("/w/sock")["/w/sock"]["type"] == "sock"


# chmod, truncate, mmap, O_TMPFILE and locks.


def test_chmod_lower_file(container):
    container.output("chmod 0604 /w/ops/chmod")
    assert container.lstat("/w/ops/chmod")["/w/ops/chmod"]["mode"] == "0604"
    assert container.output("cat /w/ops/chmod") == "chmod\n"


def test_truncate_lower_file(container):
    assert container.output("truncate -s 4 /w/ops/trunc && cat /w/ops/trunc") == "0123"
    assert container.output("cat /w/ops/trunc") == "0123"
    assert container.lstat("/w/ops/trunc")["/w/ops/trunc"]["size"] == "4"


def test_mmap_write_lower_file(container):
    assert container.output("fim-fsops mmapwrite /w/ops/mmap 2 ab") == "ab\n"
    assert container.output("cat /w/ops/mmap") == "01ab456789\n"


def test_tmpfile_linkat(container):
    result = container.run("fim-fsops tmpfile /w made hello && cat /w/made")
    if container.mode in FUSE_MODES:
        # On Linux 6.18, O_TMPFILE fails with EOPNOTSUPP on the mounts of
        # fuse-overlayfs 1.10 (libfuse 3.14) and unionfs-fuse 1.0 (libfuse 2.9).
        assert result.stdout == "open EOPNOTSUPP\n", result.describe()
        return
    assert result.stdout == "ok\nhello", result.describe()
    assert container.output("cat /w/made") == "hello"


def test_flock(container):
    assert container.output("fim-fsops flock /w/ops/lock") == "conflict=EAGAIN\nok\n"


def test_posix_lock(container):
    assert container.output("fim-fsops posixlock /w/ops/lock") == "conflict=EAGAIN\nok\n"


# Large directories.


def test_directory_10000_new(container):
    script = "mkdir /w/new10k && cd /w/new10k && seq -w 0 9999 | sed 's/^/f/' | xargs touch && ls -A | wc -l"
    assert container.output(script, timeout=120).strip() == str(TEN_THOUSAND)
    assert container.output("ls -A /w/new10k | wc -l").strip() == str(TEN_THOUSAND)


def test_directory_10000_lower(container):
    assert container.output("ls -A /big/tenk | wc -l").strip() == str(TEN_THOUSAND)
    remaining = str(TEN_THOUSAND - 100)
    assert container.output("rm /big/tenk/f000* && ls -A /big/tenk | wc -l").strip() == remaining
    assert container.output("ls -A /big/tenk | wc -l").strip() == remaining
    assert container.output("ls -A /big/tenk | grep -c '^f000' || true").strip() == "0"


def test_stat_many_names(container, capsys, record_property):
    # stat 200 names spread over a lower directory of 30,000 entries, then
    # 200 other names in the same run. Only the results are asserted, and the
    # times are printed and recorded for comparison between modes.
    output = container.output("fim-fsops statmany /big/many 200 150 && fim-fsops statmany /big/many 200 149",
                              timeout=120)
    values = parse_probe(output)
    assert values["found"] == ["200", "200"]
    first, second = values["seconds"]
    record_property("stat_first_seconds", first)
    record_property("stat_second_seconds", second)
    with capsys.disabled():
        print(f"\n[{container.mode}] stat of 200 names in 30,000 entries: first {first} s, again {second} s")


# Mode switching on one data directory.

# Each step runs in one mode, and then the view must read the same in every mode.
SWITCH_STEPS = (
    ("rm del1.txt && rm -rf op1 && mkdir op1 && echo n1 > op1/n && mv ren1.txt ren1-moved.txt"
     " && echo step1 >> mod.txt && echo new1 > new1.txt"),
    ("rm del2.txt && rm -rf op2 && mkdir op2 && echo n2 > op2/n && mv ren2.txt ren2-moved.txt"
     " && echo step2 >> mod.txt && echo again > del1.txt && rm new1.txt && echo new2 > new2.txt"),
    ("rm del3.txt && rm -rf op3 && mkdir op3 && echo n3 > op3/n && mv ren3.txt ren3-moved.txt"
     " && echo step3 >> mod.txt && rm del1.txt && rm -rf op1 && mkdir op1 && echo m1 > op1/m"),
    ("echo step4 >> mod.txt && rm keep.txt && rm -rf op2 && mkdir -p op2/b && echo deep > op2/b/c"
     " && rm -rf op1 && mkdir -p op1/b"),
)

# The view of /w/sw after each step: path -> file content, or None for a directory.
SWITCH_VIEWS = (
    {
        "keep.txt": "keep", "mod.txt": "base|step1", "del2.txt": "d2", "del3.txt": "d3",
        "op1": None, "op1/n": "n1", "op2": None, "op2/a": "a2", "op3": None, "op3/a": "a3",
        "ren1-moved.txt": "r1", "ren2.txt": "r2", "ren3.txt": "r3", "new1.txt": "new1",
    },
    {
        "keep.txt": "keep", "mod.txt": "base|step1|step2", "del1.txt": "again", "del3.txt": "d3",
        "op1": None, "op1/n": "n1", "op2": None, "op2/n": "n2", "op3": None, "op3/a": "a3",
        "ren1-moved.txt": "r1", "ren2-moved.txt": "r2", "ren3.txt": "r3", "new2.txt": "new2",
    },
    {
        "keep.txt": "keep", "mod.txt": "base|step1|step2|step3",
        "op1": None, "op1/m": "m1", "op2": None, "op2/n": "n2", "op3": None, "op3/n": "n3",
        "ren1-moved.txt": "r1", "ren2-moved.txt": "r2", "ren3-moved.txt": "r3", "new2.txt": "new2",
    },
    {
        "mod.txt": "base|step1|step2|step3|step4",
        "op1": None, "op1/b": None, "op2": None, "op2/b": None, "op2/b/c": "deep", "op3": None, "op3/n": "n3",
        "ren1-moved.txt": "r1", "ren2-moved.txt": "r2", "ren3-moved.txt": "r3", "new2.txt": "new2",
    },
)

# Print "PATH<TAB>CONTENT" for files, with newlines in the content as |, and
# "PATH/" for directories.
VIEW_SCRIPT = r"""cd /w/sw && find . -mindepth 1 | sort | while read -r path; do
  if [ -d "$path" ]; then printf '%s/\n' "${path#./}"
  else printf '%s\t%s\n' "${path#./}" "$(tr '\n' '|' < "$path" | sed 's/|$//')"; fi
done"""


def read_view(container):
    view = {}
    for line in container.output(VIEW_SCRIPT).splitlines():
        if line.endswith("/"):
            view[line[:-1]] = None
        else:
            path, _, content = line.partition("\t")
            view[path] = content
    return view


@pytest.mark.parametrize("order", [
    pytest.param(("bwrap", "unionfs", "overlayfs", "bwrap"), id="bwrap-unionfs-overlayfs-bwrap"),
    pytest.param(("overlayfs", "bwrap", "unionfs", "overlayfs"), id="overlayfs-bwrap-unionfs-overlayfs"),
])
def test_mode_switch_same_view(conformance_image, tmp_path, order):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for step, (mode, script, expected) in enumerate(zip(order, SWITCH_STEPS, SWITCH_VIEWS), start=1):
        Container(conformance_image, mode, data_dir).output(f"cd /w/sw && {script}")
        assert upper_format_problems(data_dir) == [], f"after step {step} in {mode}"
        for reader in MODES:
            container = Container(conformance_image, reader, data_dir)
            assert read_view(container) == expected, f"after step {step} in {mode}, read in {reader}"
            assert container.output("fim-fsops markers /w") == "", f"after step {step} in {mode}, read in {reader}"


# Copy-up of a file larger than 1 GiB.


@pytest.fixture(scope="module")
def sparse_image(runtime, busybox_rootfs, fsops, tmp_path_factory):
    """Busybox image whose layer contains a sparse file of SPARSE_SIZE bytes, so the image stays small."""
    directory = tmp_path_factory.mktemp("sparse")
    lower = directory / "lower"
    (lower / "big").mkdir(parents=True)
    with open(lower / "big" / "sparse", "wb") as sparse:
        sparse.truncate(SPARSE_SIZE)
    target = lower / "usr/local/bin/fim-fsops"
    target.parent.mkdir(parents=True)
    target.write_bytes(fsops.read_bytes())
    target.chmod(0o755)
    return build_image(runtime, directory, "sparse", [busybox_rootfs, lower])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_copy_up_over_1gib(sparse_image, tmp_path, mode):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    container = Container(sparse_image, mode, data_dir)
    expected_size = str(SPARSE_SIZE + 2)

    copy = data_dir / "upper" / "big" / "sparse"
    try:
        container.output("echo x >> /big/sparse", timeout=LARGE_COPY_TIMEOUT)
        assert container.lstat("/big/sparse")["/big/sparse"]["size"] == expected_size
        assert container.output("tail -c 2 /big/sparse") == "x\n"
        assert copy.stat().st_size == SPARSE_SIZE + 2
    finally:
        # The copy may take 1.1 GB on disk, more than a kept tmp_path should hold.
        copy.unlink(missing_ok=True)
