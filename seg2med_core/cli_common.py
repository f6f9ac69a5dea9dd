"""Shared command-line plumbing: progress reporting (tqdm for people, JSON lines for the Slicer runner).

Every subcommand module exposes ``add_subcommands(subparsers) -> None``; each parser it adds sets
``func=handler`` where ``handler(args) -> int`` returns the exit code. ``seg2med_core.cli`` composes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Protocol

from tqdm import tqdm

ProgressFn = Callable[[int, int, str], None]


class Reporter(Protocol):
    def progress(self, done: int, total: int, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def done(self, **result: Any) -> None: ...
    def close(self) -> None: ...


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress-format tqdm|json|none``: json prints one event per line for GUI front-ends."""
    parser.add_argument(
        "--progress-format",
        choices=("tqdm", "json", "none"),
        default="tqdm",
        help="how progress is reported: tqdm bars (default), JSON lines on stdout (for Slicer), or nothing",
    )


def emit_json(event: str, **fields: Any) -> None:
    """Print one JSON event line and flush (the Slicer runner parses these)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class JsonReporter:
    def progress(self, done: int, total: int, message: str) -> None:
        emit_json("progress", done=int(done), total=int(total), message=message)

    def info(self, message: str) -> None:
        emit_json("log", message=message)

    def done(self, **result: Any) -> None:
        emit_json("done", **result)

    def close(self) -> None:
        pass


class TqdmReporter:
    """One tqdm bar per distinct progress message; info lines go to stderr above the bar."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._message = ""

    def progress(self, done: int, total: int, message: str) -> None:
        if self._bar is None or message != self._message or total != self._bar.total:
            self.close()
            self._bar = tqdm(total=total, desc=message, file=sys.stderr, dynamic_ncols=True)
            self._message = message
        self._bar.n = done
        self._bar.refresh()

    def info(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def done(self, **result: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class SilentReporter:
    def progress(self, done: int, total: int, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def done(self, **result: Any) -> None:
        pass

    def close(self) -> None:
        pass


def make_reporter(args: argparse.Namespace) -> Reporter:
    fmt = getattr(args, "progress_format", "tqdm")
    if fmt == "json":
        return JsonReporter()
    if fmt == "none":
        return SilentReporter()
    return TqdmReporter()
