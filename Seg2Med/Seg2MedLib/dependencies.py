"""Install Seg2Med's Python dependencies into Slicer's Python on first use, after asking.

A clean Slicer ships numpy, scipy, SimpleITK and requests only. What else the core needs is listed in
``Seg2Med/Resources/requirements.txt``. PyTorch is installed through the PyTorch extension's
``PyTorchUtils`` (the right CUDA build for the machine); the rest with ``slicer.packaging.pip_ensure``
(Slicer 5.12+, which asks first) or ``slicer.util.pip_install`` after our own confirmation (5.8, 5.10).
Packages Slicer ships are never upgraded: a constraints file pins them to the installed versions.

Nothing here imports Qt; ``slicer`` is imported inside the functions (the checks work in plain Python).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Any

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
#: Distributions a clean Slicer ships; pinned during installation so pip never replaces them.
SLICER_PACKAGES = ("numpy", "scipy", "SimpleITK", "requests", "pydicom")
#: PyTorch version the core needs (monai>=1.4); passed to PyTorchUtils.installTorch.
TORCH_REQUIREMENT = ">=2.1"
REQUESTER = "Seg2Med"


class DependencyError(ValueError):
    """A dependency is missing and was not installed; the message is one line for the user."""


def read_requirements(path: str | Path | None = None) -> list[str]:
    """Requirement strings of the shipped list (comments and blank lines dropped)."""
    lines = Path(path or REQUIREMENTS_FILE).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _name_and_specifier(requirement: str) -> tuple[str, str]:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", requirement)
    if not match:
        raise ValueError(f"invalid requirement {requirement!r} in {REQUIREMENTS_FILE}")
    return match.group(1), match.group(2).split(";", 1)[0].strip()


def is_satisfied(requirement: str) -> bool:
    """True when the distribution is installed in a version the requirement accepts (nothing is imported)."""
    name, specifier = _name_and_specifier(requirement)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # no 'packaging': any installed version will do
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def missing_requirements(requirements: list[str] | None = None) -> list[str]:
    importlib.invalidate_caches()
    return [r for r in (read_requirements() if requirements is None else requirements) if not is_satisfied(r)]


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def write_constraints(folder: str | Path | None = None) -> Path:
    """A pip constraints file pinning the Slicer-shipped packages to their installed versions."""
    folder = Path(folder or tempfile.mkdtemp(prefix="seg2med-pip-"))
    pins = []
    for name in SLICER_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    path = folder / "slicer-constraints.txt"
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return path


def declined_message(missing: list[str]) -> str:
    names = " ".join(missing)
    return (f"Seg2Med needs Python packages that are not installed ({', '.join(missing)}) and the installation was "
            f"declined: press the button again and accept, or run slicer.util.pip_install('{names}') in the Python console")


def ensure_torch() -> None:
    """PyTorch through the PyTorch extension (asks the user); DependencyError when it is not there afterwards."""
    if torch_installed():
        return
    try:
        import PyTorchUtils  # the PyTorch extension (EXTENSION_DEPENDS)
    except ImportError:
        raise DependencyError("Seg2Med needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, "
                              "restart Slicer and try again") from None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        torch = logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch was not installed (declined or failed): install it in the 'PyTorch Utils' "
                                  "module, then try again")


def ensure(requirements: list[str] | None = None) -> list[str]:
    """Make the module's dependencies importable, installing what is missing after a confirmation.

    Returns the requirements that were installed (empty when all were present). Raises DependencyError with
    a one-line message when the user declines or the installation did not help.
    """
    import slicer

    ensure_torch()
    missing = missing_requirements(requirements)
    if not missing:
        return []
    constraints = write_constraints()
    packaging = _slicer_packaging()
    if packaging is not None and hasattr(packaging, "pip_ensure"):  # Slicer 5.12+: asks, installs, offers restart
        try:
            packaging.pip_ensure(missing, constraints=constraints, requester=REQUESTER)
        except RuntimeError as exc:
            if "declined" in str(exc).lower():
                raise DependencyError(declined_message(missing)) from None
            raise
    else:  # Slicer 5.8 / 5.10
        if not slicer.util.confirmOkCancelDisplay(
                f"Seg2Med needs {len(missing)} Python package(s) that are not installed yet. Install them now into "
                "Slicer's Python? This needs a network connection and may take a few minutes.",
                windowTitle=f"{REQUESTER} - Install Python Packages", detailedText="\n".join(missing)):
            raise DependencyError(declined_message(missing))
        slicer.util.pip_install([*missing, "-c", str(constraints)])
    still = missing_requirements(missing)
    if still:
        raise DependencyError(f"installing {', '.join(still)} did not succeed (see the Python console): "
                              "restart Slicer and try again")
    return missing


def _slicer_packaging() -> Any | None:
    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None
