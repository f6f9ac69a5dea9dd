"""Class anchoring (``pipeline.anchor_to_prior``, ``synthesize(anchor=...)``, ``--anchor``): each labelled class's
level is moved to the prior's, its texture and every other voxel are kept, geometry is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io, pipeline
from seg2med_core.bundle import load_bundle
from seg2med_core.errors import Seg2MedError
from seg2med_core.pipeline import anchor_reference, anchor_to_prior, convert_segmentation, synthesize
from seg2med_core.prior import normalise_prior
from seg2med_core.sampler import SamplerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

LIVER, SPLEEN = 5, 1


def _volume(seed: int = 0) -> dict[str, np.ndarray]:
    """Two classes inside a body, each with its own prior value, a model offset and seeded texture."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((4, 20, 24), dtype=np.uint16)
    body = np.zeros(labels.shape, dtype=bool)
    body[:, 2:18, 2:22] = True
    labels[:, 4:10, 4:10] = LIVER
    labels[:, 11:16, 12:20] = SPLEEN
    prior = np.where(body, 0.52, 0.0).astype(np.float32)
    prior[labels == LIVER] = 0.53
    prior[:, 11:16, 12:20] = 0.50 + 0.005 * np.arange(5, dtype=np.float32)[None, :, None]  # spleen: not constant
    texture = rng.normal(0.0, 0.01, labels.shape).astype(np.float32)
    values = prior + texture
    values[labels == LIVER] += 0.04   # the model drifted up in the liver ...
    values[labels == SPLEEN] -= 0.02  # ... and down in the spleen
    values = np.where(body, values, 0.0).astype(np.float32)
    return {"labels": labels, "body": body, "prior": prior, "values": values, "texture": texture}


def test_strength_one_puts_each_class_median_on_the_prior_and_keeps_texture() -> None:
    v = _volume()
    out, report = anchor_to_prior(v["values"], v["prior"], v["labels"], v["body"], 1.0,
                                  names={LIVER: "liver", SPLEEN: "spleen"}, unit_scale=2000.0)
    for label in (LIVER, SPLEEN):
        m = v["labels"] == label
        assert np.median(v["values"][m] - v["prior"][m]) > 0.01 or np.median(v["values"][m] - v["prior"][m]) < -0.01
        assert abs(np.median(out[m] - v["prior"][m])) < 1e-6
        # a constant shift within the class: texture (spread) untouched
        np.testing.assert_allclose(np.std(out[m] - v["values"][m]), 0.0, atol=1e-6)
        np.testing.assert_allclose(np.std(out[m]), np.std(v["values"][m]), rtol=1e-5)
    untouched = v["labels"] == 0  # unlabelled body and everything outside it
    np.testing.assert_array_equal(out[untouched], v["values"][untouched])
    assert report["strength"] == 1.0 and report["classes"] == 2
    assert report["shift"]["liver"] == pytest.approx(-0.04 * 2000, abs=5.0)  # HU: the liver came down ~80 HU
    assert report["shift"]["spleen"] == pytest.approx(0.02 * 2000, abs=5.0)  # the spleen went up ~40 HU
    assert report["largest_shift"]["class"] == "liver"


def test_half_strength_moves_half_way_and_zero_is_identical() -> None:
    v = _volume(1)
    half, _ = anchor_to_prior(v["values"], v["prior"], v["labels"], v["body"], 0.5)
    full, _ = anchor_to_prior(v["values"], v["prior"], v["labels"], v["body"], 1.0)
    m = v["labels"] == LIVER
    np.testing.assert_allclose(half[m] - v["values"][m], 0.5 * (full[m] - v["values"][m]), atol=1e-6)
    zero, report = anchor_to_prior(v["values"], v["prior"], v["labels"], v["body"], 0.0)
    np.testing.assert_array_equal(zero, v["values"])
    assert report == {"strength": 0.0, "classes": 0, "shift": {}}


def test_only_voxels_inside_the_body_count_and_move() -> None:
    v = _volume(2)
    labels = v["labels"].copy()
    labels[:, 0, :] = LIVER  # liver labels outside the body contour
    values = v["values"].copy()
    values[:, 0, :] = 0.9
    out, _ = anchor_to_prior(values, v["prior"], labels, v["body"], 1.0)
    np.testing.assert_array_equal(out[:, 0, :], values[:, 0, :])
    m = v["labels"] == LIVER
    assert abs(np.median(out[m] - v["prior"][m])) < 1e-6


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "x"])
def test_invalid_strength_is_refused(strength: object) -> None:
    v = _volume()
    with pytest.raises(Seg2MedError, match="anchor strength must be"):
        anchor_to_prior(v["values"], v["prior"], v["labels"], v["body"], strength)  # type: ignore[arg-type]


def test_shape_mismatch_is_refused() -> None:
    v = _volume()
    with pytest.raises(Seg2MedError, match="one shape"):
        anchor_to_prior(v["values"], v["prior"][:2], v["labels"], v["body"], 1.0)


# ------------------------------------------------------------------------------------- through synthesize
def _class_medians(values: np.ndarray, labels: np.ndarray, body: np.ndarray) -> dict[int, float]:
    return {int(c): float(np.median(values[(labels == c) & body])) for c in np.unique(labels[body]) if c > 0}


def test_synthesize_ct_anchor_moves_class_medians_to_the_prior(synthetic_case: dict[str, Path], tiny_bundle: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    ct = io.read_image(synthetic_case["ct"])
    bundle = load_bundle(tiny_bundle)
    config = SamplerConfig(kind="ddim", steps=2, seed=4, batch_size=6)
    raw = synthesize(seg, bundle, image=ct, sampler=config, device="cpu", anchor=0.0)
    lines: list[str] = []
    anchored = synthesize(seg, bundle, image=ct, sampler=config, device="cpu", anchor=1.0, info=lines.append)
    for r in (raw, anchored):
        assert (r.image.GetSize(), r.image.GetSpacing(), r.image.GetOrigin(), r.image.GetDirection()) == (
            seg.image.GetSize(), seg.image.GetSpacing(), seg.image.GetOrigin(), seg.image.GetDirection())
    labels = sitk.GetArrayFromImage(seg.image)
    body = raw.body
    prior01 = normalise_prior(sitk.GetArrayFromImage(raw.prior), "ct")
    reference = anchor_reference(seg, prior01, bundle, body) * 2000.0 - 1000.0  # HU, through the model grid
    a = sitk.GetArrayFromImage(raw.image).astype(np.float32)
    b = sitk.GetArrayFromImage(anchored.image).astype(np.float32)
    before, after = _class_medians(a - reference, labels, body), _class_medians(b - reference, labels, body)
    assert set(before) == {LIVER, SPLEEN}
    assert max(abs(v) for v in before.values()) > 20.0  # the random model is off: the test can fail
    for c in after:
        assert abs(after[c]) <= 1.0  # median(output - prior) is 0 up to the HU rounding
        m = (labels == c) & body
        assert np.ptp(b[m] - a[m]) <= 1.0  # one constant shift per class (± rounding)
    unlabelled = body & (labels == 0)
    np.testing.assert_array_equal(b[unlabelled], a[unlabelled])
    np.testing.assert_array_equal(b[~body], a[~body])
    assert anchored.anchoring["strength"] == 1.0 and anchored.anchoring["classes"] == 2
    assert set(anchored.anchoring["shift"]) == {"liver", "spleen"} and anchored.anchoring["unit"] == "HU"
    assert anchored.metrics["anchoring"] == anchored.anchoring
    assert raw.metrics["anchoring"]["strength"] == 0.0
    assert any(line.startswith("anchored 2 classes to the prior (strength 1)") for line in lines)
    # strength 0 is the pipeline without the anchoring step, voxel for voxel
    monkeypatch.setattr(pipeline, "anchor_to_prior", lambda values01, *a, **k: (values01, {"strength": 0.0, "classes": 0, "shift": {}}))
    without = synthesize(seg, bundle, image=ct, sampler=config, device="cpu", anchor=0.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(without.image), sitk.GetArrayFromImage(raw.image))


def test_synthesize_mr_anchor_works_in_model_units(synthetic_case: dict[str, Path], tiny_mr_bundle: Path) -> None:
    seg, _ = convert_segmentation(io.read_segmentation(synthetic_case["seg"]), "total_mr")
    bundle = load_bundle(tiny_mr_bundle)
    config = SamplerConfig(kind="ddim", steps=2, seed=2, batch_size=6)
    raw = synthesize(seg, bundle, sampler=config, device="cpu", anchor=0.0)
    anchored = synthesize(seg, bundle, sampler=config, device="cpu", anchor=1.0)
    labels = sitk.GetArrayFromImage(seg.image)
    body = raw.body
    prior01 = anchor_reference(seg, normalise_prior(sitk.GetArrayFromImage(raw.prior), "mr", bundle.metadata.sequence),
                               bundle, raw.body)
    scale = pipeline.MR_OUTPUT_SCALE
    a = sitk.GetArrayFromImage(raw.image) / scale
    b = sitk.GetArrayFromImage(anchored.image) / scale
    before, after = _class_medians(a - prior01, labels, body), _class_medians(b - prior01, labels, body)
    assert len(after) == 2 and max(abs(v) for v in before.values()) > 0.02
    for c in after:
        assert abs(after[c]) < 1e-4
    np.testing.assert_array_equal(b[body & (labels == 0)], a[body & (labels == 0)])
    assert anchored.anchoring["unit"].startswith("model units") and anchored.anchoring["classes"] == 2


def test_synthesize_refuses_a_bad_strength_before_sampling(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    with pytest.raises(Seg2MedError, match=r"anchor strength must be in \[0, 1\], got 2"):
        synthesize(seg, load_bundle(tiny_bundle), device="cpu", anchor=2, progress=lambda *a: pytest.fail("sampled"))


def test_cli_anchor_is_applied_and_recorded(synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out, metrics = tmp_path / "a.nii.gz", tmp_path / "m.json"
    rc = cli.main(["synthesize", "--seg", str(synthetic_case["seg"]), "--image", str(synthetic_case["ct"]),
                   "--model", str(tiny_bundle), "--steps", "2", "--anchor", "0.5", "--out", str(out),
                   "--metrics", str(metrics), "--progress-format", "none"])
    assert rc == 0
    recorded = json.loads(metrics.read_text())["anchoring"]
    assert recorded["strength"] == 0.5 and recorded["classes"] == 2 and set(recorded["shift"]) == {"liver", "spleen"}
    for command in ("synthesize", "convert"):
        args = cli.build_parser().parse_args([command, "--seg", "s", "--model", "m", "--out", "o.nii.gz", "--anchor", "0.25"]
                                             + (["--image", "i", "--to", "ct"] if command == "convert" else []))
        assert args.anchor == 0.25


def test_a_model_that_returns_its_conditioning_is_left_alone_despite_resampling(synthetic_case: dict[str, Path]) -> None:
    """The identity model on a coarser model grid blurs small organs at their edges; anchoring compares with the
    prior through the same grid, so it does not shift them (against the exact prior the spleen would move)."""
    from test_pipeline import identity_bundle

    seg = io.read_segmentation(synthetic_case["seg"])
    bundle = identity_bundle(7.5, 64)
    raw = synthesize(seg, bundle, sampler=SamplerConfig(batch_size=3), device="cpu", anchor=0.0)
    anchored = synthesize(seg, bundle, sampler=SamplerConfig(batch_size=3), device="cpu", anchor=1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(anchored.image), sitk.GetArrayFromImage(raw.image))
    assert all(abs(v) < 1.0 for v in anchored.anchoring["shift"].values())
    # the exact prior would have been the wrong reference: the blurred spleen's median is far from it
    labels = sitk.GetArrayFromImage(seg.image)
    prior01 = normalise_prior(sitk.GetArrayFromImage(raw.prior), "ct")
    out01 = (sitk.GetArrayFromImage(raw.image).astype(np.float32) + 1000.0) / 2000.0
    _, naive = anchor_to_prior(out01, prior01, labels, raw.body, 1.0, names=seg.names, unit_scale=2000.0)
    assert max(abs(v) for v in naive["shift"].values()) > 10.0
