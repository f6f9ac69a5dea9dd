"""Slice sharding: one volume's slices sampled on several devices at once (multi-GPU machines, cohorts).

Each device gets a contiguous share of the slices and its own copy of the network, and runs the normal
sampler (:func:`seg2med_core.sampler.sample_slices`) in its own thread (PyTorch releases the GIL in its
kernels, so the devices work in parallel). Every slice's noise comes from ``(seed, slice index)``, so
the result is the single-device result whatever the number of devices. Progress is summed over the
shards; a cancel, or an error on one device, stops all of them.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from seg2med_core.device import pick_device
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.fast import FastOptions

def parse_devices(text: str) -> list[torch.device]:
    """``"cuda:0,cuda:1"`` → devices (each checked by :func:`pick_device`); ``"auto"``/``"cpu"`` → one device.

    Raises :class:`Seg2MedError` naming the entry when one is unknown, unavailable or repeated.
    """
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise Seg2MedError(f"device list {text!r} is empty (use e.g. auto, cpu, cuda:0 or cuda:0,cuda:1)")
    devices = [pick_device(name) for name in names]
    seen: set[str] = set()
    for name, device in zip(names, devices):
        if str(device) in seen and device.type != "cpu":
            raise Seg2MedError(f"device {name!r} appears twice in {text!r}")
        seen.add(str(device))
    return devices


def as_device_list(device: Any) -> list[torch.device]:
    """One device or a sequence of devices → a non-empty list of ``torch.device``."""
    if isinstance(device, (str, torch.device)):
        return [torch.device(device)]
    devices = [torch.device(d) for d in device]
    if not devices:
        raise Seg2MedError("no device given")
    return devices


def describe_devices(device: Any) -> str:
    """``cuda:0`` or ``cuda:0,cuda:1`` for log lines."""
    return ",".join(str(d) for d in as_device_list(device))


def shard_rows(n: int, parts: int) -> list[list[int]]:
    """Contiguous, near-equal shares of ``range(n)``; empty shares are dropped."""
    return [chunk.tolist() for chunk in np.array_split(np.arange(n), max(1, parts)) if len(chunk)]


def sample_sharded(
    network: torch.nn.Module,
    scheduler_config: dict[str, Any] | None,
    priors: np.ndarray,
    config: Any,
    devices: Sequence[torch.device | str],
    progress: Any = None,
    cancel: Any = None,
    *,
    slice_indices: Sequence[int] | None = None,
    options: FastOptions | None = None,
) -> np.ndarray:
    """:func:`~seg2med_core.sampler.sample_slices` with the slices split over ``devices`` (see module doc)."""
    from seg2med_core.sampler import sample_slices

    targets = as_device_list(devices)
    n = int(priors.shape[0])
    indices = list(range(n)) if slice_indices is None else [int(i) for i in slice_indices]
    if len(indices) != n:
        raise Seg2MedError(f"slice_indices has {len(indices)} entries for {n} priors")
    shares = shard_rows(n, len(targets))
    if len(shares) <= 1:
        return sample_slices(network, scheduler_config, priors, config, targets[0], progress, cancel,
                             slice_indices=indices, options=options)
    if config.seed is None:  # one seed for all shards, or they would not form one volume
        config = replace(config, seed=secrets.randbits(63))
    # torch.compile in several threads at once is not something PyTorch promises to support: no automatic
    # compilation here; an explicit one compiles one shard at a time (fast.prepared) and never with CUDA graphs
    if config.compile is None:
        config = replace(config, compile=False)
    compile_mode = options.compile_mode if options is not None and options.compile else config.compile_mode
    if (config.compile or (options is not None and options.compile)) and compile_mode == "reduce-overhead":
        raise Seg2MedError("compile mode 'reduce-overhead' (CUDA graphs) cannot be used with several devices; "
                           "use the default compile mode or one device")
    networks = [network.to(targets[0])] + [copy.deepcopy(network).to(d) for d in targets[1 : len(shares)]]
    lock = threading.Lock()
    done, totals = [0] * len(shares), [0] * len(shares)
    failed = threading.Event()

    def make_progress(k: int) -> Any:
        def report(step: int, total: int, what: str) -> None:
            with lock:
                done[k], totals[k] = step, total
                if progress is not None and all(totals):  # every shard knows its size: the sum is final
                    progress(sum(done), sum(totals), what)
        return report

    def stop() -> bool:
        return failed.is_set() or (cancel is not None and bool(cancel()))

    def run(k: int) -> np.ndarray:
        rows = shares[k]
        try:
            return sample_slices(networks[k], scheduler_config, priors[rows], config, targets[k], make_progress(k), stop,
                                 slice_indices=[indices[r] for r in rows], options=options)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="seg2med-shard") as pool:
        futures = [pool.submit(run, k) for k in range(len(shares))]
    errors = [f.exception() for f in futures]
    # the error that stopped the run, not the Cancelled it caused on the other shards
    for error in sorted((e for e in errors if e is not None), key=lambda e: isinstance(e, Cancelled)):
        raise error
    parts = [f.result() for f in futures]
    out = np.empty((n, *priors.shape[1:]), dtype=np.float32)
    for rows, part in zip(shares, parts):
        out[rows] = part
    return out
