"""Model bundles: a folder with ``model.safetensors`` + ``metadata.json`` (+ optional ``MODEL_CARD.md``).

Only safetensors and JSON are ever read, so loading a bundle cannot execute code (no pickle).
Saving is atomic: the bundle is written into a temporary sibling folder and renamed into place.
The one exception to "no pickle" is :func:`import_monai_generative_checkpoint`, which reads an
old MONAI-Generative ``.pt`` state dict with ``torch.load(weights_only=True)`` (tensors only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from seg2med_core import __version__
from seg2med_core.io import atomic_folder, read_json
from seg2med_core.errors import Seg2MedError
from seg2med_core.network import build_network, is_diffusion_config, network_class_name, to_json_config

if TYPE_CHECKING:  # torch is imported where weights are handled, so metadata checks fail fast
    import torch

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
MODALITIES: tuple[str, ...] = ("ct", "mr")
MODEL_KINDS: tuple[str, ...] = ("diffusion", "regression")
#: The intensity normalisations this version applies (``preprocess.normalise_ct`` / ``normalise_mr`` and the
#: prior's window are fixed): a bundle trained with another one would be scaled wrongly, so it is refused.
SUPPORTED_INTENSITY: dict[str, dict[str, Any]] = {
    "ct": {"kind": "ct_window", "level": 0.0, "width": 2000.0},
    "mr": {"kind": "mr_percentile", "p_lo": 10.0, "p_hi": 90.0},
}
#: Plausible in-plane grids (mm per pixel, pixels per side); outside them a bundle is refused at load.
SPACING_XY_RANGE = (0.05, 50.0)
IMAGE_SIZE_RANGE = (8, 2048)
#: Largest network a bundle may describe (parameters); checked on the meta device, before any allocation.
MAX_PARAMETERS = 2_000_000_000
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def _intensity_matches(given: dict[str, Any], supported: dict[str, Any]) -> bool:
    if set(given) != set(supported):
        return False
    for key, want in supported.items():
        value = given[key]
        if isinstance(want, str):
            if value != want:
                return False
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != want:
            return False
    return True


def current_package_versions() -> dict[str, str]:
    """Versions recorded in a new bundle (to reproduce or debug a model later)."""
    import monai
    import numpy
    import torch

    return {
        "seg2med": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class BundleMetadata:
    """Everything needed to rebuild, apply and describe a trained model.

    ``network``: network config (see :mod:`seg2med_core.network`; a regression model names its
    class with ``"class"``); ``scheduler``: noise-scheduler config (empty for regression models);
    ``intensity``: how images were normalised, e.g. ``{"kind": "ct_window", "level": 0, "width": 2000}``;
    ``spacing_xy`` (mm) and ``image_size`` (pixels): the in-plane grid the model was trained on.
    """

    name: str
    version: str
    modality: str
    sequence: str | None
    label_set: str
    network: dict[str, Any]
    scheduler: dict[str, Any]
    spacing_xy: float
    image_size: int
    intensity: dict[str, Any]
    training_data: str = ""
    licence: str = "unspecified"
    package_versions: dict[str, str] = field(default_factory=current_package_versions)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    model_kind: str = "diffusion"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "metadata") -> None:
        """Raise :class:`Seg2MedError` (naming ``source``) if a field has an impossible value."""
        if self.modality not in MODALITIES:
            raise Seg2MedError(f"{source}: modality {self.modality!r} must be one of {MODALITIES}")
        if self.model_kind not in MODEL_KINDS:
            raise Seg2MedError(f"{source}: model_kind {self.model_kind!r} must be one of {MODEL_KINDS}")
        for key in ("network", "scheduler", "intensity", "package_versions", "metrics"):
            if not isinstance(getattr(self, key), dict):
                raise Seg2MedError(f"{source}: {key} must be a JSON object, got {getattr(self, key)!r}")
        if self.model_kind == "diffusion" and not is_diffusion_config(self.network):
            raise Seg2MedError(
                f"{source}: a diffusion model needs a DiffusionModelUNet network, got {network_class_name(self.network)}"
            )
        if self.model_kind == "regression" and is_diffusion_config(self.network):
            raise Seg2MedError(f"{source}: a regression model cannot use DiffusionModelUNet (set network 'class')")
        from seg2med_core.network import conditioning

        if conditioning(self.network)[1] and self.scheduler.get("prediction_type") != "sample":
            raise Seg2MedError(f"{source}: a prior_residual network predicts the image: the scheduler's prediction_type must be 'sample'")
        lo, hi = SPACING_XY_RANGE
        if (
            not isinstance(self.spacing_xy, (int, float))
            or isinstance(self.spacing_xy, bool)
            or not math.isfinite(self.spacing_xy)
            or not lo <= self.spacing_xy <= hi
        ):
            raise Seg2MedError(f"{source}: spacing_xy must be a number of mm between {lo:g} and {hi:g}, got {self.spacing_xy!r}")
        lo_px, hi_px = IMAGE_SIZE_RANGE
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or not lo_px <= self.image_size <= hi_px:
            raise Seg2MedError(f"{source}: image_size must be an integer between {lo_px} and {hi_px} pixels, got {self.image_size!r}")
        from seg2med_core.labels import LABEL_SETS

        if self.label_set not in LABEL_SETS:
            raise Seg2MedError(f"{source}: label_set {self.label_set!r} is not a known label set (one of {', '.join(LABEL_SETS)})")
        supported = SUPPORTED_INTENSITY[self.modality]
        if not _intensity_matches(self.intensity, supported):
            raise Seg2MedError(
                f"{source}: intensity {json.dumps(self.intensity)} is not supported; this version normalises "
                f"{self.modality.upper()} only as {json.dumps(supported)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return to_json_config(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any, source: str = "metadata") -> BundleMetadata:
        """Build from a parsed ``metadata.json``; missing required keys raise one-line errors.

        Unknown keys are ignored so that newer bundles still load in older versions.
        """
        if not isinstance(data, dict):
            raise Seg2MedError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise Seg2MedError(f"{source}: missing key(s) {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in fields}
        if isinstance(kwargs.get("spacing_xy"), int) and not isinstance(kwargs["spacing_xy"], bool):
            kwargs["spacing_xy"] = float(kwargs["spacing_xy"])
        try:
            metadata = cls(**kwargs)
        except Seg2MedError as exc:
            raise Seg2MedError(f"{source}: {str(exc).removeprefix('metadata: ')}") from exc
        return metadata


@dataclass
class Bundle:
    """A loaded model: its metadata, the network (eval mode, on the requested device) and its folder."""

    metadata: BundleMetadata
    network: torch.nn.Module
    path: Path | None = None


def read_metadata(path: str | os.PathLike[str]) -> BundleMetadata:
    """Read and validate ``metadata.json`` of the bundle folder ``path`` (weights are not touched)."""
    folder = _check_folder(path)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise Seg2MedError(f"model bundle '{folder}' has no {METADATA_FILE}")
    data = read_json(meta_path, "bundle metadata")
    return BundleMetadata.from_dict(data, source=f"'{meta_path}'")


def load_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder: validate metadata, build the network, load safetensors weights strictly."""
    folder = _check_folder(path)
    metadata = read_metadata(folder)
    state = check_weights(folder, metadata)
    network = build_network(metadata.network)
    _load_state_strict(network, state, str(folder / WEIGHTS_FILE))
    return Bundle(metadata=metadata, network=network.to(device).eval(), path=folder)


def _expected_state(metadata: BundleMetadata) -> dict[str, torch.Tensor]:
    """The state dict the network config asks for, built on the meta device (shapes only, no memory)."""
    import torch

    with torch.device("meta"):
        network = build_network(metadata.network)
    return network.state_dict()


def check_weights(path: str | os.PathLike[str], metadata: BundleMetadata | None = None) -> dict[str, torch.Tensor]:
    """Validate a bundle's ``model.safetensors`` against its network config and return the tensors (CPU).

    In this order, so nothing large is allocated for a bad bundle: the config's network is built on the meta
    device and its size bounded; the safetensors header's names, shapes and dtypes must match it (floating
    point where the network has floating point); only then are the tensors read, and each must be finite.
    """
    folder = _check_folder(path)
    metadata = metadata or read_metadata(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise Seg2MedError(f"model bundle '{folder}' has no {WEIGHTS_FILE}")
    import torch
    from safetensors.torch import load_file

    expected = _expected_state(metadata)
    n_values = sum(t.numel() for t in expected.values())
    if n_values > MAX_PARAMETERS:
        raise Seg2MedError(
            f"'{folder / METADATA_FILE}': network config describes {n_values / 1e9:.1f} G parameters "
            f"(more than {MAX_PARAMETERS / 1e9:g} G); refusing to build it"
        )
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            header = {k: (tuple(handle.get_slice(k).get_shape()), handle.get_slice(k).get_dtype()) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise Seg2MedError(f"weights '{weights_path}' are unreadable or corrupt ({_first_line(exc)})") from exc
    missing = [k for k in expected if k not in header]
    unexpected = [k for k in header if k not in expected]
    if missing or unexpected:
        detail = f"missing {len(missing)} (e.g. {missing[0]})" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"unexpected {len(unexpected)} (e.g. {unexpected[0]})"
        raise Seg2MedError(f"weights in {weights_path} do not match the network config: {detail}")
    for key, tensor in expected.items():
        shape, dtype = header[key]
        if shape != tuple(tensor.shape):
            raise Seg2MedError(
                f"weights in {weights_path} do not match the network config: {key} has shape {shape}, "
                f"expected {tuple(tensor.shape)}"
            )
        if tensor.is_floating_point() and dtype not in FLOAT_DTYPES:
            raise Seg2MedError(f"weights in {weights_path}: {key} has dtype {dtype}; network weights must be floating point")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise Seg2MedError(f"weights '{weights_path}' are unreadable or corrupt ({_first_line(exc)})") from exc
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise Seg2MedError(f"weights in {weights_path}: {key} has {bad} NaN/Inf value(s); the model is broken")
    return state


def save_bundle(
    path: str | os.PathLike[str],
    network: torch.nn.Module,
    metadata: BundleMetadata,
    *,
    model_card: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``network``'s weights and ``metadata`` as a bundle folder, atomically.

    The weights are checked against ``metadata.network`` first (a fresh network built from the
    config must accept them), so every saved bundle can be loaded again. An existing bundle at
    ``path`` is replaced only after the new one is complete (``overwrite=False`` refuses instead).
    """
    from safetensors.torch import save_file

    folder = Path(path)
    metadata.validate()
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    _load_state_strict(build_network(metadata.network), state, f"network for bundle '{folder}'")
    if folder.exists() and not overwrite:
        raise Seg2MedError(f"model bundle '{folder}' already exists")
    if folder.exists() and not folder.is_dir():
        raise Seg2MedError(f"cannot write model bundle: '{folder}' exists and is not a folder")
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "seg2med": __version__})
        (tmp / METADATA_FILE).write_text(json.dumps(metadata.to_dict(), indent=2) + "\n", encoding="utf-8")
        if model_card is not None:
            (tmp / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")
    return folder


def check_modality(bundle: Bundle | BundleMetadata, modality: str) -> None:
    """Raise if the bundle was trained for another modality than ``modality`` ("ct" or "mr")."""
    metadata = bundle.metadata if isinstance(bundle, Bundle) else bundle
    where = f"'{bundle.path}'" if isinstance(bundle, Bundle) and bundle.path is not None else f"'{metadata.name}'"
    if modality.lower() not in MODALITIES:
        raise Seg2MedError(f"modality {modality!r} must be one of {MODALITIES}")
    if metadata.modality != modality.lower():
        raise Seg2MedError(
            f"model {where} produces {metadata.modality.upper()} images but {modality.upper()} was requested"
        )


def import_monai_generative_checkpoint(
    ckpt_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], metadata: BundleMetadata
) -> Path:
    """Convert a MONAI-Generative ``DiffusionModelUNet`` state dict (``.pt``/``.pth``) into a bundle.

    Reads tensors only (``torch.load(weights_only=True)``); accepts a bare state dict or one wrapped
    as ``{"state_dict"|"model_state_dict"|"model": ...}`` and strips DataParallel ``module.`` prefixes.
    Key names are converted by MONAI's ``DiffusionModelUNet.load_old_state_dict``.
    """
    import torch

    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise Seg2MedError(f"checkpoint '{ckpt}' does not exist")
    try:
        raw = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise Seg2MedError(f"checkpoint '{ckpt}' is not a loadable tensor-only state dict ({exc})") from exc
    state = _unwrap_state_dict(raw, str(ckpt))
    if not is_diffusion_config(metadata.network):
        raise Seg2MedError(f"checkpoint import needs a DiffusionModelUNet network config, got {metadata.network}")
    network = build_network(metadata.network)
    expected = network.state_dict()
    if len(state) != len(expected):
        raise Seg2MedError(
            f"checkpoint '{ckpt}' has {len(state)} tensors but the network config expects {len(expected)}"
        )
    remaining = dict(state)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MONAI prints "All keys match..."
            network.load_old_state_dict(remaining)  # type: ignore[operator]
    except KeyError as exc:
        raise Seg2MedError(f"checkpoint '{ckpt}' lacks tensor {exc} needed by the network config") from exc
    except RuntimeError as exc:
        raise Seg2MedError(f"checkpoint '{ckpt}' does not match the network config: {_first_line(exc)}") from exc
    consumed_all = all(k in expected for k in state) or not remaining
    if not consumed_all:
        raise Seg2MedError(f"checkpoint '{ckpt}' has tensors the network config does not use, e.g. {next(iter(remaining))}")
    return save_bundle(out_dir, network, metadata)


def bundle_info(path: str | os.PathLike[str]) -> str:
    """Human-readable summary of a bundle (metadata + tensor/parameter counts; weights not loaded)."""
    folder = _check_folder(path)
    m = read_metadata(folder)
    weights_path = folder / WEIGHTS_FILE
    if weights_path.is_file():
        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                keys = list(handle.keys())
                n_params = sum(_numel(handle.get_slice(k).get_shape()) for k in keys)
            weights = f"{len(keys)} tensors, {n_params / 1e6:.2f} M values, {weights_path.stat().st_size / 1e6:.1f} MB"
        except (SafetensorError, OSError) as exc:
            weights = f"unreadable ({exc})"
    else:
        weights = "missing"
    lines = [
        f"bundle:        {folder}",
        f"name:          {m.name} (version {m.version})",
        f"kind:          {m.model_kind} ({network_class_name(m.network)})",
        f"modality:      {m.modality.upper()}" + (f", sequence {m.sequence}" if m.sequence else ""),
        f"label set:     {m.label_set}",
        f"grid:          {m.image_size}x{m.image_size} px at {m.spacing_xy:g} mm",
        f"intensity:     {json.dumps(m.intensity)}",
        f"network:       {json.dumps(to_json_config(m.network))}",
    ]
    if m.scheduler:
        lines.append(f"scheduler:     {json.dumps(to_json_config(m.scheduler))}")
    lines += [
        f"weights:       {weights}",
        f"training data: {m.training_data or '-'}",
        f"licence:       {m.licence}",
        f"created:       {m.created}",
        f"packages:      {', '.join(f'{k} {v}' for k, v in m.package_versions.items())}",
    ]
    if m.metrics:
        lines.append(f"metrics:       {json.dumps(m.metrics)}")
    return "\n".join(lines)


def _check_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise Seg2MedError(f"model bundle '{folder}' does not exist")
    if not folder.is_dir():
        raise Seg2MedError(f"model bundle '{folder}' is not a folder (expected {WEIGHTS_FILE} + {METADATA_FILE})")
    return folder


def _load_state_strict(network: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming ``source`` and the first problem."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {len(missing)} (e.g. {missing[0]})" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"unexpected {len(unexpected)} (e.g. {unexpected[0]})"
        raise Seg2MedError(f"weights in {source} do not match the network config: {detail}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise Seg2MedError(
                f"weights in {source} do not match the network config: {key} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    network.load_state_dict(state, strict=True)


def _unwrap_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(raw, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise Seg2MedError(f"checkpoint '{source}' does not contain a state dict of tensors")
    if all(str(k).startswith("module.") for k in raw):
        raw = {str(k)[len("module.") :]: v for k, v in raw.items()}
    return {str(k): v for k, v in raw.items()}


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
