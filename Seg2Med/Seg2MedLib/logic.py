"""MRML logic of the Seg2Med module: nodes → files → CLI process → nodes, metrics and round-trip tables.

No dialogs and no Qt here: problems raise ``ValueError`` (``Seg2MedError`` is one) with a message for the
user, and the widget decides how to show it. The scene is passed in, so the same code runs in Slicer, in
the batch script and in the tests (``slicer-core``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import nodes, tables
from .commands import SynthesisOptions, child_environment, ensure_core_importable, synthesize_command
from .estimate import describe_estimate
from .process import ProcessRunner, RunEvent

ensure_core_importable()

from seg2med_core import io as core_io  # noqa: E402  (needs the path set up above)
from seg2med_core import labels as core_labels  # noqa: E402
from seg2med_core import metrics as core_metrics  # noqa: E402


@dataclass
class SynthesisJob:
    """Everything one synthesis run needs; ``output`` is read back by :meth:`Seg2MedLogic.load_result`."""

    command: list[str]
    env: dict[str, str]
    workdir: Path
    output: Path
    label_set: str
    n_slices: int
    inputs: dict[str, Path] = field(default_factory=dict)


class Seg2MedLogic:
    """Scene-level operations of the Seg2Med module (one instance per scene)."""

    def __init__(self, scene: Any, runner_factory: Callable[..., ProcessRunner] = ProcessRunner) -> None:
        self.scene = scene
        self.runner_factory = runner_factory

    # -- segmentations ---------------------------------------------------------------------------------
    @staticmethod
    def guess_label_set(seg_node: Any) -> str:
        """The label set whose (id, name) pairs best match the node's segments ('total', 'total_mr', ...).

        Ids come from the segments' Seg2Med tags when every segment has one (imported label maps); painted
        segments only have names, which are then matched alone.
        """
        segmentation = seg_node.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        try:
            values = nodes.segment_label_values(seg_node)
            by_id = {values[segmentation.GetNthSegmentID(i)]: n for i, n in enumerate(names)}
        except ValueError:
            by_id = {-(i + 1): n for i, n in enumerate(names)}  # negative ids never match: names decide
        return core_labels.guess_label_set(set(), by_id)

    def segmentation_from_node(self, seg_node: Any, reference: Any | None = None,
                               label_set: str | None = None) -> core_io.Segmentation:
        """Core ``Segmentation`` from a segmentation node; ids follow the label set, by segment name."""
        if seg_node is None:
            raise ValueError("no segmentation selected")
        names = [seg_node.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(seg_node.GetSegmentation().GetNumberOfSegments())]
        if not names:
            raise ValueError(f"segmentation {seg_node.GetName()!r} has no segments")
        label_set = label_set or self.guess_label_set(seg_node)
        set_names = core_labels.names_for(label_set)
        name_to_id = {v: k for k, v in set_names.items()}
        image, _ = nodes.segmentation_node_to_labelmap(self.scene, seg_node, reference, name_to_id)
        return core_io.Segmentation(image=sitk.Cast(image, sitk.sitkUInt16), names=set_names, label_set=label_set)

    def segmentation_to_node(self, seg: core_io.Segmentation, name: str, node: Any | None = None) -> Any:
        """New (or refilled) segmentation node holding ``seg``'s labels with their class names."""
        if node is not None:
            node.GetSegmentation().RemoveAllSegments()
        return nodes.labelmap_to_segmentation_node(self.scene, seg.image, seg.names, node=node, name=name)

    def convert_segmentation_node(self, seg_node: Any, reference: Any | None, to_label_set: str,
                                  from_label_set: str | None = None) -> tuple[Any, core_labels.ConversionReport]:
        """'Convert to CT/MR labels' in one click: a new node relabelled ``total`` ↔ ``total_mr``."""
        seg = self.segmentation_from_node(seg_node, reference, from_label_set)
        if seg.label_set == to_label_set:
            raise ValueError(f"segmentation {seg_node.GetName()!r} already uses label set {to_label_set!r}")
        converted, report = core_labels.convert_labels(seg.array(), seg.label_set, to_label_set)
        image = sitk.GetImageFromArray(converted.astype(np.uint16))
        image.CopyInformation(seg.image)
        new = core_io.Segmentation(image=image, names=core_labels.names_for(to_label_set), label_set=to_label_set)
        return self.segmentation_to_node(new, f"{seg_node.GetName()} ({to_label_set})"), report

    def compose_segmentation_nodes(self, body: tuple[Any, Any | None], organ_sources: Sequence[tuple[Any, Any | None, list[str]]],
                                   keep_skeleton: bool = True) -> tuple[Any, Any]:
        """Composite patient: the body of one segmentation with organs taken from others (core ``compose``).

        ``body`` is ``(segmentation node, reference volume or None)``; each organ source is
        ``(segmentation node, reference or None, [organ names])``.
        """
        from seg2med_core.composite import compose

        body_seg = self.segmentation_from_node(body[0], body[1])
        sources = [(self.segmentation_from_node(n, r), list(organs)) for n, r, organs in organ_sources]
        if not sources:
            raise ValueError("choose at least one organ source for the composite")
        result, report = compose(body_seg, sources, keep_skeleton=keep_skeleton)
        return self.segmentation_to_node(result, "Composite segmentation"), report

    def load_task_outputs(self, outputs: Sequence[Path], label_set: str, node: Any | None = None) -> Any:
        """TotalSegmentator outputs (main task, then optional tissue task) merged into one segmentation node."""
        from .segment import merge_task_outputs

        main = core_io.read_image(outputs[0])
        tissue = core_io.read_image(outputs[1]) if len(outputs) > 1 else None
        merged = merge_task_outputs(main, tissue)
        seg = core_io.Segmentation(image=merged, names=core_labels.names_for(label_set), label_set=label_set)
        return self.segmentation_to_node(seg, Path(outputs[0]).name.split(".")[0], node=node)

    def merge_tissue_node(self, seg_node: Any, tissue_node: Any, reference: Any | None) -> Any:
        """Merge a tissue-types segmentation node into ``seg_node`` (organs win), then drop the tissue node."""
        from .segment import merge_task_outputs

        main = self.segmentation_from_node(seg_node, reference)
        tissue_names = core_labels.get_label_set("tissue_types_mr")
        tissue, _ = nodes.segmentation_node_to_labelmap(self.scene, tissue_node, reference,
                                                        {v: k for k, v in tissue_names.items()})
        merged = core_io.Segmentation(image=merge_task_outputs(main.image, tissue),
                                      names=core_labels.names_for(main.label_set), label_set=main.label_set)
        self.scene.RemoveNode(tissue_node)
        return self.segmentation_to_node(merged, seg_node.GetName(), node=seg_node)

    def phantom_node(self, seed: int = 0, region: str = "abdomen-pelvis") -> Any:
        """A procedural torso phantom (``total`` labels) as a new segmentation node: no patient needed."""
        from seg2med_core.phantom import make_phantom

        return self.segmentation_to_node(make_phantom(seed=seed, region=region), f"Phantom seed {seed}")

    # -- synthesis ---------------------------------------------------------------------------------------
    def prepare_synthesis(self, seg_node: Any, reference: Any | None, model: str | Path, options: SynthesisOptions,
                          image_node: Any | None = None, label_set: str | None = None,
                          workdir: Path | None = None) -> SynthesisJob:
        """Export the inputs to a work folder and build the CLI command (nothing is started yet)."""
        seg = self.segmentation_from_node(seg_node, reference, label_set)
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="seg2med-"))
        workdir.mkdir(parents=True, exist_ok=True)
        seg_path = core_io.write_segmentation(seg, workdir / "segmentation.nii.gz")
        inputs = {"seg": Path(seg_path)}
        image_path = None
        if image_node is not None:
            image_path = Path(core_io.write_image(nodes.volume_node_to_sitk(image_node), workdir / "image.nii.gz"))
            inputs["image"] = image_path
        output = workdir / "synthetic.nii.gz"
        command = synthesize_command(Path(seg_path), Path(model), output, options, image=image_path)
        command[command.index("--seg") + 2:command.index("--seg") + 2] = ["--label-set", seg.label_set]
        return SynthesisJob(command=command, env=child_environment(), workdir=workdir, output=output,
                            label_set=seg.label_set, n_slices=int(seg.image.GetSize()[2]), inputs=inputs)

    def start(self, job: SynthesisJob, on_event: Callable[[RunEvent], None] | None = None) -> ProcessRunner:
        """Start the job's process; the caller polls the returned runner (QTimer in Slicer)."""
        runner = self.runner_factory(on_event=on_event)
        runner.start(job.command, env=job.env, cwd=str(job.workdir))
        return runner

    @staticmethod
    def estimate(n_slices: int, options: SynthesisOptions, image_size: int = 256) -> str:
        """Time estimate text; ``auto`` counts as CUDA when torch sees a GPU, else CPU."""
        device = options.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        steps = options.steps
        return describe_estimate(n_slices, steps, device, image_size)

    def load_result(self, path: str | Path, name: str, reference: Any | None = None) -> Any:
        """Load a synthetic volume as a new scalar volume node (checked against the reference geometry)."""
        image = core_io.read_image(path)
        if reference is not None:
            core_io.check_same_geometry(image, nodes.volume_node_to_sitk(reference), f"result '{path}'",
                                        f"input volume '{reference.GetName()}'")
        return nodes.add_volume_node(self.scene, image, name)

    # -- evaluation ----------------------------------------------------------------------------------------
    def compare(self, synthetic_node: Any, real_node: Any, modality: str,
                mask: np.ndarray | None = None) -> tuple[dict[str, Any], Any, Any]:
        """SSIM/PSNR/MAE inside the body: returns (metrics, metrics table node, SSIM map volume node)."""
        from seg2med_core.preprocess import body_mask_from_image

        synthetic = nodes.volume_node_to_sitk(synthetic_node)
        real = nodes.volume_node_to_sitk(real_node)
        core_io.check_same_geometry(synthetic, real, f"synthetic '{synthetic_node.GetName()}'", f"real '{real_node.GetName()}'")
        pred = sitk.GetArrayFromImage(synthetic).astype(np.float32)
        ref = sitk.GetArrayFromImage(real).astype(np.float32)
        if mask is None:
            mask = body_mask_from_image(real, modality)
        metrics = core_metrics.image_metrics(pred, ref, mask, modality)
        if modality == "ct":
            lo, hi = core_metrics.CT_RANGE
            ssim = core_metrics.ssim_map(np.clip(pred, lo, hi), np.clip(ref, lo, hi), hi - lo)
        else:
            ssim = core_metrics.ssim_map(pred, ref, float(ref[mask].max() - ref[mask].min()))
        ssim_image = sitk.GetImageFromArray(np.where(mask, ssim, 0).astype(np.float32))
        ssim_image.CopyInformation(synthetic)
        ssim_node = nodes.add_volume_node(self.scene, ssim_image, f"{synthetic_node.GetName()} SSIM map")
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        table = tables.metrics_table_node(self.scene, numeric, f"{synthetic_node.GetName()} metrics")
        return metrics, table, ssim_node

    def roundtrip_dice(self, original: Any, resegmented: Any, reference: Any | None,
                       worst_n: int = 5) -> tuple[dict[str, float], Any]:
        """Per-organ Dice between the input labels and the labels TotalSegmentator finds on the synthetic
        volume (converted to the input's label set first when they differ)."""
        a = self.segmentation_from_node(original, reference)
        b = self.segmentation_from_node(resegmented, reference)
        b_arr = b.array()
        if b.label_set != a.label_set:
            b_arr, _ = core_labels.convert_labels(b_arr, b.label_set, a.label_set)
        present = {int(i) for i in np.unique(a.array()) if i}
        dice = core_metrics.dice_per_label(a.array(), b_arr, {i: a.names[i] for i in present if i in a.names})
        dice = {k: v for k, v in dice.items() if not math.isnan(v)} or dice
        return dice, tables.dice_table_node(self.scene, dice, f"{original.GetName()} round-trip Dice", worst_n=worst_n)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
