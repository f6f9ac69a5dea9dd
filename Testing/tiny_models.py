"""Tiny network configs shared by the tests (fast on a CPU; not a model anyone should use)."""

#: DiffusionModelUNet with attention on its last level, for sampler/fast-path/bundle tests.
TINY_ATTENTION = dict(
    spatial_dims=2,
    in_channels=2,
    out_channels=1,
    channels=(8, 16),
    attention_levels=(False, True),
    num_res_blocks=1,
    num_head_channels=8,
    norm_num_groups=8,
)
#: The same without attention: sampling whole example volumes through the CLI takes seconds.
TINY_NO_ATTENTION = {**TINY_ATTENTION, "attention_levels": (False, False)}


def tiny_attention_network(seed: int = 0):  # noqa: ANN201  (torch is imported lazily: this module is imported early)
    """:data:`TINY_ATTENTION` with seeded weights and a non-trivial output layer (MONAI zero-initialises it,
    which would make every prediction 0 and comparisons between code paths meaningless)."""
    import torch

    from seg2med_core.network import build_network

    torch.manual_seed(seed)
    net = build_network(TINY_ATTENTION)
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.1)
    return net


def tiny_metadata(modality: str = "ct", **changes):  # noqa: ANN201
    """A valid ``metadata.json`` dict for a :data:`TINY_NO_ATTENTION` bundle; ``changes`` replace fields
    (including invalid values: it is written as JSON as-is, so tests can hand out broken bundles)."""
    from seg2med_core.network import PAPER_SCHEDULER, to_json_config

    data = {
        "name": f"tiny_{modality}",
        "version": "0",
        "modality": modality,
        "sequence": "vibe_in" if modality == "mr" else None,
        "label_set": "total_mr" if modality == "mr" else "total",
        "network": to_json_config(TINY_NO_ATTENTION),
        "scheduler": to_json_config(PAPER_SCHEDULER),
        "spacing_xy": 12.0,
        "image_size": 32,
        "intensity": {"kind": "ct_window", "level": 0, "width": 2000}
        if modality == "ct"
        else {"kind": "mr_percentile", "p_lo": 10, "p_hi": 90},
        "training_data": "none: random weights for tests",
        "licence": "Apache-2.0",
        "package_versions": {"seg2med": "test"},
    }
    data.update(changes)
    return data


def write_raw_bundle(folder, metadata: dict | None = None, state: dict | None = None, seed: int = 0):  # noqa: ANN201
    """Write ``metadata.json`` and ``model.safetensors`` without any validation (for bad-input tests).

    ``state`` defaults to the seeded weights of the network in ``metadata``; pass a dict of tensors to
    write other (e.g. NaN or integer) weights, or ``{}`` to write no weights file at all."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from seg2med_core.network import build_network

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = tiny_metadata() if metadata is None else metadata
    if state is None:
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in build_network(dict(TINY_NO_ATTENTION)).state_dict().items()}
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    if state:
        save_file(state, str(folder / "model.safetensors"))
    return folder
