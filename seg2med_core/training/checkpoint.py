"""Training checkpoints: weights as safetensors, optimiser/RNG state as a torch file, written atomically.

A checkpoint is a folder (``RUN/checkpoints/latest`` or ``best``) holding ``model.safetensors``,
``state.pt`` (optimiser state, step, epoch position, RNG states: our own file, so ``torch.save`` is
acceptable here; it is read back with ``weights_only=True``) and ``info.json`` (human-readable step and
metrics). The folder is written next to its final place and swapped in with ``os.replace``, so a kill
at any moment leaves either the previous or the new checkpoint, never a half-written one.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seg2med_core.io import atomic_folder
from seg2med_core.errors import Seg2MedError

WEIGHTS = "model.safetensors"
STATE = "state.pt"
INFO = "info.json"


@dataclass
class TrainState:
    """Where training stands: ``step`` optimiser steps done, ``epoch`` and batches done in it."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when available)."""
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"keys": np_keys.tolist(), "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    np.random.set_state(("MT19937", np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: str | os.PathLike[str],
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint folder atomically (replacing an older one at ``folder``)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS), metadata={"step": str(state.step)})
        torch.save(
            {"optimizer": optimizer.state_dict(), "train_state": state.__dict__, "rng": rng_state(), "config": config},
            tmp / STATE,
        )
        (tmp / INFO).write_text(json.dumps({**state.__dict__}, indent=2, default=float) + "\n", encoding="utf-8")
    return folder


def find_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint at ``folder``, or the previous one left aside if a kill hit the swap; else None."""
    folder = Path(folder)
    if (folder / STATE).is_file() and (folder / WEIGHTS).is_file():
        return folder
    for old in sorted(folder.parent.glob(f".{folder.name}.old-*/{folder.name}")):
        if (old / STATE).is_file() and (old / WEIGHTS).is_file():
            return old
    return None


def load_checkpoint(
    folder: str | os.PathLike[str],
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    map_location: str | torch.device = "cpu",
) -> tuple[TrainState, dict[str, Any], dict[str, Any]]:
    """Load weights (and optimiser state) in place; returns (train state, RNG state, config)."""
    folder = Path(folder)
    try:
        weights = load_file(str(folder / WEIGHTS), device="cpu")
        payload = torch.load(folder / STATE, map_location=map_location, weights_only=True)
    except Exception as exc:  # safetensors/torch raise several types for corrupt files
        raise Seg2MedError(f"checkpoint '{folder}' is unreadable ({exc})") from exc
    train_state = TrainState(**payload["train_state"])
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise Seg2MedError(f"checkpoint '{folder}' does not match the network config: {first}") from exc
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return train_state, payload["rng"], payload["config"]
