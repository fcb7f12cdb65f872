"""Running commands: fim-exec, fim-root, the boot command, exit status and standard streams."""

import pytest

from conftest import RUNTIME_ERROR

# Seen by a shell when a program is killed by signal N: 128 + N.
SIGNAL_EXIT_BASE = 128
SIGUSR1 = 10
SIGSEGV = 11


@pytest.mark.nosub
def test_exec_uid(image, user):
    result = image.run("fim-exec", "id", "-u")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.uid)


@pytest.mark.nosub
def test_exec_gid(image, user):
    result = image.run("fim-exec", "id", "-g")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == str(user.gid)


@pytest.mark.nosub
def test_root_uid(image):
    result = image.run("fim-root", "id", "-u")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "0"


@pytest.mark.nosub
def test_root_gid(image):
    result = image.run("fim-root", "id", "-g")
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "0"


@pytest.mark.nosub
def test_root_home(image):
    result = image.run("fim-root", "sh", "-c", 'echo "$HOME"')
    assert result.returncode == 0, result.describe()
    assert result.stdout == "/root\n"


@pytest.mark.nosub
def test_root_user(image):
    result = image.run("fim-root", "sh", "-c", 'echo "$USER"')
    assert result.returncode == 0, result.describe()
    assert result.stdout == "root\n"


@pytest.mark.nosub
def test_boot_command_args(image):
    result = image.run("-c", "echo hi")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "hi\n"


def test_boot_command_is_sh(image):
    # The busybox image has no bash, so the boot command is sh.
    result = image.run("-c", 'echo "${BASH_VERSION:-no-bash}"')
    assert result.returncode == 0, result.describe()
    assert result.stdout == "no-bash\n"


def test_exec_args_preserved(image):
    result = image.run("fim-exec", "printf", "%s|", "a b", "", "c*", "$HOME")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "a b||c*|$HOME|"


def test_exec_environment_passed(image):
    result = image.run("fim-exec", "sh", "-c", 'echo "$FIM_TEST_VALUE"', env={"FIM_TEST_VALUE": "passed through"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "passed through\n"


def test_path_resolved_inside(image):
    # /opt/fimtest/bin exists only in the image, so only a lookup inside the
    # container finds fim-hello.
    result = image.run("fim-exec", "fim-hello", env={"PATH": "/opt/fimtest/bin:/bin:/usr/bin"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "hello-from-path\n"


def test_path_usr_local_bin(image):
    result = image.run("fim-exec", "fim-probe")
    assert result.returncode == 0, result.describe()
    assert "uid=" in result.stdout


def test_exit_status_passed(image):
    result = image.run("fim-exec", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.describe()


def test_exit_status_zero(image):
    result = image.run("fim-exec", "true")
    assert result.returncode == 0, result.describe()


def test_exit_status_false(image):
    result = image.run("fim-exec", "false")
    assert result.returncode == 1, result.describe()


def test_not_found_bare_name(image):
    result = image.run("fim-exec", "no-such-program")
    assert result.returncode == 127, result.describe()


def test_not_found_path(image):
    result = image.run("fim-exec", "/no/such/program")
    assert result.returncode == 127, result.describe()


def test_not_found_message(image):
    result = image.run("fim-exec", "no-such-program")
    assert "no-such-program" in result.stderr, result.describe()


def test_not_executable(image):
    result = image.run("fim-exec", "/fimtest/not-executable")
    assert result.returncode == 126, result.describe()


def test_directory_not_executable(image):
    result = image.run("fim-exec", "/fimtest")
    assert result.returncode == 126, result.describe()


def test_killed_by_segv(image):
    # The kernel raises SIGSEGV itself, so it kills the program even when the
    # program is the init process of its pid namespace.
    result = image.run("fim-exec", "fim-probe", "segv")
    assert result.returncode == SIGNAL_EXIT_BASE + SIGSEGV, result.describe()


def test_killed_by_own_signal(image):
    # Under bwrap, FlatImage's launcher, a program that signals itself dies
    # like anywhere else; a user expects the same here.
    result = image.run("fim-exec", "sh", "-c", "kill -USR1 $$; sleep 5")
    assert result.returncode == SIGNAL_EXIT_BASE + SIGUSR1, result.describe()


def test_unknown_command(image):
    result = image.run("fim-no-such-command")
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_exec_without_program(image):
    result = image.run("fim-exec")
    assert result.returncode == RUNTIME_ERROR, result.describe()


def test_root_without_program(image):
    result = image.run("fim-root")
    assert result.returncode == RUNTIME_ERROR, result.describe()


@pytest.mark.nosub
def test_stdin_passed(image):
    result = image.run("fim-exec", "cat", input="abc\n")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "abc\n"


def test_stdin_large(image):
    data = "".join(f"{number}\n" for number in range(200000))
    result = image.run("fim-exec", "wc", "-l", input=data)
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "200000"


def test_stdout_and_stderr_separate(image):
    result = image.run("fim-exec", "sh", "-c", "echo out; echo err >&2")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr

