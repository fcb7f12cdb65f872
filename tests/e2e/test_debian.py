"""The Debian 12 image: the commands a new user tries first, and installing a package."""

import pytest

from conftest import copy_image

pytestmark = pytest.mark.debian

# Seconds; apt-get fetches package lists and packages from the mirror.
APT_TIMEOUT = 600


@pytest.fixture
def data_env(tmp_path):
    """Keep the writes of a run next to the test, not next to the shared image."""
    return {"FIM_DIR_DATA": tmp_path / "data"}


@pytest.mark.nosub
def test_debian_os_release(debian_image, data_env):
    result = debian_image.run("fim-exec", "bash", "-c", "cat /etc/os-release", env=data_env)
    assert result.returncode == 0, result.describe()
    assert 'VERSION_ID="12"' in result.stdout, result.stdout
    assert "ID=debian" in result.stdout.splitlines(), result.stdout


@pytest.mark.nosub
def test_debian_dpkg_list(debian_image, data_env):
    result = debian_image.run("fim-root", "dpkg", "-l", env=data_env)
    assert result.returncode == 0, result.describe()
    installed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ii ")]
    assert "bash" in installed, result.stdout
    assert "dpkg" in installed, result.stdout


def test_debian_boot_command_is_bash(debian_image, data_env):
    result = debian_image.run("-c", 'echo "${BASH_VERSION:-no-bash}"', env=data_env)
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() != "no-bash"


@pytest.mark.nosub
def test_debian_whoami(debian_image, data_env, user):
    result = debian_image.run("fim-exec", "whoami", env=data_env)
    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{user.name}\n"


def test_debian_terminal_bash(debian_image, data_env, terminal):
    session = terminal([debian_image.path, "fim-exec", "bash", "--norc", "-i"],
                       env={**data_env, "TERM": "dumb", "PS1": "deb$ "})
    session.read_until("deb$ ")
    session.write("echo fim-$((6*7))\n")
    session.read_until("fim-42")
    session.write("exit\n")
    assert session.wait() == 0, session.text()


@pytest.mark.nosub
@pytest.mark.slow
@pytest.mark.network
def test_debian_apt_install_hello(debian_image, tmp_path):
    image = copy_image(debian_image, tmp_path, "debian")

    update = image.run("fim-root", "apt-get", "update", timeout=APT_TIMEOUT)
    assert update.returncode == 0, update.describe()

    install = image.run("fim-root", "apt-get", "install", "-y", "hello", timeout=APT_TIMEOUT)
    assert install.returncode == 0, install.describe()

    hello = image.run("fim-exec", "hello")
    assert hello.returncode == 0, hello.describe()
    assert hello.stdout == "Hello, world!\n"
