"""fim-layer commit, layers from FIM_LAYERS and the data directory, and crash safety of image writes.

Environment variables, besides those of conftest.py:
  FIM_FSOPS  static fim-fsops program (default: build/tests/fim-fsops)
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (
    LAYER_TIMEOUT,
    RUN_TIMEOUT,
    RUNTIME_ERROR,
    build_image,
    copy_image,
    file_sha256,
    finish,
    kill_tree,
    parse_probe,
    process_stat_fields,
    run_command,
    runtime_env,
    wait_for_output,
    write_tree,
)

MODES = ("bwrap", "overlayfs", "unionfs")
HELPERS = {"overlayfs": "fuse-overlayfs", "unionfs": "unionfs"}
TARGETS = ("binary", "layer", "file")

SQUASHFS_MAGIC = b"hsqs"
LAYER_HEADER_SIZE = 8
BINARY_MESSAGE = "Filesystem appended to binary without errors\n"

# Files of the lower layer that the commit tests change.
LOWER_FILES = {
    "lower/deleted": "deleted\n",
    "lower/kept": "kept\n",
    "lower/emptied/a": "a\n",
    "lower/emptied/sub/b": "b\n",
    "lower/moved/inner/z": "z\n",
}


def needs_helper(mode):
    helper = HELPERS.get(mode)
    if helper is not None and shutil.which(helper) is None:
        pytest.skip(f"{helper} is not installed, so the {mode} mode cannot run")


@pytest.fixture(scope="module")
def commit_image(runtime, busybox_rootfs, tmp_path_factory):
    """Busybox image with the lower files in LOWER_FILES."""
    directory = tmp_path_factory.mktemp("commit")
    tree = write_tree(directory / "tree", LOWER_FILES)
    return build_image(runtime, directory, "commit", [busybox_rootfs, tree])


@pytest.fixture(scope="module")
def fsops_image(commit_image, fsops, tmp_path_factory):
    """The commit image with fim-fsops in /usr/local/bin as a further layer."""
    directory = tmp_path_factory.mktemp("fsops")
    tree = directory / "tree"
    target = tree / "usr" / "local" / "bin" / "fim-fsops"
    target.parent.mkdir(parents=True)
    shutil.copyfile(fsops, target)
    target.chmod(0o755)
    image = copy_image(commit_image, directory, "fsops")
    layer = directory / "fsops.layer"
    created = image.create_layer(tree, layer)
    assert created.returncode == 0, f"fim-layer create {tree} failed: {created.describe()}"
    added = image.add_layer(layer)
    assert added.returncode == 0, f"fim-layer add {layer} failed: {added.describe()}"
    return image


class App:
    """A private copy of the commit image and the data directory that every command gets in FIM_DIR_DATA."""

    def __init__(self, image, data_dir):
        self.image = image
        self.data_dir = Path(data_dir)

    @property
    def upper(self):
        return self.data_dir / "upper"

    @property
    def layers_dir(self):
        return self.data_dir / "layers"

    def env(self, extra=None):
        env = {"FIM_DIR_DATA": self.data_dir, "FIM_LAYERS": None}
        env.update(extra or {})
        return env

    def run(self, *args, env=None, timeout=RUN_TIMEOUT):
        return self.image.run(*args, env=self.env(env), timeout=timeout)

    def popen(self, *args, env=None):
        return self.image.popen(*args, env=self.env(env))

    def sh(self, script, command="fim-exec", env=None):
        """Run a shell script in the container and return its Result. Fail the test unless it exits with 0."""
        result = self.run(command, "sh", "-c", script, env=env)
        assert result.returncode == 0, f"{command} sh -c {script!r} failed: {result.describe()}"
        return result

    def commit(self, *args, env=None):
        return self.run("fim-layer", "commit", *args, env=env, timeout=LAYER_TIMEOUT)

    def list_layers(self, env=None):
        """Return (index, offset, size, path) tuples from `fim-layer list`. Fail the test on an error."""
        result = self.run("fim-layer", "list", env=env)
        assert result.returncode == 0, f"fim-layer list failed: {result.describe()}"
        layers = []
        for line in result.stdout.splitlines():
            index, offset, size, path = line.split(":", 3)
            layers.append((int(index), int(offset), int(size), path))
        return layers

    def upper_entries(self):
        """Return the paths in the writable layer on the host, relative to it."""
        return sorted(str(path.relative_to(self.upper)) for path in self.upper.rglob("*"))


@pytest.fixture
def app(commit_image, tmp_path):
    return App(copy_image(commit_image, tmp_path), tmp_path / "data")


@pytest.fixture
def fsops_app(fsops_image, tmp_path):
    return App(copy_image(fsops_image, tmp_path), tmp_path / "data")


def layer_file(app, directory, files, name):
    """Write files to a new tree and make the layer file NAME from it with `fim-layer create`."""
    tree = write_tree(directory / f"{name}.tree", files)
    path = directory / name
    result = app.image.create_layer(tree, path)
    assert result.returncode == 0, f"fim-layer create {tree} failed: {result.describe()}"
    return path


def remove_data_dir(app, target="binary"):
    """Delete the data directory. For the layer target, keep its committed layers, which are part of the image's view."""
    saved = app.data_dir.parent / "saved-layers"
    if target == "layer":
        app.layers_dir.rename(saved)
    shutil.rmtree(app.data_dir)
    if target == "layer":
        app.data_dir.mkdir()
        saved.rename(app.layers_dir)


def is_squashfs(path):
    with open(path, "rb") as file:
        return file.read(4) == SQUASHFS_MAGIC


# ---------------------------------------------------------------------------
# Deletions, emptied and renamed directories across the three backends

CROSS_MODE_CHANGES = "rm /lower/deleted && rm -rf /lower/emptied && mkdir /lower/emptied && mv /lower/moved /lower/renamed"

# Prints present=NAME for each name that exists, emptied-entry=NAME for what
# /lower/emptied contains, the renamed file's content, and a marker=,
# listed-marker= or device= line for every overlay marker that a program
# can see through find, ls or as a character device.
CROSS_MODE_VIEW = r"""
for name in deleted kept emptied moved renamed; do
    if [ -e "/lower/$name" ]; then echo "present=$name"; fi
done
for entry in $(ls -A /lower/emptied); do echo "emptied-entry=$entry"; done
echo "renamed-content=$(cat /lower/renamed/inner/z)"
find / -xdev \( -name '.wh.*' -o -name '.unionfs*' -o -name '*_HIDDEN~' \) -print | sed 's/^/marker=/'
ls -laR /lower | grep -e '\.wh\.' -e '\.unionfs' -e '_HIDDEN~' | sed 's/^/listed-marker=/'
find /lower -type c | sed 's/^/device=/'
"""

CROSS_MODE_PAIRS = [pytest.param(first, second, id=f"{first}-to-{second}") for first in MODES for second in MODES]


@pytest.fixture(scope="module")
def cross_mode_views(commit_image, tmp_path_factory):
    """Return a function: view(first, second) changes the lower files in mode first, commits them to a copy of
    the image, deletes the data directory and returns the parsed CROSS_MODE_VIEW in mode second.

    The tests of one pair check different conditions of the same view, so
    each pair runs once per module.
    """
    views = {}

    def view(first, second):
        needs_helper(first)
        needs_helper(second)
        if (first, second) not in views:
            directory = tmp_path_factory.mktemp(f"cross-{first}-{second}")
            app = App(copy_image(commit_image, directory), directory / "data")
            app.sh(CROSS_MODE_CHANGES, env={"FIM_OVERLAY": first})
            committed = app.commit("binary")
            assert committed.returncode == 0, committed.describe()
            remove_data_dir(app)
            views[first, second] = parse_probe(app.sh(CROSS_MODE_VIEW, env={"FIM_OVERLAY": second}).stdout)
        return views[first, second]

    return view


@pytest.mark.nosub
@pytest.mark.parametrize("first, second", CROSS_MODE_PAIRS)
def test_cross_mode_deleted_file(cross_mode_views, first, second):
    assert "deleted" not in cross_mode_views(first, second)["present"]


@pytest.mark.nosub
@pytest.mark.parametrize("first, second", CROSS_MODE_PAIRS)
def test_cross_mode_emptied_dir(cross_mode_views, first, second):
    view = cross_mode_views(first, second)
    assert "emptied" in view["present"]
    assert view["emptied-entry"] == []


@pytest.mark.nosub
@pytest.mark.parametrize("first, second", CROSS_MODE_PAIRS)
def test_cross_mode_renamed_dir(cross_mode_views, first, second):
    view = cross_mode_views(first, second)
    assert "moved" not in view["present"]
    assert view["renamed-content"] == ["z"]


@pytest.mark.nosub
@pytest.mark.parametrize("first, second", CROSS_MODE_PAIRS)
def test_cross_mode_no_markers(cross_mode_views, first, second):
    view = cross_mode_views(first, second)
    assert view["marker"] == []
    assert view["listed-marker"] == []
    assert view["device"] == []


@pytest.mark.nosub
@pytest.mark.parametrize("first, second", CROSS_MODE_PAIRS)
def test_cross_mode_lower_kept(cross_mode_views, first, second):
    assert "kept" in cross_mode_views(first, second)["present"]


# ---------------------------------------------------------------------------
# Round trip: the committed tree equals the tree in the writable layer

# Runs as root in the container and builds /rt. The directory timestamp is
# set last, because adding entries to a directory updates its mtime.
ROUND_TRIP_TREE = r"""
set -e
mkdir -p /rt/setgid /rt/sticky /rt/nested/deeper
chmod 2775 /rt/setgid
chmod 1777 /rt/sticky
printf 'plain\n' > /rt/plain
chmod 0640 /rt/plain
touch -d '2001-02-03 04:05:06' /rt/plain
printf 'setuid\n' > /rt/setuid
chmod 4755 /rt/setuid
printf 'in setgid\n' > /rt/setgid/inside
printf 'deep\n' > /rt/nested/deeper/executable
chmod 0711 /rt/nested/deeper/executable
: > /rt/empty
head -c 300000 /dev/urandom > /rt/random
ln -s plain /rt/link
ln -s /does/not/exist /rt/dangling
ln /rt/plain /rt/hardlink
mkfifo -m 0620 /rt/fifo
truncate -s 100M /rt/sparse
printf 'middle' | dd of=/rt/sparse bs=1 seek=52428800 conv=notrunc 2>/dev/null
fim-fsops setxattr /rt/plain user.fimtest.color blue >/dev/null
fim-fsops setxattr /rt/nested user.fimtest.kind directory >/dev/null
touch -d '1999-12-31 23:59:59' /rt/nested
"""

# Adds files owned by ids other than root. It needs a subordinate id range,
# because with a single mapped id the runtime fakes chown.
ROUND_TRIP_OWNERS = r"""
set -e
mkdir /rt/owned
printf 'owned\n' > /rt/owned/by-42
chown 42:42 /rt/owned/by-42
printf 'back to root\n' > /rt/owned/by-root
chown 42:42 /rt/owned/by-root
chown 0:0 /rt/owned/by-root
ln -s by-42 /rt/owned/link
chown -h 42:43 /rt/owned/link
chown 42:43 /rt/owned
"""

# Prints one entry= line per path under /rt with the fields of lstat(), and
# target=, sha256= and xattr= lines for the same path.
ROUND_TRIP_LISTING = r"""
cd /rt
for path in $(find . | sort); do
    echo "entry=$path $(fim-fsops lstat "$path")"
    if [ -L "$path" ]; then
        echo "target=$path $(readlink "$path")"
    elif [ -f "$path" ]; then
        echo "sha256=$path $(sha256sum < "$path" | cut -d' ' -f1)"
    fi
    names=$(fim-fsops listxattr "$path") || names="listxattr-failed"
    for name in $names; do
        echo "xattr=$path $name=$(fim-fsops getxattr "$path" "$name")"
    done
done
"""


def read_round_trip_tree(app, env=None):
    """Return {path: {field: value}} for /rt, listed by the container's root user."""
    tree = {}
    for line in app.sh(ROUND_TRIP_LISTING, command="fim-root", env=env).stdout.splitlines():
        key, _, value = line.partition("=")
        path, _, rest = value.partition(" ")
        entry = tree.setdefault(path, {"xattrs": {}})
        if key == "entry":
            entry.update(field.split("=", 1) for field in rest.split())
        elif key == "xattr":
            name, _, xattr_value = rest.partition("=")
            entry["xattrs"][name] = xattr_value
        else:
            entry[key] = rest
    return tree


def comparable(entry):
    """Return the fields of an entry that a commit must keep.

    Inode numbers and a directory's size depend on the filesystem. Squashfs
    stores timestamps in whole seconds, so mtime is compared in seconds.
    """
    fields = {name: entry.get(name) for name in ("type", "mode", "uid", "gid", "nlink", "rdev", "target", "sha256")}
    fields["mtime_seconds"] = int(entry["mtime_ns"]) // 1_000_000_000
    fields["xattrs"] = entry["xattrs"]
    if entry["type"] != "dir":
        fields["size"] = entry["size"]
    return fields


def hard_link_groups(tree):
    """Return the sets of non-directory paths that share an inode, for inodes with more than one name."""
    groups = {}
    for path, entry in tree.items():
        if entry["type"] != "dir":
            groups.setdefault(entry["ino"], set()).add(path)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def assert_same_tree(before, after, stage):
    assert sorted(after) == sorted(before), f"{stage}: the paths differ"
    for path in sorted(before):
        assert comparable(after[path]) == comparable(before[path]), f"{stage}: {path} differs"
    assert hard_link_groups(after) == hard_link_groups(before), f"{stage}: hard links differ"


def commit_to(app, target, tmp_path):
    """Commit the writable layer to target. Return the environment that stacks the result for later runs."""
    if target == "file":
        path = tmp_path / "committed.layer"
        result = app.commit("file", path)
        assert result.returncode == 0, result.describe()
        assert result.stdout == f"Layer saved to '{path}'\n"
        return {"FIM_LAYERS": path}
    result = app.commit(target)
    assert result.returncode == 0, result.describe()
    if target == "binary":
        assert result.stdout == BINARY_MESSAGE
    else:
        assert result.stdout == f"Layer saved to '{app.layers_dir / 'layer-000.layer'}'\n"
    return {}


def check_round_trip(app, target, tmp_path, script):
    app.sh(script, command="fim-root")
    before = read_round_trip_tree(app)
    # Guard against a tree that compares equal because it lacks what it tests.
    assert hard_link_groups(before) == [["./hardlink", "./plain"]], "the tree was not built as intended"
    assert before["./plain"]["xattrs"] == {"user.fimtest.color": "blue"}, "the tree was not built as intended"
    if "./owned" in before:
        assert before["./owned/by-42"]["uid"] == "42", "the tree was not built as intended"
        assert before["./owned/link"]["gid"] == "43", "the tree was not built as intended"

    env = commit_to(app, target, tmp_path)
    assert app.upper_entries() == [], "the writable layer is not empty after the commit"
    assert_same_tree(before, read_round_trip_tree(app, env=env), "after the commit")

    remove_data_dir(app, target)
    assert_same_tree(before, read_round_trip_tree(app, env=env), "with a new data directory")


@pytest.mark.nosub
@pytest.mark.parametrize("target", TARGETS)
def test_round_trip(fsops_app, target, tmp_path):
    check_round_trip(fsops_app, target, tmp_path, ROUND_TRIP_TREE)


@pytest.mark.subordinate_range
@pytest.mark.parametrize("target", TARGETS)
def test_round_trip_owners(fsops_app, target, tmp_path):
    check_round_trip(fsops_app, target, tmp_path, ROUND_TRIP_TREE + ROUND_TRIP_OWNERS)


# A sparse file of 100 MiB contains 6 bytes of data, so 1 MiB bounds the space it may use.
SPARSE_LIMIT = 1 << 20
SPARSE_FILE = "truncate -s 100M /sparse && printf middle | dd of=/sparse bs=1 seek=52428800 conv=notrunc 2>/dev/null"


@pytest.mark.nosub
def test_sparse_layer_small(app):
    app.sh(SPARSE_FILE)
    committed = app.commit("binary")
    assert committed.returncode == 0, committed.describe()
    assert app.list_layers()[-1][2] < SPARSE_LIMIT


@pytest.mark.nosub
def test_sparse_blocks_before_commit(app):
    app.sh(SPARSE_FILE)
    blocks = int(app.sh("stat -c %b /sparse").stdout)
    assert blocks * 512 < SPARSE_LIMIT


@pytest.mark.nosub
def test_sparse_blocks_after_commit(app):
    # du reports st_blocks as disk usage, and GNU tar --sparse reads it to decide whether a file has holes.
    app.sh(SPARSE_FILE)
    committed = app.commit("binary")
    assert committed.returncode == 0, committed.describe()
    blocks = int(app.sh("stat -c %b /sparse").stdout)
    assert blocks * 512 < SPARSE_LIMIT


# ---------------------------------------------------------------------------
# commit layer: names and order in the data directory


def commit_layer(app, text):
    """Write text to /order in the writable layer, then commit it with `commit layer`."""
    app.sh(f"echo {text} > /order")
    result = app.commit("layer")
    assert result.returncode == 0, result.describe()
    return result


@pytest.mark.nosub
def test_commit_layer_first_name(app):
    result = commit_layer(app, "first")
    assert result.stdout == f"Layer saved to '{app.layers_dir / 'layer-000.layer'}'\n"


@pytest.mark.nosub
def test_commit_layer_second_name(app):
    commit_layer(app, "first")
    result = commit_layer(app, "second")
    assert result.stdout == f"Layer saved to '{app.layers_dir / 'layer-001.layer'}'\n"
    assert sorted(os.listdir(app.layers_dir)) == ["layer-000.layer", "layer-001.layer"]


@pytest.mark.nosub
def test_commit_layer_empties_upper(app):
    commit_layer(app, "first")
    assert app.upper_entries() == []


@pytest.mark.nosub
def test_commit_layer_listed(app):
    image_layers = app.list_layers()
    commit_layer(app, "first")
    commit_layer(app, "second")
    layers = app.list_layers()
    assert layers[:len(image_layers)] == image_layers
    assert [path for _, _, _, path in layers[len(image_layers):]] == [
        str(app.layers_dir / "layer-000.layer"),
        str(app.layers_dir / "layer-001.layer"),
    ]
    assert [index for index, _, _, _ in layers] == list(range(len(layers)))


@pytest.mark.nosub
def test_commit_layer_order_past_ten(app):
    image_layers = app.list_layers()
    for number in range(12):
        commit_layer(app, number)
    managed = [Path(path).name for _, _, _, path in app.list_layers()[len(image_layers):]]
    assert managed == [f"layer-{number:03d}.layer" for number in range(12)]
    assert app.sh("cat /order").stdout == "11\n"


@pytest.mark.nosub
def test_commit_layer_after_gap(app):
    commit_layer(app, "first")
    (app.layers_dir / "layer-000.layer").rename(app.layers_dir / "layer-004.layer")
    result = commit_layer(app, "second")
    assert result.stdout == f"Layer saved to '{app.layers_dir / 'layer-005.layer'}'\n"


@pytest.mark.nosub
def test_commit_layer_past_999(app, tmp_path):
    app.layers_dir.mkdir(parents=True)
    last = app.layers_dir / "layer-999.layer"
    shutil.copyfile(layer_file(app, tmp_path, {"last": "last\n"}, "last.layer"), last)
    app.sh("echo kept > /pending")

    result = app.commit("layer")
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert sorted(os.listdir(app.layers_dir)) == ["layer-999.layer"]
    assert app.upper_entries() == ["pending"]


# ---------------------------------------------------------------------------
# commit file PATH


@pytest.mark.nosub
def test_commit_file_rejects_existing(app, tmp_path):
    existing = tmp_path / "existing.layer"
    existing.write_text("not to be overwritten\n")
    app.sh("echo kept > /pending")

    result = app.commit("file", existing)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert str(existing) in result.stderr, result.describe()
    assert existing.read_text() == "not to be overwritten\n"
    assert app.upper_entries() == ["pending"]


@pytest.mark.nosub
def test_commit_file_other_directory(app, tmp_path):
    destination = tmp_path / "elsewhere" / "saved.layer"
    destination.parent.mkdir()
    app.sh("echo saved > /saved")

    result = app.commit("file", destination)
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"Layer saved to '{destination}'\n"
    assert is_squashfs(destination)
    assert os.listdir(destination.parent) == ["saved.layer"], "a temporary file was left beside the layer"
    assert app.upper_entries() == []


@pytest.mark.nosub
def test_commit_file_stacks(app, tmp_path):
    destination = tmp_path / "saved.layer"
    app.sh("echo saved > /saved")
    result = app.commit("file", destination)
    assert result.returncode == 0, result.describe()
    remove_data_dir(app)
    assert app.sh("cat /saved", env={"FIM_LAYERS": destination}).stdout == "saved\n"


@pytest.fixture
def other_filesystem(tmp_path):
    """Return a new directory in /dev/shm, which must be another filesystem than tmp_path. It is removed after the test."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("/dev/shm is missing or not writable, so no second filesystem is at hand")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test directory")
    directory = Path(tempfile.mkdtemp(prefix="fim-commit.", dir=shm))
    yield directory
    shutil.rmtree(directory)


@pytest.mark.nosub
def test_commit_file_other_filesystem(app, other_filesystem):
    destination = other_filesystem / "saved.layer"
    app.sh("echo saved > /saved")

    result = app.commit("file", destination)
    assert result.returncode == 0, result.describe()
    assert is_squashfs(destination)
    assert app.sh("cat /saved", env={"FIM_LAYERS": destination}).stdout == "saved\n"


# ---------------------------------------------------------------------------
# Layers from FIM_LAYERS


@pytest.fixture
def external_layers(app, tmp_path):
    """Layer files a.layer and d.layer, and a directory dir with 1-b.layer and 2-c.layer, each writing /stack/which."""
    directory = tmp_path / "external"
    (directory / "dir").mkdir(parents=True)
    layers = {}
    # 2-c first, so that creation order and name order differ.
    for name, letter in (("dir/2-c.layer", "c"), ("dir/1-b.layer", "b"), ("a.layer", "a"), ("d.layer", "d")):
        layers[letter] = layer_file(app, directory, {"stack/which": f"{letter}\n", f"stack/{letter}": f"{letter}\n"},
                                    name)
    return directory, layers


@pytest.mark.nosub
def test_layers_env_listed_in_order(app, external_layers):
    directory, layers = external_layers
    image_layers = app.list_layers()
    env = {"FIM_LAYERS": f"{layers['a']}:{directory / 'dir'}:{layers['d']}"}
    listed = [path for _, _, _, path in app.list_layers(env=env)[len(image_layers):]]
    assert listed == [str(layers[letter]) for letter in "abcd"]


@pytest.mark.nosub
def test_layers_env_top_wins(app, external_layers):
    directory, layers = external_layers
    env = {"FIM_LAYERS": f"{layers['a']}:{directory / 'dir'}:{layers['d']}"}
    assert app.sh("cat /stack/which", env=env).stdout == "d\n"


@pytest.mark.nosub
def test_layers_env_directory_name_order(app, external_layers):
    directory, _ = external_layers
    assert app.sh("cat /stack/which", env={"FIM_LAYERS": directory / "dir"}).stdout == "c\n"


@pytest.mark.nosub
def test_layers_env_all_visible(app, external_layers):
    directory, layers = external_layers
    env = {"FIM_LAYERS": f"{layers['a']}:{directory / 'dir'}:{layers['d']}"}
    assert app.sh("cat /stack/a /stack/b /stack/c /stack/d /lower/kept", env=env).stdout == "a\nb\nc\nd\nkept\n"


@pytest.mark.nosub
def test_layers_env_below_committed(app, external_layers):
    _, layers = external_layers
    commit_layer(app, "committed")
    env = {"FIM_LAYERS": layers["d"]}
    listed = [path for _, _, _, path in app.list_layers(env=env)[-2:]]
    assert listed == [str(layers["d"]), str(app.layers_dir / "layer-000.layer")]
    assert app.sh("cat /order /stack/which", env=env).stdout == "committed\nd\n"


@pytest.mark.nosub
def test_layers_env_missing_warns(app, external_layers, tmp_path):
    _, layers = external_layers
    missing = tmp_path / "missing.layer"
    result = app.run("fim-exec", "cat", "/stack/which", env={"FIM_LAYERS": f"{missing}:{layers['a']}"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "a\n"
    assert str(missing) in result.stderr, result.describe()


@pytest.mark.nosub
def test_layers_env_not_squashfs_warns(app, external_layers, tmp_path):
    _, layers = external_layers
    text = tmp_path / "text.layer"
    text.write_text("not a squashfs image\n")
    result = app.run("fim-exec", "cat", "/stack/which", env={"FIM_LAYERS": f"{layers['a']}:{text}"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "a\n"
    assert str(text) in result.stderr, result.describe()


@pytest.mark.nosub
def test_layers_env_not_squashfs_in_directory(app, external_layers):
    directory, _ = external_layers
    text = directory / "dir" / "3-text.layer"
    text.write_text("not a squashfs image\n")
    result = app.run("fim-exec", "cat", "/stack/which", env={"FIM_LAYERS": directory / "dir"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "c\n"
    assert str(text) in result.stderr, result.describe()


@pytest.mark.nosub
def test_layers_env_skipped_not_listed(app, external_layers, tmp_path):
    _, layers = external_layers
    text = tmp_path / "text.layer"
    text.write_text("not a squashfs image\n")
    image_layers = app.list_layers()
    env = {"FIM_LAYERS": f"{tmp_path / 'missing.layer'}:{text}:{layers['a']}"}
    listed = [path for _, _, _, path in app.list_layers(env=env)[len(image_layers):]]
    assert listed == [str(layers["a"])]


# ---------------------------------------------------------------------------
# Files the runtime creates stay out of the writable layer and of commits


@pytest.fixture(scope="module")
def bare_tree_image(runtime, busybox_rootfs, tmp_path_factory):
    """Image of busybox's bin, sbin and usr and an empty /etc/apt, so the runtime must supply every mount point,
    /etc/passwd and /etc/group, and, for fim-root with one mapped id, its apt configuration.

    mksquashfs -all-root stores the files as root's, as in a distribution
    image, although the test user copied them.
    """
    directory = tmp_path_factory.mktemp("bare-tree")
    tree = directory / "tree"
    for name in ("bin", "sbin", "usr"):
        shutil.copytree(busybox_rootfs / name, tree / name, symlinks=True)
    (tree / "etc" / "apt" / "apt.conf.d").mkdir(parents=True)
    layer = directory / "bare-tree.layer"
    created = run_command(["mksquashfs", tree, layer, "-all-root", "-comp", "zstd", "-noappend", "-quiet",
                           "-no-progress"], timeout=LAYER_TIMEOUT)
    assert created.returncode == 0, f"mksquashfs {tree} failed: {created.describe()}"
    image = build_image(runtime, directory, "bare-tree", [])
    added = image.add_layer(layer)
    assert added.returncode == 0, f"fim-layer add {layer} failed: {added.describe()}"
    return image


@pytest.fixture
def bare_app(bare_tree_image, tmp_path):
    return App(copy_image(bare_tree_image, tmp_path), tmp_path / "data")


def create_as_user_and_root(app, mode):
    app.sh("echo exec > /made-by-exec && cat /etc/passwd /etc/group > /dev/null", env={"FIM_OVERLAY": mode})
    app.sh("echo root > /made-by-root && ls /etc/apt/apt.conf.d > /dev/null", command="fim-root",
           env={"FIM_OVERLAY": mode})


@pytest.mark.nosub
@pytest.mark.parametrize("mode", MODES)
def test_upper_only_program_files(bare_app, mode):
    needs_helper(mode)
    create_as_user_and_root(bare_app, mode)
    assert bare_app.upper_entries() == ["made-by-exec", "made-by-root"]


@pytest.mark.nosub
def test_committed_only_program_files(bare_app, tmp_path):
    create_as_user_and_root(bare_app, "bwrap")
    destination = tmp_path / "saved.layer"
    committed = bare_app.commit("file", destination)
    assert committed.returncode == 0, committed.describe()

    listing = run_command(["unsquashfs", "-lls", destination])
    assert listing.returncode == 0, listing.describe()
    # Each line ends with the path, which starts with squashfs-root.
    paths = sorted(line.split()[-1] for line in listing.stdout.splitlines() if "squashfs-root" in line)
    assert paths == ["squashfs-root", "squashfs-root/made-by-exec", "squashfs-root/made-by-root"]


# ---------------------------------------------------------------------------
# Commit beside a running instance, and of an empty writable layer


@pytest.mark.nosub
@pytest.mark.parametrize("target", TARGETS)
def test_commit_while_running(app, target, tmp_path):
    app.sh("echo kept > /pending")
    image_before = app.image.sha256()
    arguments = [target, tmp_path / "saved.layer"] if target == "file" else [target]
    running = app.popen("fim-exec", "sh", "-c", "echo ready; sleep 5")
    wait_for_output(running.stdout, "ready")

    result = app.commit(*arguments)
    still_running = running.poll() is None
    kill_tree(running.pid)
    finish(running)

    assert still_running, "the running instance ended before the commit"
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert app.image.sha256() == image_before
    assert app.upper_entries() == ["pending"]
    assert not (tmp_path / "saved.layer").exists()
    assert not app.layers_dir.exists() or os.listdir(app.layers_dir) == []


@pytest.mark.nosub
@pytest.mark.parametrize("target", TARGETS)
def test_commit_empty(app, target, tmp_path):
    ran = app.run("fim-exec", "true")
    assert ran.returncode == 0, ran.describe()
    image_before = app.image.sha256()
    arguments = [target, tmp_path / "saved.layer"] if target == "file" else [target]

    result = app.commit(*arguments)
    assert result.returncode == 0, result.describe()
    assert app.image.sha256() == image_before
    assert not (tmp_path / "saved.layer").exists()
    assert not app.layers_dir.exists() or os.listdir(app.layers_dir) == []


# ---------------------------------------------------------------------------
# Crash safety: SIGKILL at many points of image and config writes

CRASH_ROUNDS = 18
# Random files written per round. Random data does not compress, so
# mksquashfs and the append take a measurable time.
CRASH_FILES_PER_ROUND = 4
CRASH_FILE_SIZE = 1_000_000


def live_group_members(group):
    """Return the pids in a process group that are running, leaving out zombies, which hold no files open."""
    members = []
    for pid, fields in process_stat_fields().items():
        state, _, process_group = fields[:3]
        if int(process_group) == group and state not in ("Z", "X"):
            members.append(pid)
    return members


def kill_after(process, delay):
    """Sleep delay seconds, then SIGKILL the process group that a process leads. Return the process's exit status.

    Waits until every member of the group has exited, because a member that
    is still exiting may keep the image open for writing, and execve() of a
    file that is open for writing fails with ETXTBSY.
    """
    time.sleep(delay)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=LAYER_TIMEOUT)
    deadline = time.monotonic() + RUN_TIMEOUT
    while live_group_members(process.pid):
        if time.monotonic() >= deadline:
            pytest.fail(f"process group {process.pid} still runs {RUN_TIMEOUT} s after SIGKILL")
        time.sleep(0.01)
    return process.returncode


def crash_delays(duration, count=CRASH_ROUNDS):
    """Return count delays spread from 0 to 1.2 times duration, so that the last kills may come after the end."""
    return [duration * 1.2 * number / (count - 1) for number in range(count)]


def write_round(app, number):
    """Write CRASH_FILES_PER_ROUND random files under /crash/NUMBER and return {path: sha256}."""
    script = (f"mkdir -p /crash/{number} && for i in $(seq {CRASH_FILES_PER_ROUND}); do "
              f"head -c {CRASH_FILE_SIZE} /dev/urandom > /crash/{number}/$i; done && sha256sum /crash/{number}/*")
    return parse_checksums(app.sh(script).stdout)


def parse_checksums(text):
    checksums = {}
    for line in text.splitlines():
        digest, path = line.split()
        checksums[path] = digest
    return checksums


def kill_when(process, condition):
    """Poll condition() until it holds, then SIGKILL the process group as kill_after does.

    Returns the exit status, which is -SIGKILL when the kill landed before
    the process ended by itself.
    """
    while process.poll() is None and not condition():
        time.sleep(0.0005)
    return kill_after(process, 0)


def layer_header(image, offset):
    """Return the 8-byte size field of a layer that starts at offset, or None while fewer bytes exist."""
    with open(image.path, "rb") as file:
        file.seek(offset)
        header = file.read(LAYER_HEADER_SIZE)
    return int.from_bytes(header, "little") if len(header) == LAYER_HEADER_SIZE else None


def commit_phases(app):
    """Return {name: condition} for the phases of `commit binary` after mksquashfs, seen from outside.

    appending: the image has grown but the new layer's size field is zero.
    committed: the size field is written, so the layer counts.
    emptying: the writable layer was moved away to be deleted.
    """
    size = app.image.path.stat().st_size
    return {
        "appending": lambda: app.image.path.stat().st_size > size,
        "committed": lambda: app.image.path.stat().st_size > size and layer_header(app.image, size),
        "emptying": lambda: upper_moved(app),
    }


def upper_moved(app):
    """Return whether the writable layer is missing or empty, as it is once a commit has moved it away."""
    try:
        return not any(app.upper.iterdir())
    except FileNotFoundError:
        return True


@pytest.mark.nosub
def test_commit_binary_killed(app):
    expected = write_round(app, "measured")
    image_layers = len(app.list_layers())
    start = time.monotonic()
    measured = app.commit("binary")
    duration = time.monotonic() - start
    assert measured.returncode == 0, f"the measured commit failed: {measured.describe()}"
    assert len(app.list_layers()) == image_layers + 1, "the measured commit added no layer"
    # Kills after spread-out delays mostly land in mksquashfs, which takes
    # most of the time, so more rounds wait for the later phases.
    rounds = [(f"after {delay:.3f} s", delay) for delay in crash_delays(duration, CRASH_ROUNDS // 2)]
    rounds += [(phase, phase) for phase in ("appending", "committed", "emptying") for _ in range(3)]
    killed = set()

    for number, (label, when) in enumerate(rounds):
        where = f"round {number}, kill {label}"
        # New data only once the last commit went through, so that every
        # commit has as much to do as the measured one.
        if app.upper_entries() == []:
            expected.update(write_round(app, number))
        layers_before = len(app.list_layers())
        committer = app.popen("fim-layer", "commit", "binary")
        if isinstance(when, str):
            status = kill_when(committer, commit_phases(app)[when])
        else:
            status = kill_after(committer, when)
        if status == -signal.SIGKILL:
            killed.add(label if isinstance(when, str) else "after a delay")

        assert len(app.list_layers()) in (layers_before, layers_before + 1), where
        seen = app.run("fim-exec", "sh", "-c", "sha256sum /crash/*/*")
        assert seen.returncode == 0, f"{where}: {seen.describe()}"
        assert parse_checksums(seen.stdout) == expected, where

    assert killed == {"after a delay", "appending", "committed", "emptying"}, "some phases were never interrupted"


@pytest.mark.nosub
def test_commit_binary_after_kills(app):
    # A commit after interrupted ones must work and keep everything.
    expected = write_round(app, "first")
    for delay in (0.0, 0.02, 0.05, 0.1):
        kill_after(app.popen("fim-layer", "commit", "binary"), delay)
    expected.update(write_round(app, "second"))
    committed = app.commit("binary")
    assert committed.returncode == 0, committed.describe()
    assert app.upper_entries() == []
    assert parse_checksums(app.sh("sha256sum /crash/*/*").stdout) == expected


@pytest.mark.nosub
def test_commit_after_kills_no_leftovers(app):
    # Each interrupted commit may leave a partial layer as large as the
    # writable layer, so the next commit must not keep them forever.
    write_round(app, "clean")
    clean = app.commit("binary")
    assert clean.returncode == 0, clean.describe()
    entries_after_clean_commit = sorted(os.listdir(app.data_dir))

    write_round(app, "interrupted")
    for delay in (0.02, 0.05):
        kill_after(app.popen("fim-layer", "commit", "binary"), delay)
    kill_when(app.popen("fim-layer", "commit", "binary"), lambda: upper_moved(app))
    write_round(app, "last")
    committed = app.commit("binary")
    assert committed.returncode == 0, committed.describe()
    assert sorted(os.listdir(app.data_dir)) == entries_after_clean_commit


@pytest.fixture(scope="module")
def large_layer(commit_image, tmp_path_factory):
    """A layer of about 24 MB of random data, with its file /large/0 and the sha256 of that file."""
    directory = tmp_path_factory.mktemp("large")
    tree = directory / "tree"
    (tree / "large").mkdir(parents=True)
    for number in range(24):
        (tree / "large" / str(number)).write_bytes(os.urandom(1_000_000))
    path = directory / "large.layer"
    created = commit_image.create_layer(tree, path)
    assert created.returncode == 0, created.describe()
    return path, file_sha256(tree / "large" / "0")


def image_tail(path, original_size):
    """Classify what an append left after original_size: 'none', 'complete' or 'torn'."""
    size = path.stat().st_size
    if size == original_size:
        return "none"
    with open(path, "rb") as file:
        file.seek(original_size)
        header = file.read(LAYER_HEADER_SIZE)
    if len(header) == LAYER_HEADER_SIZE and int.from_bytes(header, "little") == size - original_size - LAYER_HEADER_SIZE:
        return "complete"
    return "torn"


@pytest.mark.nosub
def test_layer_add_killed(app, large_layer, tmp_path):
    layer, first_file_sha256 = large_layer
    image_layers = app.list_layers()
    original_size = app.image.path.stat().st_size
    measured = copy_image(app.image, tmp_path, "measured")
    start = time.monotonic()
    added = measured.add_layer(layer)
    duration = time.monotonic() - start
    assert added.returncode == 0, f"the measured fim-layer add failed: {added.describe()}"
    measured.path.unlink()
    outcomes = []

    for number, delay in enumerate(crash_delays(duration)):
        image = copy_image(app.image, tmp_path, f"round{number}")
        round_app = App(image, tmp_path / f"data{number}")
        kill_after(image.popen("fim-layer", "add", layer), delay)
        tail = image_tail(image.path, original_size)
        outcomes.append(tail)
        where = f"round {number}, delay {delay:.3f} s, tail {tail}"

        first = round_app.run("fim-exec", "cat", "/lower/kept")
        assert first.returncode == 0, f"{where}: {first.describe()}"
        assert first.stdout == "kept\n", where
        if tail == "torn":
            assert first.stderr.strip(), f"{where}: the incomplete layer was not reported"
        second = round_app.run("fim-exec", "true")
        assert second.stderr == "", f"{where}: {second.describe()}"

        layers = [(offset, size) for _, offset, size, _ in round_app.list_layers()]
        previous = [(offset, size) for _, offset, size, _ in image_layers]
        if tail == "complete":
            assert layers[:-1] == previous, where
            assert layers[-1][1] == layer.stat().st_size, where
            seen = round_app.run("fim-exec", "sha256sum", "/large/0")
            assert seen.returncode == 0, f"{where}: {seen.describe()}"
            assert seen.stdout.split()[0] == first_file_sha256, where
        else:
            assert layers == previous, where
            assert image.path.stat().st_size == original_size, f"{where}: the incomplete layer was not trimmed"
        image.path.unlink()
        shutil.rmtree(round_app.data_dir, ignore_errors=True)

    assert outcomes.count("none") < len(outcomes), f"no kill landed after the append began: {outcomes}"


@pytest.mark.nosub
@pytest.mark.parametrize("tail", [
    pytest.param(b"\0" * LAYER_HEADER_SIZE + b"partial layer data", id="zero-size"),
    pytest.param(b"\0\0\0", id="partial-header"),
])
def test_torn_tail_reported_once(app, tail):
    original_size = app.image.path.stat().st_size
    with open(app.image.path, "ab") as file:
        file.write(tail)

    first = app.run("fim-exec", "cat", "/lower/kept")
    assert first.returncode == 0, first.describe()
    assert first.stdout == "kept\n"
    assert str(app.image.path) in first.stderr, first.describe()
    assert app.image.path.stat().st_size == original_size

    second = app.run("fim-exec", "cat", "/lower/kept")
    assert second.returncode == 0, second.describe()
    assert second.stderr == ""


# Alternates two stored modes until it is killed. $0 is the image.
OVERLAY_WRITER = 'while :; do "$0" fim-overlay set unionfs; "$0" fim-overlay set overlayfs; done'


@pytest.mark.nosub
def test_overlay_set_killed(app):
    layers_before = app.list_layers()
    # BWRAP, the value of a new image, stays valid until a write has
    # completed. After that, only the two written values are valid.
    valid = {"BWRAP", "UNIONFS", "OVERLAYFS"}
    for number in range(CRASH_ROUNDS):
        writer = subprocess.Popen(["sh", "-c", OVERLAY_WRITER, app.image.path], env=runtime_env(app.env()),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        kill_after(writer, 0.01 + number * 0.007)

        result = app.run("fim-overlay", "show")
        assert result.returncode == 0, f"round {number}: {result.describe()}"
        assert result.stdout.strip() in valid, f"round {number}: {result.describe()}"
        if result.stdout.strip() != "BWRAP":
            valid.discard("BWRAP")

    assert app.list_layers() == layers_before
    assert app.sh("cat /lower/kept", env={"FIM_OVERLAY": "bwrap"}).stdout == "kept\n"


# ---------------------------------------------------------------------------
# Out of disk space, with a small tmpfs in nested user and mount namespaces

# Mounts a tmpfs of $1 bytes on $2, then runs ARGS in a nested user
# namespace as the original user, OUTER_UID and OUTER_GID.
WITH_SMALL_TMPFS = r"""
set -e
size=$1
mount_point=$2
shift 2
mount -t tmpfs -o "size=$size" tmpfs "$mount_point"
exec unshare -U --map-user="$OUTER_UID" --map-group="$OUTER_GID" "$@"
"""

# Bytes of random, so incompressible, data that the commit must store.
PENDING_SIZE = 8_000_000

# Copies the image to $IMAGE unless it is there already, writes
# PENDING_SIZE random bytes to the writable layer, runs `fim-layer commit
# $COMMIT` and prints commit-status=, the checksums before= and after=,
# image=unchanged, data-before= and data-entry= lines for what the data
# directory contains before and after the commit, and destination-entry=
# lines for what $DESTINATION_DIR contains afterwards.
NO_SPACE_SCRIPT = r"""
[ "$SOURCE_IMAGE" = "$IMAGE" ] || cp "$SOURCE_IMAGE" "$IMAGE"
"$IMAGE" fim-exec sh -c "head -c $PENDING_SIZE /dev/urandom > /pending && sha256sum /pending" | sed 's/^/before=/'
ls -A "$FIM_DIR_DATA" | sed 's/^/data-before=/'
image_before=$(sha256sum < "$IMAGE")
"$IMAGE" fim-layer commit $COMMIT
echo "commit-status=$?"
"$IMAGE" fim-exec sha256sum /pending | sed 's/^/after=/'
[ "$(sha256sum < "$IMAGE")" = "$image_before" ] && echo image=unchanged
ls -A "$FIM_DIR_DATA" | sed 's/^/data-entry=/'
ls -A "$DESTINATION_DIR" | sed 's/^/destination-entry=/'
"""


@pytest.fixture
def no_space_commit(app, tmp_path):
    """Return a function that runs NO_SPACE_SCRIPT with a small tmpfs on tmp_path/small.

    no_space_commit(commit, size, image_on_tmpfs, data_on_tmpfs) returns the
    Result and the parsed report. The tmpfs ends with the script.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed, so no small filesystem can be mounted")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    outer_ids = {"OUTER_UID": os.getuid(), "OUTER_GID": os.getgid()}
    probe = run_command([unshare, "-Urm", "sh", "-c", WITH_SMALL_TMPFS, "sh", "1m", mount_point, "true"],
                        env=runtime_env(outer_ids))
    if probe.returncode != 0:
        pytest.skip(f"a tmpfs in nested user namespaces cannot be mounted here: {probe.stderr.strip()}")

    def run(commit, size, image_on_tmpfs=False, data_on_tmpfs=False):
        image = mount_point / app.image.path.name if image_on_tmpfs else app.image.path
        data_dir = mount_point / "data" if data_on_tmpfs else app.data_dir
        env = dict(outer_ids, **{
            "SOURCE_IMAGE": app.image.path,
            "IMAGE": image,
            "FIM_DIR_DATA": data_dir,
            "COMMIT": commit,
            "DESTINATION_DIR": mount_point,
            "PENDING_SIZE": PENDING_SIZE,
            # The nested namespace does not map the subordinate ids, so
            # newuidmap fails there. FIM_NO_SUBID makes the runtime map
            # one id instead.
            "FIM_NO_SUBID": 1,
        })
        result = run_command([unshare, "-Urm", "sh", "-c", WITH_SMALL_TMPFS, "sh", size, mount_point,
                              "sh", "-c", NO_SPACE_SCRIPT], env=runtime_env(env), timeout=LAYER_TIMEOUT)
        return result, parse_probe(result.stdout)

    return run, mount_point


@pytest.mark.nosub
def test_no_space_for_layer(no_space_commit):
    # The writable layer fits, but mksquashfs writes the new layer into the
    # same full data directory.
    run, _ = no_space_commit
    result, report = run("binary", PENDING_SIZE * 3 // 2, data_on_tmpfs=True)
    assert report["commit-status"] == [str(RUNTIME_ERROR)], result.describe()
    assert "No space left on device" in result.stderr, result.describe()
    assert len(report["before"]) == 1, result.describe()
    assert report["after"] == report["before"], result.describe()
    assert report["image"] == ["unchanged"], result.describe()
    assert report["data-entry"] == report["data-before"], result.describe()


@pytest.mark.nosub
def test_no_space_for_append(app, no_space_commit):
    # The image is on the full filesystem, but the data directory is not.
    run, _ = no_space_commit
    result, report = run("binary", app.image.path.stat().st_size + PENDING_SIZE // 2, image_on_tmpfs=True)
    assert report["commit-status"] == [str(RUNTIME_ERROR)], result.describe()
    assert "No space left on device" in result.stderr, result.describe()
    assert len(report["before"]) == 1, result.describe()
    assert report["after"] == report["before"], result.describe()
    assert report["image"] == ["unchanged"], result.describe()
    assert report["data-entry"] == report["data-before"], result.describe()


@pytest.mark.nosub
def test_no_space_for_file(no_space_commit):
    run, mount_point = no_space_commit
    result, report = run(f"file {mount_point / 'saved.layer'}", PENDING_SIZE // 2)
    assert report["commit-status"] == [str(RUNTIME_ERROR)], result.describe()
    assert "No space left on device" in result.stderr, result.describe()
    assert len(report["before"]) == 1, result.describe()
    assert report["after"] == report["before"], result.describe()
    assert report["destination-entry"] == [], result.describe()
    assert report["data-entry"] == report["data-before"], result.describe()
