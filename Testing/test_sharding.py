"""Slice sharding over several devices: same volume as one device, summed progress, errors and cancel.

The CPU stands in for the GPUs (``["cpu", "cpu"]`` runs two shards in two threads with two copies of
the network); what is tested is the splitting, seeding, merging and error handling, which do not
depend on the device type.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from seg2med_core import cli, io
from seg2med_core.bundle import load_bundle
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.pipeline import synthesize
from seg2med_core.sampler import SamplerConfig, sample_slices
from seg2med_core.device import parse_devices
from seg2med_core.sharding import shard_rows
from tiny_models import tiny_attention_network


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return tiny_attention_network()  # non-zero predictions: the devices' outputs really are compared


@pytest.fixture(scope="module")
def priors() -> np.ndarray:
    return np.random.default_rng(1).random((7, 16, 16), dtype=np.float32)


def test_shard_rows_cover_every_slice_once() -> None:
    assert shard_rows(7, 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert shard_rows(2, 4) == [[0], [1]]  # more devices than slices: the extra devices stay idle
    assert sorted(sum(shard_rows(10, 3), [])) == list(range(10))


@pytest.mark.parametrize("kind", ["dpmpp_2m", "ddpm"])  # deterministic and per-step-noise samplers
def test_two_devices_give_the_one_device_volume(tiny: torch.nn.Module, priors: np.ndarray, kind: str) -> None:
    config = SamplerConfig(kind=kind, steps=3, seed=11, batch_size=2)
    one = sample_slices(tiny, None, priors, config, "cpu", slice_indices=range(10, 17))
    events: list[tuple[int, int]] = []
    lock = threading.Lock()

    def progress(done: int, total: int, _what: str) -> None:
        with lock:
            events.append((done, total))

    two = sample_slices(tiny, None, priors, config, ["cpu", "cpu"], progress, slice_indices=range(10, 17))
    np.testing.assert_array_equal(two, one)
    # shards of 4 and 3 slices at batch 2: 2 + 2 batches x 3 steps, reported as one summed count
    assert {t for _, t in events} == {12} and events[-1] == (12, 12)
    assert [d for d, _ in events] == sorted(d for d, _ in events)


def test_random_seed_is_shared_by_the_shards(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    config = SamplerConfig(kind="dpmpp_2m", steps=2, seed=None, batch_size=4)
    out = sample_slices(tiny, None, np.repeat(priors[:1], 2, axis=0), config, ["cpu", "cpu"], slice_indices=[3, 3])
    np.testing.assert_array_equal(out[0], out[1])  # same slice index, same seed on both devices → same slice


class FailsInOneThread(torch.nn.Module):
    """Wraps a network; the copy made for the second shard raises (deep copies share nothing else)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.copies = 0

    def __deepcopy__(self, memo: dict) -> FailsInOneThread:
        clone = FailsInOneThread(self.inner)
        clone.copies = self.copies + 1
        return clone

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.copies:
            raise RuntimeError("CUDA out of memory on the second device")
        return self.inner(x, timesteps)


def test_an_error_on_one_device_stops_all_and_is_the_one_raised(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    config = SamplerConfig(kind="dpmpp_2m", steps=50, seed=0, batch_size=1)
    with pytest.raises(RuntimeError, match="second device"):
        sample_slices(FailsInOneThread(tiny), None, priors, config, ["cpu", "cpu"])


def test_cancel_stops_every_shard(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        sample_slices(tiny, None, priors, SamplerConfig(steps=50, seed=0, batch_size=1), ["cpu", "cpu"], cancel=cancel)


def test_parse_devices_names_the_bad_entry() -> None:
    assert parse_devices("cpu") == [torch.device("cpu")]
    assert parse_devices("cpu, cpu") == [torch.device("cpu")] * 2
    with pytest.raises(Seg2MedError, match="'banana'"):
        parse_devices("cpu,banana")
    with pytest.raises(Seg2MedError, match="empty"):
        parse_devices(" , ")
    if not torch.cuda.is_available():
        with pytest.raises(Seg2MedError, match="'cuda:1' requested but CUDA is not available"):
            parse_devices("cpu,cuda:1")


def test_pipeline_and_cli_accept_a_device_list(synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    bundle = load_bundle(tiny_bundle)
    config = SamplerConfig(kind="ddim", steps=2, seed=4, batch_size=2)
    one = synthesize(seg, bundle, sampler=config, device="cpu")
    lines: list[str] = []
    two = synthesize(seg, bundle, sampler=config, device=["cpu", "cpu"], info=lines.append)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(two.image), sitk.GetArrayFromImage(one.image))
    assert any("on cpu,cpu:" in line for line in lines)
    out = tmp_path / "two.nii.gz"
    rc = cli.main(["synthesize", "--seg", str(synthetic_case["seg"]), "--model", str(tiny_bundle), "--sampler", "ddim",
                   "--steps", "2", "--seed", "4", "--batch-size", "2", "--device", "cpu,cpu", "--out", str(out),
                   "--progress-format", "none"])
    capsys.readouterr()
    assert rc == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), sitk.GetArrayFromImage(one.image))


def test_sharded_runs_do_not_compile_automatically_and_refuse_cuda_graphs(tiny: torch.nn.Module, priors: np.ndarray,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(1) or module)
    sample_slices(tiny, None, priors, SamplerConfig(steps=1, seed=0, batch_size=4), ["cpu", "cpu"])
    assert compiled == []  # automatic compilation is off when sharding
    sample_slices(tiny, None, priors, SamplerConfig(steps=1, seed=0, batch_size=4, compile=True), ["cpu", "cpu"])
    assert compiled == [1, 1]  # asked for: each shard compiles its copy (one at a time)
    with pytest.raises(Seg2MedError, match="'reduce-overhead'.*several devices"):
        sample_slices(tiny, None, priors, SamplerConfig(steps=1, seed=0, compile=True, compile_mode="reduce-overhead"),
                      ["cpu", "cpu"])
