"""Network/scheduler construction and model bundles (save/load/import/errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.blocks.selfattention import SABlock

from seg2med_core.bundle import (
    METADATA_FILE,
    WEIGHTS_FILE,
    BundleMetadata,
    bundle_info,
    check_modality,
    import_monai_generative_checkpoint,
    load_bundle,
    read_metadata,
    save_bundle,
)
from seg2med_core.errors import Seg2MedError
from seg2med_core.network import (
    PAPER_NETWORK,
    PAPER_SCHEDULER,
    build_network,
    build_scheduler,
    count_parameters,
    to_json_config,
)
from tiny_models import TINY_ATTENTION

TINY = TINY_ATTENTION
TINY_REGRESSION = {"class": "AttentionUnet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
                   "channels": (8, 16), "strides": (2,)}


def _metadata(network: dict = TINY, **changes) -> BundleMetadata:
    fields = dict(
        name="tiny-ct",
        version="0.0.1",
        modality="ct",
        sequence=None,
        label_set="total",
        network=to_json_config(network),
        scheduler=dict(PAPER_SCHEDULER),
        spacing_xy=1.0,
        image_size=32,
        intensity={"kind": "ct_window", "level": 0, "width": 2000},
        training_data="synthetic test data",
        licence="Apache-2.0",
    )
    fields.update(changes)
    return BundleMetadata(**fields)


def _forward(net: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 32, 32, generator=gen)
    with torch.no_grad():
        return net(x, torch.tensor([10, 700]))


# --- network -------------------------------------------------------------------------------------


def test_paper_network_matches_the_paper() -> None:
    net = build_network(PAPER_NETWORK)
    blocks = [m for m in net.modules() if isinstance(m, SABlock)]
    # attention only at the deepest level (2 down, 3 up) + the middle block, 8 heads of 32 channels
    assert len(blocks) == 6 and all(b.num_heads == 8 and b.dim_head == 32 for b in blocks)
    assert net.conv_in.conv.in_channels == 2 and net.out[-1].conv.out_channels == 1
    assert 20e6 < count_parameters(net) < 40e6


def test_network_config_round_trips_through_json() -> None:
    again = json.loads(json.dumps(to_json_config(TINY)))
    assert again["channels"] == [8, 16]
    a, b = build_network(TINY), build_network(again)
    b.load_state_dict(a.state_dict())
    assert torch.equal(_forward(a), _forward(b))


def test_network_config_errors_name_the_key() -> None:
    with pytest.raises(Seg2MedError, match="unknown key.*'chanels'"):
        build_network({**TINY, "chanels": (8, 16)})
    with pytest.raises(Seg2MedError, match="network class 'ResNet'"):
        build_network({**TINY, "class": "ResNet"})
    with pytest.raises(Seg2MedError, match="invalid DiffusionModelUNet config"):
        build_network({**TINY, "norm_num_groups": 3})


def test_build_scheduler_defaults_and_kinds() -> None:
    ddpm = build_scheduler(None, "ddpm")
    assert ddpm.num_train_timesteps == 1000 and ddpm.prediction_type == "epsilon"
    assert torch.allclose(ddpm.betas[[0, -1]], torch.tensor([1e-4, 2e-2]))
    shared = {**PAPER_SCHEDULER, "variance_type": "fixed_small", "steps_offset": 0}
    ddim = build_scheduler(json.loads(json.dumps(shared)), "ddim")
    assert torch.allclose(ddim.alphas_cumprod, ddpm.alphas_cumprod)
    with pytest.raises(Seg2MedError, match="'euler'"):
        build_scheduler(None, "euler")
    with pytest.raises(Seg2MedError, match="beta_stat"):
        build_scheduler({"beta_stat": 0.1})
    with pytest.raises(Seg2MedError, match="invalid ddpm scheduler"):
        build_scheduler({"schedule": "no_such_schedule"})


# --- bundles -------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    net = build_network(TINY)
    meta = _metadata(metrics={"ssim": 0.9})
    out = save_bundle(tmp_path / "model", net, meta, model_card="# tiny\n")
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", METADATA_FILE, WEIGHTS_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folders left behind
    bundle = load_bundle(out)
    assert bundle.metadata == meta and bundle.path == out
    assert not bundle.network.training
    assert torch.equal(_forward(bundle.network), _forward(net))


def test_save_replaces_existing_bundle_atomically(tmp_path: Path) -> None:
    first, second = build_network(TINY), build_network(TINY)
    save_bundle(tmp_path / "m", first, _metadata())
    save_bundle(tmp_path / "m", second, _metadata(version="2"))
    assert read_metadata(tmp_path / "m").version == "2"
    assert torch.equal(_forward(load_bundle(tmp_path / "m").network), _forward(second))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    with pytest.raises(Seg2MedError, match="already exists"):
        save_bundle(tmp_path / "m", first, _metadata(), overwrite=False)


def test_save_refuses_weights_that_do_not_match_the_config(tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match="do not match the network config"):
        save_bundle(tmp_path / "m", build_network(TINY), _metadata(network={**TINY, "channels": (8, 24)}))
    assert not (tmp_path / "m").exists()


def test_regression_bundle(tmp_path: Path) -> None:
    net = build_network(TINY_REGRESSION)
    meta = _metadata(network=TINY_REGRESSION, scheduler={}, model_kind="regression")
    bundle = load_bundle(save_bundle(tmp_path / "unet", net, meta))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(bundle.network(x), net.eval()(x))
    assert "regression (AttentionUnet)" in bundle_info(tmp_path / "unet")
    with pytest.raises(Seg2MedError, match="regression model cannot use DiffusionModelUNet"):
        _metadata(model_kind="regression")
    with pytest.raises(Seg2MedError, match="diffusion model needs a DiffusionModelUNet"):
        _metadata(network=TINY_REGRESSION)


def test_metadata_validation_names_the_value() -> None:
    with pytest.raises(Seg2MedError, match="modality 'xray'"):
        _metadata(modality="xray")
    with pytest.raises(Seg2MedError, match="image_size .* got 0"):
        _metadata(image_size=0)
    with pytest.raises(Seg2MedError, match="spacing_xy .* got -1"):
        _metadata(spacing_xy=-1.0)


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    return save_bundle(tmp_path / "model", build_network(TINY), _metadata())


def test_load_errors_name_the_path(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match="'.*nope' does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(Seg2MedError, match="is not a folder"):
        load_bundle(tmp_path / "file")

    weights = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(weights[:100])
    with pytest.raises(Seg2MedError, match=f"weights '.*{WEIGHTS_FILE}' are unreadable or corrupt"):
        load_bundle(saved)
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(Seg2MedError, match=f"has no {WEIGHTS_FILE}"):
        load_bundle(saved)
    (saved / WEIGHTS_FILE).write_bytes(weights)

    meta = json.loads((saved / METADATA_FILE).read_text(encoding="utf-8"))
    (saved / METADATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(Seg2MedError, match="is not valid JSON"):
        load_bundle(saved)
    (saved / METADATA_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k not in ("modality", "network")}), encoding="utf-8")
    with pytest.raises(Seg2MedError, match="missing key\\(s\\) modality, network"):
        load_bundle(saved)
    (saved / METADATA_FILE).write_text(json.dumps({**meta, "network": {**TINY, "channels": [8, 32]}}), encoding="utf-8")
    with pytest.raises(Seg2MedError, match="do not match the network config: .* has shape"):
        load_bundle(saved)
    (saved / METADATA_FILE).unlink()
    with pytest.raises(Seg2MedError, match=f"has no {METADATA_FILE}"):
        load_bundle(saved)


def test_check_modality(saved: Path) -> None:
    bundle = load_bundle(saved)
    check_modality(bundle, "ct")
    check_modality(bundle, "CT")
    with pytest.raises(Seg2MedError, match="produces CT images but MR was requested"):
        check_modality(bundle, "mr")


def test_bundle_info_summarises_without_loading_weights(saved: Path) -> None:
    text = bundle_info(saved)
    n_tensors = len(build_network(TINY).state_dict())
    assert "tiny-ct" in text and "CT" in text and "32x32 px at 1 mm" in text
    assert f"{n_tensors} tensors" in text and "Apache-2.0" in text


# --- MONAI-Generative import ---------------------------------------------------------------------


def _to_old_format(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys the way MONAI-Generative named them (inverse of ``load_old_state_dict``)."""
    old: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = key
        for part in ("to_q", "to_k", "to_v"):
            new_key = new_key.replace(f".attn.{part}.", f".{part}.")
        new_key = new_key.replace(".attn.out_proj.", ".proj_attn.")
        new_key = new_key.replace("postconv", "conv")
        old[new_key] = value.clone()
    return old


def test_import_monai_generative_checkpoint(tmp_path: Path) -> None:
    net = build_network(TINY)
    old = _to_old_format(net.state_dict())
    assert set(old) != set(net.state_dict())  # the test really exercises the key conversion
    ckpt = tmp_path / "ddpm.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in old.items()}, "epoch": torch.tensor(3)}, ckpt)
    out = import_monai_generative_checkpoint(ckpt, tmp_path / "bundle", _metadata())
    assert torch.equal(_forward(load_bundle(out).network), _forward(net))


def test_import_errors(tmp_path: Path) -> None:
    old = _to_old_format(build_network(TINY).state_dict())
    with pytest.raises(Seg2MedError, match="does not exist"):
        import_monai_generative_checkpoint(tmp_path / "missing.pt", tmp_path / "b", _metadata())
    missing = dict(old)
    missing.pop(next(k for k in old if k.endswith(".to_q.weight")))
    missing["extra.weight"] = torch.zeros(1)
    torch.save(missing, tmp_path / "wrong.pt")
    with pytest.raises(Seg2MedError, match="lacks tensor"):
        import_monai_generative_checkpoint(tmp_path / "wrong.pt", tmp_path / "b", _metadata())
    torch.save({k: v for k, v in list(old.items())[:-1]}, tmp_path / "short.pt")
    with pytest.raises(Seg2MedError, match="tensors but the network config expects"):
        import_monai_generative_checkpoint(tmp_path / "short.pt", tmp_path / "b", _metadata())
    torch.save({"state_dict": old, "obj": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(Seg2MedError, match="not a loadable tensor-only state dict"):
        import_monai_generative_checkpoint(tmp_path / "pickled.pt", tmp_path / "b", _metadata())
    assert not (tmp_path / "b").exists()
