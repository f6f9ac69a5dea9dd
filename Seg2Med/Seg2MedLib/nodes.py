"""MRML nodes ↔ SimpleITK images with exact geometry, and segmentation nodes ↔ label maps.

Slicer stores geometry as RAS (IJKToRAS), SimpleITK as LPS (origin, spacing, direction). The two differ by
``diag(-1, -1, 1)`` applied to the origin and to the direction matrix. Voxel arrays are identical: both
``slicer.util.arrayFromVolume`` and ``sitk.GetArrayFromImage`` are ``(k, j, i)`` = ``(z, y, x)``.
Only ``slicer``'s MRML/VTK classes are used (no ``slicer.app``, no ``slicer.mrmlScene``), so everything here
runs in plain Python with the ``slicer-core`` wheel; the scene is always passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Segment tag holding the integer label id a segment had in the label map it came from.
LABEL_TAG = "Seg2Med.LabelValue"


def ijk_to_ras_from_sitk(image: sitk.Image) -> np.ndarray:
    """4×4 IJKToRAS matrix of a 3D SimpleITK image."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def set_node_geometry(node: Any, image: sitk.Image) -> None:
    """Copy origin, spacing and directions of ``image`` (LPS) onto a volume node (RAS)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ras_dirs = LPS_TO_RAS @ direction
    vtk_dirs = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            vtk_dirs.SetElement(r, c, float(ras_dirs[r, c]))
    node.SetIJKToRASDirectionMatrix(vtk_dirs)
    node.SetSpacing(*[float(s) for s in image.GetSpacing()])
    node.SetOrigin(*[float(v) for v in LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)])


def geometry_from_node(node: Any) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, spacing, direction) of a volume node in SimpleITK's LPS convention."""
    vtk_dirs = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(vtk_dirs)
    ras_dirs = np.array([[vtk_dirs.GetElement(r, c) for c in range(3)] for r in range(3)])
    direction = LPS_TO_RAS @ ras_dirs
    origin = LPS_TO_RAS @ np.array(node.GetOrigin(), dtype=float)
    return tuple(origin.tolist()), tuple(float(s) for s in node.GetSpacing()), tuple(direction.ravel().tolist())


def volume_node_to_sitk(node: Any) -> sitk.Image:
    """A SimpleITK copy of a scalar volume node's voxels and geometry. Raises ValueError for empty nodes."""
    if node is None or node.GetImageData() is None:
        raise ValueError(f"volume node {getattr(node, 'GetName', lambda: None)()!r} has no image data")
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"volume node {node.GetName()!r} is under a transform; harden the transform first")
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise ValueError(f"volume node {node.GetName()!r} is not a scalar 3D volume (array shape {array.shape})")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    origin, spacing, direction = geometry_from_node(node)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def sitk_to_volume_node(image: sitk.Image, node: Any) -> Any:
    """Fill a (scalar or label map) volume node with ``image``'s voxels and exact geometry; returns the node."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D image, got array shape {array.shape}")
    slicer.util.updateVolumeFromArray(node, array)
    set_node_geometry(node, image)
    node.Modified()
    return node


def add_volume_node(scene: Any, image: sitk.Image, name: str, labelmap: bool = False) -> Any:
    """New scalar (or label map) volume node in ``scene`` holding ``image``."""
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    return sitk_to_volume_node(image, node)


def labelmap_to_segmentation_node(scene: Any, labels: sitk.Image, names: Mapping[int, str], node: Any | None = None,
                                  name: str = "Segmentation") -> Any:
    """Import an integer label map into a segmentation node: one segment per present id, named from ``names``.

    Each segment keeps its id in the ``Seg2Med.LabelValue`` tag so the export is lossless even after edits.
    """
    array = sitk.GetArrayFromImage(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label map must have an integer pixel type, got {array.dtype}")
    present = [int(v) for v in np.unique(array) if v != 0]
    if not present:
        raise ValueError("label map is empty (no non-zero voxel)")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    temp = add_volume_node(scene, sitk.Cast(labels, sitk.sitkInt32), "__seg2med_temp_labels__", labelmap=True)
    try:
        before = _segment_ids(node)
        if not before:  # keep the label map's full grid as the segmentation's reference geometry
            node.SetReferenceImageGeometryParameterFromVolumeNode(temp)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, node):
            raise ValueError(f"could not import label map into segmentation node {node.GetName()!r}")
        new_ids = [s for s in _segment_ids(node) if s not in before]
    finally:
        scene.RemoveNode(temp)
    segmentation = node.GetSegmentation()
    for segment_id, value in zip(new_ids, present):
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(names.get(value, f"label_{value}"))
        segment.SetTag(LABEL_TAG, str(value))
    return node


def _segment_ids(node: Any) -> list[str]:
    ids = vtk.vtkStringArray()
    node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def segment_label_values(node: Any, name_to_id: Mapping[str, int] | None = None) -> dict[str, int]:
    """Segment id → label value: by name in ``name_to_id`` first, else the segment's Seg2Med tag.

    Raises ValueError naming the segment that has neither (e.g. a new segment painted in Segment Editor
    with a name outside the label set).
    """
    values: dict[str, int] = {}
    segmentation = node.GetSegmentation()
    for segment_id in _segment_ids(node):
        segment = segmentation.GetSegment(segment_id)
        name = segment.GetName()
        tag = vtk.mutable("")
        if name_to_id is not None and name in name_to_id:
            values[segment_id] = int(name_to_id[name])
        elif segment.GetTag(LABEL_TAG, tag):
            values[segment_id] = int(str(tag))
        else:
            raise ValueError(
                f"segment {name!r} has no label id: name it like a class of the label set (e.g. 'liver') "
                "or import it from a label map"
            )
    return values


def segmentation_node_to_labelmap(scene: Any, node: Any, reference: Any | None = None,
                                  name_to_id: Mapping[str, int] | None = None) -> tuple[sitk.Image, dict[int, str]]:
    """Export a segmentation node as one UInt16 label map (on ``reference``'s grid when given) and its names.

    Later segments win where segments overlap (the order shown in the Segmentations module).
    """
    segment_ids = _segment_ids(node)
    if not segment_ids:
        raise ValueError(f"segmentation node {node.GetName()!r} has no segments")
    values = segment_label_values(node, name_to_id)
    id_array = vtk.vtkStringArray()
    for segment_id in segment_ids:
        id_array.InsertNextValue(segment_id)
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__seg2med_temp_export__")
    try:
        # without a reference volume, export on the segmentation's reference grid (not the cropped extent)
        extent_mode = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            node, id_array, temp, reference, extent_mode)
        if not ok or temp.GetImageData() is None:
            raise ValueError(f"could not export segmentation node {node.GetName()!r} to a label map")
        index_image = volume_node_to_sitk(temp)
    finally:
        scene.RemoveNode(temp)
    lookup = np.zeros(len(segment_ids) + 1, dtype=np.uint16)
    for index, segment_id in enumerate(segment_ids, start=1):
        lookup[index] = values[segment_id]
    labels = sitk.GetImageFromArray(lookup[sitk.GetArrayFromImage(index_image).astype(np.int64)])
    labels.CopyInformation(index_image)
    segmentation = node.GetSegmentation()
    names = {values[s]: segmentation.GetSegment(s).GetName() for s in segment_ids}
    return labels, names


def mask_of_segments(labels: sitk.Image) -> np.ndarray:
    """Boolean ``(z, y, x)`` union of all labels (used as the metrics mask when no body mask exists)."""
    return sitk.GetArrayFromImage(labels) > 0
