"""Side-by-side preview PNGs: layout, slice choice, windows and atomic writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core.errors import Seg2MedError
from seg2med_core.preview import (
    CT_SOFT_TISSUE,
    FOOTER_PX,
    HEADER_PX,
    choose_slices,
    ct_window,
    format_metrics,
    reformat_planes,
    save_preview,
    save_reformats,
)


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = np.meshgrid(np.arange(20), np.arange(40), np.arange(48), indexing="ij")
    body = (((x - 24) / 20.0) ** 2 + ((y - 20) / 15.0) ** 2 <= 1.0) & (z >= 4) & (z <= 15)
    real = np.where(body, 40.0 + 80.0 * np.sin(x / 4.0), -1000.0).astype(np.float32)
    labels = np.where(body, 1 + (x // 12), 0).astype(np.uint16)
    return real, labels, body


def test_png_has_the_layout_size_and_shows_the_columns(tmp_path: Path) -> None:
    real, labels, body = _volumes()
    prior = np.where(body, 40.0, -1000.0)
    out = save_preview(
        tmp_path / "preview.png",
        [("segmentation", labels, "labels"), ("prior", prior, CT_SOFT_TISSUE), ("synthetic", real + 5, CT_SOFT_TISSUE),
         ("real", real, None)],
        {"ssim": 0.912, "psnr": 27.3, "mae": 35.2, "histcc": 0.95, "fsim_skipped": "piq not importable"},
        n_slices=3,
        body=body,
        panel_px=96,
        mae_unit="HU",
    )
    assert out == tmp_path / "preview.png"
    png = mpimg.imread(out)
    assert png.shape[:2] == (HEADER_PX + 3 * 96 + FOOTER_PX, 4 * 96)
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]
    # The middle row of the label column is coloured; the body in the CT columns is grey, air black.
    row = png[HEADER_PX + 96 + 48, :, :3]
    label_px, real_px, air_px = row[48 - 4], row[3 * 96 + 48], row[3 * 96 + 2]
    assert np.ptp(label_px) > 0.1  # not grey
    assert real_px.mean() > 0.1 and np.ptp(real_px) < 0.01
    assert air_px.max() < 0.05


def test_size_without_metrics_and_with_a_title(tmp_path: Path) -> None:
    real, _, body = _volumes()
    save_preview(tmp_path / "p.png", [("real", real, None)], None, n_slices=2, title="case 1", panel_px=64)
    assert mpimg.imread(tmp_path / "p.png").shape[:2] == (2 * HEADER_PX + 2 * 64, 64)


def test_slices_are_chosen_inside_the_body_extent() -> None:
    area = np.zeros(20)
    area[4:16] = 100
    assert choose_slices(area, 3) == [7, 10, 12]  # 25/50/75 % of slices 4..15 (6.75, 9.5, 12.25)
    assert choose_slices(np.zeros(9), 1) == [4]
    assert choose_slices(np.ones(2), 5) == [0, 1]


def test_metrics_text_and_ct_window() -> None:
    text = format_metrics({"ssim": 0.91234, "psnr": float("inf"), "mae": 12.34, "fsim_skipped": "no piq"}, "HU")
    assert text == "SSIM 0.912   PSNR inf   MAE 12.3 HU"
    assert ct_window() == CT_SOFT_TISSUE == (-160.0, 240.0)
    with pytest.raises(Seg2MedError, match="-5"):
        ct_window(0, -5)


def test_reference_image_turns_slices_to_radiological_view(tmp_path: Path) -> None:
    real, _, body = _volumes()
    marker = np.full(real.shape, 0.0, np.float32)
    marker[:, 0, 0] = 1.0  # first stored voxel
    ref = sitk.GetImageFromArray(marker)
    ref.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # RAS storage: voxel (0, 0) is left-posterior
    save_preview(tmp_path / "r.png", [("m", marker, (0.0, 1.0))], None, n_slices=1, reference=ref, panel_px=48)
    png = mpimg.imread(tmp_path / "r.png")[HEADER_PX:, :, :3].min(axis=2)  # white, not the yellow label
    bright = np.argwhere(png > 0.5)
    # Panel is 48 px for a 40×48 slice: the marker ends up at the bottom-right (posterior, patient's left).
    assert bright[:, 0].min() > 30 and bright[:, 1].min() > 40


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(columns=[]), "at least one column"),
        (dict(columns=[("a", np.zeros((4, 4)), None)]), "3D"),
        (dict(columns=[("a", np.zeros((2, 4, 4)), None), ("b", np.zeros((2, 4, 5)), None)]), "'b' has shape"),
        (dict(columns=[("a", np.zeros((2, 4, 4)), (5.0, 1.0))]), "vmin < vmax"),
        (dict(columns=[("a", np.zeros((2, 4, 4)), None)], n_slices=0), "n_slices=0"),
        (dict(columns=[("a", np.zeros((2, 4, 4)), None)], body=np.ones((2, 4, 3), bool)), "body mask"),
        (dict(columns=[("a", np.zeros((2, 4, 4)), None)], name="p.jpg"), "p.jpg"),
    ],
)
def test_bad_arguments_leave_no_file(tmp_path: Path, kwargs: dict, match: str) -> None:
    name = kwargs.pop("name", "p.png")
    with pytest.raises(Seg2MedError, match=match):
        save_preview(tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    real, _, _ = _volumes()
    from seg2med_core.errors import Seg2MedError

    with pytest.raises(Seg2MedError, match="cannot write '.*p.png': disk full"):  # one line naming the output
        save_preview(tmp_path / "p.png", [("real", real, None)], None)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ coronal / sagittal reformats
def _ramp_volume(nz: int = 20, n: int = 60, spacing=(1.0, 1.0, 3.0)) -> tuple[np.ndarray, sitk.Image]:
    """(z, y, x) volume brightening with z (superior in LPS), LPS identity direction, thick slices."""
    arr = np.repeat(np.linspace(0.0, 1.0, nz)[:, None, None], n, axis=1).repeat(n, axis=2)
    ref = sitk.GetImageFromArray(arr)
    ref.SetSpacing(spacing)
    return arr, ref


def test_reformats_have_the_physical_aspect_and_the_head_at_the_top(tmp_path: Path) -> None:
    arr, ref = _ramp_volume()  # 60 mm wide, 20 x 3 = 60 mm tall: square coronal and sagittal panels
    out = save_reformats(tmp_path / "r.png", [("a", arr, (0.0, 1.0)), ("b", arr, (0.0, 1.0))], ref, panel_px=100)
    img = mpimg.imread(out)
    assert img.shape[:2] == (HEADER_PX + 100 + 100, 200)
    coronal = img[HEADER_PX : HEADER_PX + 100, 100:200, 0]
    assert coronal[5, 50] > 0.9 and coronal[-5, 50] < 0.1  # superior (bright) slice on top
    assert np.ptp(coronal[50, 10:90]) < 0.02  # one slice = one horizontal line
    tall, ref_tall = _ramp_volume(spacing=(1.0, 1.0, 6.0))  # twice as tall in mm: twice the rows
    img = mpimg.imread(save_reformats(tmp_path / "t.png", [("a", tall, None)], ref_tall, panel_px=100, footer="x"))
    assert img.shape[:2] == (HEADER_PX + 200 + 200 + FOOTER_PX, 100)
    long = "largest slice jump 5.0 HU (real 7.2, x0.70)   mean jump 1.32 HU (real 1.64, x0.81)   gradient 0.83"
    img = mpimg.imread(save_reformats(tmp_path / "w.png", [("a", tall, None)], ref_tall, panel_px=100, footer=long))
    assert img.shape[0] > HEADER_PX + 400 + 2 * FOOTER_PX  # too long for 100 px: wrapped onto several lines


def test_reformat_planes_go_through_the_body_centre() -> None:
    vol = np.arange(4 * 10 * 12, dtype=float).reshape(4, 10, 12)
    body = np.zeros(vol.shape, bool)
    body[:, 6:9, 2:5] = True
    planes = reformat_planes(vol, body)
    assert planes["coronal"][0] == 7 and planes["sagittal"][0] == 3
    np.testing.assert_array_equal(planes["coronal"][1], vol[::-1, 7, :])
    np.testing.assert_array_equal(planes["sagittal"][1], vol[::-1, :, 3])


def test_reformat_with_a_wrong_reference_writes_nothing(tmp_path: Path) -> None:
    arr, _ = _ramp_volume()
    with pytest.raises(Seg2MedError, match="does not match"):
        save_reformats(tmp_path / "r.png", [("a", arr, None)], sitk.Image([5, 5, 5], sitk.sitkFloat32))
    assert not list(tmp_path.iterdir())
