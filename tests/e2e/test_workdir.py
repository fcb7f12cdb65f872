"""Working directory: the host's when it exists inside, else HOME, else /."""

from pathlib import Path

import pytest

# Exists on the host and in the busybox image, and is neither HOME nor /.
SHARED_DIRECTORY = "/usr/bin"
# Created in the image by the extras layer, absent on the host.
IMAGE_HOME = "/home/fimhome"


@pytest.mark.nosub
def test_workdir_root(image):
    result = image.run("fim-exec", "pwd", cwd="/")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "/\n"


@pytest.mark.nosub
def test_workdir_host_directory(image):
    assert Path(SHARED_DIRECTORY).is_dir(), f"the host has no {SHARED_DIRECTORY}"
    result = image.run("fim-exec", "pwd", cwd=SHARED_DIRECTORY, env={"HOME": IMAGE_HOME})
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{SHARED_DIRECTORY}\n"


def test_workdir_home_fallback(image, tmp_path):
    # tmp_path lies under the host's /tmp, which the container replaces with
    # an empty tmpfs, so it does not exist inside.
    result = image.run("fim-exec", "pwd", cwd=tmp_path, env={"HOME": IMAGE_HOME})
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{IMAGE_HOME}\n"


def test_workdir_slash_fallback(image, tmp_path):
    result = image.run("fim-exec", "pwd", cwd=tmp_path, env={"HOME": "/no/such/home"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "/\n"


def test_workdir_root_home_fallback(image, tmp_path):
    result = image.run("fim-root", "pwd", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "/root\n"


def test_workdir_relative_program(image):
    # A relative program path resolves against the working directory inside.
    result = image.run("fim-exec", "./bin/busybox", "echo", "relative", cwd="/")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "relative\n"
