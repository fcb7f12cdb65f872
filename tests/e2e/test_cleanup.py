"""No stale state on the host after a run ends, however it ends, and concurrent runs."""

import os
import signal
import time
import uuid

import pytest

from conftest import (
    finish,
    find_process,
    parent_pids,
    process_cmdline,
    process_tree,
    read_host_mounts,
    surviving_processes,
    wait_for_output,
)

# Programs that other launchers start and this runtime must not need.
HELPER_PROGRAMS = {"bwrap", "squashfuse", "squashfuse_ll", "fusermount", "fusermount3", "fuse-overlayfs", "unionfs"}

# Seconds the host may take to see every process of a run gone.
SETTLE_TIMEOUT = 2.0


def processes_mentioning(text, timeout=SETTLE_TIMEOUT):
    """Poll until no host process has text in its command line; return the pids that still do after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for pid in parent_pids() if any(text.encode() in arg for arg in process_cmdline(pid))]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.05)


def start_sleeper(image, token, seconds=30):
    process = image.popen("fim-exec", "sh", "-c", f"echo ready; sleep {seconds}; : {token}")
    wait_for_output(process.stdout, "ready")
    return process


@pytest.fixture
def token():
    return f"fim-cleanup-{uuid.uuid4().hex}"


def test_normal_exit_leaves_no_mount(image, token):
    before = read_host_mounts()
    process = start_sleeper(image, token, seconds=0.2)
    result = finish(process)
    assert result.returncode == 0, result.describe()
    assert read_host_mounts() - before == set()


def test_normal_exit_leaves_no_process(image, token):
    process = start_sleeper(image, token, seconds=0.3)
    tree = process_tree(process.pid)
    result = finish(process)
    assert result.returncode == 0, result.describe()
    assert surviving_processes(tree, SETTLE_TIMEOUT) == []


def test_runtime_kill_leaves_no_process(image, token):
    process = start_sleeper(image, token)
    tree = process_tree(process.pid)
    assert find_process(tree, token) is not None, "the program's process was not found under the runtime"

    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    assert surviving_processes(tree, SETTLE_TIMEOUT) == []


def test_runtime_kill_leaves_no_program(image, token):
    # Also catches a program that escaped the runtime's process tree.
    process = start_sleeper(image, token)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    assert processes_mentioning(token) == []


def test_runtime_kill_leaves_no_mount(image, token):
    before = read_host_mounts()
    process = start_sleeper(image, token)
    tree = process_tree(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    surviving_processes(tree, SETTLE_TIMEOUT)
    assert read_host_mounts() - before == set()


def test_program_kill_leaves_no_process(image, token):
    process = start_sleeper(image, token)
    tree = process_tree(process.pid)
    program = find_process(tree, token)
    assert program is not None, "the program's process was not found under the runtime"

    os.kill(program, signal.SIGKILL)
    result = finish(process, timeout=10)

    assert result.returncode == 128 + signal.SIGKILL, result.describe()
    assert surviving_processes(tree, SETTLE_TIMEOUT) == []


def test_program_kill_leaves_no_mount(image, token):
    before = read_host_mounts()
    process = start_sleeper(image, token)
    program = find_process(process_tree(process.pid), token)
    assert program is not None, "the program's process was not found under the runtime"

    os.kill(program, signal.SIGKILL)
    finish(process, timeout=10)

    assert read_host_mounts() - before == set()


def test_runtime_kill_then_rerun(image, token):
    # A killed run must not leave state in the data directory that breaks the next run.
    process = start_sleeper(image, token)
    tree = process_tree(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    surviving_processes(tree, SETTLE_TIMEOUT)

    result = image.run("fim-exec", "sh", "-c", "echo again > /again && cat /again")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "again\n"


def test_no_helper_processes(image, token):
    # The runtime serves layers and sets up namespaces itself.
    process = start_sleeper(image, token)
    commands = set()
    for pid in process_tree(process.pid):
        cmdline = process_cmdline(pid)
        if cmdline:
            commands.add(os.path.basename(cmdline[0].decode(errors="replace")))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    assert commands & HELPER_PROGRAMS == set(), commands


@pytest.mark.nosub
def test_concurrent_instances(image, token):
    first = start_sleeper(image, token, seconds=3)

    second = image.run("fim-exec", "sh", "-c", "echo second")
    first_running = first.poll() is None
    first_result = finish(first)

    assert second.returncode == 0, second.describe()
    assert second.stdout == "second\n"
    assert first_running, "the first instance ended before the second one finished"
    assert first_result.returncode == 0, first_result.describe()


def test_concurrent_instances_write(image, token):
    first = start_sleeper(image, token, seconds=3)
    second = image.run("fim-exec", "sh", "-c", "echo from-second > /second && cat /second")
    first_result = finish(first)

    assert second.returncode == 0, second.describe()
    assert second.stdout == "from-second\n"
    assert first_result.returncode == 0, first_result.describe()
