"""Prior images: the right tissue value lands on the right voxels; body/background handling; normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import io
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for
from seg2med_core.mrsignal import SEQUENCES, signal
from seg2med_core.prior import ct_prior, max_table_signal, mr_prior, normalise_prior, prior_image
from seg2med_core.tables import load_ct_table, load_mr_table


def _synthetic() -> tuple[io.Segmentation, np.ndarray]:
    arr = np.zeros((4, 8, 9), np.uint16)
    arr[1:3, 2:6, 2:5] = 5  # liver
    arr[1:3, 2:6, 6] = 201  # subcutaneous_fat
    arr[0, 0, 0] = 1  # spleen outside the body mask -> background
    body = np.zeros(arr.shape, bool)
    body[:, 1:7, 1:8] = True
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 3.0))
    img.SetOrigin((5.0, -3.0, 12.0))
    return io.Segmentation(img, names_for("total"), "total"), body


def test_ct_prior_synthetic() -> None:
    seg, body = _synthetic()
    prior = ct_prior(seg, body)
    assert prior.GetPixelID() == sitk.sitkFloat32
    assert prior.GetSpacing() == seg.image.GetSpacing() and prior.GetOrigin() == seg.image.GetOrigin()
    p = sitk.GetArrayFromImage(prior)
    arr = seg.array()
    ct = load_ct_table()
    assert np.all(p[arr == 5] == ct["liver"]) and np.all(p[arr == 201] == ct["subcutaneous_fat"])
    assert np.all(p[~body] == -1000) and p[0, 0, 0] == -1000  # labelled but outside the body contour
    assert np.all(p[body & (arr == 0)] == ct["body"])


def test_ct_prior_on_real_segmentation(examples: Path) -> None:
    seg = io.read_segmentation(examples / "example_seg_fast_force_split.nii.gz")
    arr = seg.array()
    body = np.ones(arr.shape, bool)
    body[:, :, :2] = False
    p = sitk.GetArrayFromImage(ct_prior(seg, body))
    ct = load_ct_table()
    ids = {n: i for i, n in seg.names.items()}
    checked = 0
    for name in ("liver", "spleen", "aorta", "vertebrae_L1", "femur_left", "gluteus_maximus_right", "colon"):
        sel = (arr == ids[name]) & body
        if sel.any():
            checked += 1
            assert np.all(p[sel] == ct[name]), name
    assert checked >= 5
    assert np.all(p[:, :, :2] == -1000)
    assert np.all(p[(arr == 0) & body] == ct["body"])
    _, hu = np.unique(p[body & (arr > 0)], return_counts=True)
    assert len(hu) >= 5  # several distinct tissue values, not a constant image


def test_mr_prior_matches_signal_equation() -> None:
    seg, body = _synthetic()
    mr = load_mr_table()
    for name in ("vibe_in", "vibe_opp", "t2_fse"):
        p = sitk.GetArrayFromImage(mr_prior(seg, body, name))
        arr = seg.array()
        for label, cls in ((5, "liver"), (201, "subcutaneous_fat")):
            t = mr[cls]
            want = signal(SEQUENCES[name], t.t1_ms, t.t2_ms, t.t2star_ms, t.pd, t.fat_fraction)
            np.testing.assert_allclose(p[arr == label], want, rtol=1e-6)
        assert np.all(p[~body] == 0)
    vin = sitk.GetArrayFromImage(mr_prior(seg, body, "vibe_in"))
    vopp = sitk.GetArrayFromImage(mr_prior(seg, body, "vibe_opp"))
    fat = seg.array() == 201
    assert vopp[fat].mean() < vin[fat].mean()  # fat (f = 0.9) loses signal on opposed phase


def test_prior_image_with_user_tables(tmp_path: Path) -> None:
    seg, body = _synthetic()
    table = tmp_path / "ct.csv"
    table.write_text("name,hu\nliver,123\nsubcutaneous_fat,-50\nspleen,40\nbody,7\nbackground,-999\n", encoding="utf-8")
    p = sitk.GetArrayFromImage(prior_image(seg, "ct", body=body, table_path=table))
    assert np.all(p[seg.array() == 5] == 123) and np.all(p[~body] == -999)
    table.write_text("name,hu\nliver,123\nbody,7\nbackground,-999\n", encoding="utf-8")
    with pytest.raises(Seg2MedError, match="lacks class name.*spleen, subcutaneous_fat"):
        prior_image(seg, "ct", body=body, table_path=table)
    mr = tmp_path / "mr.csv"
    mr.write_text("name,t1_ms,t2_ms,t2star_ms,pd\nliver,800,40,x,0.9\n", encoding="utf-8")
    with pytest.raises(Seg2MedError, match="column 't2star_ms': 'x' is not a number"):
        prior_image(seg, "mr", body=body, table_path=mr)
    with pytest.raises(Seg2MedError, match="unknown modality 'pet'"):
        prior_image(seg, "pet", body=body)
    with pytest.raises(Seg2MedError, match="body mask shape"):
        ct_prior(seg, body[:2])


def test_prior_without_body_uses_segmentation_contour() -> None:
    pytest.importorskip("seg2med_core.preprocess")
    seg, _ = _synthetic()
    p = sitk.GetArrayFromImage(prior_image(seg, "ct"))
    arr = seg.array()
    assert np.all(p[arr == 5] == load_ct_table()["liver"])
    assert p[3, 7, 8] == -1000  # far corner, outside any label


def test_normalise_prior() -> None:
    hu = np.array([-2000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0])
    np.testing.assert_allclose(normalise_prior(hu, "ct", None), [0, 0, 0.5, 0.75, 1, 1])
    seg, body = _synthetic()
    for name in ("vibe_in", "t2_space", "dixon_water"):
        p = sitk.GetArrayFromImage(mr_prior(seg, body, name))
        n = normalise_prior(p, "mr", name)
        assert n.dtype == np.float32 and n.min() >= 0 and n.max() <= 1
        np.testing.assert_allclose(n, p / max_table_signal(name), rtol=1e-6)
    # the brightest tissue of the table maps to exactly 1
    mr = load_mr_table()
    brightest = max(mr.values(), key=lambda t: float(signal("vibe_in", t.t1_ms, t.t2_ms, t.t2star_ms, t.pd, t.fat_fraction)))
    peak = signal("vibe_in", brightest.t1_ms, brightest.t2_ms, brightest.t2star_ms, brightest.pd, brightest.fat_fraction)
    assert float(normalise_prior(np.array([peak]), "mr", "vibe_in")[0]) == pytest.approx(1.0)
