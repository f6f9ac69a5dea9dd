"""Cancel stops the whole process tree (Slicer's PythonSlicer launcher runs python-real as a child and
forwards no signals), poll() never blocks, and Windows children get no console window."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slicer_fixtures import ROOT  # noqa: F401  (puts the module folders on sys.path)

from Seg2MedLib.process import (  # noqa: E402
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, ProcessRunner, RunState, descendant_pids, popen_options,
    terminate_tree, tree_kill_command,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

#: Like Slicer's launcher: starts the real interpreter as a child, waits, forwards no signals.
LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    print(f"launched {child.pid}", flush=True)
    sys.exit(child.wait())
""")
#: The "python-real" child: prints its pid and works (sleeps) for a long time, holding stdout open.
WORKER = "import os, sys, time; print('worker', os.getpid(), flush=True); open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def start_tree(tmp_path: Path) -> tuple[ProcessRunner, int, int]:
    pid_file = tmp_path / "worker.pid"
    runner = ProcessRunner()
    runner.start([sys.executable, "-c", LAUNCHER, WORKER, str(pid_file)])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    return runner, runner._process.pid, int(pid_file.read_text())


def test_cancel_kills_the_launcher_and_its_child_without_blocking(tmp_path: Path) -> None:
    runner, launcher, worker = start_tree(tmp_path)
    assert alive(launcher) and alive(worker)
    t0 = time.monotonic()
    runner.cancel()
    assert time.monotonic() - t0 < 0.5, "cancel() must return at once"
    slowest, deadline = 0.0, time.monotonic() + 20
    while runner.running and time.monotonic() < deadline:
        t = time.monotonic()
        runner.poll()
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.02)
    assert runner.state == RunState.CANCELLED
    assert slowest < 0.5, f"poll() blocked for {slowest:.2f} s"
    deadline = time.monotonic() + 5
    while (alive(launcher) or alive(worker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(launcher) and not alive(worker), "the python-real child outlived Cancel"


def test_wait_timeout_leaves_no_orphan(tmp_path: Path) -> None:
    """The batch script's --timeout path (ProcessRunner.wait) used to leave the child running."""
    runner, _launcher, worker = start_tree(tmp_path)
    runner.wait(timeout_s=0.5)
    assert runner.state == RunState.CANCELLED and "timed out" in (runner.error or "")
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_an_orphan_holding_the_pipes_does_not_block_poll(tmp_path: Path) -> None:
    """The launcher exits on its own but leaves a child holding stdout: poll() must not wait on it."""
    script = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('bye')"
    runner = ProcessRunner()
    runner.pipe_grace_s = 0.5
    runner.start([sys.executable, "-c", script])
    slowest, deadline = 0.0, time.monotonic() + 20
    while runner.running and time.monotonic() < deadline:
        t = time.monotonic()
        runner.poll()
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.02)
    assert runner.state == RunState.SUCCEEDED and slowest < 1.0


def test_tree_kill_of_a_process_started_elsewhere(tmp_path: Path) -> None:
    """The SlicerTotalSegmentator extension starts its process without a new group: kill by descendants."""
    pid_file = tmp_path / "worker.pid"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, WORKER, str(pid_file)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    assert worker in descendant_pids(proc.pid)
    terminate_tree(proc, force=True, own_group=False)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_windows_children_get_no_console_and_a_tree_kill() -> None:
    flags = popen_options("win32")["creationflags"]
    assert flags & CREATE_NO_WINDOW and flags & CREATE_NEW_PROCESS_GROUP
    assert popen_options("linux") == {"start_new_session": True}
    assert tree_kill_command(123) == ["taskkill", "/F", "/T", "/PID", "123"]
