"""Scene logic of the training module (no dialogs; ValueError for the user).

Training data is a folder the core's ``train`` command reads: one sub-folder per case with ``image.nii.gz``
and ``segmentation.nii.gz``. Loaded volume + segmentation pairs are exported into that layout in a
temporary folder. The run itself is ``python -m seg2med_core train ... --progress-format json``. The
trainer reports ``{"event": "progress", "done": step, "total": N, "message": "training", "loss": x}``
every 10 steps (``seg2med_core.training.cli``); those, and ``{"event": "metric", "step": s, "loss": x}``
lines, feed a live loss plot. ``--resume`` continues a stopped run from its last checkpoint, and the
finished bundle is added to the user's model registry.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from Seg2MedLib import nodes
from Seg2MedLib.commands import TrainingOptions, child_environment, ensure_core_importable, train_command
from Seg2MedLib.process import ProcessRunner, RunEvent
from Seg2MedLib.tables import LossCurve

ensure_core_importable()  # path only: seg2med_core is imported inside the methods that use it

if TYPE_CHECKING:
    from seg2med_core.registry import RegistryEntry

IMAGE_FILE = "image.nii.gz"
SEG_FILE = "segmentation.nii.gz"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "case"


def loss_point(event: RunEvent) -> tuple[float, float] | None:
    """``(step, loss)`` from a training event, or ``None`` when it carries no usable loss."""
    if event.kind == "progress":
        step = event.data.get("done")
    elif event.kind == "metric":
        step = event.data.get("step")
    else:
        return None
    if step is None or "loss" not in event.data:
        return None
    try:
        step_f, loss_f = float(step), float(event.data["loss"])
    except (TypeError, ValueError):
        return None
    return (step_f, loss_f) if math.isfinite(step_f) and math.isfinite(loss_f) else None


class TrainingLogic:
    """Start/stop/resume one training run and keep its loss curve in the scene."""

    def __init__(self, scene: Any, runner_factory: Callable[..., ProcessRunner] = ProcessRunner) -> None:
        self.scene = scene
        self.runner_factory = runner_factory
        self.runner: ProcessRunner | None = None
        self.curve: LossCurve | None = None
        self.options: TrainingOptions | None = None

    def export_pairs(self, pairs: Sequence[tuple[Any, Any]], folder: Path | None = None,
                     segmentation_logic: Any | None = None) -> Path:
        """Write (volume node, segmentation node) pairs as ``<folder>/<case>/{image,segmentation}.nii.gz``."""
        if not pairs:
            raise ValueError("no training pairs: add at least one volume with its segmentation")
        from seg2med_core import io as core_io

        from Seg2MedLib.logic import Seg2MedLogic

        seg_logic = segmentation_logic or Seg2MedLogic(self.scene)
        folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="seg2med-train-"))
        for index, (volume, seg_node) in enumerate(pairs):
            if volume is None or seg_node is None:
                raise ValueError(f"training pair {index + 1} is missing its volume or its segmentation")
            case = folder / f"{index:03d}_{_safe(volume.GetName())}"
            case.mkdir(parents=True, exist_ok=True)
            core_io.write_image(nodes.volume_node_to_sitk(volume), case / IMAGE_FILE)
            core_io.write_segmentation(seg_logic.segmentation_from_node(seg_node, volume), case / SEG_FILE)
        return folder

    def start(self, options: TrainingOptions, on_event: Callable[[RunEvent], None] | None = None) -> ProcessRunner:
        """Start (or, with ``options.resume``, continue) training; metric events extend the loss curve."""
        if self.runner is not None and self.runner.running:
            raise ValueError("a training run is already going: stop it first")
        self.options = options
        if self.curve is None or not options.resume:
            self.curve = LossCurve(self.scene, f"{Path(options.out).name} loss")

        def handle(event: RunEvent) -> None:
            self.handle_event(event)
            if on_event is not None:
                on_event(event)

        self.runner = self.runner_factory(on_event=handle)
        self.runner.start(train_command(options), env=child_environment())
        return self.runner

    def handle_event(self, event: RunEvent) -> None:
        """Add a loss-curve point for events that carry a loss; everything else is left to the caller.

        ``progress`` events count as a point only when they have a ``loss`` (dataset preparation sends
        progress without one); their step is ``done``. ``metric`` events use ``step``. Non-numeric or
        non-finite losses (the CLI writes NaN as the string ``"nan"``) are skipped.
        """
        point = loss_point(event)
        if point is not None and self.curve is not None:
            self.curve.append(*point)

    def stop(self, spin: Callable[[], None] | None = None, timeout_s: float = 30.0) -> None:
        """Stop the run (the trainer and everything it started) and wait until it has ended, calling ``spin()``
        meanwhile (the GUI's processEvents), so that Resume never starts a second trainer on the run folder.
        The last checkpoint stays in the output folder for ``resume``."""
        import time

        if self.runner is None or not self.runner.running:
            return
        self.runner.cancel()
        deadline = time.monotonic() + timeout_s
        while self.runner.running and time.monotonic() < deadline:
            self.runner.poll()
            if spin is not None:
                spin()
            time.sleep(0.02)
        if self.runner.running:
            self.runner.kill()

    def resume_options(self) -> TrainingOptions:
        """The stopped run's options with ``resume=True``."""
        if self.options is None:
            raise ValueError("nothing to resume: no training was started in this session")
        return TrainingOptions(**{**self.options.__dict__, "resume": True})

    def register(self, bundle_dir: str | Path | None = None, name: str | None = None,
                 registry_path: str | Path | None = None) -> RegistryEntry:
        """Add the finished bundle to the user's model registry (so the Seg2Med module lists it)."""
        from seg2med_core import registry

        if bundle_dir is None:
            result = self.runner.result if self.runner is not None else None
            bundle_dir = (result or {}).get("output") or (Path(self.options.out) / "bundle" if self.options else None)
        if bundle_dir is None or not (Path(bundle_dir) / "metadata.json").is_file():
            raise ValueError(f"no finished bundle at {str(bundle_dir)!r} (metadata.json missing)")
        return registry.register_bundle(bundle_dir, name=name, registry=registry_path)
