"""Image file format and the fim-layer commands."""

import os
import re
import struct

import pytest

from conftest import RUNTIME_ERROR, build_image, write_tree

SQUASHFS_MAGIC = b"hsqs"
# Offset and value of the compression id in the squashfs superblock.
SQUASHFS_COMPRESSION_OFFSET = 20
SQUASHFS_ZSTD = 6


def compressible_tree(root):
    """Write a tree of about 1 MiB of repetitive text, so the compression level shows in the layer size."""
    lines = "".join(f"line {number} of a file that compresses well\n" for number in range(25000))
    return write_tree(root, {"data/one.txt": lines, "data/two.txt": lines[::-1]})


def read_bytes(path, offset, count):
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(count)


def overwrite_bytes(path, offset, data):
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


@pytest.fixture
def small_layer(runtime, tmp_path):
    """A valid squashfs layer made by the runtime from a small tree."""
    tree = write_tree(tmp_path / "small-tree", {"small/file": "small\n"})
    image = build_image(runtime, tmp_path, "maker", [])
    layer = tmp_path / "small.sqfs"
    result = image.create_layer(tree, layer)
    assert result.returncode == 0, result.describe()
    return layer


@pytest.fixture
def bare(runtime, tmp_path):
    """Copy of the bare runtime, an image with no layers."""
    return build_image(runtime, tmp_path, "bare", [])


def test_runtime_magic_bytes(runtime):
    assert read_bytes(runtime, 8, 3) == b"FI\x01"


def test_runtime_is_elf(runtime):
    assert read_bytes(runtime, 0, 4) == b"\x7fELF"


def test_built_image_magic_bytes(base_image):
    assert read_bytes(base_image.path, 8, 3) == b"FI\x01"


def test_no_layers_exits_125(bare):
    result = bare.run("fim-exec", "true")
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_no_layers_tells_how_to_add(bare):
    result = bare.run("fim-exec", "true")
    assert "fim-layer add" in result.stderr, result.describe()


def test_no_layers_boot_command_exits_125(bare):
    result = bare.run()
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_layer_create_message(bare, tmp_path):
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    result = bare.create_layer(tree, tmp_path / "layer.sqfs")
    assert result.returncode == 0, result.describe()
    assert "Filesystem created without errors" in result.stdout, result.describe()


def test_layer_create_writes_squashfs(bare, tmp_path):
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    layer = tmp_path / "layer.sqfs"
    result = bare.create_layer(tree, layer)
    assert result.returncode == 0, result.describe()
    assert read_bytes(layer, 0, 4) == SQUASHFS_MAGIC


def test_layer_create_uses_zstd(bare, tmp_path):
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    layer = tmp_path / "layer.sqfs"
    result = bare.create_layer(tree, layer)
    assert result.returncode == 0, result.describe()
    compression = struct.unpack("<H", read_bytes(layer, SQUASHFS_COMPRESSION_OFFSET, 2))[0]
    assert compression == SQUASHFS_ZSTD


def test_layer_create_leaves_image_unchanged(bare, tmp_path):
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    before = bare.sha256()
    result = bare.create_layer(tree, tmp_path / "layer.sqfs")
    assert result.returncode == 0, result.describe()
    assert bare.sha256() == before


def test_compression_levels_accepted(bare, tmp_path):
    tree = compressible_tree(tmp_path / "tree")
    sizes = {}
    for level in ("0", "9"):
        layer = tmp_path / f"level{level}.sqfs"
        result = bare.create_layer(tree, layer, env={"FIM_COMPRESSION_LEVEL": level})
        assert result.returncode == 0, f"level {level}: {result.describe()}"
        assert read_bytes(layer, 0, 4) == SQUASHFS_MAGIC, f"level {level}"
        sizes[level] = layer.stat().st_size
    assert sizes["9"] <= sizes["0"], sizes


def test_compression_level_out_of_range(bare, tmp_path):
    # The documented range is 0-9; a user expects a typo such as 12 to be
    # rejected rather than silently replaced.
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    result = bare.create_layer(tree, tmp_path / "layer.sqfs", env={"FIM_COMPRESSION_LEVEL": "12"})
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_layer_create_missing_directory(bare, tmp_path):
    result = bare.create_layer(tmp_path / "missing", tmp_path / "layer.sqfs")
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_layer_add_message(bare, small_layer):
    result = bare.add_layer(small_layer)
    assert result.returncode == 0, result.describe()
    assert f"Included novel layer from file '{small_layer}'" in result.stdout, result.describe()


def test_layer_add_stores_size_and_bytes(bare, small_layer):
    result = bare.add_layer(small_layer)
    assert result.returncode == 0, result.describe()

    layers = bare.list_layers()
    assert len(layers) == 1, layers
    _, offset, size, _ = layers[0]
    layer_bytes = small_layer.read_bytes()
    assert size == len(layer_bytes)
    assert read_bytes(bare.path, offset - 8, 8) == struct.pack("<Q", len(layer_bytes))
    assert read_bytes(bare.path, offset, size) == layer_bytes


def test_layer_add_appends_at_end(bare, small_layer):
    size_before = bare.path.stat().st_size
    result = bare.add_layer(small_layer)
    assert result.returncode == 0, result.describe()
    assert bare.path.stat().st_size == size_before + 8 + small_layer.stat().st_size


def test_layer_add_rejects_garbage(bare, tmp_path):
    garbage = tmp_path / "garbage.sqfs"
    garbage.write_bytes(os.urandom(64 * 1024))
    before = bare.sha256()
    result = bare.add_layer(garbage)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert bare.sha256() == before


def test_layer_add_rejects_truncated(bare, tmp_path):
    tree = write_tree(tmp_path / "tree", {f"file{n}": os.urandom(8192).hex() for n in range(16)})
    layer = tmp_path / "full.sqfs"
    created = bare.create_layer(tree, layer)
    assert created.returncode == 0, created.describe()
    truncated = tmp_path / "truncated.sqfs"
    truncated.write_bytes(layer.read_bytes()[: layer.stat().st_size // 2])

    before = bare.sha256()
    result = bare.add_layer(truncated)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert bare.sha256() == before


def test_layer_add_rejects_unreadable(bare, small_layer):
    small_layer.chmod(0)
    if os.access(small_layer, os.R_OK):
        pytest.skip("the tests run as root, which can read a file with mode 000")
    before = bare.sha256()
    result = bare.add_layer(small_layer)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert bare.sha256() == before


def test_layer_add_rejects_missing(bare, tmp_path):
    before = bare.sha256()
    result = bare.add_layer(tmp_path / "missing.sqfs")
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert bare.sha256() == before


def test_layer_add_rejects_empty(bare, tmp_path):
    empty = tmp_path / "empty.sqfs"
    empty.write_bytes(b"")
    before = bare.sha256()
    result = bare.add_layer(empty)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert bare.sha256() == before


def test_layer_list_bare_is_empty(bare):
    result = bare.run("fim-layer", "list")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == ""


def test_layer_list_format(base_image):
    result = base_image.run("fim-layer", "list")
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    assert len(lines) >= 2, result.describe()
    for line in lines:
        assert re.fullmatch(r"\d+:\d+:\d+:.+", line), f"line {line!r} is not index:offset:size:path"


def test_layer_list_bottom_first(base_image):
    layers = base_image.list_layers()
    assert [layer[0] for layer in layers] == list(range(len(layers)))
    offsets = [layer[1] for layer in layers]
    assert offsets == sorted(offsets), layers


def test_layer_list_offsets_hold_squashfs(base_image):
    for index, offset, size, _ in base_image.list_layers():
        assert read_bytes(base_image.path, offset, 4) == SQUASHFS_MAGIC, f"layer {index} at offset {offset}"


def test_layer_list_sizes_inside_file(base_image):
    file_size = base_image.path.stat().st_size
    for index, offset, size, _ in base_image.list_layers():
        assert offset + size <= file_size, f"layer {index}: {offset}+{size} > {file_size}"


@pytest.fixture
def stacked_image(make_image, busybox_rootfs, tmp_path):
    """Busybox plus twelve layers: layer i writes /order = i and /only/i; layers 2 and 10 write /pair."""
    trees = [busybox_rootfs]
    for number in range(1, 13):
        files = {"order": f"{number}\n", f"only/{number}": f"{number}\n"}
        if number in (2, 10):
            files["pair"] = f"{number}\n"
        trees.append(write_tree(tmp_path / f"tree{number}", files))
    return make_image("stacked", trees)


def test_many_layers_top_wins(stacked_image):
    result = stacked_image.run("fim-exec", "cat", "/order")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "12\n"


def test_many_layers_numeric_order(stacked_image):
    # A name sort would put layer 10 below layer 2.
    result = stacked_image.run("fim-exec", "cat", "/pair")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "10\n"


def test_many_layers_all_visible(stacked_image):
    result = stacked_image.run("fim-exec", "ls", "/only")
    assert result.returncode == 0, result.describe()
    assert sorted(result.stdout.split(), key=int) == [str(number) for number in range(1, 13)]


def test_many_layers_listed(stacked_image):
    layers = stacked_image.list_layers()
    assert [layer[0] for layer in layers] == list(range(13))


@pytest.fixture
def three_layer_image(make_image, busybox_rootfs, tmp_path):
    middle = write_tree(tmp_path / "middle", {"middle": "middle\n"})
    top = write_tree(tmp_path / "top", {"top": "top\n"})
    return make_image("three", [busybox_rootfs, middle, top])


def test_damaged_layer_fails_run(three_layer_image):
    _, offset, _, _ = three_layer_image.list_layers()[1]
    overwrite_bytes(three_layer_image.path, offset, b"XXXX")
    result = three_layer_image.run("fim-exec", "cat", "/top")
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_damaged_layer_names_offset(three_layer_image):
    _, offset, _, _ = three_layer_image.list_layers()[1]
    overwrite_bytes(three_layer_image.path, offset, b"XXXX")
    result = three_layer_image.run("fim-exec", "true")
    assert str(offset) in result.stderr, result.describe()


def test_damaged_layer_names_index(three_layer_image):
    _, offset, _, _ = three_layer_image.list_layers()[1]
    overwrite_bytes(three_layer_image.path, offset, b"XXXX")
    result = three_layer_image.run("fim-exec", "true")
    assert re.search(r"(layer|index)\D{0,3}1\b", result.stderr, re.IGNORECASE), result.describe()


def test_oversized_layer_fails_run(three_layer_image):
    # Layer 1 declares a size that runs past the end of the file, which would
    # swallow layer 2 if the runtime trusted it.
    _, offset, _, _ = three_layer_image.list_layers()[1]
    file_size = three_layer_image.path.stat().st_size
    overwrite_bytes(three_layer_image.path, offset - 8, struct.pack("<Q", file_size * 4))
    result = three_layer_image.run("fim-exec", "cat", "/top")
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert str(offset) in result.stderr, result.describe()
