"""fim-overlay: storing, showing and overriding the overlay mode; fim-help."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (
    RUNTIME_ERROR,
    copy_image,
    finish,
    parse_mounts,
    parse_probe,
    run_command,
    runtime_env,
    wait_for_output,
    wait_for_process,
)

ACCEPTED_MODES = ("bwrap", "overlayfs", "unionfs")


def show(image, env=None):
    result = image.run("fim-overlay", "show", env=env)
    assert result.returncode == 0, result.describe()
    return result.stdout.strip()


def test_show_fresh_image(image):
    result = image.run("fim-overlay", "show")
    assert result.returncode == 0, result.describe()
    assert result.stdout == "BWRAP\n"


@pytest.mark.parametrize("mode", ACCEPTED_MODES)
def test_set_then_show(image, mode):
    result = image.run("fim-overlay", "set", mode)
    assert result.returncode == 0, result.describe()
    assert show(image) == mode.upper()


def test_set_prints_nothing(image):
    result = image.run("fim-overlay", "set", "unionfs")
    assert result.returncode == 0, result.describe()
    assert result.stdout == ""
    assert result.stderr == ""


def test_set_keeps_layers(image):
    layers_before = image.list_layers()
    result = image.run("fim-overlay", "set", "unionfs")
    assert result.returncode == 0, result.describe()
    assert image.list_layers() == layers_before


def test_set_back_to_bwrap_runs(image):
    for mode in ("unionfs", "bwrap"):
        result = image.run("fim-overlay", "set", mode)
        assert result.returncode == 0, result.describe()
    run = image.run("fim-exec", "cat", "/fimtest/marker")
    assert run.returncode == 0, run.describe()
    assert run.stdout == "from-layer\n"


def test_set_copied_with_image(image, tmp_path):
    result = image.run("fim-overlay", "set", "overlayfs")
    assert result.returncode == 0, result.describe()
    copy = copy_image(image, tmp_path, "copy")
    assert show(copy) == "OVERLAYFS"


@pytest.mark.parametrize("mode", ACCEPTED_MODES)
def test_env_overrides_show(image, mode):
    assert show(image, env={"FIM_OVERLAY": mode}) == mode.upper()


def test_env_overrides_stored(image):
    result = image.run("fim-overlay", "set", "unionfs")
    assert result.returncode == 0, result.describe()
    assert show(image, env={"FIM_OVERLAY": "bwrap"}) == "BWRAP"


def test_env_override_not_stored(image):
    assert show(image, env={"FIM_OVERLAY": "overlayfs"}) == "OVERLAYFS"
    assert show(image) == "BWRAP"


def test_env_bwrap_runs_over_stored(image):
    result = image.run("fim-overlay", "set", "unionfs")
    assert result.returncode == 0, result.describe()
    run = image.run("fim-exec", "true", env={"FIM_OVERLAY": "bwrap"})
    assert run.returncode == 0, run.describe()


def test_env_bogus_uses_stored(image):
    result = image.run("fim-overlay", "show", env={"FIM_OVERLAY": "bogus"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "BWRAP\n"


def test_env_bogus_warns_once(image):
    result = image.run("fim-overlay", "show", env={"FIM_OVERLAY": "bogus"})
    assert len(result.stderr.splitlines()) == 1, result.describe()


@pytest.mark.parametrize("mode", ACCEPTED_MODES)
def test_env_bogus_warning_names_mode(image, mode):
    result = image.run("fim-overlay", "show", env={"FIM_OVERLAY": "bogus"})
    assert mode in result.stderr.lower(), result.describe()


def test_env_bogus_warning_names_value(image):
    result = image.run("fim-overlay", "show", env={"FIM_OVERLAY": "bogus"})
    assert "bogus" in result.stderr, result.describe()


def test_env_bogus_run_works(image):
    result = image.run("fim-exec", "cat", "/fimtest/marker", env={"FIM_OVERLAY": "bogus"})
    assert result.returncode == 0, result.describe()
    assert result.stdout == "from-layer\n"


@pytest.mark.parametrize("args", [
    pytest.param([], id="alone"),
    pytest.param(["set"], id="set-without-value"),
    pytest.param(["set", "foo"], id="set-unknown"),
    pytest.param(["set", "bwrap", "extra"], id="set-trailing"),
    pytest.param(["show", "extra"], id="show-trailing"),
    pytest.param(["frobnicate"], id="unknown-subcommand"),
])
def test_usage_error(image, args):
    before = image.sha256()
    result = image.run("fim-overlay", *args)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert result.stderr.strip(), "expected an error message on stderr"
    assert image.sha256() == before


def test_set_unknown_keeps_value(image):
    result = image.run("fim-overlay", "set", "unionfs")
    assert result.returncode == 0, result.describe()
    rejected = image.run("fim-overlay", "set", "foo")
    assert rejected.returncode == RUNTIME_ERROR, rejected.describe()
    assert show(image) == "UNIONFS"


def test_set_while_running(image):
    # The kernel rejects writes to a file that is being executed (ETXTBSY),
    # so this fails if the running instance keeps its own image busy.
    running = image.popen("fim-exec", "sh", "-c", "echo ready; sleep 5")
    wait_for_output(running.stdout, "ready")

    result = image.run("fim-overlay", "set", "unionfs")
    still_running = running.poll() is None
    shown = show(image)
    running.kill()
    finish(running)

    assert result.returncode == 0, result.describe()
    assert still_running, "the running instance ended before the write"
    assert shown == "UNIONFS"


def test_set_survives_kill(image):
    # Kill writers at spread-out moments of their run; each time the stored
    # value must be the old one or the new one.
    layers_before = image.list_layers()
    previous = "BWRAP"
    for attempt in range(24):
        mode = ACCEPTED_MODES[attempt % 3]
        writer = subprocess.Popen([image.path, "fim-overlay", "set", mode], env=runtime_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(attempt * 0.0005)
        writer.kill()
        writer.wait(timeout=30)

        current = show(image)
        assert current in (previous, mode.upper()), f"attempt {attempt}: {previous} -> {mode}"
        previous = current

    assert image.list_layers() == layers_before


# Helper program and root file system type of each FUSE mode.
FUSE_MODES = {
    "overlayfs": ("fuse-overlayfs", "fuse.fuse-overlayfs"),
    "unionfs": ("unionfs", "fuse.unionfs"),
}
# Seconds; short, so that a deadlocked helper fails its test quickly.
FUSE_RUN_TIMEOUT = 15


def needs_helper(mode):
    helper = FUSE_MODES[mode][0]
    if shutil.which(helper) is None:
        pytest.skip(f"{helper} is not installed, so the {mode} mode cannot run")


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_fuse_mode_stored_runs(image, mode):
    needs_helper(mode)
    result = image.run("fim-overlay", "set", mode)
    assert result.returncode == 0, result.describe()
    run = image.run("fim-exec", "cat", "/fimtest/marker", timeout=FUSE_RUN_TIMEOUT)
    assert run.returncode == 0, run.describe()
    assert run.stdout == "from-layer\n"


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_fuse_mode_env_runs(image, mode):
    needs_helper(mode)
    run = image.run("fim-exec", "cat", "/fimtest/marker", env={"FIM_OVERLAY": mode}, timeout=FUSE_RUN_TIMEOUT)
    assert run.returncode == 0, run.describe()
    assert run.stdout == "from-layer\n"


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_fuse_mode_root_mount(image, mode):
    # A mode that fell back to the kernel overlay would show "overlay" here.
    needs_helper(mode)
    run = image.run("fim-exec", "fim-probe", env={"FIM_OVERLAY": mode}, timeout=FUSE_RUN_TIMEOUT)
    assert run.returncode == 0, run.describe()
    mounts = parse_mounts(parse_probe(run.stdout))
    assert mounts["/"][0] == FUSE_MODES[mode][1], mounts.get("/")


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_fuse_mode_write_persists(image, mode):
    needs_helper(mode)
    env = {"FIM_OVERLAY": mode}
    written = image.run("fim-exec", "sh", "-c", "echo kept > /persisted", env=env, timeout=FUSE_RUN_TIMEOUT)
    assert written.returncode == 0, written.describe()
    result = image.run("fim-exec", "cat", "/persisted", env=env, timeout=FUSE_RUN_TIMEOUT)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "kept\n"


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_fuse_mode_exit_status(image, mode):
    needs_helper(mode)
    run = image.run("fim-exec", "sh", "-c", "exit 3", env={"FIM_OVERLAY": mode}, timeout=FUSE_RUN_TIMEOUT)
    assert run.returncode == 3, run.describe()


def test_help_lists_commands(image):
    result = image.run("fim-help")
    assert result.returncode == 0, result.describe()
    for command in ("fim-exec", "fim-root", "fim-layer", "fim-overlay", "fim-help"):
        assert command in result.stdout, f"{command} missing from fim-help:\n{result.stdout}"


def test_help_overlay_usage(image):
    result = image.run("fim-help", "overlay")
    assert result.returncode == 0, result.describe()
    assert "fim-overlay" in result.stdout, result.describe()
    for word in ("set", "show", *ACCEPTED_MODES):
        assert word in result.stdout, f"{word} missing from fim-help overlay:\n{result.stdout}"


def test_help_on_bare_runtime(runtime):
    # Help must work before any layer exists.
    result = run_command([runtime, "fim-help"])
    assert result.returncode == 0, result.describe()
    assert "fim-layer" in result.stdout


HELPER_PACKAGES = {"overlayfs": ("fuse-overlayfs", "fuse-overlayfs"), "unionfs": ("unionfs", "unionfs-fuse")}


@pytest.mark.parametrize("mode", sorted(HELPER_PACKAGES))
def test_helper_death_reported(image, tmp_path, mode):
    program, package = HELPER_PACKAGES[mode]
    data_dir = tmp_path / "data"
    process = image.popen(
        "fim-exec", "sleep", "30", env={"FIM_OVERLAY": mode, "FIM_DIR_DATA": str(data_dir)}
    )
    helper = wait_for_process(process.pid, "/newroot", program=program)
    os.kill(helper, signal.SIGKILL)
    result = finish(process)
    assert result.returncode == RUNTIME_ERROR, result.describe()
    assert f"'{program}'" in result.stderr, result.describe()
    assert f"package {package}" in result.stderr, result.describe()
    assert str(data_dir / "logs" / f"{mode}.log") in result.stderr, result.describe()


@pytest.mark.parametrize("mode", sorted(HELPER_PACKAGES))
def test_killed_helper_run_repaired(image, tmp_path, mode):
    # A run killed while its helper's markers are on disk leaves the
    # writable layer in the helper's format; the next run in any mode must
    # convert it back, so the file stays deleted and no marker shows.
    data_dir = tmp_path / "data"
    env = {"FIM_OVERLAY": mode, "FIM_DIR_DATA": str(data_dir)}
    process = image.popen("fim-exec", "sh", "-c", "rm /etc/os-release && exec sleep 30 # killed-run", env=env)
    wait_for_process(process.pid, "30", program="sleep")
    os.kill(process.pid, signal.SIGKILL)
    finish(process)
    assert (data_dir / "upper.format").read_text().strip() == mode

    result = image.run("fim-exec", "sh", "-c", "test -e /etc/os-release; echo $?; ls -A /", env={"FIM_DIR_DATA": str(data_dir)})
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[0] == "1", result.describe()
    assert ".unionfs-fuse" not in result.stdout.split(), result.describe()
    assert (data_dir / "upper.format").read_text().strip() == "canonical"
