"""The writable layer: where it lives, that it persists and that runs leave no work directories."""

import os

import pytest

from conftest import finish, wait_for_output


def tree_listing(root, depth=3):
    """Return the set of paths under root up to depth levels, relative to root; unreadable directories are skipped."""
    listing = set()
    root = str(root)
    for directory, subdirectories, files in os.walk(root, onerror=lambda error: None):
        relative = os.path.relpath(directory, root)
        level = 0 if relative == "." else relative.count(os.sep) + 1
        if level >= depth:
            subdirectories.clear()
            continue
        for name in subdirectories + files:
            listing.add(os.path.normpath(os.path.join(relative, name)))
    return listing


@pytest.mark.nosub
def test_write_persists(image):
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted")
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "cat", "/persisted")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "kept\n"


def test_root_write_persists(image):
    written = image.run("fim-root", "sh", "-c", "echo kept > /root/persisted")
    assert written.returncode == 0, written.describe()
    result = image.run("fim-root", "cat", "/root/persisted")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "kept\n"


def test_delete_persists(image):
    removed = image.run("fim-exec", "rm", "/fimtest/marker")
    assert removed.returncode == 0, removed.describe()
    result = image.run("fim-exec", "test", "-e", "/fimtest/marker")
    assert result.returncode == 1, result.describe()


def test_default_data_dir(image):
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted")
    assert written.returncode == 0, written.describe()
    assert image.default_data_dir.name == ".app.flatimage.data"
    assert image.default_data_dir.is_dir()


def test_default_data_dir_holds_write(image):
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted-marker-file")
    assert written.returncode == 0, written.describe()
    names = {os.path.basename(path) for path in tree_listing(image.default_data_dir, depth=4)}
    assert "persisted-marker-file" in names


def test_write_leaves_image_unchanged(image):
    before = image.sha256()
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted")
    assert written.returncode == 0, written.describe()
    assert image.sha256() == before


def test_custom_data_dir_used(image, tmp_path):
    custom = tmp_path / "custom-data"
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted", env={"FIM_DIR_DATA": custom})
    assert written.returncode == 0, written.describe()
    assert custom.is_dir()
    assert not image.default_data_dir.exists()


def test_custom_data_dir_persists(image, tmp_path):
    custom = tmp_path / "custom-data"
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted", env={"FIM_DIR_DATA": custom})
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "cat", "/persisted", env={"FIM_DIR_DATA": custom})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "kept\n"


def test_custom_data_dir_separate(image, tmp_path):
    custom = tmp_path / "custom-data"
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted", env={"FIM_DIR_DATA": custom})
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "test", "-e", "/persisted")
    assert result.returncode == 1, result.describe()


def test_work_dirs_removed(image):
    first = image.run("fim-exec", "true")
    assert first.returncode == 0, first.describe()
    after_first = tree_listing(image.default_data_dir)

    process = image.popen("fim-exec", "sh", "-c", "echo ready; sleep 0.5")
    wait_for_output(process.stdout, "ready")
    result = finish(process)
    assert result.returncode == 0, result.describe()
    after_second = tree_listing(image.default_data_dir)

    assert after_second == after_first


def test_work_dirs_do_not_accumulate(image):
    for number in range(3):
        result = image.run("fim-exec", "true")
        assert result.returncode == 0, f"run {number}: {result.describe()}"
    after_three = tree_listing(image.default_data_dir)
    result = image.run("fim-root", "true")
    assert result.returncode == 0, result.describe()
    assert tree_listing(image.default_data_dir) == after_three
