"""Training checkpoints: weights as safetensors, optimiser/RNG state as a torch file, written atomically.

A checkpoint is a folder (``RUN/checkpoints/latest`` or ``best``) holding ``model.safetensors``,
``state.pt`` (optimiser state, step, epoch position, RNG states: our own file, so ``torch.save`` is
acceptable here; it is read back with ``weights_only=True``) and ``info.json`` (human-readable step and
metrics). The folder is written next to its final place and swapped in with ``os.replace``, so a kill
at any moment leaves either the previous or the new checkpoint, never a half-written one.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
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
    try:
        with atomic_folder(folder) as tmp:
            weights = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
            save_file(weights, str(tmp / WEIGHTS), metadata={"step": str(state.step)})
            torch.save(
                {"optimizer": optimizer.state_dict(), "train_state": state.__dict__, "rng": rng_state(), "config": config},
                tmp / STATE,
            )
            (tmp / INFO).write_text(json.dumps({**state.__dict__}, indent=2, default=float) + "\n", encoding="utf-8")
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError ("file write failed")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            reason = "no space left on device"
        previous = " (the previous checkpoint is intact)" if find_checkpoint(folder) is not None else ""
        raise Seg2MedError(f"cannot write checkpoint '{folder}' at step {state.step}: {reason}{previous}") from None
    return folder


#: Temporary names :func:`seg2med_core.io.atomic_folder` gives a checkpoint being written (``.latest.tmp-XXXX``)
#: or the previous one while it is swapped (``.latest.old-XXXX``); a kill can leave them behind.
_LEFTOVER = re.compile(r"\.(latest|best|bundle)\.(tmp|old)-[A-Za-z0-9_]{8}")


def remove_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete seg2med's own temporary checkpoint folders in ``folder`` left by a killed run; return them.

    ``.X.old-*`` folders are kept while ``X`` itself is missing or incomplete: :func:`find_checkpoint` then
    resumes from the copy inside them.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        name, kind = match.groups()
        needed = ("metadata.json", WEIGHTS) if name == "bundle" else (STATE, WEIGHTS)
        if kind == "old" and not all((folder / name / f).is_file() for f in needed):
            continue  # the only complete copy may be the one inside
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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
    weights, payload = read_checkpoint_payload(folder, map_location)
    train_state = TrainState(**payload["train_state"])
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise Seg2MedError(f"checkpoint '{folder}' does not match the network config: {_first_line(exc)}") from exc
    if optimizer is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise Seg2MedError(f"checkpoint '{folder / STATE}': optimizer state does not fit the network ({_first_line(exc)})") from exc
    return train_state, payload["rng"], payload["config"]


PAYLOAD_KEYS = ("optimizer", "train_state", "rng", "config")


def read_checkpoint_payload(
    folder: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's weights and ``state.pt`` and check the payload's layout (exact keys, train state
    fields, a restorable RNG state); one-line errors naming the file. The network is not needed."""
    folder = Path(folder)
    for name in (WEIGHTS, STATE):
        if not (folder / name).is_file():
            raise Seg2MedError(f"checkpoint '{folder}' has no {name} (incomplete checkpoint)")
    try:
        weights = load_file(str(folder / WEIGHTS), device="cpu")
        payload = torch.load(folder / STATE, map_location=map_location, weights_only=True)
    except Exception as exc:  # safetensors/torch raise several types for corrupt files
        raise Seg2MedError(f"checkpoint '{folder}' is unreadable ({_first_line(exc)})") from exc
    where = f"checkpoint '{folder / STATE}'"
    if not isinstance(payload, dict):
        raise Seg2MedError(f"{where} holds {type(payload).__name__}, expected a dict of {', '.join(PAYLOAD_KEYS)}")
    _check_keys(payload, PAYLOAD_KEYS, where)
    fields = tuple(TrainState.__dataclass_fields__)
    if not isinstance(payload["train_state"], dict):
        raise Seg2MedError(f"{where}: train_state is not a dict")
    _check_keys(payload["train_state"], fields, f"{where} train_state")
    for key in ("step", "epoch", "batch_in_epoch"):
        value = payload["train_state"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Seg2MedError(f"{where}: train_state {key} must be a non-negative integer, got {value!r}")
    if not isinstance(payload["config"], dict):
        raise Seg2MedError(f"{where}: config is not a dict")
    check_rng_state(payload["rng"], where)
    return weights, payload


def _check_keys(data: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in data]
    extra = [str(k) for k in data if k not in keys]
    if missing or extra:
        parts = ([f"missing key(s) {', '.join(missing)}"] if missing else []) + ([f"unexpected key(s) {', '.join(extra)}"] if extra else [])
        raise Seg2MedError(f"{where} is not a seg2med checkpoint: {'; '.join(parts)}")


def check_rng_state(state: Any, where: str) -> None:
    """Raise a one-line error unless ``state`` can be restored by :func:`set_rng_state` (tried, then undone)."""
    before = rng_state()
    try:
        set_rng_state(state)
    except Exception as exc:  # random/numpy/torch raise TypeError, ValueError, RuntimeError, KeyError...
        raise Seg2MedError(f"{where}: the saved random-number state is broken ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        set_rng_state(before)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
