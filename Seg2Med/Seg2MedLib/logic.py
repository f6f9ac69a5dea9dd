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

from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from . import nodes, tables
from .commands import (SynthesisOptions, child_environment, ensure_core_importable, paired_synthesize_command,
                       synthesize_command)
from .estimate import describe_estimate, guess_auto_device, model_image_size, model_timing
from .process import ProcessRunner, RunEvent

# Only the path is set up here: seg2med_core (and through it scipy/scikit-image) is imported inside the
# methods that need it, so opening the module in Slicer stays fast and never pulls in torch.
ensure_core_importable()

if TYPE_CHECKING:
    from seg2med_core.composite import CompositeReport
    from seg2med_core.io import Segmentation
    from seg2med_core.labels import ConversionReport

#: Segmentation node attribute holding the JSON ``CompositeReport`` of a composite phantom.
COMPOSITE_REPORT_ATTRIBUTE = "Seg2Med.CompositeReport"
#: Volume node attribute of a synthesis result: the modality it is ("ct" or "mr"); metrics and the round-trip
#: check follow it, so they stay right after a CT + MR run or when the target combo box changed since.
MODALITY_ATTRIBUTE = "Seg2Med.Modality"


class UnknownSegmentsError(ValueError):
    """Segments whose names are no class of the label set (``segments``, ``label_set``); a ValueError whose
    message names them, so every caller shows it as a one-line error."""

    def __init__(self, message: str, segments: Sequence[str], label_set: str) -> None:
        super().__init__(message)
        self.segments, self.label_set = list(segments), label_set


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
    #: a paired CT + MR job: ``{"ct": path, "mr": path, "preview": path}`` (``output`` is the CT then)
    outputs: dict[str, Path] = field(default_factory=dict)


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
        from seg2med_core import labels as core_labels

        return core_labels.guess_label_set(set(), by_id)

    def segmentation_from_node(self, seg_node: Any, reference: Any | None = None,
                               label_set: str | None = None, drop_unknown: bool = False,
                               info: Callable[[str], None] | None = None) -> Segmentation:
        """Core ``Segmentation`` from a segmentation node; ids follow the label set, by segment name.

        Names are matched as the command line matches label tables (``label_tables.match_class_name``:
        "Left kidney" is ``kidney_left``). Segments whose names are no class of the label set (and that carry
        no Seg2Med label tag) raise ValueError listing them, or with ``drop_unknown`` are left out (reported
        through ``info``). Exported on ``reference``'s grid when given, else on the segmentation's own
        reference geometry.
        """
        from seg2med_core import io as core_io
        from seg2med_core import labels as core_labels

        if seg_node is None:
            raise ValueError("no segmentation selected")
        names = [seg_node.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(seg_node.GetSegmentation().GetNumberOfSegments())]
        if not names:
            raise ValueError(f"segmentation {seg_node.GetName()!r} has no segments")
        label_set = label_set or self.guess_label_set(seg_node)
        set_names = core_labels.names_for(label_set)
        name_to_id = {v: k for k, v in set_names.items()}
        name_to_id.update(self._matched_segment_names(seg_node, label_set, name_to_id, drop_unknown, info))
        image, _ = nodes.segmentation_node_to_labelmap(self.scene, seg_node, reference, name_to_id)
        return core_io.Segmentation(image=sitk.Cast(image, sitk.sitkUInt16), names=set_names, label_set=label_set)

    @staticmethod
    def _matched_segment_names(seg_node: Any, label_set: str, name_to_id: dict[str, int], drop_unknown: bool,
                               info: Callable[[str], None] | None) -> dict[str, int]:
        """Extra ``{segment name: id}`` for names that mean a class without being spelt like it, and ``0``
        (left out) for unknown untagged segments when ``drop_unknown``; otherwise ValueError naming them."""
        import vtk
        from seg2med_core.label_tables import few, match_class_name

        segmentation = seg_node.GetSegmentation()
        known = frozenset(name_to_id)
        extra: dict[str, int] = {}
        unknown: list[str] = []
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            name = segment.GetName()
            if name in name_to_id:
                continue
            match = match_class_name(name, known)
            if match is not None:
                extra[name] = name_to_id[match]
            elif not segment.GetTag(nodes.LABEL_TAG, vtk.mutable("")):
                unknown.append(name)
        if unknown and not drop_unknown:
            raise UnknownSegmentsError(
                f"segmentation {seg_node.GetName()!r} has segments whose names are no class of label set "
                f"'{label_set}': {few(unknown)}; rename them to class names (e.g. 'liver') or drop them", unknown, label_set)
        if unknown:
            extra.update({name: 0 for name in unknown})
            if info is not None:
                info(f"segments left out (no class of '{label_set}'): {few(unknown)}")
        return extra

    def check_segment_names(self, seg_node: Any, label_set: str | None = None, drop_unknown: bool = False,
                            info: Callable[[str], None] | None = None) -> None:
        """The name check of :meth:`segmentation_from_node` without exporting anything (before a long step such
        as the round trip's TotalSegmentator run): :class:`UnknownSegmentsError`, or ``info`` with ``drop_unknown``."""
        from seg2med_core import labels as core_labels

        if seg_node is None:
            raise ValueError("no segmentation selected")
        label_set = label_set or self.guess_label_set(seg_node)
        name_to_id = {v: k for k, v in core_labels.names_for(label_set).items()}
        self._matched_segment_names(seg_node, label_set, name_to_id, drop_unknown, info)

    def segmentation_to_node(self, seg: Segmentation, name: str, node: Any | None = None) -> Any:
        """New (or refilled) segmentation node holding ``seg``'s labels with their class names."""
        if node is not None:
            node.GetSegmentation().RemoveAllSegments()
        return nodes.labelmap_to_segmentation_node(self.scene, seg.image, seg.names, node=node, name=name)

    def convert_segmentation_node(self, seg_node: Any, reference: Any | None, to_label_set: str,
                                  from_label_set: str | None = None, drop_unknown: bool = False,
                                  info: Callable[[str], None] | None = None) -> tuple[Any, ConversionReport]:
        """'Convert to CT/MR labels' in one click: a new node relabelled ``total`` ↔ ``total_mr``
        (``drop_unknown``/``info`` as in :meth:`segmentation_from_node`)."""
        from seg2med_core import io as core_io
        from seg2med_core import labels as core_labels

        seg = self.segmentation_from_node(seg_node, reference, from_label_set, drop_unknown=drop_unknown, info=info)
        if seg.label_set == to_label_set:
            raise ValueError(f"segmentation {seg_node.GetName()!r} already uses label set {to_label_set!r}")
        converted, report = core_labels.convert_labels(seg.array(), seg.label_set, to_label_set)
        image = sitk.GetImageFromArray(converted.astype(np.uint16))
        image.CopyInformation(seg.image)
        new = core_io.Segmentation(image=image, names=core_labels.names_for(to_label_set), label_set=to_label_set)
        return self.segmentation_to_node(new, f"{seg_node.GetName()} ({to_label_set})"), report

    def build_composite(self, body_node: Any, organ_sources: Sequence[tuple[Any, Sequence[str]]],
                        keep_skeleton: bool = True, reference: Any | None = None,
                        name: str | None = None, drop_unknown: bool = False,
                        info: Callable[[str], None] | None = None) -> tuple[Any, CompositeReport]:
        """Composite phantom: the body (and skeleton) of ``body_node`` with organs of other patients' nodes.

        ``organ_sources`` is ``[(segmentation node, [organ names in that node's label set]), ...]``; each source
        is exported on its own grid and ``seg2med_core.composite.compose`` aligns it to the body. The result is a
        new segmentation node on the body's grid (``reference``'s when given) in the body's label set; the
        ``CompositeReport`` (alignment per source, voxels outside the body or in conflict per organ) is
        returned and also stored as JSON in the node attribute ``Seg2Med.CompositeReport``. ``drop_unknown`` /
        ``info``: segments that are no class of the label set, as in :meth:`segmentation_from_node`.
        """
        import json

        from seg2med_core.composite import compose

        if body_node is None:
            raise ValueError("choose the segmentation that gives the body of the composite")
        if not organ_sources:
            raise ValueError("choose at least one organ source for the composite (a segmentation and organ names)")
        body = self.segmentation_from_node(body_node, reference, drop_unknown=drop_unknown, info=info)
        sources, labels = [], []
        for node, organs in organ_sources:
            if node is None:
                raise ValueError("an organ source of the composite has no segmentation node")
            if not organs:
                raise ValueError(f"no organ names given for organ source {node.GetName()!r}")
            sources.append((self.segmentation_from_node(node, drop_unknown=drop_unknown, info=info),
                            [str(o) for o in organs]))
            labels.append(node.GetName())
        result, report = compose(body, sources, keep_skeleton=keep_skeleton, body_name=body_node.GetName(),
                                 source_names=labels)
        node = self.segmentation_to_node(result, name or f"Composite of {body_node.GetName()}")
        node.SetAttribute(COMPOSITE_REPORT_ATTRIBUTE, json.dumps(report.to_dict()))
        return node, report

    def compose_segmentation_nodes(self, body: tuple[Any, Any | None],
                                   organ_sources: Sequence[tuple[Any, Any | None, list[str]]],
                                   keep_skeleton: bool = True) -> tuple[Any, CompositeReport]:
        """Older spelling of :meth:`build_composite`: ``body=(node, reference)``, sources ``(node, _, organs)``."""
        return self.build_composite(body[0], [(n, organs) for n, _r, organs in organ_sources], keep_skeleton,
                                    reference=body[1])

    def load_task_outputs(self, outputs: Sequence[Path], label_set: str, node: Any | None = None) -> Any:
        """TotalSegmentator outputs (main task, then optional tissue task) merged into one segmentation node."""
        from seg2med_core import io as core_io
        from seg2med_core import labels as core_labels

        from .segment import merge_task_outputs

        main = core_io.read_image(outputs[0])
        tissue = core_io.read_image(outputs[1]) if len(outputs) > 1 else None
        merged = merge_task_outputs(main, tissue)
        seg = core_io.Segmentation(image=merged, names=core_labels.names_for(label_set), label_set=label_set)
        return self.segmentation_to_node(seg, Path(outputs[0]).name.split(".")[0], node=node)

    def merge_tissue_node(self, seg_node: Any, tissue_node: Any, reference: Any | None) -> Any:
        """Merge a tissue-types segmentation node into ``seg_node`` (organs win), then drop the tissue node."""
        from seg2med_core import io as core_io
        from seg2med_core import labels as core_labels

        from .segment import merge_task_outputs

        main = self.segmentation_from_node(seg_node, reference)
        tissue_names = core_labels.get_label_set("tissue_types_mr")
        tissue, _ = nodes.segmentation_node_to_labelmap(self.scene, tissue_node, reference,
                                                        {v: k for k, v in tissue_names.items()})
        merged = core_io.Segmentation(image=merge_task_outputs(main.image, tissue),
                                      names=core_labels.names_for(main.label_set), label_set=main.label_set)
        self.scene.RemoveNode(tissue_node)
        return self.segmentation_to_node(merged, seg_node.GetName(), node=seg_node)

    def phantom_node(self, seed: int = 0, region: str = "abdomen-pelvis", sex: str = "male",
                     height_cm: float = 175.0, spacing_mm: float = 3.0) -> Any:
        """A procedural torso phantom (``total`` labels, ``seg2med_core.phantom.make_phantom``) as a new
        segmentation node: the "no input volume" path. Its reference geometry is the phantom's grid."""
        from seg2med_core.phantom import make_phantom

        phantom = make_phantom(seed=int(seed), sex=sex, height_cm=float(height_cm),  # type: ignore[arg-type]
                               spacing=(float(spacing_mm),) * 3, region=region)  # type: ignore[arg-type]
        return self.segmentation_to_node(phantom, f"Phantom {sex} {region} seed {seed}")

    # -- geometry ------------------------------------------------------------------------------------------
    @staticmethod
    def axial_slice_count(seg_node: Any | None, reference: Any | None = None) -> int | None:
        """Number of axial slices the sampler will process, without exporting anything.

        The core samples along the index axis closest to superior-inferior (``preprocess.to_canonical``), so
        this is the size of that axis of ``reference`` (when given) or of the segmentation's reference grid.
        ``None`` when neither geometry is known.
        """
        import slicer
        import vtk

        if reference is not None and reference.GetImageData() is not None:
            dims = reference.GetImageData().GetDimensions()
            directions = vtk.vtkMatrix4x4()
            reference.GetIJKToRASDirectionMatrix(directions)
        elif seg_node is not None:
            geometry = seg_node.GetSegmentation().GetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
            image = slicer.vtkOrientedImageData()
            if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, False):
                return None
            extent = image.GetExtent()
            dims = tuple(extent[2 * i + 1] - extent[2 * i] + 1 for i in range(3))
            directions = vtk.vtkMatrix4x4()
            image.GetDirectionMatrix(directions)
        else:
            return None
        axis = max(range(3), key=lambda i: abs(directions.GetElement(2, i)))
        return int(dims[axis]) if dims[axis] > 0 else None

    # -- synthesis ---------------------------------------------------------------------------------------
    def prepare_synthesis(self, seg_node: Any, reference: Any | None, model: str | Path, options: SynthesisOptions,
                          image_node: Any | None = None, label_set: str | None = None,
                          workdir: Path | None = None, image_modality: str | None = None,
                          sequence: str | None = None, drop_unknown: bool = False,
                          info: Callable[[str], None] | None = None) -> SynthesisJob:
        """Export the inputs to a work folder and build the CLI command (nothing is started yet).

        ``image_node`` (optional) is a real image in the segmentation's space: the CLI takes the body contour
        from it; ``image_modality`` says whether it is a CT or an MR. ``sequence``: the MR sequence (MR models).
        ``drop_unknown`` leaves out segments whose names are no class of the label set (reported to ``info``);
        without it they raise :class:`UnknownSegmentsError`.
        """
        seg_path, image_path, seg, workdir, inputs = self._export_inputs(seg_node, reference, image_node, label_set,
                                                                         workdir, drop_unknown, info)
        output = workdir / "synthetic.nii.gz"
        command = synthesize_command(seg_path, Path(model), output, options, image=image_path, label_set=seg.label_set,
                                     image_modality=image_modality if image_path is not None else None,
                                     sequence=sequence)
        return SynthesisJob(command=command, env=child_environment(), workdir=workdir, output=output,
                            label_set=seg.label_set, n_slices=_axial_size(seg.image), inputs=inputs)

    def prepare_paired_synthesis(self, seg_node: Any, reference: Any | None, ct_model: str | Path,
                                 mr_model: str | Path, options: SynthesisOptions, image_node: Any | None = None,
                                 label_set: str | None = None, workdir: Path | None = None,
                                 image_modality: str | None = None, sequence: str | None = None,
                                 drop_unknown: bool = False,
                                 info: Callable[[str], None] | None = None) -> SynthesisJob:
        """Like :meth:`prepare_synthesis` for a synthetic CT *and* MR from the one segmentation (one process:
        ``synthesize --model CT --model MR``; the CLI converts the labels to each model's label set and the MR
        shares the CT's body contour). ``job.outputs`` holds ``{"ct": path, "mr": path, "preview": png}``."""
        from seg2med_core.cli import paired_outputs

        seg_path, image_path, seg, workdir, inputs = self._export_inputs(seg_node, reference, image_node, label_set,
                                                                         workdir, drop_unknown, info)
        command = paired_synthesize_command(seg_path, Path(ct_model), Path(mr_model), workdir, options, image=image_path,
                                            label_set=seg.label_set, sequence=sequence,
                                            image_modality=image_modality if image_path is not None else None)
        outputs = paired_outputs(command[command.index("--out") + 1], None)
        return SynthesisJob(command=command, env=child_environment(), workdir=workdir, output=outputs["ct"],
                            label_set=seg.label_set, n_slices=_axial_size(seg.image), inputs=inputs,
                            outputs=dict(outputs))

    def _export_inputs(self, seg_node: Any, reference: Any | None, image_node: Any | None, label_set: str | None,
                       workdir: Path | None, drop_unknown: bool, info: Callable[[str], None] | None,
                       ) -> tuple[Path, Path | None, Segmentation, Path, dict[str, Path]]:
        """Write the segmentation (and the image) into the work folder: (seg path, image path, seg, folder, inputs)."""
        from seg2med_core import io as core_io

        seg = self.segmentation_from_node(seg_node, reference, label_set, drop_unknown=drop_unknown, info=info)
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="seg2med-"))
        workdir.mkdir(parents=True, exist_ok=True)
        seg_path = Path(core_io.write_segmentation(seg, workdir / "segmentation.nii.gz"))
        inputs = {"seg": seg_path}
        image_path = None
        if image_node is not None:
            image_path = Path(core_io.write_image(nodes.volume_node_to_sitk(image_node), workdir / "image.nii.gz"))
            inputs["image"] = image_path
        return seg_path, image_path, seg, workdir, inputs

    def start(self, job: SynthesisJob, on_event: Callable[[RunEvent], None] | None = None) -> ProcessRunner:
        """Start the job's process; the caller polls the returned runner (QTimer in Slicer)."""
        runner = self.runner_factory(on_event=on_event)
        runner.start(job.command, env=job.env, cwd=str(job.workdir))
        return runner

    @staticmethod
    def estimate(n_slices: int, options: SynthesisOptions, image_size: int | None = None,
                 model_dir: str | Path | None = None) -> str:
        """Time estimate text. ``auto`` is resolved by :func:`estimate.guess_auto_device` (torch is not
        imported for this); the image size comes from the bundle's metadata when ``model_dir`` is local."""
        size = image_size or model_image_size(model_dir)
        device, note = options.device, ""
        if device == "auto":
            device, reason = guess_auto_device()
            note = f" [auto: {reason}]"
        return describe_estimate(n_slices, int(options.steps), device, size, model_timing(model_dir)) + note

    def load_result(self, path: str | Path, name: str, reference: Any | None = None,
                    modality: str | None = None) -> Any:
        """Load a synthetic volume as a new scalar volume node (checked against the reference geometry);
        ``modality`` ("ct"/"mr") is stored in the node attribute :data:`MODALITY_ATTRIBUTE`."""
        from seg2med_core import io as core_io

        image = core_io.read_image(path)
        if reference is not None:
            core_io.check_same_geometry(image, nodes.volume_node_to_sitk(reference), f"result '{path}'",
                                        f"input volume '{reference.GetName()}'")
        node = nodes.add_volume_node(self.scene, image, name)
        if modality is not None:
            node.SetAttribute(MODALITY_ATTRIBUTE, modality)
        return node

    @staticmethod
    def result_modality(node: Any, default: str | None = None) -> str:
        """The modality of a synthesis result ("ct"/"mr", from :data:`MODALITY_ATTRIBUTE`), else ``default``;
        ValueError when neither says it (e.g. a volume loaded from a file while the target is CT + MR)."""
        modality = node.GetAttribute(MODALITY_ATTRIBUTE) if node is not None else None
        if modality in ("ct", "mr"):
            return modality
        if default in ("ct", "mr"):
            return default
        raise ValueError(f"volume {node.GetName() if node is not None else None!r} is not a Seg2Med result of known "
                         "modality: choose the target modality (CT or MR) it has")

    def place_in_subject_hierarchy(self, node: Any, reference: Any | None) -> None:
        """Put ``node`` next to ``reference`` in the subject hierarchy (same patient / study folder)."""
        import slicer

        if reference is None:
            return
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if sh is None:
            return
        reference_item = sh.GetItemByDataNode(reference)
        parent = sh.GetItemParent(reference_item) if reference_item else 0
        if not parent or parent == sh.GetSceneItemID():
            return
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:
            sh.CreateItem(parent, node)

    # -- evaluation ----------------------------------------------------------------------------------------
    def compare(self, synthetic_node: Any, real_node: Any, modality: str,
                mask: np.ndarray | None = None) -> tuple[dict[str, Any], Any, Any]:
        """SSIM/PSNR/MAE inside the body: returns (metrics, metrics table node, SSIM map volume node)."""
        from seg2med_core import io as core_io
        from seg2med_core import metrics as core_metrics
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
                       worst_n: int = 5, drop_unknown: bool = False) -> tuple[dict[str, float], Any]:
        """Per-organ Dice between the input labels and the labels TotalSegmentator finds on the synthetic
        volume (converted to the input's label set first when they differ); ``drop_unknown``: segments of
        ``original`` that are no class are left out (check them first with :meth:`check_segment_names`)."""
        from seg2med_core import labels as core_labels
        from seg2med_core import metrics as core_metrics

        a = self.segmentation_from_node(original, reference, drop_unknown=drop_unknown)
        b = self.segmentation_from_node(resegmented, reference)
        b_arr = b.array()
        if b.label_set != a.label_set:
            b_arr, _ = core_labels.convert_labels(b_arr, b.label_set, a.label_set)
        present = {int(i) for i in np.unique(a.array()) if i}
        dice = core_metrics.dice_per_label(a.array(), b_arr, {i: a.names[i] for i in present if i in a.names})
        dice = {k: v for k, v in dice.items() if not math.isnan(v)} or dice
        return dice, tables.dice_table_node(self.scene, dice, f"{original.GetName()} round-trip Dice", worst_n=worst_n)


def _axial_size(image: sitk.Image) -> int:
    """Size of the index axis closest to superior-inferior (the core's axial slice count)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(image.GetSize()[int(np.argmax(np.abs(direction[2])))])
