"""pytest fixtures of the harness: ``slicer_tag`` (each Slicer release of the shared framework files) and
``harness`` (a fresh scene, application and module registry per test). Import them into a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import TAGS, SlicerHarness, missing_reason


@pytest.fixture(scope="session", params=TAGS)
def slicer_tag(request: pytest.FixtureRequest) -> str:
    reason = missing_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture()
def harness(slicer_tag: str, tmp_path) -> Iterator[SlicerHarness]:  # noqa: ANN001
    h = SlicerHarness(slicer_tag, tmp_path / "harness").start()
    try:
        yield h
    finally:
        h.stop()
    assert not h.slot_errors(), "exceptions in Qt slots:\n" + "\n".join(h.slot_errors())
