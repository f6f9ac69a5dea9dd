"""Plain-Python runner for the seg2med CLI (no Qt): start a subprocess, poll its JSON-line events, cancel it.

The Slicer widget drives :class:`ProcessRunner` from a ``qt.QTimer`` (``Seg2MedLib.widget.QtRunnerAdapter``); the batch
script and the tests drive it from a plain loop. Reading happens on a background thread so ``poll()`` never
blocks the GUI; events are handed over through a queue.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

ERROR_PREFIX = "seg2med: error:"


class RunState(str, Enum):
    """Life cycle of one run; ``FAILED`` and ``CANCELLED`` carry a message in ``ProcessRunner.error``."""

    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunEvent:
    """One event of the CLI: ``progress``, ``log``, ``done``, ``error``, ``metric`` or any future kind."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))


def parse_line(line: str) -> RunEvent:
    """Turn one stdout line into an event; a line that is not a JSON object becomes a ``log`` event.

    Unknown event kinds are kept as they are so that newer CLIs (e.g. ``metric`` from training) never break
    an older front-end.
    """
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            data = {k: v for k, v in obj.items() if k != "event"}
            return RunEvent(obj["event"], data)
    return RunEvent("log", {"message": text})


def error_from_stderr(stderr_text: str) -> str | None:
    """The one-line ``seg2med: error: ...`` message from the CLI's stderr, or ``None`` when there is none."""
    for line in reversed(stderr_text.splitlines()):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    return None


#: Windows: no console window for the child (Slicer's launchConsoleProcess hides it too), own process group.
CREATE_NO_WINDOW = 0x08000000
CREATE_NEW_PROCESS_GROUP = 0x00000200


def popen_options(platform: str | None = None) -> dict[str, Any]:
    """Extra ``subprocess.Popen`` arguments so that a run can be stopped as a whole and shows no console.

    POSIX: a new session, so the child and everything it starts share one process group (``os.killpg``).
    Windows: a new process group and ``CREATE_NO_WINDOW``; the tree is stopped with ``taskkill /T``.
    """
    platform = platform or sys.platform
    if platform == "win32":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def tree_kill_command(pid: int) -> list[str]:
    """Windows command that ends ``pid`` and all its descendants."""
    return ["taskkill", "/F", "/T", "/PID", str(int(pid))]


def descendant_pids(pid: int) -> list[int]:
    """Process ids started (directly or not) by ``pid``, deepest first; POSIX only (``ps``), else ``[]``."""
    if sys.platform == "win32":
        return []
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found: list[int] = []
    stack = [int(pid)]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found[::-1]


def terminate_tree(process: subprocess.Popen, force: bool = False, own_group: bool = True) -> None:
    """Signal ``process`` and all its descendants (SIGTERM, or SIGKILL with ``force``); never waits.

    ``own_group``: the process was started with :func:`popen_options` (its own process group). Otherwise
    (e.g. a process started by another extension) the descendants are found with ``ps`` and signalled one by one.
    """
    import signal

    if sys.platform == "win32":
        if process.poll() is None:
            subprocess.run(tree_kill_command(process.pid), capture_output=True, check=False,
                           creationflags=CREATE_NO_WINDOW)  # type: ignore[call-arg]
        return
    sig = signal.SIGKILL if force else signal.SIGTERM
    if own_group:
        try:
            os.killpg(process.pid, sig)  # the group id is the leader's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for pid in [*descendant_pids(process.pid), process.pid]:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessRunner:
    """Run one command; ``poll()`` returns new events and updates ``state``, ``progress`` and ``result``.

    ``on_event`` (optional) is called for every event from inside ``poll()`` (i.e. on the caller's thread, which
    is the GUI thread in Slicer).
    """

    #: Seconds ``poll()`` keeps reading after the process ended while its pipes are still open.
    pipe_grace_s = 2.0

    def __init__(self, on_event: Callable[[RunEvent], None] | None = None, stderr_lines_kept: int = 200) -> None:
        self.on_event = on_event
        self._stderr_kept = stderr_lines_kept
        self._reset()

    def _reset(self) -> None:
        """Clear everything about the previous run (a runner is reusable)."""
        self.state = RunState.IDLE
        self.error: str | None = None
        self.result: dict[str, Any] | None = None
        self.progress: tuple[int, int, str] = (0, 0, "")
        self.returncode: int | None = None
        self.command: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[RunEvent] = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self._cancel_requested = False
        self._kill_at: float | None = None
        self._exited_at: float | None = None
        self._error_event: str | None = None

    # -- control -----------------------------------------------------------------------------------------
    def start(self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        """Start ``command`` (a list, never a shell string). Raises ValueError when a run is still going."""
        if self.state == RunState.RUNNING:
            raise ValueError(f"a process is already running: {' '.join(self.command)}")
        if not command:
            raise ValueError("empty command")
        self._reset()
        self.command = [str(c) for c in command]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        full_env.setdefault("PYTHONIOENCODING", "utf-8")  # the child prints JSON lines and names with non-ASCII text
        try:
            self._process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=full_env, cwd=cwd,
                **popen_options(),
            )
        except OSError as exc:
            raise ValueError(f"cannot start {self.command[0]!r}: {exc}") from exc
        self.state = RunState.RUNNING
        assert self._process.stdout is not None and self._process.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._process.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the process *and everything it started* (returns at once; ``poll()`` reports CANCELLED).

        Inside Slicer the command is the ``PythonSlicer`` launcher, which runs ``python-real`` as a child and
        forwards no signals, so the whole tree is signalled: its process group on Linux/macOS (the run is
        started in a new session), ``taskkill /T`` on Windows. The tree is killed outright when it has not
        ended ``grace_s`` seconds later (checked by ``poll()``, which never waits).
        """
        if self._process is None or self.state != RunState.RUNNING:
            return
        if not self._cancel_requested:
            self._cancel_requested = True
            self._kill_at = time.monotonic() + grace_s
            terminate_tree(self._process, force=False)

    def kill(self) -> None:
        """Kill the whole process tree now (no grace period)."""
        if self._process is not None:
            self._cancel_requested = self._cancel_requested or self.state == RunState.RUNNING
            terminate_tree(self._process, force=True)

    @property
    def running(self) -> bool:
        return self.state == RunState.RUNNING

    # -- polling -----------------------------------------------------------------------------------------
    def poll(self) -> list[RunEvent]:
        """Return the events that arrived since the last call; finishes the run when the process has ended."""
        events = self._drain()
        if self.state != RunState.RUNNING or self._process is None:
            return events
        now = time.monotonic()
        if self._cancel_requested and self._kill_at is not None and now >= self._kill_at:
            terminate_tree(self._process, force=True)
            self._kill_at = None
        if self._process.poll() is None:
            return events
        if self._exited_at is None:
            self._exited_at = now
            if self._cancel_requested:
                terminate_tree(self._process, force=True)  # the launcher is gone: make sure its children are
        if any(t.is_alive() for t in self._threads):
            # output pipes still open: something the process started still runs and holds them. Give it a
            # moment to flush, then kill the tree; never block the caller (the GUI thread in Slicer).
            if now - self._exited_at < self.pipe_grace_s:
                return events
            terminate_tree(self._process, force=True)
            for t in self._threads:
                t.join(timeout=0.5)
        events += self._drain()
        self._finish(self._process.returncode)
        return events

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> list[RunEvent]:
        """Block until the run ends (for scripts and tests); returns all events. Cancels on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        events: list[RunEvent] = []
        while True:
            events += self.poll()
            if self.state != RunState.RUNNING:
                return events
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(grace_s=2.0)
                while self.state == RunState.RUNNING:
                    events += self.poll()
                    time.sleep(interval_s)
                self.error = f"timed out after {timeout_s} s: {' '.join(self.command)}"
                return events
            time.sleep(interval_s)

    @property
    def stderr_text(self) -> str:
        return "\n".join(self._stderr)

    # -- internals ---------------------------------------------------------------------------------------
    def _drain(self) -> list[RunEvent]:
        events: list[RunEvent] = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._apply(event)
            events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        return events

    def _apply(self, event: RunEvent) -> None:
        if event.kind == "progress":
            self.progress = (int(event.data.get("done", 0)), int(event.data.get("total", 0)), event.message)
        elif event.kind == "done":
            self.result = dict(event.data)
        elif event.kind == "error":
            self._error_event = event.message

    def _finish(self, returncode: int) -> None:
        self.returncode = returncode
        if self._cancel_requested:
            self.state, self.error = RunState.CANCELLED, "cancelled by the user"
        elif returncode == 0:
            self.state = RunState.SUCCEEDED
        else:
            self.state = RunState.FAILED
            self.error = (
                self._error_event
                or error_from_stderr(self.stderr_text)
                or (self._stderr[-1] if self._stderr else f"{self.command[0]} exited with code {returncode}")
            )

    def _read_stdout(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            if line.strip():
                self._queue.put(parse_line(line))
        stream.close()

    def _read_stderr(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            self._stderr.append(text)
            del self._stderr[: -self._stderr_kept]
            # tqdm bars and warnings are useful in the log, but carriage-return redraws are noise
            self._queue.put(RunEvent("stderr", {"message": text.split("\r")[-1]}))
        stream.close()
