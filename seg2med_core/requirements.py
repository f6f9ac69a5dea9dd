"""Third-party packages the CLI needs, checked *before* anything imports them (see ``__main__``).

Inside 3D Slicer the CLI runs as a ``PythonSlicer`` child process; a clean Slicer lacks most of these packages
(the Seg2Med module installs them on first use), and a missing one must give one line, not a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

#: import name -> distribution name (pip) of what the CLI imports; PyTorch comes from Slicer's PyTorch extension.
REQUIRED_IMPORTS = {
    "numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK", "nibabel": "nibabel", "slicerio": "slicerio",
    "torch": "torch", "monai": "monai", "einops": "einops", "safetensors": "safetensors",
    "matplotlib": "matplotlib", "tqdm": "tqdm", "skimage": "scikit-image", "pydicom": "pydicom",
}


def missing_imports() -> list[str]:
    return [dist for name, dist in REQUIRED_IMPORTS.items() if importlib.util.find_spec(name) is None]


def check_imports() -> None:
    missing = missing_imports()
    if missing:
        hint = ("install PyTorch with the PyTorch extension ('PyTorch Utils' module), the rest by opening the "
                "Seg2Med module and accepting the installation" if "torch" in missing else
                "open the Seg2Med module in 3D Slicer and accept the installation")
        print(f"seg2med: error: Python package(s) not installed in {sys.executable}: {', '.join(missing)} "
              f"({hint}; or run: {sys.executable} -m pip install {' '.join(m for m in missing if m != 'torch')})",
              file=sys.stderr)
        raise SystemExit(2)

