"""Issue 14 mechanisms on tiny data: priors that vary per case, CT phase presets, the prior-residual
network, 2.5D neighbour channels (training batches and the pipeline), crops. Mechanisms, not quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from seg2med_core import io
from seg2med_core.errors import Seg2MedError
from seg2med_core.network import PAPER_SCHEDULER, PriorResidual, build_network, conditioning, neighbour_stack
from seg2med_core.training.config import TrainConfig
from seg2med_core.training.dataset import (
    CaseSpec,
    PreparedDataset,
    PrepSettings,
    PriorRandomiser,
    SliceRef,
    TrainingBatcher,
    prepare_case,
    random_sequence,
    random_sequence_levels,
)

LIVER, AORTA = 5, 52  # TotalSegmentator "total" v2 ids
TINY_25D = {
    "spatial_dims": 2, "in_channels": 4, "out_channels": 1, "channels": [8, 8], "attention_levels": [False, False],
    "num_res_blocks": 1, "norm_num_groups": 4, "prior_neighbours": 1, "prior_residual": True,
}
SAMPLE_SCHEDULER = {**PAPER_SCHEDULER, "prediction_type": "sample"}


def write_case(folder: Path, name: str, liver_hu: float, n_slices: int = 6, empty_ends: int = 0) -> CaseSpec:
    """A CT body cylinder (fat -100 HU) with a liver block at ``liver_hu`` (noisy) and an aorta disc at 40 HU;
    the liver grows with z so neighbouring slices differ; ``empty_ends`` slices at each end hold no body."""
    rng = np.random.default_rng(len(name))
    z, y, x = np.mgrid[0:n_slices, 0:24, 0:24]
    body = ((y - 12) ** 2 + (x - 12) ** 2 <= 100) & (z >= empty_ends) & (z < n_slices - empty_ends)
    liver = body & (abs(y - 10) <= 3) & (x >= 6) & (x <= 8 + z)
    aorta = body & ((y - 16) ** 2 + (x - 14) ** 2 <= 2)
    ct = np.where(body, -100.0, -1000.0) + rng.normal(0, 5, body.shape)
    ct[liver] = liver_hu + rng.normal(0, 5, int(liver.sum()))
    ct[aorta] = 40
    labels = np.zeros(body.shape, dtype=np.uint8)
    labels[liver], labels[aorta] = LIVER, AORTA
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arr, suffix in ((ct.astype(np.int16), "image"), (labels, "seg")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((4.0, 4.0, 5.0))
        path = folder / f"{name}_{suffix}.nii.gz"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return CaseSpec(name, paths[0], paths[1], dataset="tiny")


CT_SETTINGS = PrepSettings(modality="ct", sequence=None, label_set="total", spacing_xy=4.0, image_size=32, min_body_fraction=0.01)


def hu(value01: float) -> float:
    return value01 * 2000.0 - 1000.0


def class_value(prior: np.ndarray, codes: np.ndarray, code: int) -> np.ndarray:
    return prior[codes == code]


# ------------------------------------------------------------------------------------ randomisation
def test_priors_follow_each_cases_measured_median(tmp_path: Path) -> None:
    cases = [prepare_case(write_case(tmp_path, n, liver), CT_SETTINGS) for n, liver in (("a", 60.0), ("b", 180.0))]
    for case, liver in zip(cases, (60.0, 180.0)):
        liver_class = case.info["classes"][str(LIVER + 1)]
        assert liver_class["name"] == "liver"
        assert hu(liver_class["median"]) == pytest.approx(liver, abs=3)
        assert hu(liver_class["table"]) == pytest.approx(50, abs=1)  # the packaged native table
    data = PreparedDataset(cases, [])
    refs = [SliceRef(c, 2) for c in range(2)]
    exact = TrainingBatcher(data, refs, randomiser=PriorRandomiser("ct"))
    target, prior = exact.conditioned([0, 1], np.random.default_rng(0))
    for i, (case, liver) in enumerate(zip(cases, (60.0, 180.0))):
        codes = np.asarray(case.code_all[int(case.slice_index[2])])
        inside = class_value(prior[i, 0], codes, LIVER + 1)
        assert np.allclose(hu(inside), liver, atol=3), "the prior inside the liver is the case's own median"
        body_only = class_value(prior[i, 0], codes, 1)
        assert np.allclose(hu(body_only), 0, atol=1), "unlabelled body keeps the table value (as at inference)"
        assert np.array_equal(target[i, 0], np.asarray(case.target[2], dtype=np.float32))
    # jitter: values vary between draws, around the median, with about the asked spread
    jittered = TrainingBatcher(data, [SliceRef(0, 2)], randomiser=PriorRandomiser("ct", jitter=20 / 2000))
    codes = np.asarray(cases[0].code_all[int(cases[0].slice_index[2])])
    draws = []
    for seed in range(200):
        _, p = jittered.conditioned([0], np.random.default_rng(seed))
        values = class_value(p[0, 0], codes, LIVER + 1)
        assert np.ptp(values) < 1e-6, "one value per class and sample"
        draws.append(hu(float(values[0])))
    assert np.mean(draws) == pytest.approx(60, abs=4) and np.std(draws) == pytest.approx(20, rel=0.25)


def test_intensity_shift_moves_target_and_prior_together(tmp_path: Path) -> None:
    case = prepare_case(write_case(tmp_path, "a", 60.0), CT_SETTINGS)
    batcher = TrainingBatcher(PreparedDataset([case], []), [SliceRef(0, 3)],
                              randomiser=PriorRandomiser("ct", shift=150 / 2000, shift_probability=1.0))
    codes = np.asarray(case.code_all[int(case.slice_index[3])])
    original = np.asarray(case.target[3], dtype=np.float32)
    shifts = set()
    for seed in range(5):
        target, prior = batcher.conditioned([0], np.random.default_rng(seed))
        liver = codes == LIVER + 1
        moved = hu(float(np.mean(target[0, 0][liver]))) - hu(float(np.mean(original[liver])))
        assert hu(float(prior[0, 0][liver][0])) == pytest.approx(60 + moved, abs=3), "prior = the shifted truth"
        assert np.allclose(target[0, 0][codes == 1], original[codes == 1]), "body is never shifted"
        shifts.add(round(moved))
    assert len(shifts) == 5 and max(abs(s) for s in shifts) <= 150


def test_mr_random_sequences_set_levels_and_rescale_the_target(tmp_path: Path) -> None:
    names = ["liver", "spleen", "subcutaneous_fat", "kidney_left", "body"]
    for seed in range(2000):  # every draw is a valid sequence (TE < TR, ...)
        random_sequence(np.random.default_rng(seed))
    orders = {tuple(np.argsort(random_sequence_levels(names, np.random.default_rng(s)))) for s in range(30)}
    assert len(orders) > 3, "random sequences give different contrasts (orderings of the tissues)"
    case = prepare_case(write_case(tmp_path, "a", 60.0), CT_SETTINGS)
    # pretend the CT is an MR case: levels then come from the MR table under a random sequence
    case.info["classes"] = {k: {**v, "name": "liver" if v["name"] == "liver" else v["name"]} for k, v in case.info["classes"].items()}
    randomiser = PriorRandomiser("mr", shift_probability=1.0, random_sequences=True)
    delta, scale, how = randomiser.levels(case, np.random.default_rng(3))
    liver = case.info["classes"][str(LIVER + 1)]
    assert how == "mul"
    assert liver["table"] + delta[LIVER + 1] == pytest.approx(scale[LIVER + 1] * liver["median"], rel=1e-5)


# ------------------------------------------------------------------------------------ 2.5D
def test_neighbour_stack_repeats_the_edges() -> None:
    priors = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    stack = neighbour_stack(priors, 1)
    assert stack.shape == (5, 3, 2, 2)
    assert stack[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    assert neighbour_stack(priors, 2, [0, 4])[:, :, 0, 0].tolist() == [[0, 0, 0, 1, 2], [2, 3, 4, 4, 4]]


def test_training_channels_are_the_neighbours_including_dropped_and_edge_slices(tmp_path: Path) -> None:
    case = prepare_case(write_case(tmp_path, "e", 60.0, n_slices=8, empty_ends=1), CT_SETTINGS)
    assert case.slice_index.tolist() == [1, 2, 3, 4, 5, 6] and case.n_total == 8
    full = np.asarray(case.prior_all, dtype=np.float32)
    assert not np.array_equal(full[2], full[3]), "the test needs slices that differ"
    batcher = TrainingBatcher(PreparedDataset([case], []), [SliceRef(0, r) for r in range(len(case))], neighbours=1)
    _, prior = batcher.conditioned(list(range(len(case))))
    for row, z in enumerate(case.slice_index.tolist()):
        for channel, dz in enumerate((-1, 0, 1)):
            assert np.array_equal(prior[row, channel], full[min(max(z + dz, 0), 7)])
    assert np.array_equal(prior[0, 0], full[0]), "the first kept slice's lower neighbour is the (dropped) slice 0"
    edge = TrainingBatcher(PreparedDataset([case], []), [SliceRef(0, 0)], neighbours=2)
    _, p2 = edge.conditioned([0])
    assert np.array_equal(p2[0, 0], full[0]) and np.array_equal(p2[0, 1], full[0]), "beyond the volume: edge repeated"


def test_crops_are_the_same_window_for_target_and_every_channel(tmp_path: Path) -> None:
    case = prepare_case(write_case(tmp_path, "a", 60.0), CT_SETTINGS)
    batcher = TrainingBatcher(PreparedDataset([case], []), [SliceRef(0, 2)], neighbours=1, crop=16)
    target, prior = batcher.conditioned([0], np.random.default_rng(1))
    assert target.shape == (1, 1, 16, 16) and prior.shape == (1, 3, 16, 16)
    full_t = np.asarray(case.target[2], dtype=np.float32)
    z = int(case.slice_index[2])
    hits = [(y, x) for y in range(17) for x in range(17) if np.array_equal(full_t[y : y + 16, x : x + 16], target[0, 0])]
    assert hits, "the crop is a window of the slice"
    y, x = hits[0]
    for c, dz in enumerate((-1, 0, 1)):
        assert np.array_equal(np.asarray(case.prior_all[z + dz], np.float32)[y : y + 16, x : x + 16], prior[0, c])


# ------------------------------------------------------------------------------------ residual
def test_prior_residual_untrained_network_returns_the_prior() -> None:
    torch.manual_seed(0)
    net = build_network(TINY_25D)
    assert isinstance(net, PriorResidual) and conditioning(TINY_25D) == (1, True)
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    out = net(x, timesteps=torch.tensor([10, 900]))
    assert torch.allclose(out, x[:, 2:3]), "MONAI zero-initialises the output layer: prediction = centre prior"
    with torch.no_grad():
        for p in net.net.out.parameters():
            p.normal_(0, 0.1)
    inner = net.net(x, timesteps=torch.tensor([10, 900]))
    assert torch.allclose(net(x, timesteps=torch.tensor([10, 900])), inner + x[:, 2:3])
    with pytest.raises(Seg2MedError, match="in_channels must be 4"):
        build_network({**TINY_25D, "in_channels": 2})
    with pytest.raises(Seg2MedError, match="prediction_type 'sample'"):
        TrainConfig(network=TINY_25D, scheduler=PAPER_SCHEDULER)


def test_conditioning_round_trips_through_a_bundle(tmp_path: Path) -> None:
    from seg2med_core.bundle import BundleMetadata, load_bundle, save_bundle

    torch.manual_seed(0)
    net = build_network(TINY_25D)
    meta = BundleMetadata(name="t", version="0", modality="ct", sequence=None, label_set="total", network=dict(TINY_25D),
                          scheduler=SAMPLE_SCHEDULER, spacing_xy=4.0, image_size=32, intensity={"kind": "ct_window", "level": 0.0, "width": 2000.0})
    save_bundle(tmp_path / "b", net, meta)
    stored = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert stored["network"]["prior_neighbours"] == 1 and stored["network"]["prior_residual"] is True
    bundle = load_bundle(tmp_path / "b")
    assert isinstance(bundle.network, PriorResidual) and conditioning(bundle.metadata.network) == (1, True)


# ------------------------------------------------------------------------------------ pipeline
def test_pipeline_gives_a_25d_network_the_neighbouring_prior_slices(tmp_path: Path, monkeypatch) -> None:
    from seg2med_core import pipeline
    from seg2med_core.bundle import Bundle, BundleMetadata

    spec = write_case(tmp_path, "p", 60.0, n_slices=7)
    seg = io.read_segmentation(spec.segmentation, label_set="total")
    image = io.read_image(spec.image)
    meta = BundleMetadata(name="t", version="0", modality="ct", sequence=None, label_set="total", network=dict(TINY_25D),
                          scheduler=SAMPLE_SCHEDULER, spacing_xy=4.0, image_size=32, intensity={"kind": "ct_window", "level": 0.0, "width": 2000.0})
    seen = {}
    real_sample = pipeline.sample_slices

    def spy(network, scheduler, priors, *args, **kwargs):
        seen["priors"] = np.array(priors)
        return real_sample(network, scheduler, priors, *args, **kwargs)

    monkeypatch.setattr(pipeline, "sample_slices", spy)
    from seg2med_core.sampler import SamplerConfig

    result = pipeline.synthesize(seg, Bundle(meta, build_network(TINY_25D)), image=image,
                                 sampler=SamplerConfig(kind="ddim", steps=2, seed=0, batch_size=4))
    priors = seen["priors"]
    assert priors.shape == (7, 3, 32, 32)
    for z in range(7):
        assert np.array_equal(priors[z, 1], priors[min(z + 1, 6), 0]) or z == 6
        assert np.array_equal(priors[z, 2], priors[min(z + 1, 6), 1])
    assert np.array_equal(priors[0, 0], priors[0, 1]) and np.array_equal(priors[6, 2], priors[6, 1])
    # the untrained residual network returns the prior: the synthetic CT is the prior image
    out = sitk.GetArrayFromImage(result.image).astype(float)
    ref = np.where(result.body, sitk.GetArrayFromImage(result.prior), -1000)
    assert np.abs(out - ref)[result.body].mean() < 15


# ------------------------------------------------------------------------------------ phases
def test_phase_presets_change_the_prior(tmp_path: Path) -> None:
    from seg2med_core.prior import prior_image
    from seg2med_core.tables import CT_PHASES, load_ct_table

    tables = {p: load_ct_table(phase=p) for p in CT_PHASES}
    assert tables["native"] == load_ct_table()
    assert tables["arterial"]["aorta"] > tables["portal-venous"]["aorta"] > tables["native"]["aorta"]
    assert tables["portal-venous"]["liver"] > tables["arterial"]["liver"] > tables["native"]["liver"]
    assert load_ct_table(phase="portal_venous") == tables["portal-venous"]
    spec = write_case(tmp_path, "p", 60.0)
    seg = io.read_segmentation(spec.segmentation, label_set="total")
    arr = sitk.GetArrayFromImage(seg.image)
    values = {p: sitk.GetArrayFromImage(prior_image(seg, "ct", phase=p)) for p in CT_PHASES}
    for phase, table in tables.items():
        assert np.allclose(values[phase][arr == AORTA], table["aorta"])
        assert np.allclose(values[phase][arr == LIVER], table["liver"])
    with pytest.raises(Seg2MedError, match="unknown CT phase 'venous'"):
        load_ct_table(phase="venous")
    with pytest.raises(Seg2MedError, match="CT only"):
        prior_image(seg, "mr", phase="arterial")


def test_cli_phase(tmp_path: Path) -> None:
    from seg2med_core.cli import main

    spec = write_case(tmp_path, "p", 60.0)
    outs = {}
    for phase in ("native", "arterial", "portal-venous"):
        out = tmp_path / f"{phase}.nii.gz"
        assert main(["prior", "--seg", str(spec.segmentation), "--modality", "ct", "--phase", phase, "--out", str(out)]) == 0
        outs[phase] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    aorta = sitk.GetArrayFromImage(sitk.ReadImage(str(spec.segmentation))) == AORTA
    assert outs["arterial"][aorta].mean() > outs["portal-venous"][aorta].mean() > outs["native"][aorta].mean()
    table = tmp_path / "t.csv"
    table.write_text("name,hu\n", encoding="utf-8")
    code = main(["prior", "--seg", str(spec.segmentation), "--modality", "ct", "--phase", "arterial",
                 "--tissue-table", str(table), "--out", str(tmp_path / "x.nii.gz")])
    assert code == 2 and not (tmp_path / "x.nii.gz").exists()


def test_bundle_refuses_a_residual_network_predicting_noise() -> None:
    from seg2med_core.bundle import BundleMetadata

    with pytest.raises(Seg2MedError, match="prediction_type must be 'sample'"):
        BundleMetadata(name="t", version="0", modality="ct", sequence=None, label_set="total", network=dict(TINY_25D),
                       scheduler=dict(PAPER_SCHEDULER), spacing_xy=4.0, image_size=32,
                       intensity={"kind": "ct_window", "level": 0.0, "width": 2000.0})


def test_lopo_data_relabels_by_name_not_by_id(tmp_path: Path) -> None:
    """lidc-idri-0001's own table has 117 = carpal and 118 = costal_cartilages (v2: 117 = costal_cartilages)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lopo_data", Path(__file__).resolve().parents[1] / "benchmarks" / "lopo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    arr = np.array([[[0, 1, 117, 118, 5]]], dtype=np.uint8)
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(tmp_path / "labels.nii.gz"))
    (tmp_path / "structures.csv").write_text(
        "group,original_idx,structure,id\norgans,1,spleen,1\norgans,5,liver,5\ntest,1,carpal,117\nribs,26,costal_cartilages,118\n",
        encoding="utf-8")
    out, dropped = module.relabel_by_name(tmp_path / "labels.nii.gz", tmp_path / "structures.csv")
    from seg2med_core.labels import names_for

    v2 = names_for("total", include_tissue=False)
    values = sitk.GetArrayFromImage(out)[0, 0].tolist()
    assert [v2.get(v, "background") for v in values] == ["background", "spleen", "background", "costal_cartilages", "liver"]
    assert dropped == ["carpal"]
