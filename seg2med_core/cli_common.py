"""Shared command-line plumbing: progress reporting (tqdm for people, JSON lines for the Slicer runner).

Every subcommand module exposes ``add_subcommands(subparsers) -> None``; each parser it adds sets
``func=handler`` where ``handler(args) -> int`` returns the exit code. ``seg2med_core.cli`` composes them.

Reporters have four channels: ``progress`` (bars / progress events), ``info`` (remarks such as the time
estimate: stderr for people), ``message`` (results such as "wrote X": stdout for people) and ``done``.
With ``--progress-format json`` stdout carries only JSON lines, one event each, so a GUI can parse it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, Protocol

from tqdm import tqdm

ProgressFn = Callable[[int, int, str], None]
PROGRESS_FORMATS: tuple[str, ...] = ("tqdm", "json", "none")


class Reporter(Protocol):
    """What the commands report through (see the module docstring)."""

    def progress(self, done: int, total: int, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def message(self, text: str) -> None: ...
    def done(self, **result: Any) -> None: ...
    def close(self) -> None: ...


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress-format tqdm|json|none``: json prints one event per line for GUI front-ends."""
    parser.add_argument(
        "--progress-format",
        choices=PROGRESS_FORMATS,
        default="tqdm",
        help="how progress is reported: tqdm bars (default), JSON lines on stdout (for Slicer), or none",
    )


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (JSON has no inf/NaN) by strings, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def emit_json(event: str, **fields: Any) -> None:
    """Print one JSON event line on stdout and flush (the Slicer runner parses these)."""
    sys.stdout.write(json.dumps(_json_safe({"event": event, **fields}), default=str) + "\n")
    sys.stdout.flush()


class JsonReporter:
    """Every event as one JSON line on stdout: progress, log (info and messages) and done."""

    def progress(self, done: int, total: int, message: str) -> None:
        emit_json("progress", done=int(done), total=int(total), message=message)

    def info(self, message: str) -> None:
        emit_json("log", message=message)

    def message(self, text: str) -> None:
        emit_json("log", message=text)

    def done(self, **result: Any) -> None:
        emit_json("done", **result)

    def close(self) -> None:
        pass


class TqdmReporter:
    """One tqdm bar (stderr) per distinct progress message; info lines go to stderr above the bar."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._message = ""

    def progress(self, done: int, total: int, message: str) -> None:
        if self._bar is None or message != self._message or total != self._bar.total:
            self.close()
            self._bar = tqdm(total=total, desc=message, file=sys.stderr, dynamic_ncols=True, unit="step")
            self._message = message
        self._bar.n = done
        self._bar.refresh()
        if total and done >= total:
            self.close()

    def info(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def message(self, text: str) -> None:
        self.close()
        print(text, flush=True)

    def done(self, **result: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class QuietReporter:
    """No progress; remarks on stderr and results on stdout (``--progress-format none``)."""

    def progress(self, done: int, total: int, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        print(text, flush=True)

    def done(self, **result: Any) -> None:
        pass

    def close(self) -> None:
        pass


class SilentReporter(QuietReporter):
    """Reports nothing at all (library use, tests)."""

    def info(self, message: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def make_reporter(args: argparse.Namespace) -> Reporter:
    """The reporter selected by ``args.progress_format`` (tqdm when the command has no such option)."""
    fmt = getattr(args, "progress_format", "tqdm")
    if fmt == "json":
        return JsonReporter()
    if fmt == "none":
        return QuietReporter()
    return TqdmReporter()
