"""Signals sent to the runtime reach the program."""

import os
import signal

import pytest

from conftest import finish, find_process, process_tree, wait_for_output, wait_for_process

FORWARDED_SIGNALS = ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH"]


@pytest.mark.parametrize("name", FORWARDED_SIGNALS)
def test_signal_reaches_program(image, name):
    script = f"trap 'echo got-{name}; exit 0' {name}; echo ready; while :; do sleep 0.05; done"
    process = image.popen("fim-exec", "sh", "-c", script)
    wait_for_output(process.stdout, "ready")

    os.kill(process.pid, getattr(signal, f"SIG{name}"))
    result = finish(process, timeout=10)

    assert f"got-{name}" in result.stdout, result.describe()
    assert result.returncode == 0, result.describe()


@pytest.mark.parametrize("name", ["TERM", "INT", "HUP"])
def test_signal_ends_untrapped_program(image, name):
    # A program without a handler dies from the signal, as it would outside
    # the container, even if the runtime runs it as the pid namespace's init.
    # The program is sleep itself: sh -c would wait for its child before
    # acting on SIGINT.
    process = image.popen("fim-exec", "sleep", "30.25")
    wait_for_process(process.pid, "30.25", program="sleep")

    os.kill(process.pid, getattr(signal, f"SIG{name}"))
    result = finish(process, timeout=10)

    assert result.returncode == 128 + getattr(signal, f"SIG{name}"), result.describe()


def test_sigkill_of_program_status(image):
    token = "killed-program"
    process = image.popen("fim-exec", "sh", "-c", f"echo ready; sleep 30; : {token}")
    wait_for_output(process.stdout, "ready")
    program = find_process(process_tree(process.pid), token)
    assert program is not None, "the program's process was not found under the runtime"

    os.kill(program, signal.SIGKILL)
    result = finish(process, timeout=10)

    assert result.returncode == 128 + signal.SIGKILL, result.describe()
