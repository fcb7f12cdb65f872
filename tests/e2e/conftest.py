"""Fixtures and helpers for the end-to-end tests of the flatimage runtime.

The tests build real images from directory trees with the runtime's own
`fim-layer create` and `fim-layer add`, run them as the invoking user and
check what a user would see. Every subprocess call has a timeout, so a hung
runtime fails its test instead of hanging the run.

Environment variables:
  FIM_RUNTIME         bare runtime (default: build/flatimage in the repository)
  FIM_PROBE           static probe binary (default: build/tests/fim-probe)
  FIM_BUSYBOX_ROOTFS  busybox root filesystem tree. When unset, the tests
                      build one with tools/mkrootfs-busybox.sh.
  FIM_ROOT_TREE       tree of root-owned test files from tests/run-e2e.sh.
                      When unset, the tests build it if they run as root.
  FIM_DEBIAN_IMAGE    prebuilt Debian 12 image. When unset, its tests skip.
"""

import collections
import fcntl
import grp
import hashlib
import os
import pty
import pwd
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

# Seconds. A run of a small busybox image takes well under a second, so these
# leave room for a loaded CI machine while still failing a hang quickly.
RUN_TIMEOUT = 30
LAYER_TIMEOUT = 120

# Exit status the runtime uses for its own errors.
RUNTIME_ERROR = 125

# Variables that change the runtime's behaviour. They are removed from the
# inherited environment, so one reaches the runtime only when a test sets it.
RUNTIME_VARIABLES = ("FIM_OVERLAY", "FIM_DIR_DATA", "FIM_COMPRESSION_LEVEL")

MARKERS = {
    "nosub": "also runs as a user without /etc/subuid and /etc/subgid ranges",
    "slow": "takes more than a few seconds",
    "network": "needs the Debian package mirror",
    "debian": "needs the Debian image from FIM_DEBIAN_IMAGE",
    "single_mapping": "runs only for a user whose ids are mapped one to one (no subordinate range)",
    "subordinate_range": "runs only for a user with /etc/subuid and /etc/subgid ranges and newuidmap",
}


def pytest_configure(config):
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(config, items):
    """Deselect the id-mapping tests that do not apply to the current user.

    Deselecting instead of skipping keeps a strict run, where every skip
    counts as a failure, green for both kinds of user.
    """
    excluded = "single_mapping" if current_user().has_subordinate_ids else "subordinate_range"
    kept = [item for item in items if item.get_closest_marker(excluded) is None]
    deselected = [item for item in items if item.get_closest_marker(excluded) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


class Result(collections.namedtuple("Result", "returncode stdout stderr")):
    """Outcome of one command: exit status and decoded output."""

    __slots__ = ()

    def describe(self):
        return f"exit status {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def runtime_env(extra=None):
    """Return the inherited environment without runtime variables, updated with extra.

    A value of None in extra removes that variable.
    """
    env = {key: value for key, value in os.environ.items() if key not in RUNTIME_VARIABLES}
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run_command(argv, env=None, cwd=None, timeout=RUN_TIMEOUT, input=None):
    """Run argv to completion and return a Result; on a timeout, kill its process tree and fail the test."""
    process = subprocess.Popen(
        [str(arg) for arg in argv],
        env=env if env is not None else runtime_env(),
        cwd=cwd,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(input.encode() if isinstance(input, str) else input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            # A process blocked on a FUSE request ignores SIGKILL and may keep the pipes open.
            stdout, stderr = b"", b""
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, argv))}\n"
                    f"stdout: {stdout!r}\nstderr: {stderr!r}")
    return Result(
        process.returncode,
        stdout.decode(errors="replace"),
        stderr.decode(errors="replace"),
    )


# Processes started with Image.popen, killed with their descendants after
# each test so that a failing test leaves nothing running.
_started_processes = []


class Image:
    """An image file and the commands that run it."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"Image({str(self.path)!r})"

    @property
    def default_data_dir(self):
        return self.path.parent / f".{self.path.name}.data"

    def run(self, *args, env=None, cwd=None, timeout=RUN_TIMEOUT, input=None):
        """Run the image with args; env adds to (or, with None values, removes from) runtime_env()."""
        return run_command([self.path, *args], env=runtime_env(env), cwd=cwd, timeout=timeout, input=input)

    def popen(self, *args, env=None, cwd=None, stdin=subprocess.DEVNULL):
        """Start the image in the background with unbuffered binary stdout and stderr pipes."""
        process = subprocess.Popen(
            [str(self.path), *map(str, args)],
            env=runtime_env(env),
            cwd=cwd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        _started_processes.append(process)
        return process

    def sha256(self):
        return file_sha256(self.path)

    def create_layer(self, directory, layer_file, env=None):
        return self.run("fim-layer", "create", directory, layer_file, env=env, timeout=LAYER_TIMEOUT)

    def add_layer(self, layer_file):
        return self.run("fim-layer", "add", layer_file, timeout=LAYER_TIMEOUT)

    def list_layers(self):
        """Run `fim-layer list` and return (index, offset, size, path) tuples; fail the test on an error."""
        result = self.run("fim-layer", "list")
        assert result.returncode == 0, f"fim-layer list failed: {result.describe()}"
        layers = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            index, offset, size, path = line.split(":", 3)
            layers.append((int(index), int(offset), int(size), path))
        return layers


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_image(runtime, directory, name, layer_dirs):
    """Copy the bare runtime to directory/NAME.flatimage and add one layer per directory, bottom first."""
    directory = Path(directory)
    image = Image(directory / f"{name}.flatimage")
    shutil.copyfile(runtime, image.path)
    image.path.chmod(0o755)

    for number, layer_dir in enumerate(layer_dirs):
        layer_file = directory / f"{name}.layer{number}.sqfs"
        created = image.create_layer(layer_dir, layer_file)
        assert created.returncode == 0, f"fim-layer create {layer_dir} failed: {created.describe()}"
        added = image.add_layer(layer_file)
        assert added.returncode == 0, f"fim-layer add {layer_file} failed: {added.describe()}"
        layer_file.unlink()
    return image


def copy_image(image, directory, name="app"):
    """Copy an image file to directory/NAME.flatimage, so that it gets its own data directory."""
    copy = Image(Path(directory) / f"{name}.flatimage")
    shutil.copyfile(image.path, copy.path)
    copy.path.chmod(0o755)
    return copy


def write_tree(root, files):
    """Create files under root from {relative path: text or (text, mode)}; a path ending in / is a directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        mode = None
        if isinstance(content, tuple):
            content, mode = content
        path = root / relative.rstrip("/")
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        if mode is not None:
            path.chmod(mode)
    return root


def parse_probe(stdout):
    """Parse fim-probe output into {key: [value, ...]} in the order printed."""
    values = collections.defaultdict(list)
    for line in stdout.splitlines():
        key, separator, value = line.partition("=")
        if separator:
            values[key].append(value)
    return values


def parse_mounts(probe):
    """Return {mount point: (fstype, mount options, super options)} from parsed probe output; the last entry wins."""
    mounts = {}
    for entry in probe.get("mount", []):
        point, fstype, options, super_options = (entry.split(" ") + ["", "", ""])[:4]
        mounts[point] = (fstype, options.split(","), super_options.split(","))
    return mounts


def read_host_mounts():
    """Return the set of (mount point, fstype, source) in this process's mount namespace."""
    mounts = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-", 6)
            mounts.add((fields[4], fields[separator + 1], fields[separator + 2]))
    return mounts


def process_start_time(pid):
    """Return the start time of pid in clock ticks, or None when it no longer exists or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            text = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in brackets may contain spaces, so split after it.
    fields = text[text.rindex(")") + 2:].split()
    state = fields[0]
    if state in ("Z", "X"):
        return None
    return int(fields[19])


def process_stat_fields():
    """Return {pid: fields of /proc/PID/stat after the command name} for every process on the host.

    The command name in brackets may contain spaces, so the fields start after
    its closing bracket: state, parent pid, process group, and so on.
    """
    fields = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                text = stat_file.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields[int(entry)] = text[text.rindex(")") + 2:].split()
    return fields


def parent_pids():
    """Return {pid: parent pid} for every process on the host."""
    return {pid: int(fields[1]) for pid, fields in process_stat_fields().items()}


def process_tree(pid):
    """Return {pid: start time} for pid and all its living descendants."""
    parents = parent_pids()
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return {member: start for member in tree if (start := process_start_time(member)) is not None}


def process_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def find_process(tree, token, program="sh"):
    """Return the pid in tree that runs program with token in its arguments, or None.

    Matching argv[0] skips the runtime, whose own arguments contain the token too.
    """
    for pid in tree:
        cmdline = process_cmdline(pid)
        if cmdline and cmdline[0] == program.encode() and any(token.encode() in arg for arg in cmdline[1:]):
            return pid
    return None


def wait_for_process(root_pid, token, program="sh", timeout=RUN_TIMEOUT):
    """Poll the process tree of root_pid until a process runs program with token in its arguments; return its pid."""
    deadline = time.monotonic() + timeout
    while True:
        pid = find_process(process_tree(root_pid), token, program)
        if pid is not None:
            return pid
        if time.monotonic() >= deadline:
            pytest.fail(f"no process {program} with {token!r} in its arguments appeared under pid {root_pid} within {timeout} s")
        time.sleep(0.02)


def surviving_processes(tree, timeout=2.0):
    """Poll until every process in {pid: start time} has exited; return the pids still alive after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid, start in tree.items() if process_start_time(pid) == start]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def wait_for_output(stream, text, timeout=RUN_TIMEOUT):
    """Read an unbuffered pipe until text appears; return everything read. Fail the test on timeout or EOF."""
    expected = text.encode()
    received = b""
    deadline = time.monotonic() + timeout
    while expected not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out after {timeout} s waiting for {text!r}; received {received!r}")
        ready, _, _ = select.select([stream], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            pytest.fail(f"output ended before {text!r} appeared; received {received!r}")
        received += chunk
    return received.decode(errors="replace")


def finish(process, timeout=RUN_TIMEOUT):
    """Wait for a process from Image.popen and return its Result; fail the test on a timeout."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        pytest.fail(f"timed out after {timeout} s: {process.args}")
    return Result(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def kill_tree(pid):
    for member in process_tree(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _kill_started_processes():
    yield
    while _started_processes:
        process = _started_processes.pop()
        if process.poll() is None:
            kill_tree(process.pid)
        try:
            process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass


def _path_from_env(variable, default):
    value = os.environ.get(variable)
    return Path(value) if value else default


@pytest.fixture(scope="session")
def runtime():
    """Path of the bare runtime, which is an image with no layers."""
    path = _path_from_env("FIM_RUNTIME", REPOSITORY / "build" / "flatimage")
    if not path.is_file():
        pytest.fail(f"runtime {path} not found; build it with `ninja -C build` or set FIM_RUNTIME")
    return path


@pytest.fixture(scope="session")
def probe():
    path = _path_from_env("FIM_PROBE", REPOSITORY / "build" / "tests" / "fim-probe")
    if not path.is_file():
        pytest.fail(f"probe {path} not found; build it with `ninja -C build` or set FIM_PROBE")
    return path


@pytest.fixture(scope="session")
def fsops():
    """Path of fim-fsops, the static program for file system calls busybox lacks."""
    path = _path_from_env("FIM_FSOPS", REPOSITORY / "build" / "tests" / "fim-fsops")
    if not path.is_file():
        pytest.fail(f"fim-fsops {path} not found; build it with `ninja -C build` or set FIM_FSOPS")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    value = os.environ.get("FIM_BUSYBOX_ROOTFS")
    if value:
        path = Path(value)
        if not (path / "bin" / "busybox").is_file():
            pytest.fail(f"FIM_BUSYBOX_ROOTFS={value} has no bin/busybox; build it with tools/mkrootfs-busybox.sh")
        return path

    path = tmp_path_factory.mktemp("busybox") / "rootfs"
    result = run_command(["bash", REPOSITORY / "tools" / "mkrootfs-busybox.sh", path], timeout=LAYER_TIMEOUT)
    assert result.returncode == 0, f"tools/mkrootfs-busybox.sh failed: {result.describe()}"
    return path


@pytest.fixture(scope="session")
def extras_tree(tmp_path_factory, probe):
    """Layer tree with the probe and the files that several tests use."""
    root = write_tree(tmp_path_factory.mktemp("extras") / "tree", {
        "opt/fimtest/bin/fim-hello": ("#!/bin/sh\necho hello-from-path\n", 0o755),
        "fimtest/not-executable": ("#!/bin/sh\necho ran\n", 0o644),
        "fimtest/marker": "from-layer\n",
        "home/fimhome/": None,
    })
    (root / "home" / "fimhome").chmod(0o755)
    target = root / "usr" / "local" / "bin" / "fim-probe"
    target.parent.mkdir(parents=True)
    shutil.copyfile(probe, target)
    target.chmod(0o755)
    return root


# Files of the root-owned tree: name -> (mode, uid).
ROOT_TREE_FILES = {
    "fimtest-root/shared-file": (0o666, 0),
    "fimtest-root/private-file": (0o644, 0),
    "fimtest-root/other-owner": (0o644, 4242),
}
ROOT_TREE_DIRS = {
    "fimtest-root/shared-dir": (0o777, 0),
}


def build_root_tree(root):
    """Write the root-owned tree; needs root, because it chowns files."""
    for relative, (mode, uid) in ROOT_TREE_DIRS.items():
        path = root / relative
        path.mkdir(parents=True)
        (path / "inside").write_text("inside\n")
        os.chown(path / "inside", 0, 0)
        os.chown(path, uid, uid)
        path.chmod(mode)
    for relative, (mode, uid) in ROOT_TREE_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("original\n")
        os.chown(path, uid, uid)
        path.chmod(mode)
    os.chown(root / "fimtest-root", 0, 0)
    (root / "fimtest-root").chmod(0o755)


@pytest.fixture(scope="session")
def root_tree(tmp_path_factory):
    """Tree of files owned by root and by uid 4242, or None when it cannot be made."""
    value = os.environ.get("FIM_ROOT_TREE")
    if value:
        return Path(value)
    if os.geteuid() != 0:
        return None
    root = tmp_path_factory.mktemp("root-tree") / "tree"
    root.mkdir()
    build_root_tree(root)
    return root


@pytest.fixture
def needs_root_tree(root_tree):
    if root_tree is None:
        pytest.skip("FIM_ROOT_TREE is unset and the tests do not run as root, so no root-owned layer "
                    "can be made; run the suite through tests/run-e2e.sh")
    return root_tree


@pytest.fixture(scope="session")
def base_image(runtime, busybox_rootfs, extras_tree, root_tree, tmp_path_factory):
    """Busybox image with the probe and test files; tests run copies of it."""
    layers = [busybox_rootfs, extras_tree]
    if root_tree is not None:
        layers.append(root_tree)
    return build_image(runtime, tmp_path_factory.mktemp("base"), "base", layers)


@pytest.fixture
def image(base_image, tmp_path):
    """Private copy of the base image in tmp_path, with its own data directory."""
    return copy_image(base_image, tmp_path)


@pytest.fixture
def make_image(runtime, tmp_path):
    """Return a factory: make_image(name, [layer dirs]) builds tmp_path/NAME.flatimage."""

    def make(name, layer_dirs):
        return build_image(runtime, tmp_path, name, layer_dirs)

    return make


@pytest.fixture(scope="session")
def debian_image():
    value = os.environ.get("FIM_DEBIAN_IMAGE")
    if not value:
        pytest.skip("FIM_DEBIAN_IMAGE is unset; run tests/run-e2e.sh with FIM_TEST_DEBIAN=1 to build the Debian image")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"FIM_DEBIAN_IMAGE={value} does not exist")
    return Image(path)


class User(collections.namedtuple("User", "name uid gid group has_subordinate_ids")):
    """The user running the tests and how the runtime is expected to map its ids."""

    __slots__ = ()


def subordinate_range(path, name, uid):
    """Return (start, count) of the first range for the user in /etc/subuid or /etc/subgid, or None."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) == 3 and fields[0] in (name, str(uid)):
            return int(fields[1]), int(fields[2])
    return None


@pytest.fixture(scope="session")
def user():
    return current_user()


def current_user():
    entry = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    # The runtime uses a full range only where newuidmap and newgidmap can write it.
    helpers = all(shutil.which(tool) for tool in ("newuidmap", "newgidmap"))
    has_ranges = (subordinate_range("/etc/subuid", entry.pw_name, entry.pw_uid) is not None
                  and subordinate_range("/etc/subgid", entry.pw_name, entry.pw_uid) is not None)
    return User(entry.pw_name, entry.pw_uid, os.getgid(), group, helpers and has_ranges and entry.pw_uid != 0)


class Terminal:
    """A program running on a new pseudo-terminal, as in an interactive session."""

    def __init__(self, argv, env, rows=24, columns=80):
        self.output = b""
        self.status = None
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(str(argv[0]), [str(arg) for arg in argv], env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def write(self, text):
        os.write(self.fd, text.encode())

    def _read_once(self, timeout):
        """Read what is available within timeout seconds; return False at end of output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:
            # Linux reports EIO once the last process holding the terminal has exited.
            return False
        self.output += chunk
        return bool(chunk)

    def read_until(self, text, timeout=RUN_TIMEOUT):
        """Read until text appears in the output; fail the test on timeout or end of output."""
        expected = text.encode()
        deadline = time.monotonic() + timeout
        while expected not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out after {timeout} s waiting for {text!r} on the terminal; output: {self.text()!r}")
            if not self._read_once(remaining):
                pytest.fail(f"terminal output ended before {text!r} appeared; output: {self.text()!r}")
        return self.text()

    def wait(self, timeout=RUN_TIMEOUT):
        """Wait for the program to exit and return its exit status; fail the test on timeout."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                pytest.fail(f"the program on the terminal did not exit within {timeout} s; output: {self.text()!r}")
            self._read_once(0.05)
        return self.status

    def text(self):
        return self.output.decode(errors="replace")

    def close(self):
        if self.status is None:
            kill_tree(self.pid)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        os.close(self.fd)


@pytest.fixture
def terminal():
    """Return a factory: terminal(argv, env) starts argv on a new pseudo-terminal, closed after the test."""
    started = []

    def start(argv, env=None):
        started.append(Terminal(argv, runtime_env(env)))
        return started[-1]

    yield start
    for session in started:
        session.close()
