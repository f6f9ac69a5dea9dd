"""Fast path (SDPA, channels_last, autocast) computes the plain path's function; device selection and
memory-measured batch sizes."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg2med_core import fast
from seg2med_core.device import (
    CPU_BATCH_SIZE,
    MemoryProbe,
    auto_batch_size,
    measure_batch_size,
    pick_device,
)
from seg2med_core.errors import Seg2MedError
from seg2med_core.fast import CPU_BF16_ENV, FastOptions, cpu_bf16_native, prepared, set_sdpa
from seg2med_core.network import build_network
from seg2med_core.sampler import SamplerConfig, sample_slices
from tiny_models import TINY_ATTENTION, tiny_attention_network

TINY = TINY_ATTENTION


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return tiny_attention_network()


def _inputs(batch: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 2, size, size, generator=gen), torch.tensor([5, 400, 990][:batch])


def _run(net: torch.nn.Module, options: FastOptions) -> torch.Tensor:
    x, t = _inputs()
    with prepared(net, "cpu", options) as predict:
        return predict(x, t)


def test_sdpa_attention_matches_plain_attention(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _run(tiny, FastOptions())
    calls = {"n": 0}
    real_sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    sdpa = _run(tiny, FastOptions(sdpa=True))
    assert calls["n"] == len(fast.attention_blocks(tiny)) >= 2  # every attention block used SDPA
    assert plain.abs().mean() > 1e-3
    torch.testing.assert_close(sdpa, plain, atol=1e-5, rtol=1e-4)
    # a network built with use_flash_attention=True and the same weights computes the same function
    flash = build_network(TINY, use_flash_attention=True)
    flash.load_state_dict(tiny.state_dict())
    torch.testing.assert_close(_run(flash, FastOptions()), plain, atol=1e-5, rtol=1e-4)


def test_channels_last_and_bf16_autocast_match_plain(tiny: torch.nn.Module) -> None:
    plain = _run(tiny, FastOptions())
    torch.testing.assert_close(_run(tiny, FastOptions(channels_last=True)), plain, atol=1e-5, rtol=1e-4)
    everything = _run(tiny, FastOptions(sdpa=True, channels_last=True, autocast="bf16"))
    assert everything.dtype == torch.float32
    rel = (everything - plain).abs().mean() / plain.abs().mean()
    assert 0 < rel < 0.05, rel  # bf16 rounding only (8-bit mantissa), not a different function


def test_prepared_restores_the_network(tiny: torch.nn.Module) -> None:
    before = copy.deepcopy(tiny.state_dict())
    with prepared(tiny, "cpu", FastOptions(sdpa=True, channels_last=True)):
        assert all(b.use_flash_attention for b in fast.attention_blocks(tiny))
        assert tiny.conv_in.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(b.use_flash_attention for b in fast.attention_blocks(tiny))
    assert tiny.conv_in.conv.weight.is_contiguous()
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    block = fast.attention_blocks(tiny)[0]
    block.save_attn = True  # blocks that must keep their attention maps are left alone
    try:
        assert block not in set_sdpa(tiny, True)
    finally:
        block.save_attn = False
        set_sdpa(tiny, False)


def test_fast_options_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "0")  # a CPU without native bf16: exact fp32 levers only
    assert FastOptions.for_device("cpu") == FastOptions(sdpa=True, channels_last=True)
    monkeypatch.setenv(CPU_BF16_ENV, "1")  # AMX / AVX-512 BF16: bf16 autocast as on a GPU
    assert FastOptions.for_device("cpu") == FastOptions(sdpa=True, autocast="bf16", channels_last=True)
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(Seg2MedError, match="SEG2MED_CPU_BF16='maybe'"):
        FastOptions.for_device("cpu")
    monkeypatch.delenv(CPU_BF16_ENV)
    assert (FastOptions.for_device("cpu").autocast == "bf16") == cpu_bf16_native()
    assert FastOptions.for_device("cpu", fast=False) == FastOptions()
    assert FastOptions().describe() == "plain-fp32"
    assert FastOptions(sdpa=True, autocast="bf16", compile=True).describe() == "sdpa+bf16+compile(default)"
    assert FastOptions(compile=True, compile_mode="default") == FastOptions(compile=True)  # one spelling of the default
    with pytest.raises(Seg2MedError, match="'fp8'"):
        FastOptions(autocast="fp8")
    with pytest.raises(Seg2MedError, match="'turbo'"):
        FastOptions(compile_mode="turbo")


def test_cuda_fast_path_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))  # Hopper
    hopper = FastOptions.for_device("cuda")
    assert hopper == FastOptions(sdpa=True, autocast="bf16", channels_last=True, cudnn_benchmark=True)
    assert hopper.describe() == "sdpa+bf16+channels_last+cudnn_benchmark"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 0))  # Volta: no bf16
    assert FastOptions.for_device("cuda:0").autocast == "fp16"
    assert FastOptions.for_device("cuda", fast=False) == FastOptions()


def test_cudnn_autotuning_is_scoped_and_counted(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with fast.cudnn_autotuning(True):
        assert torch.backends.cudnn.benchmark
        with fast.cudnn_autotuning(True):  # a second device's thread
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark  # still in use by the outer block
    assert torch.backends.cudnn.benchmark is False  # the user's setting is back
    with fast.cudnn_autotuning(False):
        assert torch.backends.cudnn.benchmark is False
    # threads entering and leaving in any order leave the flag as it was
    gate = threading.Barrier(4)

    def worker() -> None:
        with fast.cudnn_autotuning(True):
            gate.wait(timeout=10)
            assert torch.backends.cudnn.benchmark

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.backends.cudnn.benchmark is False
    with pytest.raises(RuntimeError, match="boom"), fast.cudnn_autotuning(True):
        raise RuntimeError("boom")
    assert torch.backends.cudnn.benchmark is False
    # the option is inert off CUDA: the CPU path never touches the flag
    with prepared(tiny, "cpu", FastOptions(cudnn_benchmark=True)) as predict:
        assert torch.backends.cudnn.benchmark is False
        predict(torch.zeros(1, 2, 16, 16), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("bf16", ["0", "1"])
def test_sampling_fast_vs_plain_on_cpu(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, bf16: str) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, bf16)
    priors = np.random.default_rng(0).random((2, 16, 16), dtype=np.float32)
    cfg = SamplerConfig(kind="dpmpp_2m", steps=4, seed=3, batch_size=2)
    plain = sample_slices(tiny, None, priors, cfg, "cpu", options=FastOptions())
    default = sample_slices(tiny, None, priors, cfg, "cpu")  # the CPU fast path
    if bf16 == "0":  # fp32 levers are exact up to summation order
        np.testing.assert_allclose(default, plain, atol=1e-4)
    else:  # bf16 keeps 8 mantissa bits: small mean error, a few pixels up to a few percent of the range
        diff = np.abs(default - plain)
        assert 0 < diff.mean() < 5e-3 and diff.max() < 5e-2, (diff.mean(), diff.max())


# --- devices -------------------------------------------------------------------------------------


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    with pytest.raises(Seg2MedError, match="'banana'"):
        pick_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(Seg2MedError, match="'cuda:1' requested but CUDA is not available"):
            pick_device("cuda:1")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        with pytest.raises(Seg2MedError, match="'mps' requested"):
            pick_device("mps")


class FakeGPU:
    """Memory model for tests: a forward at batch b peaks at ``fixed + per_slice * b (+ extra above knee)``."""

    def __init__(self, free: int, per_slice: int, fixed: int = 0, knee: int | None = None, extra: int = 0,
                 oom_above: int | None = None) -> None:
        self.free, self.per_slice, self.fixed = free, per_slice, fixed
        self.knee, self.extra, self.oom_above = knee, extra, oom_above
        self.peak = 0
        self.calls: list[int] = []

    def forward(self, batch: int) -> None:
        self.calls.append(batch)
        if self.oom_above is not None and batch > self.oom_above:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        self.peak = self.fixed + self.per_slice * batch + (self.extra if self.knee and batch > self.knee else 0)

    def probe(self) -> MemoryProbe:
        def reset() -> None:
            self.peak = 0

        return MemoryProbe(reset_peak=reset, peak_allocated=lambda: self.peak, allocated=lambda: 0,
                           free_bytes=lambda: self.free)


def test_batch_size_linear_memory() -> None:
    gpu = FakeGPU(free=1000, per_slice=30)
    report = measure_batch_size(gpu.forward, gpu.probe(), max_batch=64, safety=0.8)
    assert report.batch_size == 26  # 26 * 30 = 780 <= 800 < 27 * 30
    assert report.measured[26] <= report.budget_bytes
    assert measure_batch_size(gpu.forward, gpu.probe(), max_batch=8).batch_size == 8


def test_batch_size_never_exceeds_measured_memory() -> None:
    # memory jumps above batch 10 (e.g. another kernel's workspace): the extrapolated batch is
    # measured, found too big, and shrunk until a measured batch fits
    gpu = FakeGPU(free=1000, per_slice=10, knee=10, extra=500)
    report = measure_batch_size(gpu.forward, gpu.probe(), max_batch=64, safety=0.8)
    assert report.batch_size in report.measured
    assert report.measured[report.batch_size] <= 0.8 * 1000
    assert gpu.fixed + gpu.per_slice * report.batch_size + (gpu.extra if report.batch_size > 10 else 0) <= 800
    assert report.batch_size >= 2


def test_batch_size_out_of_memory_and_too_big() -> None:
    gpu = FakeGPU(free=10_000, per_slice=10, oom_above=20)
    report = measure_batch_size(gpu.forward, gpu.probe(), max_batch=64)
    assert 2 <= report.batch_size <= 20 and report.batch_size in report.measured
    huge = FakeGPU(free=100, per_slice=1000)
    with pytest.raises(Seg2MedError, match="one slice needs more memory"):
        measure_batch_size(huge.forward, huge.probe())


def test_auto_batch_size_cpu_and_injected_probe(tiny: torch.nn.Module) -> None:
    assert auto_batch_size(tiny, 16, "cpu") == CPU_BATCH_SIZE
    assert auto_batch_size(tiny, 16, "cpu", max_batch=2) == 2
    gpu = FakeGPU(free=500, per_slice=40)
    seen: list[int] = []

    def forward(batch: int) -> None:  # the real network runs; the memory comes from the fake probe
        seen.append(batch)
        x = torch.zeros(batch, 2, 16, 16)
        with torch.no_grad():
            tiny(x, torch.zeros(batch, dtype=torch.long))
        gpu.forward(batch)

    assert auto_batch_size(tiny, 16, "cpu", forward=forward, probe=gpu.probe()) == 10  # 10 * 40 = 400 <= 0.8 * 500
    assert seen[0] == 2 and 10 in seen


def test_compile_uses_a_persistent_cache_folder(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv(fast.COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "seg2med" / "torchinductor"
    assert fast.compile_cache_dir() == expected
    with prepared(tiny, "cpu", FastOptions(compile=True)):  # wrapping compiles nothing until the first call
        pass
    assert expected.is_dir() and fast.os.environ[fast.COMPILE_CACHE_ENV] == str(expected)
    monkeypatch.setenv(fast.COMPILE_CACHE_ENV, str(tmp_path / "mine"))  # the user's choice wins
    assert fast.use_persistent_compile_cache() == tmp_path / "mine" and (tmp_path / "mine").is_dir()


def test_automatic_compilation_only_on_cuda_for_big_volumes() -> None:
    from seg2med_core.sampler import AUTO_COMPILE_WORK

    auto = SamplerConfig()  # compile=None: automatic
    assert auto.compile is None
    assert not auto.fast_options("cpu", work=10 * AUTO_COMPILE_WORK).compile  # never on the CPU
    assert not SamplerConfig(compile=False).fast_options("cpu").compile
    assert SamplerConfig(compile=True).fast_options("cpu").compile  # asked for explicitly
    if torch.cuda.is_available():
        assert auto.fast_options("cuda", work=AUTO_COMPILE_WORK).compile
        assert not auto.fast_options("cuda", work=AUTO_COMPILE_WORK - 1).compile
        assert not auto.fast_options("cuda").compile  # unknown amount of work
        assert not SamplerConfig(fast=False).fast_options("cuda", work=1e9).compile


def test_a_failing_compiler_falls_back_to_eager(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.exc import Unsupported

    class BrokenCompiled(torch.nn.Module):  # what torch.compile returns where no compiler works
        def forward(self, *args: object) -> torch.Tensor:
            raise Unsupported("no working C++ compiler or Triton found")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: BrokenCompiled())
    x, t = _inputs()
    plain = _run(tiny, FastOptions())
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no working C\\+\\+ compiler"):
        with prepared(tiny, "cpu", FastOptions(compile=True)) as predict:
            first, second = predict(x, t), predict(x, t)
    torch.testing.assert_close(first, plain)  # the eager network, same function
    torch.testing.assert_close(second, plain)

    class OutOfMemory(torch.nn.Module):  # errors of the computation itself are not swallowed
        def forward(self, *args: object) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: OutOfMemory())
    with pytest.raises(torch.OutOfMemoryError), prepared(tiny, "cpu", FastOptions(compile=True)) as predict:
        predict(x, t)


def test_compiled_sampling_pads_the_last_batch_without_changing_results(tiny: torch.nn.Module,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []

    def fake_compile(module: torch.nn.Module, **kw: object):  # records shapes instead of compiling
        def run(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(x.shape))
            return module(x, t)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    priors = np.random.default_rng(2).random((5, 16, 16), dtype=np.float32)
    plain = sample_slices(tiny, None, priors, SamplerConfig(steps=2, seed=1, batch_size=3, compile=False), "cpu")
    compiled = sample_slices(tiny, None, priors, SamplerConfig(steps=2, seed=1, batch_size=3, compile=True), "cpu")
    assert set(shapes) == {(3, 2, 16, 16)}  # one shape only: the last batch of 2 was padded to 3
    np.testing.assert_allclose(compiled, plain, atol=1e-6)
