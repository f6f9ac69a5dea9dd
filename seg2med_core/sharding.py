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

from seg2med_core.device import as_device_list
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.fast import FastOptions
from seg2med_core.sampler import CancelFn, ProgressFn, SamplerConfig, resolve_slice_indices, sample_slices


def shard_rows(n: int, parts: int) -> list[list[int]]:
    """Contiguous, near-equal shares of ``range(n)``; empty shares are dropped."""
    return [chunk.tolist() for chunk in np.array_split(np.arange(n), max(1, parts)) if len(chunk)]


def sample_sharded(
    network: torch.nn.Module,
    scheduler_config: dict[str, Any] | None,
    priors: np.ndarray,
    config: SamplerConfig,
    devices: Sequence[torch.device | str],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    slice_indices: Sequence[int] | None = None,
    options: FastOptions | None = None,
) -> np.ndarray:
    """:func:`~seg2med_core.sampler.sample_slices` with the slices split over ``devices`` (see module doc)."""
    targets = as_device_list(devices)
    n = int(priors.shape[0])
    indices = resolve_slice_indices(n, slice_indices)
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
    compiling = options if options is not None else config  # sample_slices lets options win over config
    if compiling.compile and compiling.compile_mode == "reduce-overhead":
        raise Seg2MedError("compile mode 'reduce-overhead' (CUDA graphs) cannot be used with several devices; "
                           "use the default compile mode or one device")
    networks = [network.to(targets[0])] + [copy.deepcopy(network).to(d) for d in targets[1 : len(shares)]]
    if config.slice_coupling > 0:  # neighbours are coupled at every step: one lock-step loop over all devices
        return _sample_coupled(networks, targets[: len(shares)], scheduler_config, priors, indices, config, options,
                               progress, cancel)
    lock = threading.Lock()
    done, totals = [0] * len(shares), [0] * len(shares)
    failed = threading.Event()

    def make_progress(k: int) -> ProgressFn:
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
    out = np.empty((n, *priors.shape[-2:]), dtype=np.float32)
    for rows, part in zip(shares, parts):
        out[rows] = part
    return out


def _sample_coupled(
    networks: list[torch.nn.Module],
    devices: list[torch.device],
    scheduler_config: dict[str, Any] | None,
    priors: np.ndarray,
    indices: list[int],
    config: SamplerConfig,
    options: FastOptions | None,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> np.ndarray:
    """Slice coupling over several devices: :func:`~seg2med_core.sampler.sample_lockstep` shares every
    step's batches out over the devices and keeps the state on the first (same result as one device)."""
    from seg2med_core.sampler import _check_network_input, _check_priors, _resolve_batch_size, sample_lockstep

    arr = _check_priors(priors, allow_channels=True)
    if arr.ndim == 3:
        arr = arr[:, None]
    n, channels, height, width = arr.shape
    _check_network_input(networks[0], 1 + channels, f"diffusion sampling with {channels} prior channel(s)")
    work = n * config.steps * height * width / 512**2
    opts = [options if options is not None else config.fast_options(d, work=work) for d in devices]
    batch = _resolve_batch_size(config, networks[0], devices[0], opts[0], 1 + channels, height, n)
    assert config.seed is not None
    return sample_lockstep(networks, devices, scheduler_config, arr, indices, config, opts, batch, config.seed,
                           progress, cancel)
