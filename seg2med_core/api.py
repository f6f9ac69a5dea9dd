"""seg2med's Python API: the calls the ``seg2med`` command line makes, with the command line's defaults.

Read → synthesise → write::

    from seg2med_core import api

    seg = api.read_segmentation("seg.nii.gz")          # multilabel NIfTI, mask folder or .seg.nrrd
    image = api.read_image("ct.nii.gz")                # optional: body contour (+ metrics when same modality)
    model = api.load_model("demo_ct")                  # bundle folder or registry name
    result = api.synthesize(seg, model, image=image)   # SamplerConfig(): DPM-Solver++ 20 steps, seed 0
    api.write_image(result.image, "sct.nii.gz")        # or api.write_dicom_series(result.image, "sct/", "ct")

``api.synthesize(..., anchor=1.0)`` (and ``api.convert``) pulls each labelled class's median to the prior's after
sampling (class anchoring, ``--anchor``; default ``defaults.DEFAULT_ANCHOR``); ``result.anchoring`` says what moved.

MR → CT (label conversion + body from the MR + synthesis), labels only, a phantom::

    sct, report = api.convert(api.read_image("mr.nii.gz"), api.read_segmentation("mr_seg.nii.gz"), "ct", model)
    mr_labels, report = api.convert_segmentation(seg, "total_mr")
    maisi_labels, report = api.export_segmentation(seg, "maisi")
    phantom = api.make_phantom(seed=0)                 # a 'total' Segmentation
    api.write_segmentation(phantom, "phantom.nii.gz")

Every call raises ``Seg2MedError`` (one line, naming the file or value) for bad input, like the CLI.
``help(api.synthesize)`` and friends explain each call; ``scripts/api_example.py`` runs all of the above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dicom_out import write_dicom_series
from .errors import Seg2MedError
from .grids import match_segmentation
from .io import Segmentation, read_image, read_segmentation, write_image, write_segmentation
from .label_tables import read_label_table, scheme_names
from .labels import LABEL_SETS, names_for
from .phantom import make_phantom
from .pipeline import SynthesisResult, convert, convert_segmentation, export_segmentation, synthesize
from .prior import prior_image
from .sampler import SamplerConfig

__all__ = [
    "LABEL_SETS", "SamplerConfig", "Seg2MedError", "Segmentation", "SynthesisResult", "convert",
    "convert_segmentation", "export_segmentation", "load_model", "make_phantom", "match_segmentation",
    "names_for", "prior_image", "read_image", "read_label_table", "read_segmentation", "scheme_names",
    "synthesize", "write_dicom_series", "write_image", "write_segmentation",
]


def load_model(model: str | Path, device: str = "auto") -> Any:
    """Load a model bundle (``bundle.Bundle``) from a folder or a registry name (``seg2med bundle list``),
    downloading a registry model on first use, onto ``device`` (``"auto"``: cuda, then mps, then cpu; the
    first of a comma list), as ``--model`` / ``--device`` do on the command line."""
    from .bundle import load_bundle
    from .device import parse_devices
    from .registry import resolve_bundle_path

    return load_bundle(resolve_bundle_path(model), device=parse_devices(device)[0])
