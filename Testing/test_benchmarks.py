"""The benchmark scripts run end to end (tiny settings) and write what their READMEs promise.

Timings are never asserted: only that every section is there and the numbers are numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>`` with one CPU thread; fail the test with its stderr unless it exits 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_bench_sampling_cpu_mode_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    proc = run_script("bench_sampling.py", "--cpu", "--size", "32", "--batch-sizes", "2", "--timing-steps", "1",
                      "--fast-steps", "2", "--reference-steps", "10", "--baseline-steps", "6", "--volume-slices", "4",
                      "--budget-s", "60", "--out", str(out))
    result = json.loads(out.read_text(encoding="utf-8"))
    variants = {r["variant"] for r in result["timings"] if "ms_per_slice_step" in r}
    assert {"plain-fp32", "sdpa"} <= variants
    assert result["volume_estimate"]["extrapolated"] and result["volume_estimate"]["fast"][0]["steps"] == 2
    measured = result["volume_measured"]
    assert measured["measured"] and measured["slices"] == 4 and measured["seconds"] > 0
    quality = result["quality"]
    assert not quality["meaningful"] and "meaningless" in quality["note"]
    assert any(k.startswith("mae_vs_reference") for c in quality["comparisons"] for k in c)
    assert quality["baseline"]["steps"] == 6 and "mae_vs_baseline_hu" in quality["comparisons"][0]
    assert "vs plain DDPM 10 steps (reference)" in proc.stdout


def test_bench_sampling_quality_against_the_real_image(tmp_path: Path, tiny_bundle: Path,
                                                       synthetic_case: dict[str, Path]) -> None:
    """With a bundle, a segmentation and the real image, every sample gets SSIM / PSNR / MAE against the real
    image and MAE against both DDPM references (1000-step-style converged and MONAI's default)."""
    out = tmp_path / "model.json"
    proc = run_script("bench_sampling.py", "--device", "cpu", "--model", str(tiny_bundle), "--seg", str(synthetic_case["seg"]),
                      "--image", str(synthetic_case["ct"]), "--batch-sizes", "2", "--timing-steps", "1", "--fast-steps", "2,3",
                      "--reference-steps", "8", "--baseline-steps", "4", "--quality-slices", "2", "--no-volume-run",
                      "--threads", "1", "--budget-s", "120", "--out", str(out))
    quality = json.loads(out.read_text(encoding="utf-8"))["quality"]
    assert quality["source"].startswith("segmentation") and quality["slices"] == 2 and quality["unit"] == "HU"
    samples = [quality["reference"], quality["baseline"], *quality["comparisons"]]
    assert len(samples) == 6  # reference, baseline, DDPM on the fast path, DPM-Solver++ 2 and 3, another seed
    for entry in samples:
        assert -1.0 <= entry["ssim_vs_real"] <= 1.0 and entry["mae_vs_real"] > 0 and entry["psnr_vs_real"] > 0, entry
    for entry in quality["comparisons"]:
        assert entry["mae_vs_reference_hu"] >= 0 and entry["mae_vs_baseline_hu"] >= 0
    assert "SSIM real" in proc.stdout


def test_bench_step_spacing_redraws_its_plot(tmp_path: Path) -> None:
    rows = [{"spacing": s, "steps": n, "mae_vs_reference": 3.0 / n, "mae_vs_real": 30.0, "texture_vs_reference": 1.0}
            for s in ("linspace", "logsnr") for n in (3, 10)]
    result = {"date": "2026-11-26T00:00:00+00:00", "card": "cpu", "model": "models/demo_ct", "unit": "HU", "slices": 4,
              "reference": {"steps": 1000}, "rows": rows}
    src, png = tmp_path / "r.json", tmp_path / "r.png"
    src.write_text(json.dumps(result), encoding="utf-8")
    run_script("bench_step_spacing.py", "--from-json", str(src), "--plot", str(png), timeout=120)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_profile_sorts_the_step_into_categories(tmp_path: Path, tiny_bundle: Path) -> None:
    out = tmp_path / "profile.json"
    proc = run_script("bench_profile.py", "--model", str(tiny_bundle), "--batch", "2", "--calls", "2", "--threads", "1",
                      "--top", "5", "--out", str(out))
    result = json.loads(out.read_text(encoding="utf-8"))
    assert [r["variant"] for r in result["rows"]] == ["plain-fp32", "sdpa+channels_last"]  # conftest pins CPU bf16 off
    for row in result["rows"]:
        shares = row["categories"]
        assert abs(sum(c["share"] for c in shares.values()) - 1.0) < 1e-6
        assert {"convolution", "normalization", "elementwise"} <= set(shares), shares
        assert len(row["top"]) == 5 and row["ms_per_slice_step"] > 0
    assert "convolution" in proc.stdout


def test_profile_categories() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_profile import category
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert category("aten::mkldnn_convolution") == "convolution"
    assert category("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert category("triton_red_fused_native_group_norm_silu_3") == "normalization"
    assert category("triton_poi_fused_add_convolution_5") == "elementwise"  # a conv's bias epilogue, not the conv
    assert category("triton_tem_fused_convolution_0") == "convolution"  # max-autotune's Triton conv template
    assert category("triton_tem_fused_mm_1") == "matmul"
    assert category("aten::cat") == "elementwise" and category("aten::mm") == "matmul"
    assert category("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32, 128>>") == "attention"
    assert category("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>") == "elementwise"
    assert category("aten::addmm") == "matmul"
    assert category("mystery_kernel") == "other"


@pytest.mark.slow
def test_bench_train_crash_kills_resumes_and_compares(tmp_path: Path) -> None:
    out = tmp_path / "crash.json"
    run_script("bench_train_crash.py", "--tries", "2", "--steps", "8", "--checkpoint-every", "2", "--json", str(out), timeout=900)
    summary = json.loads(out.read_text(encoding="utf-8"))["summary"]
    assert summary["tries"] == 2 and summary["final_weights_equal"] == 2
    assert summary["temp_folders_left_after_resume"] == 0


def test_bench_banding_measures_a_pair(examples: Path) -> None:
    """The real image against itself: the synthetic's numbers equal the real's, ratio 1."""
    ct = examples / "example_ct_sm.nii.gz"
    proc = run_script("bench_banding.py", "--synthetic", str(ct), "--image", str(ct), timeout=120)
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("largest slice jump") and line.count("x1.00") == 3, line


@pytest.mark.slow
def test_bench_crash_safety_kills_synthesize_and_checks_the_folder() -> None:
    proc = run_script("bench_crash_safety.py", "--tries", "2", "--size", "48", "--slices", "8", "--steps", "1", timeout=900)
    assert "SIGKILL: tries=2" in proc.stdout and "SIGTERM: tries=2" in proc.stdout
    assert "failed checks: 0" in proc.stdout


def test_bench_lopo_reports_raw_anchored_and_prior_from_one_sample(tmp_path: Path, tiny_bundle: Path,
                                                                    synthetic_case: dict[str, Path]) -> None:
    """Raw model, the same sample anchored at 1 and 0.5, and the prior, whole volume and T11-L3 slab, per organ."""
    import numpy as np
    import SimpleITK as sitk

    from seg2med_core import io

    seg = io.read_segmentation(synthetic_case["seg"])
    labels = sitk.GetArrayFromImage(seg.image)
    labels[1:4, 16:20, 18:22] = 31  # vertebrae_L1 on slices 1..3: the "overlap"
    vertebra = sitk.GetImageFromArray(labels)
    vertebra.CopyInformation(seg.image)
    patient = tmp_path / "patient"
    patient.mkdir()
    io.write_segmentation(io.Segmentation(vertebra, seg.names, "total"), patient / "segmentation.nii.gz")
    io.write_image(io.read_image(synthetic_case["ct"]), patient / "image.nii.gz")
    out = tmp_path / "lopo.json"
    proc = run_script("bench_lopo.py", "--model", str(tiny_bundle), "--patient", str(patient), "--phase", "arterial",
                      "--steps", "2", "--out", str(out))
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["overlap_slices"] == [1, 4] and result["anchor_strengths"] == [1.0, 0.5]
    for region in ("whole", "overlap"):
        assert set(result[region]) == {"model", "anchored_1", "anchored_0.5", "prior"}
        for entry in result[region].values():
            assert -1.0 <= entry["ssim"] <= 1.0 and entry["mae"] >= 0
    liver = result["organs_mean_hu"]["liver"]
    assert abs(liver["anchored_1"] - liver["prior"]) < abs(liver["model"] - liver["prior"])
    assert abs(liver["anchored_0.5"] - liver["prior"]) < abs(liver["model"] - liver["prior"])
    assert result["anchoring"]["anchored_1"]["classes"] == 3  # liver, spleen, vertebra
    assert set(result["organs_within_40_hu"]) == {"model", "anchored_1", "anchored_0.5", "prior"}
    assert "within 40 HU of the real (anchored_1)" in proc.stdout
