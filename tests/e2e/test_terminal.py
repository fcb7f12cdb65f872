"""Interactive use on a terminal: output, exit, job control and Ctrl-C."""

import re
import time

import pytest

# busybox sh prints this when it cannot take over the terminal.
NO_JOB_CONTROL = "job control turned off"
TERMINAL_ENV = {"TERM": "dumb", "PS1": "fim$ "}


@pytest.fixture
def shell(image, terminal):
    session = terminal([image.path, "fim-exec", "sh", "-i"], env=TERMINAL_ENV)
    session.read_until("fim$ ")
    return session


@pytest.mark.nosub
def test_terminal_command_output(shell):
    shell.write("echo fim-$((6*7))\n")
    shell.read_until("fim-42")


@pytest.mark.nosub
def test_terminal_exit(shell):
    shell.write("exit\n")
    assert shell.wait() == 0, shell.text()


def test_terminal_exit_status(shell):
    shell.write("exit 7\n")
    assert shell.wait() == 7, shell.text()


def test_terminal_stdin_is_tty(shell):
    shell.write("test -t 0 && echo tty-$((1+1))\n")
    shell.read_until("tty-2")


def test_terminal_job_control_enabled(shell):
    shell.write("echo started-$((2+2))\n")
    output = shell.read_until("started-4")
    assert NO_JOB_CONTROL not in output


def test_terminal_foreground_job(shell):
    # With job control, the shell runs each job in its own process group and
    # hands it the terminal.
    shell.write("fim-probe tty; echo probe-$((2+3))\n")
    output = shell.read_until("probe-5")
    values = dict(re.findall(r"^(pid|pgrp|foreground_pgrp)=(-?\d+)\r?$", output, re.MULTILINE))
    assert values.get("pgrp") == values.get("pid"), output
    assert values.get("foreground_pgrp") == values.get("pgrp"), output


def test_terminal_ctrl_c(shell):
    shell.write("sleep 30\n")
    # Give the shell time to start sleep; an early ^C would only clear the line.
    time.sleep(0.5)
    shell.write("\x03")
    shell.write("echo after-$((1+1))\n")
    shell.read_until("after-2", timeout=10)


def test_terminal_window_size(shell):
    shell.write("stty size; echo size-$((3+3))\n")
    output = shell.read_until("size-6")
    assert re.search(r"^24 80\r?$", output, re.MULTILINE), output
