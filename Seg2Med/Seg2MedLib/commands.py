"""Command lines for the seg2med CLI and TotalSegmentator, and where to find the core package.

Everything heavy runs in a child Python process (``PythonSlicer`` inside Slicer, ``sys.executable``
elsewhere) so that the Slicer GUI stays responsive and a crash in torch cannot take Slicer down.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

#: Mirrors ``seg2med_core.defaults`` (this package must not import seg2med_core; a test checks they agree).
SAMPLERS = ("dpmpp_2m", "ddim", "ddpm")
DEFAULT_SAMPLER = "dpmpp_2m"
DEFAULT_STEPS = 20
DEVICES = ("auto", "cpu", "cuda", "mps")
_GPU = re.compile(r"cuda(:\d+)?")


def check_device(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is one of :data:`DEVICES`, ``cuda:N``, or a comma list of CUDA
    devices (``cuda:0,cuda:1``: the slices are split over the GPUs)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1 and (parts[0] in DEVICES or _GPU.fullmatch(parts[0])):
        return
    if len(parts) > 1 and all(_GPU.fullmatch(p) for p in parts) and len(set(parts)) == len(parts):
        return
    raise ValueError(f"device {text!r} is not one of {', '.join(DEVICES)}, cuda:N or a list such as cuda:0,cuda:1")
MODALITIES = ("ct", "mr")


def core_root() -> Path:
    """The folder that contains the ``seg2med_core`` package (to put on ``PYTHONPATH`` of child processes).

    Looks at, in order: an importable ``seg2med_core``; the source checkout (``<repo>/Seg2Med/Seg2MedLib``);
    an installed extension (``qt-scripted-modules/seg2med_core`` next to ``Seg2MedLib``).
    """
    spec = importlib.util.find_spec("seg2med_core")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    here = Path(__file__).resolve()
    for candidate in (here.parents[2], here.parents[1]):
        if (candidate / "seg2med_core" / "__init__.py").is_file():
            return candidate
    raise ValueError(
        f"seg2med_core package not found (looked next to {here.parents[1]} and {here.parents[2]}); "
        "install it with 'pip install <path to seg2med checkout>' or reinstall the extension"
    )


def ensure_core_importable() -> Path:
    """Put :func:`core_root` on ``sys.path`` so ``import seg2med_core`` works inside Slicer's Python."""
    root = core_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def forget_modules(package: str) -> list[str]:
    """Drop ``package`` and its submodules from ``sys.modules`` so the next import reads the files again."""
    names = [n for n in sys.modules if n == package or n.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return names


def python_executable() -> str:
    """``PythonSlicer`` when running inside Slicer (it sets up Slicer's libraries), else this interpreter."""
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def child_environment() -> dict[str, str]:
    """Extra environment for child processes: ``PYTHONPATH`` starting with the core root."""
    root = str(core_root())
    current = os.environ.get("PYTHONPATH", "")
    parts = [root] + [p for p in current.split(os.pathsep) if p and p != root]
    return {"PYTHONPATH": os.pathsep.join(parts), "PYTHONUNBUFFERED": "1"}


def _core(*args: str) -> list[str]:
    return [python_executable(), "-m", "seg2med_core", *args]


@dataclass(frozen=True)
class SynthesisOptions:
    """What the user picked for one synthesis; validated by :meth:`validate` before a process starts."""

    steps: int = DEFAULT_STEPS
    sampler: str = DEFAULT_SAMPLER
    seed: int | None = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        check_device(self.device)
        if not 1 <= int(self.steps) <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if self.seed is not None and int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0 or empty, got {self.seed}")


def synthesize_command(seg: Path, model: Path, out: Path, options: SynthesisOptions, image: Path | None = None,
                       *, label_set: str | None = None, image_modality: str | None = None,
                       sequence: str | None = None) -> list[str]:
    """``python -m seg2med_core synthesize ... --progress-format json``.

    ``label_set`` skips the CLI's guess (the GUI knows it); ``image_modality`` says whether ``image`` is a CT
    or an MR (the CLI takes the body contour from it, and computes metrics when it has the model's modality);
    ``sequence`` (MR models only) is the MR sequence of the prior (``--sequence``).
    """
    return _synthesize([model], str(out), options, seg, image, label_set, image_modality, sequence)


def paired_synthesize_command(seg: Path, ct_model: Path, mr_model: Path, out_dir: Path, options: SynthesisOptions,
                              image: Path | None = None, *, label_set: str | None = None,
                              image_modality: str | None = None, sequence: str | None = None) -> list[str]:
    """``python -m seg2med_core synthesize --model CT --model MR --out DIR/ ...``: a synthetic CT and MR from one
    segmentation (the CLI converts the labels for each model and shares the CT's body contour with the MR).
    The CLI writes ``DIR/synthetic_ct.nii.gz``, ``DIR/synthetic_mr.nii.gz`` and ``DIR/preview_ct_mr.png``;
    ``sequence`` is the MR half's sequence."""
    return _synthesize([ct_model, mr_model], str(out_dir).rstrip("/\\") + os.sep, options, seg, image, label_set,
                       image_modality, sequence)


def _synthesize(models: list[Path], out: str, options: SynthesisOptions, seg: Path, image: Path | None,
                label_set: str | None, image_modality: str | None, sequence: str | None) -> list[str]:
    options.validate()
    if image_modality is not None and image_modality not in MODALITIES:
        raise ValueError(f"image modality {image_modality!r} is not one of {', '.join(MODALITIES)}")
    cmd = _core("synthesize", "--seg", str(seg))
    if label_set:
        cmd += ["--label-set", label_set]
    for model in models:
        cmd += ["--model", str(model)]
    cmd += ["--out", out, "--steps", str(int(options.steps)), "--sampler", options.sampler, "--device", options.device]
    if options.seed is not None:
        cmd += ["--seed", str(int(options.seed))]
    if sequence:
        cmd += ["--sequence", sequence]
    if image is not None:
        cmd += ["--image", str(image)]
        if image_modality is not None:
            cmd += ["--image-modality", image_modality]
    return cmd + ["--progress-format", "json"]


def convert_command(image: Path, seg: Path, to_modality: str, model: Path, out: Path, options: SynthesisOptions) -> list[str]:
    """``python -m seg2med_core convert`` (label conversion + body from the source image + synthesis)."""
    if to_modality not in MODALITIES:
        raise ValueError(f"target modality {to_modality!r} is not one of {', '.join(MODALITIES)}")
    options.validate()
    cmd = _core("convert", "--image", str(image), "--seg", str(seg), "--to", to_modality, "--model", str(model),
                "--out", str(out), "--steps", str(int(options.steps)), "--sampler", options.sampler,
                "--device", options.device)
    if options.seed is not None:
        cmd += ["--seed", str(int(options.seed))]
    return cmd + ["--progress-format", "json"]


@dataclass(frozen=True)
class TrainingOptions:
    """Settings of one training run (``python -m seg2med_core train``); ``out`` is the run folder (config,
    checkpoints, logs) and the finished bundle is ``out/bundle``."""

    data: Path
    out: Path
    modality: str = "ct"
    sequence: str | None = None
    steps: int = 1000
    batch_size: int = 8
    image_size: int = 256
    device: str = "auto"
    resume: bool = False

    def validate(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality {self.modality!r} is not one of {', '.join(MODALITIES)}")
        check_device(self.device)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image size must be a multiple of 16 and >= 16, got {self.image_size}")
        if not Path(self.data).is_dir():
            raise ValueError(f"training data folder {str(self.data)!r} does not exist")


def train_command(options: TrainingOptions) -> list[str]:
    """``python -m seg2med_core train ... --progress-format json`` (``--resume`` continues a stopped run)."""
    options.validate()
    cmd = _core("train", "--data", str(options.data), "--out", str(options.out), "--modality", options.modality,
                "--max-steps", str(options.steps), "--batch-size", str(options.batch_size),
                "--image-size", str(options.image_size), "--device", options.device)
    if options.sequence:
        cmd += ["--sequence", options.sequence]
    if options.resume:
        cmd.append("--resume")
    return cmd + ["--progress-format", "json"]
